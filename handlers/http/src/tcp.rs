//! HTTP/1.1 and HTTP/2 over the runtime's TLS-over-TCP streams, with hyper.
//!
//! The stream implements tokio's IO traits (monoio poll-io under tokio-rustls; see the
//! runtime's `tcp.rs`), so hyper-util's `TokioIo` adapts it to hyper's own `rt::Read` /
//! `rt::Write`; no tokio runtime runs. HTTP/2 streams are spawned on the same worker
//! ([`LocalExecutor`]); timers are the worker's ([`WorkerTimer`]). ALPN `h2` gets HTTP/2,
//! anything else (`http/1.1`, or no ALPN) HTTP/1.1.

use std::cell::Cell;
use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use alknet_proto::call::ErrorCode;
use alknet_runtime::rt::timeout_if_pending;
use alknet_runtime::{AuthContext, HandlerError, LocalBoxFuture, TcpHandler, TlsTcpStream};
use axum::http::{header, HeaderValue, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::ServiceExt;

use crate::auth::ConnInfo;
use crate::router::router;
use crate::routes::error_response;
use crate::rt::{LocalExecutor, WorkerTimer};
use crate::{HttpState, TCP_ALPNS};

/// How often a connection checks whether the node drains (then it shuts down gracefully:
/// GOAWAY, or `Connection: close` after the request in flight) and whether it has been
/// idle past `keep_alive_idle_timeout_ms`.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The HTTP handler of the TLS-over-TCP listener (ALPNs `h2`, `http/1.1`).
pub struct HttpTcpHandler {
    state: HttpState,
    router: Router,
}

impl HttpTcpHandler {
    pub fn new(state: HttpState) -> Self {
        Self {
            router: router(state.clone()),
            state,
        }
    }
}

impl TcpHandler for HttpTcpHandler {
    fn alpns(&self) -> Vec<Vec<u8>> {
        TCP_ALPNS.iter().map(|a| a.to_vec()).collect()
    }

    fn handle(
        &self,
        stream: TlsTcpStream,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(serve(self.state.clone(), self.router.clone(), stream, auth))
    }
}

async fn serve(
    state: HttpState,
    router: Router,
    stream: TlsTcpStream,
    auth: AuthContext,
) -> Result<(), HandlerError> {
    let h2 = auth.alpn == b"h2";
    let info = ConnInfo {
        protocol: if h2 { "HTTP/2" } else { "HTTP/1.1" },
        auth: std::sync::Arc::new(auth),
    };
    // advertised only while the QUIC side serves h3: a browser would otherwise try it,
    // fail the handshake and fall back
    let alt_svc = state
        .status()
        .filter(|s| s.alpns().iter().any(|a| a.as_bytes() == crate::h3::ALPN))
        .and_then(|s| {
            HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", s.local_addr().port())).ok()
        });
    let active = Rc::new(Cell::new(false));
    let io = TokioIo::new(Tracked {
        inner: stream,
        active: active.clone(),
    });
    let request_timeout = state.config.request_timeout;
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        let answer = router.clone().oneshot(req.map(axum::body::Body::new));
        let alt_svc = alt_svc.clone();
        async move {
            // most answers are ready at their first poll: no timer armed for them
            let mut response = match timeout_if_pending(request_timeout, answer).await {
                Ok(Ok(r)) => r,
                Ok(Err(never)) => match never {},
                Err(_) => error_response(ErrorCode::Unavailable, "request timeout"),
            };
            if let Some(v) = alt_svc {
                response.headers_mut().insert(header::ALT_SVC, v);
            }
            Ok::<_, Infallible>(response)
        }
    });
    let cfg = &state.config;
    let outcome = if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(LocalExecutor);
        b.timer(WorkerTimer)
            .max_concurrent_streams(cfg.h2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(cfg.h2_max_pending_accept_reset_streams)
            .max_local_error_reset_streams(cfg.h2_max_local_error_reset_streams);
        let conn = b.serve_connection(io, service);
        watch(&state, conn, Some(active), |c| c.graceful_shutdown()).await
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(WorkerTimer)
            .header_read_timeout(cfg.header_read_timeout)
            .max_buf_size(cfg.max_header_bytes)
            .max_headers(cfg.max_headers)
            .keep_alive(true);
        let conn = b.serve_connection(io, service);
        // idle here means a response stalled on a client that does not read (between
        // requests `header_read_timeout_ms` closes first)
        watch(&state, conn, Some(active), |c| c.graceful_shutdown()).await
    };
    if let Err(e) = outcome {
        // a peer that breaks HTTP or goes away; nothing for the node's error counters
        tracing::debug!("HTTP connection ended: {e}");
    }
    Ok(())
}

/// Serves `conn` to its end, shutting it down gracefully when the node drains or (with
/// `active`, set by [`Tracked`] whenever bytes move) when no byte moved for
/// `keep_alive_idle_timeout_ms`, to within [`WATCH_INTERVAL`]; a shutdown that has not
/// ended `graceful_close_timeout_ms` later ends here, and dropping `conn` closes the socket.
async fn watch<C, E>(
    state: &HttpState,
    conn: C,
    active: Option<Rc<Cell<bool>>>,
    shutdown: impl Fn(Pin<&mut C>),
) -> Result<(), E>
where
    C: std::future::Future<Output = Result<(), E>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut shutdown_since: Option<Instant> = None;
    let mut last_active = Instant::now();
    loop {
        monoio::select! {
            r = conn.as_mut() => return r,
            _ = monoio::time::sleep(WATCH_INTERVAL) => {
                if let Some(since) = shutdown_since {
                    if since.elapsed() >= state.config.graceful_close_timeout {
                        tracing::debug!(
                            "HTTP connection closed: its graceful shutdown did not end within \
                             graceful_close_timeout_ms"
                        );
                        return Ok(());
                    }
                    continue;
                }
                let draining = state.status().is_some_and(|s| s.draining());
                let idle_past = active.as_ref().is_some_and(|active| {
                    if active.replace(false) {
                        last_active = Instant::now();
                    }
                    last_active.elapsed() >= state.config.keep_alive_idle_timeout
                });
                if draining || idle_past {
                    shutdown(conn.as_mut());
                    shutdown_since = Some(Instant::now());
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The TLS stream, noting that bytes moved (the HTTP/2 idle timeout). A flag, not a
    /// clock read per read and write: [`watch`] reads the clock once per interval.
    struct Tracked {
        #[pin]
        inner: TlsTcpStream,
        active: Rc<Cell<bool>>,
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.active.set(true);
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.active.set(true);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.active.set(true);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
