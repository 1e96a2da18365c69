//! WebTransport over HTTP/3, the dialect Chromium speaks by default
//! (draft-ietf-webtrans-http3-02): an extended CONNECT with `:protocol = webtransport`
//! opens a session whose path names an ALPN (`/alknet/call`, `/alknet/ssh`, …); the
//! session goes to that ALPN's handler, which sees an ordinary connection.
//!
//! Done under `h3` rather than with `h3-webtransport`: the adapter ([`super::quic`])
//! reads the first bytes of every incoming stream itself and sorts session streams out
//! before `h3` sees them, so a session stream reaches the handler as the runtime's own
//! QUIC stream (no HTTP/3 framing, no extra task or copy on its data path), one
//! connection carries any number of sessions beside ordinary requests, and datagrams
//! are sorted by quarter stream ID as the session reads them. `h3-webtransport` instead
//! takes over the whole HTTP/3 connection for one session and moves every chunk through
//! its own stream wrappers.
//!
//! - [`wire`]: stream headers and datagram prefixes (sans-IO);
//! - [`sessions`]: the sessions of one connection, their queues;
//! - [`session`]: one session, as its handler uses it;
//! - [`connect`]: answering the CONNECT request: routing, authentication, the session's life.

pub mod client;
pub mod connect;
pub mod session;
pub mod sessions;
pub mod wire;

use serde::Deserialize;

pub use session::WebTransportSession;
pub use sessions::Sessions;

/// `sec-webtransport-http3-draft`: the draft this server speaks, in every 2xx answer.
pub const DRAFT_HEADER: &str = "sec-webtransport-http3-draft";
pub const DRAFT_VALUE: &str = "draft02";
/// Where session paths start: `/alknet/echo` names the ALPN `alknet/echo`, and `/perf`
/// names `perf` (an ALPN is the path without its leading `/`).
pub const PATH_PREFIX: &str = "/";

/// ALPNs not reachable over WebTransport unless `[webtransport] allow` names them: the
/// load generator `perf` (a browser has no business driving it).
pub const DEFAULT_DENIED: &[&str] = &["perf"];

pub const DEFAULT_MAX_SESSIONS_PER_CONNECTION: u64 = 16;
pub const DEFAULT_MAX_BUFFERED_STREAMS: usize = 16;
pub const DEFAULT_MAX_QUEUED_STREAMS: usize = 256;
pub const DEFAULT_MAX_QUEUED_DATAGRAMS: usize = 256;

/// `[webtransport]`: which services a session may reach and how much one connection may
/// hold.
///
/// - `enabled` (default true): the `h3` handler offers WebTransport (SETTINGS, extended
///   CONNECT, HTTP datagrams).
/// - `allow`: ALPNs a CONNECT path may name; unset, every registered handler except
///   [`DEFAULT_DENIED`] (and never `h3` itself).
/// - `max_sessions_per_connection` ([`DEFAULT_MAX_SESSIONS_PER_CONNECTION`]): sessions
///   open at once on one HTTP/3 connection (also sent as SETTINGS_WEBTRANSPORT_MAX_SESSIONS);
///   one more is answered 429.
/// - `max_buffered_streams` ([`DEFAULT_MAX_BUFFERED_STREAMS`]): streams that arrived
///   before their session was established, per connection; beyond it the oldest is
///   refused (H3_WEBTRANSPORT_BUFFERED_STREAM_REJECTED).
/// - `max_queued_streams` ([`DEFAULT_MAX_QUEUED_STREAMS`]): streams of one session its
///   handler has not accepted yet, per direction; beyond it new ones are refused.
/// - `max_queued_datagrams` ([`DEFAULT_MAX_QUEUED_DATAGRAMS`]): datagrams of one session
///   read off the connection but not yet by its handler; beyond it the oldest is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebTransportConfig {
    pub enabled: bool,
    pub allow: Option<Vec<String>>,
    pub max_sessions_per_connection: u64,
    pub max_buffered_streams: usize,
    pub max_queued_streams: usize,
    pub max_queued_datagrams: usize,
}

impl Default for WebTransportConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow: None,
            max_sessions_per_connection: DEFAULT_MAX_SESSIONS_PER_CONNECTION,
            max_buffered_streams: DEFAULT_MAX_BUFFERED_STREAMS,
            max_queued_streams: DEFAULT_MAX_QUEUED_STREAMS,
            max_queued_datagrams: DEFAULT_MAX_QUEUED_DATAGRAMS,
        }
    }
}

/// Errors in a [`WebTransportConfig`] that TOML alone cannot rule out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebTransportConfigError {
    #[error("webtransport.{0} must be greater than zero")]
    Zero(&'static str),
    #[error("webtransport.allow: {0:?} cannot be reached over WebTransport")]
    NotATarget(String),
}

impl WebTransportConfig {
    pub fn validate(&self) -> Result<(), WebTransportConfigError> {
        let zero = [
            (
                "max_sessions_per_connection",
                self.max_sessions_per_connection == 0,
            ),
            ("max_queued_streams", self.max_queued_streams == 0),
            ("max_queued_datagrams", self.max_queued_datagrams == 0),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(WebTransportConfigError::Zero(name));
        }
        if let Some(bad) = self
            .allow
            .iter()
            .flatten()
            .find(|a| a.as_bytes() == super::ALPN || a.is_empty())
        {
            return Err(WebTransportConfigError::NotATarget(bad.clone()));
        }
        Ok(())
    }

    /// Whether a session may be routed to `alpn`.
    pub fn allows(&self, alpn: &[u8]) -> bool {
        if alpn == super::ALPN {
            return false;
        }
        match &self.allow {
            Some(list) => list.iter().any(|a| a.as_bytes() == alpn),
            None => !DEFAULT_DENIED.iter().any(|d| d.as_bytes() == alpn),
        }
    }

    /// The ALPN a CONNECT path names, if it is shaped like one (`/alknet/echo`).
    pub fn alpn_of_path(path: &str) -> Option<&str> {
        let alpn = path.strip_prefix(PATH_PREFIX)?;
        (!alpn.is_empty() && alpn.len() <= 255).then_some(alpn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_allows_all_but_perf_and_never_h3() {
        let c = WebTransportConfig::default();
        assert!(c.validate().is_ok());
        assert!(c.allows(b"alknet/echo"));
        assert!(c.allows(b"alknet/ssh"));
        assert!(!c.allows(b"perf"));
        assert!(!c.allows(b"h3"));
        let only = WebTransportConfig {
            allow: Some(vec!["alknet/call".into()]),
            ..Default::default()
        };
        assert!(only.allows(b"alknet/call"));
        assert!(!only.allows(b"alknet/echo"));
        let bad = WebTransportConfig {
            allow: Some(vec!["h3".into()]),
            ..Default::default()
        };
        assert_eq!(
            bad.validate(),
            Err(WebTransportConfigError::NotATarget("h3".into()))
        );
    }

    #[test]
    fn paths_name_alpns() {
        assert_eq!(
            WebTransportConfig::alpn_of_path("/alknet/echo"),
            Some("alknet/echo")
        );
        assert_eq!(WebTransportConfig::alpn_of_path("/"), None);
        assert_eq!(WebTransportConfig::alpn_of_path("alknet/echo"), None);
    }
}
