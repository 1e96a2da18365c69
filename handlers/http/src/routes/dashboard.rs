//! `GET /`: the live dashboard, one HTML page embedded in the binary (inline CSS and JS, no
//! external asset), and `GET /api/dashboard/stream`: its feed, Server-Sent Events carrying
//! a JSON [`Snapshot`] at once and then every `[http] dashboard_interval_ms`.
//!
//! Both follow the access rule of `/metrics` (the same counters): the scope `node:metrics`,
//! or the path listed in `[http] public`. A browser's `EventSource` cannot send an
//! `Authorization` header, so a dashboard in a browser needs `"/"` and
//! `"/api/dashboard/stream"` in `public`, or a client certificate with the scope.
//!
//! The snapshot reads the sources `/metrics` reads (the runtime's [`NodeStatus`] worker
//! counters and ALPN counts, the front end's request counter, the call node's stats); the
//! page turns successive snapshots into rates. Each stream is one of `sse_max_streams`
//! and ends when the node drains, as every SSE stream does (see `sse.rs`).

use std::sync::OnceLock;
use std::time::Instant;

use alknet_runtime::rt::spawn_guarded;
use alknet_runtime::NodeStatus;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::auth::ConnInfo;
use crate::routes::compress;
use crate::routes::metrics::access_refusal;
use crate::routes::sse::{frame, sse_response, too_many, StreamSlot};
use crate::rt::WorkerSleep;
use crate::HttpState;

/// The page: markup, style and script in one file, so the binary carries all of it.
const PAGE: &str = include_str!("dashboard.html");

/// `GET /`.
pub async fn page(
    State(state): State<HttpState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
) -> Response {
    page_at(&state, "/", conn.as_deref(), &headers)
}

/// The same page at `/dashboard`, served whether or not `static_root` owns `/`.
pub async fn page_dashboard(
    State(state): State<HttpState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
) -> Response {
    page_at(&state, DASHBOARD_PATH, conn.as_deref(), &headers)
}

/// Where the page is always served (also at `/` unless `[http] static_root` is set).
pub const DASHBOARD_PATH: &str = "/dashboard";

/// The page, if `path` (what `[http] public` is matched against) may be read.
fn page_at(
    state: &HttpState,
    path: &str,
    conn: Option<&ConnInfo>,
    headers: &HeaderMap,
) -> Response {
    if let Some(refused) = access_refusal(state, path, conn, headers) {
        return refused;
    }
    compress::respond(
        headers,
        "the dashboard page",
        &[
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // everything is inline and the feed is same-origin: forbid anything else
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:",
            ),
        ],
        Bytes::from_static(PAGE.as_bytes()),
        |_| page_gzipped(),
    )
}

/// The page gzipped, at the best level, once per process (it never changes).
fn page_gzipped() -> std::io::Result<Bytes> {
    static GZIPPED: OnceLock<Option<Bytes>> = OnceLock::new();
    GZIPPED
        .get_or_init(|| {
            compress::gzip(PAGE.as_bytes(), flate2::Compression::best())
                .map(Bytes::from)
                .ok()
        })
        .clone()
        .ok_or_else(|| std::io::Error::other("the page did not compress"))
}

/// One worker's figures in a [`Snapshot`].
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct WorkerFigures {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub connections_accepted: u64,
    pub tcp_open: u64,
}

/// One ALPN's QUIC connections in a [`Snapshot`].
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct AlpnFigures {
    pub alpn: String,
    pub open: u64,
    pub accepted: u64,
}

/// What each SSE frame of the feed carries (as its `data:` JSON). Counters are totals since
/// start; the page derives rates from two snapshots and their `uptime_ms`.
#[derive(Serialize, Debug)]
pub struct Snapshot {
    /// 0 for the first snapshot of a stream, then 1, 2, … (also the frame's `id:`).
    pub seq: u64,
    pub version: &'static str,
    pub uptime_ms: u64,
    /// "serving", "draining", or "starting" (before the server hands its status over).
    pub status: &'static str,
    pub workers: Vec<WorkerFigures>,
    pub quic_connections_open: u64,
    pub alpns: Vec<AlpnFigures>,
    pub http_requests_total: u64,
    pub call_requests_total: u64,
    pub sse_streams_open: i64,
}

impl Snapshot {
    pub fn read(state: &HttpState, seq: u64) -> Self {
        let status: Option<&NodeStatus> = state.status();
        let workers = status
            .map(|s| {
                s.worker_stats()
                    .iter()
                    .map(|w| WorkerFigures {
                        datagrams_in: w.datagrams_received,
                        datagrams_out: w.datagrams_sent,
                        connections_accepted: w.connections_accepted,
                        tcp_open: w.tcp_open,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let alpns = status
            .map(|s| {
                s.alpn_connections()
                    .into_iter()
                    .map(|c| AlpnFigures {
                        alpn: c.alpn,
                        open: c.open,
                        accepted: c.accepted,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            seq,
            version: state.version,
            uptime_ms: u64::try_from(state.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            status: match status {
                None => "starting",
                Some(s) if s.draining() => "draining",
                Some(_) => "serving",
            },
            workers,
            quic_connections_open: status.map_or(0, |s| s.open_connections() as u64),
            alpns,
            http_requests_total: state.metrics.requests_total(),
            call_requests_total: state.invoker.as_ref().map_or(0, |i| i.stats().requests),
            sse_streams_open: state.metrics.sse_open.get(),
        }
    }
}

/// `GET /api/dashboard/stream`.
pub async fn stream(
    State(state): State<HttpState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) =
        access_refusal(&state, "/api/dashboard/stream", conn.as_deref(), &headers)
    {
        return refused;
    }
    let Some(slot) = StreamSlot::take(&state) else {
        return too_many(&state);
    };
    let (tx, rx) = mpsc::channel::<Bytes>(state.config.sse_buffer_frames);
    let producer = state.clone();
    spawn_guarded("http dashboard stream", async move {
        let interval = producer.config.dashboard_interval;
        let mut next = Instant::now();
        for seq in 0u64.. {
            let data = match serde_json::to_string(&Snapshot::read(&producer, seq)) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard snapshot did not serialize");
                    break;
                }
            };
            if tx.send(frame(None, Some(seq), &data)).await.is_err() {
                break;
            }
            if producer.status().is_some_and(NodeStatus::draining) {
                break;
            }
            // a fixed cadence (not "interval after the send"), so a slow reader does not
            // stretch the page's time axis
            next += interval;
            let now = Instant::now();
            if next < now {
                next = now;
            }
            monoio::select! {
                _ = WorkerSleep::until(next) => {},
                _ = tx.closed() => break,
            }
        }
    });
    sse_response(&state, rx, slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained() {
        // no asset from anywhere else: the CSP forbids it, and the page must work offline
        for outside in ["http://", "https://", "<link", "src=\"", "@import"] {
            assert!(!PAGE.contains(outside), "the page refers to {outside}");
        }
        assert!(PAGE.contains("/api/dashboard/stream"));
        assert!(PAGE.contains("name=\"viewport\""));
    }

    #[test]
    fn a_snapshot_before_the_server_runs_says_starting() {
        let state = HttpState::new(crate::HttpConfig::default(), None).expect("state");
        state.metrics.count("/health", 200, "HTTP/2");
        let s = Snapshot::read(&state, 3);
        assert_eq!((s.seq, s.status), (3, "starting"));
        assert!(s.workers.is_empty());
        assert_eq!(s.http_requests_total, 1);
        let json = serde_json::to_value(&s).expect("json");
        for key in [
            "version",
            "uptime_ms",
            "workers",
            "alpns",
            "http_requests_total",
            "call_requests_total",
        ] {
            assert!(json.get(key).is_some(), "{key} missing: {json}");
        }
    }
}
