//! Serving one HTTP/3 connection: h3's server state machine over the [`super::quic`]
//! adapter, each request a task on the worker, its response streamed from the service.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use alknet_runtime::rt::{run_or_spawn_guarded, spawn_guarded, timeout_if_pending};
use alknet_runtime::{Connection, ConnectionError};
use bytes::{Buf, Bytes};
use h3::error::Code;
use h3::server::{RequestResolver, RequestStream};
use http::{header, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower_service::Service;

use super::body::{self, PumpEnd};
use super::limits::H3Limits;
use super::quic::{offer_payload, H3Connection, H3SendStream};
use super::webtransport::connect::{serve_session, WebTransportContext};
use super::webtransport::{Sessions, WebTransportConfig};

/// Why serving a connection stopped other than by the client's normal end.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("HTTP/3 connection setup failed: {0}")]
    Setup(h3::error::ConnectionError),
    #[error("HTTP/3 connection error: {0}")]
    Connection(h3::error::ConnectionError),
}

/// The request type handed to the service: its body is the `Send` bridge of
/// [`super::body`], capped at `max_body_bytes` (axum answers 413 past it).
pub type H3Request = Request<axum::body::Body>;

type Resolver = RequestResolver<H3Connection, Bytes>;

/// Whether the node drains (then a connection sends GOAWAY).
pub type DrainProbe = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// How often a connection waiting for requests looks at its [`DrainProbe`].
pub(crate) const DRAIN_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves HTTP/3 on `conn` until the client closes it (or a connection-level protocol error).
/// Every request runs `service` in its own task on this worker; at most
/// `limits.max_concurrent_requests` at once. Once `draining` says so, the connection sends
/// GOAWAY naming the requests it took (they complete; later ones are refused by h3) and the
/// client is expected to go.
pub async fn serve_connection<S, ResBody>(
    conn: Connection,
    service: S,
    limits: Rc<H3Limits>,
    draining: Option<DrainProbe>,
    webtransport: Option<WebTransportSetup>,
) -> Result<(), ServeError>
where
    S: Service<H3Request, Response = Response<ResBody>, Error = Infallible> + Clone + 'static,
    S::Future: 'static,
    ResBody: Body<Data = Bytes> + 'static,
    ResBody::Error: std::fmt::Display,
{
    let probe = conn.clone();
    let mut builder = h3::server::builder();
    builder.max_field_section_size(limits.max_header_bytes);
    let webtransport = webtransport.map(|setup| {
        // SETTINGS_ENABLE_WEBTRANSPORT implies extended CONNECT in draft-02; both are sent
        // (with H3_DATAGRAM) so later clients see what they look for too
        builder
            .enable_webtransport(true)
            .enable_extended_connect(true)
            .enable_datagram(true)
            .max_webtransport_sessions(setup.config.max_sessions_per_connection);
        Rc::new(WebTransportContext {
            sessions: Sessions::new(conn.clone(), setup.config),
            auth: setup.auth,
        })
    });
    let adapter = match &webtransport {
        Some(wt) => H3Connection::new(conn).with_webtransport(wt.sessions.clone()),
        None => H3Connection::new(conn),
    };
    let served = serve_h3(
        adapter,
        &builder,
        service,
        limits,
        draining,
        webtransport.clone(),
    )
    .await;
    if let Some(wt) = webtransport {
        let why = probe
            .close_reason()
            .unwrap_or(ConnectionError::LocallyClosed);
        wt.sessions.close_all(why);
    }
    served
}

/// What a connection needs to offer WebTransport.
pub struct WebTransportSetup {
    pub config: Rc<WebTransportConfig>,
    /// The HTTP/3 connection's peer, from which each session's identity starts.
    pub auth: std::sync::Arc<alknet_runtime::AuthContext>,
}

async fn serve_h3<S, ResBody>(
    adapter: H3Connection,
    builder: &h3::server::Builder,
    service: S,
    limits: Rc<H3Limits>,
    draining: Option<DrainProbe>,
    webtransport: Option<Rc<WebTransportContext>>,
) -> Result<(), ServeError>
where
    S: Service<H3Request, Response = Response<ResBody>, Error = Infallible> + Clone + 'static,
    S::Future: 'static,
    ResBody: Body<Data = Bytes> + 'static,
    ResBody::Error: std::fmt::Display,
{
    let probe = adapter.connection().clone();
    let mut h3_conn = builder
        .build::<_, Bytes>(adapter)
        .await
        .map_err(ServeError::Setup)?;
    let slots = Rc::new(RequestSlots::default());
    // the probe, until GOAWAY is sent
    let mut draining = draining;
    // one timer for the connection's drain checks, re-armed when it fires: a fresh sleep
    // per accepted request would insert into and remove from the timer wheel every time
    let mut drain_tick = Box::pin(monoio::time::sleep(DRAIN_CHECK));
    loop {
        poll_fn(|cx| slots.poll_free(cx, limits.max_concurrent_requests)).await;
        let accepted = match &draining {
            None => Some(h3_conn.accept().await),
            // h3's accept polls for the next request stream: dropping it loses nothing
            Some(_) => {
                let mut accept = std::pin::pin!(h3_conn.accept());
                poll_fn(|cx| {
                    if let Poll::Ready(r) = accept.as_mut().poll(cx) {
                        return Poll::Ready(Some(r));
                    }
                    if drain_tick.as_mut().poll(cx).is_ready() {
                        drain_tick
                            .as_mut()
                            .reset(monoio::time::Instant::now() + DRAIN_CHECK);
                        return Poll::Ready(None);
                    }
                    Poll::Pending
                })
                .await
            }
        };
        let Some(accepted) = accepted else {
            if draining.as_ref().is_some_and(|d| d()) {
                draining = None;
                // GOAWAY with the id after the last request taken: all of those are served
                if let Err(e) = h3_conn.shutdown(1).await {
                    tracing::debug!("h3 GOAWAY not sent: {e}");
                }
            }
            continue;
        };
        match accepted {
            Ok(Some(resolver)) => {
                let slot = RequestSlots::take(&slots);
                let service = service.clone();
                let limits = limits.clone();
                let webtransport = webtransport.clone();
                run_or_spawn_guarded("h3 request", async move {
                    serve_request(resolver, service, &limits, webtransport, slot).await;
                });
            }
            Ok(None) => return Ok(()),
            Err(e) if e.is_h3_no_error() => return Ok(()),
            Err(e) => {
                // the client's close (with whatever code it chose), an idle timeout or a
                // reset: nothing was wrong on our side
                if let Some(
                    ConnectionError::ApplicationClosed(_)
                    | ConnectionError::ConnectionClosed(_)
                    | ConnectionError::TimedOut
                    | ConnectionError::Reset,
                ) = probe.close_reason()
                {
                    tracing::debug!("h3 connection ended by the client: {e}");
                    return Ok(());
                }
                // h3 has already closed the connection with the matching HTTP/3 code
                return Err(ServeError::Connection(e));
            }
        }
    }
}

async fn serve_request<S, ResBody>(
    mut resolver: Resolver,
    mut service: S,
    limits: &H3Limits,
    webtransport: Option<Rc<WebTransportContext>>,
    slot: SlotGuard,
) where
    S: Service<H3Request, Response = Response<ResBody>, Error = Infallible>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: std::fmt::Display,
{
    // h3's `resolve_request` does these three steps in one future of ~3.4 KB that would
    // sit inside this one and make every request's future that large (it is moved when
    // the request is spawned, and memmove was ~10 % of the server's samples): here the
    // HEADERS frame is awaited by a poll of the frame stream, decoded without awaiting
    // (`accept_with_frame`), and `resolve`, which awaits only to send a 431, is boxed
    let frame = match timeout_if_pending(
        limits.header_timeout,
        poll_fn(|cx| resolver.frame_stream.poll_next(cx)),
    )
    .await
    {
        Ok(frame) => frame,
        Err(_elapsed) => {
            // the resolver (and its stream) is dropped here; the stream's drop stops
            // reading and finishes, so tell the client why first
            tracing::debug!(
                "h3 request headers not complete in {:?}",
                limits.header_timeout
            );
            return;
        }
    };
    let resolved = match resolver.accept_with_frame(frame) {
        Ok(resolved) => Box::pin(resolved.resolve()).await,
        Err(e) => Err(e),
    };
    let (req, stream) = match resolved {
        // 431 for oversized headers is sent by h3 itself before this error
        Err(e) => {
            tracing::debug!("h3 request refused: {e}");
            return;
        }
        Ok(r) => r,
    };
    if req.method() == http::Method::CONNECT
        && req.extensions().get::<h3::ext::Protocol>() == Some(&h3::ext::Protocol::WEB_TRANSPORT)
    {
        // rare paths, boxed so that their futures do not size every request's
        match webtransport {
            // a session is not a request: it holds no request slot for its life (the
            // sessions per connection have their own limit)
            Some(ctx) => {
                drop(slot);
                Box::pin(serve_session(req, stream, ctx)).await;
            }
            None => {
                let mut stream = stream;
                Box::pin(respond_status(&mut stream, StatusCode::NOT_IMPLEMENTED)).await;
            }
        }
        return;
    }
    let _slot = slot;
    let (mut send, mut recv) = stream.split();

    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        recv.stop_sending(Code::H3_NO_ERROR);
        Box::pin(respond_status(&mut send, StatusCode::PAYLOAD_TOO_LARGE)).await;
        return;
    }

    // one look at the stream: a request whose FIN came with its headers (most GETs) has
    // an empty body and needs no bridge (see `body`)
    let first = poll_fn(|cx| Poll::Ready(recv.poll_recv_data(cx))).await;
    let (max, idle) = (limits.max_body_bytes, limits.body_idle_timeout);
    let req = match first {
        Poll::Ready(Ok(None)) => req.map(|()| axum::body::Body::empty()),
        first => {
            let (body, tx) = body::channel(limits.body_channel_chunks, declared);
            match first {
                Poll::Ready(Err(e)) => {
                    // what the pump does with a failed stream: the router sees the error
                    let _ = tx.try_send(Err(body::BodyError::Stream(e.to_string())));
                }
                first => {
                    let first = match first {
                        Poll::Ready(Ok(Some(mut buf))) => Some(buf.copy_to_bytes(buf.remaining())),
                        _ => None,
                    };
                    spawn_guarded("h3 request body", async move {
                        match body::pump(&mut recv, tx, first, max, idle).await {
                            PumpEnd::Finished | PumpEnd::Failed => {}
                            PumpEnd::Abandoned | PumpEnd::TooLarge => {
                                recv.stop_sending(Code::H3_NO_ERROR)
                            }
                            PumpEnd::Idle => recv.stop_sending(Code::H3_REQUEST_CANCELLED),
                        }
                    });
                }
            }
            let limited = Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX));
            req.map(|()| axum::body::Body::new(limited))
        }
    };

    // the deadline's timer is armed only if the service does not answer at once (and is
    // not held inline: monoio's `Sleep` is 128-byte aligned and would pad this future)
    let response = match timeout_if_pending(limits.request_timeout, async {
        poll_fn(|cx| service.poll_ready(cx)).await?;
        service.call(req).await
    })
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(never)) => match never {},
        Err(_elapsed) => {
            Box::pin(respond_status(&mut send, StatusCode::GATEWAY_TIMEOUT)).await;
            return;
        }
    };
    let (parts, body) = response.into_parts();
    if let Err(e) = send.send_response(Response::from_parts(parts, ())).await {
        tracing::debug!("h3 response head not sent: {e}");
        return;
    }
    if let Err(e) = stream_body(&mut send, body, limits).await {
        tracing::debug!("h3 response body ended early: {e}");
        send.stop_stream(Code::H3_REQUEST_CANCELLED);
        return;
    }
    if let Err(e) = send.finish().await {
        tracing::debug!("h3 response not finished: {e}");
    }
}

/// Why a response body was cut short.
#[derive(Debug, thiserror::Error)]
enum BodyEnd {
    #[error("the service's body failed: {0}")]
    Service(String),
    #[error("stream: {0}")]
    Stream(#[from] h3::error::StreamError),
    #[error("the client took nothing for {0:?}")]
    Idle(std::time::Duration),
}

/// Streams `body` frame by frame; each DATA chunk goes out without a copy (see
/// [`offer_payload`]). Only the client's reading is under the idle timeout: a service may
/// take its time between chunks (server-sent events).
async fn stream_body<ResBody>(
    send: &mut RequestStream<H3SendStream, Bytes>,
    body: ResBody,
    limits: &H3Limits,
) -> Result<(), BodyEnd>
where
    ResBody: Body<Data = Bytes>,
    ResBody::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let idle = limits.body_idle_timeout;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyEnd::Service(e.to_string()))?;
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    continue;
                }
                offer_payload(&data);
                timeout_if_pending(idle, send.send_data(data))
                    .await
                    .map_err(|_| BodyEnd::Idle(idle))??;
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    timeout_if_pending(idle, send.send_trailers(trailers))
                        .await
                        .map_err(|_| BodyEnd::Idle(idle))??;
                }
            }
        }
    }
    Ok(())
}

/// A bodiless response with `status`, finishing the stream.
async fn respond_status<T: h3::quic::SendStream<Bytes>>(
    send: &mut RequestStream<T, Bytes>,
    status: StatusCode,
) {
    let head = Response::builder()
        .status(status)
        .body(())
        .expect("a status-only response is valid");
    if send.send_response(head).await.is_ok() {
        let _ = send.finish().await;
    }
}

/// Requests of one connection in flight, and the accept loop waiting for a free slot.
#[derive(Default)]
struct RequestSlots {
    busy: Cell<usize>,
    waiter: RefCell<Option<Waker>>,
}

impl RequestSlots {
    fn poll_free(&self, cx: &mut Context<'_>, max: usize) -> Poll<()> {
        if self.busy.get() < max {
            return Poll::Ready(());
        }
        *self.waiter.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }

    fn take(this: &Rc<Self>) -> SlotGuard {
        this.busy.set(this.busy.get() + 1);
        SlotGuard(this.clone())
    }
}

/// One request's slot, released when its task ends (normally or by a panic).
struct SlotGuard(Rc<RequestSlots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.busy.set(self.0.busy.get() - 1);
        if let Some(w) = self.0.waiter.borrow_mut().take() {
            w.wake();
        }
    }
}
