//! Every limit of the HTTP front end: a named default, its key under `[http]` in the TOML
//! config, and what it bounds. A client that breaks one gets the status named here or a
//! closed connection, never unbounded memory.

use std::time::Duration;

use serde::Deserialize;

/// `max_header_bytes`: bytes of an HTTP/1.1 request head (request line and headers) kept
/// while parsing; past it the answer is 431 and the connection closes. For HTTP/2 the same
/// number is the advertised SETTINGS_MAX_HEADER_LIST_SIZE. hyper's floor is 8192.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// `max_headers`: header fields in one HTTP/1.1 request; more get 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// `max_body_bytes`: largest request body read (a call's input); past it, 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// `header_read_timeout_ms`: an HTTP/1.1 client must send a whole request head within this
/// long of starting it (or of its previous response: hyper runs this timer between
/// keep-alive requests too); otherwise the connection is closed (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `request_timeout_ms`: time from a request's head to its response head; past it, 503.
/// Call operations have their own deadline (`[call] default_timeout_ms`, answered 504),
/// normally shorter.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// `keep_alive_idle_timeout_ms`: a connection with no bytes either way for this long is
/// shut down gracefully (HTTP/2: GOAWAY; HTTP/1.1: no further request). Between HTTP/1.1
/// requests `header_read_timeout_ms` closes first; this one catches a response stalled on
/// a client that stopped reading.
pub const DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `graceful_close_timeout_ms`: once a TCP connection's graceful shutdown has begun (the
/// HTTP/2 idle timeout, or the node draining), it is closed outright if it has not ended
/// this long after (to within a second). Why: hyper's HTTP/2 shutdown sends GOAWAY with a
/// PING and waits for the PING's acknowledgement, so a client that never acknowledges it
/// (or an HTTP/1.1 request that never completes) would otherwise hold its connection, and
/// its place under `[tcp] max_connections_per_worker`, for ever.
pub const DEFAULT_GRACEFUL_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// `h2_max_concurrent_streams`: HTTP/2 requests in flight at once per connection
/// (SETTINGS_MAX_CONCURRENT_STREAMS).
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// `h2_max_pending_accept_reset_streams`: HTTP/2 streams a client opened and reset before
/// the server accepted them, tolerated at once; past it the connection gets GOAWAY
/// (the "rapid reset" attack, CVE-2023-44487).
pub const DEFAULT_H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// `h2_max_local_error_reset_streams`: streams the server had to reset because the client
/// broke the protocol, tolerated per connection before GOAWAY.
pub const DEFAULT_H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// `static_chunk_bytes`: bytes read from a file per read by the static-file route
/// (`static_root`), and the size of each response body chunk.
pub const DEFAULT_STATIC_CHUNK_BYTES: usize = 64 * 1024;
/// `static_channel_chunks`: chunks of one file response read ahead of the client. With
/// `static_chunk_bytes` this bounds a file response's memory (256 KiB by default) however
/// large the file; reading stops while the client does not take them.
pub const DEFAULT_STATIC_CHANNEL_CHUNKS: usize = 4;
/// `static_max_ranges`: byte ranges one static-file request may ask for and get as a
/// `multipart/byteranges` response; a request with more gets the whole file (RFC 9110
/// lets a server ignore `Range`). Each part costs the server a read and a part header,
/// so a request of many tiny ranges is cheap to send and dear to serve (Apache's
/// `MaxRanges` defaults to 200); viewers and download tools ask for one range or a few.
/// 1 serves single ranges only.
pub const DEFAULT_STATIC_MAX_RANGES: usize = 16;
/// `static_index`'s default: nginx's.
pub const DEFAULT_STATIC_INDEX: &str = "index.html";

/// `sse_queue_events`: events of a topic queued for one `GET /api/events/{topic}`
/// subscriber (the topic bus's per-subscriber queue). A reader that falls this far behind
/// gets a final `event: lagged` and its stream is closed: dropping it (rather than
/// skipping events) keeps the publisher's cost and the subscriber's memory bounded, and an
/// `EventSource` reconnects by itself; the `id:` of each event (the topic's sequence
/// number) shows the client what it missed.
pub const DEFAULT_SSE_QUEUE_EVENTS: usize = 256;
/// `sse_buffer_frames`: encoded SSE frames (events, items) of one stream waiting for the
/// client to take them. A streaming operation waits here while its reader is slow; a
/// topic subscription waits here and then in its `sse_queue_events` queue.
pub const DEFAULT_SSE_BUFFER_FRAMES: usize = 16;
/// `sse_keep_alive_ms`: an SSE stream with nothing to send for this long gets a comment
/// line (`: keep-alive`), so proxies and clients do not take it for dead.
pub const DEFAULT_SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// `sse_max_streams`: SSE streams (topic subscriptions and streaming calls) open at once on
/// the node, over every HTTP version; past it, 503.
pub const DEFAULT_SSE_MAX_STREAMS: usize = 1024;

/// `dashboard_interval_ms`: how often `GET /api/dashboard/stream` sends the dashboard a
/// snapshot of the node's counters (one more at once on connect). Each snapshot reads every
/// worker's counters, as a `/metrics` scrape does; streams count against `sse_max_streams`.
pub const DEFAULT_DASHBOARD_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest `dashboard_interval_ms` accepted: faster would make each open dashboard a
/// busy scraper of every worker's counters for no figure a person can read.
pub const MIN_DASHBOARD_INTERVAL: Duration = Duration::from_millis(100);

/// `mcp_max_sessions`: MCP Streamable HTTP sessions (`Mcp-Session-Id`) held at once;
/// a new `initialize` beyond it drops expired sessions, then the least recently used
/// (see `mcp_sessions.rs` for why not refuse).
pub const DEFAULT_MCP_MAX_SESSIONS: usize = 1024;
/// `mcp_session_idle_timeout_ms`: an MCP session unused this long is gone (its id then
/// gets 404, and the client initializes again).
pub const DEFAULT_MCP_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// `[http]`: paths served without authentication, and the limits above.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `public`: paths anyone may read without a scope (e.g. `["/metrics"]`; `/health`
    /// and `/openapi.json` always are).
    pub public: Vec<String>,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: usize,
    #[serde(rename = "header_read_timeout_ms", with = "alknet_runtime::millis")]
    pub header_read_timeout: Duration,
    #[serde(rename = "request_timeout_ms", with = "alknet_runtime::millis")]
    pub request_timeout: Duration,
    #[serde(rename = "keep_alive_idle_timeout_ms", with = "alknet_runtime::millis")]
    pub keep_alive_idle_timeout: Duration,
    #[serde(rename = "graceful_close_timeout_ms", with = "alknet_runtime::millis")]
    pub graceful_close_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_pending_accept_reset_streams: usize,
    pub h2_max_local_error_reset_streams: usize,
    /// `diagnostics`: serve `POST /echo` and `GET /bytes/{n}` (see `routes/diag.rs`).
    pub diagnostics: bool,
    /// `static_root`: serve the files of this directory at `GET /{path}` (to anyone,
    /// over every HTTP version; routes of their own come first). Unset (the default): no
    /// files are served. See `routes/files.rs`.
    pub static_root: Option<std::path::PathBuf>,
    pub static_chunk_bytes: usize,
    pub static_channel_chunks: usize,
    pub static_max_ranges: usize,
    /// `static_index`: the files a directory's path (`/`, `/docs/`) serves, the first
    /// that exists, as nginx's `index` directive; each a plain file name. Empty: a
    /// directory serves nothing (404).
    pub static_index: Vec<String>,
    pub sse_queue_events: usize,
    pub sse_buffer_frames: usize,
    #[serde(rename = "sse_keep_alive_ms", with = "alknet_runtime::millis")]
    pub sse_keep_alive: Duration,
    pub sse_max_streams: usize,
    #[serde(rename = "dashboard_interval_ms", with = "alknet_runtime::millis")]
    pub dashboard_interval: Duration,
    pub mcp_max_sessions: usize,
    #[serde(
        rename = "mcp_session_idle_timeout_ms",
        with = "alknet_runtime::millis"
    )]
    pub mcp_session_idle_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            public: Vec::new(),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            keep_alive_idle_timeout: DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT,
            graceful_close_timeout: DEFAULT_GRACEFUL_CLOSE_TIMEOUT,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            h2_max_pending_accept_reset_streams: DEFAULT_H2_MAX_PENDING_ACCEPT_RESET_STREAMS,
            h2_max_local_error_reset_streams: DEFAULT_H2_MAX_LOCAL_ERROR_RESET_STREAMS,
            diagnostics: false,
            static_root: None,
            static_chunk_bytes: DEFAULT_STATIC_CHUNK_BYTES,
            static_channel_chunks: DEFAULT_STATIC_CHANNEL_CHUNKS,
            static_max_ranges: DEFAULT_STATIC_MAX_RANGES,
            static_index: vec![DEFAULT_STATIC_INDEX.to_string()],
            sse_queue_events: DEFAULT_SSE_QUEUE_EVENTS,
            sse_buffer_frames: DEFAULT_SSE_BUFFER_FRAMES,
            sse_keep_alive: DEFAULT_SSE_KEEP_ALIVE,
            sse_max_streams: DEFAULT_SSE_MAX_STREAMS,
            dashboard_interval: DEFAULT_DASHBOARD_INTERVAL,
            mcp_max_sessions: DEFAULT_MCP_MAX_SESSIONS,
            mcp_session_idle_timeout: DEFAULT_MCP_SESSION_IDLE_TIMEOUT,
        }
    }
}

/// hyper refuses smaller HTTP/1.1 read buffers.
pub const MIN_HEADER_BYTES: usize = 8192;

/// A value in `[http]` that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpConfigError {
    #[error("http.{0} must be greater than zero")]
    Zero(&'static str),
    #[error("http.max_header_bytes must be at least {MIN_HEADER_BYTES}, got {0}")]
    HeaderBytes(usize),
    #[error("http.dashboard_interval_ms must be at least {min}, got {0}", min = MIN_DASHBOARD_INTERVAL.as_millis())]
    DashboardInterval(u128),
    #[error("http.public: {0:?} is not a path (it must start with /)")]
    PublicPath(String),
    #[error("http.static_index: {0:?} is not a plain file name")]
    StaticIndex(String),
}

impl HttpConfig {
    pub fn validate(&self) -> Result<(), HttpConfigError> {
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(HttpConfigError::HeaderBytes(self.max_header_bytes));
        }
        let zero = [
            ("max_headers", self.max_headers == 0),
            ("max_body_bytes", self.max_body_bytes == 0),
            ("header_read_timeout_ms", self.header_read_timeout.is_zero()),
            ("request_timeout_ms", self.request_timeout.is_zero()),
            (
                "keep_alive_idle_timeout_ms",
                self.keep_alive_idle_timeout.is_zero(),
            ),
            (
                "graceful_close_timeout_ms",
                self.graceful_close_timeout.is_zero(),
            ),
            (
                "h2_max_concurrent_streams",
                self.h2_max_concurrent_streams == 0,
            ),
            ("static_chunk_bytes", self.static_chunk_bytes == 0),
            ("static_channel_chunks", self.static_channel_chunks == 0),
            ("static_max_ranges", self.static_max_ranges == 0),
            ("sse_queue_events", self.sse_queue_events == 0),
            ("sse_buffer_frames", self.sse_buffer_frames == 0),
            ("sse_keep_alive_ms", self.sse_keep_alive.is_zero()),
            ("sse_max_streams", self.sse_max_streams == 0),
            ("mcp_max_sessions", self.mcp_max_sessions == 0),
            (
                "mcp_session_idle_timeout_ms",
                self.mcp_session_idle_timeout.is_zero(),
            ),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(HttpConfigError::Zero(name));
        }
        if self.dashboard_interval < MIN_DASHBOARD_INTERVAL {
            return Err(HttpConfigError::DashboardInterval(
                self.dashboard_interval.as_millis(),
            ));
        }
        if let Some(p) = self.public.iter().find(|p| !p.starts_with('/')) {
            return Err(HttpConfigError::PublicPath(p.clone()));
        }
        let plain = |n: &str| {
            alknet_runtime::files::relative_path(n.as_bytes()).is_ok_and(|p| p.as_os_str() == n)
        };
        if let Some(n) = self
            .static_index
            .iter()
            .find(|n| !plain(n) || n.contains('/'))
        {
            return Err(HttpConfigError::StaticIndex(n.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        assert_eq!(HttpConfig::default().validate(), Ok(()));
        let c: HttpConfig = toml::from_str("max_body_bytes = 0").expect("parses");
        assert_eq!(c.validate(), Err(HttpConfigError::Zero("max_body_bytes")));
        let c: HttpConfig = toml::from_str("max_header_bytes = 100").expect("parses");
        assert_eq!(c.validate(), Err(HttpConfigError::HeaderBytes(100)));
        let c: HttpConfig = toml::from_str("public = [\"metrics\"]").expect("parses");
        assert_eq!(
            c.validate(),
            Err(HttpConfigError::PublicPath("metrics".into()))
        );
        for bad in ["../x", "a/b", "", ".", "/index.html", "a b"] {
            let c: HttpConfig =
                toml::from_str(&format!("static_index = [\"index.html\", {bad:?}]"))
                    .expect("parses");
            assert_eq!(
                c.validate(),
                Err(HttpConfigError::StaticIndex(bad.into())),
                "{bad:?}"
            );
        }
        let c: HttpConfig =
            toml::from_str("static_index = [\"home.htm\", \"index.html\"]").expect("parses");
        assert_eq!(c.validate(), Ok(()));
        let c: HttpConfig = toml::from_str("static_index = []").expect("parses");
        assert_eq!(c.validate(), Ok(()));
        let c: HttpConfig = toml::from_str("dashboard_interval_ms = 10").expect("parses");
        assert_eq!(c.validate(), Err(HttpConfigError::DashboardInterval(10)));
        assert!(toml::from_str::<HttpConfig>("nope = 1").is_err());
    }
}
