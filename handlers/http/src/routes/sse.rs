//! Server-Sent Events (`text/event-stream`): `GET /api/events/{topic}` subscribes to a topic
//! of the call node's topic bus, and `POST /api/call/{operationId}` of a streaming
//! operation answers with its items.
//!
//! A worker task produces the frames (it owns the subscription or runs the operation) and
//! hands them through a channel of `sse_buffer_frames` to the response body, which is
//! `Send` as axum wants. The body adds a `: keep-alive` comment after `sse_keep_alive_ms`
//! without a frame and ends when the node drains (so a graceful shutdown does not wait for
//! streams that never end). Memory per stream is bounded: the channel, plus the topic's
//! `sse_queue_events` queue, past which a subscriber gets `event: lagged` and is closed
//! (see `limits.rs` for why closed rather than skipped). `sse_max_streams` bounds the
//! streams of the node.
//!
//! Frames:
//! - topic event: `id: <seq>` (the topic's publish sequence number) and
//!   `data: <the published JSON>` (the default `message` event type, so an `EventSource`'s
//!   `onmessage` gets it);
//! - `event: lagged` with `data: {"capacity": N}`: the subscriber fell N events behind and
//!   the stream ends;
//! - operation item: `event: item`, `id: <n>` (0, 1, …), `data: <item JSON>`; then
//!   `event: end` (`data: {}`) or `event: error` (`data: {"code", "message"}`) last. A
//!   failure before the first item (unknown operation, denied, bad input) is a plain JSON
//!   error response with its status instead.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use alknet_proto::call::ErrorCode;
use alknet_runtime::rt::spawn_guarded;
use alknet_runtime::{
    Identity, ItemOutlet, LocalBoxFuture, OperationFailure, OperationInvoker, OutletClosed,
    TopicDelivery,
};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::auth::{request_identity, ConnInfo};
use crate::routes::error_response;
use crate::rt::WorkerSleep;
use crate::HttpState;

/// The content type of every SSE response.
pub const CONTENT_TYPE: &str = "text/event-stream";
/// What an idle stream sends every `sse_keep_alive_ms`.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
/// The first bytes of a topic stream: once a client reads them, it is subscribed.
pub const SUBSCRIBED: &[u8] = b": subscribed\n\n";
/// How often an idle stream looks whether the node drains.
const DRAIN_CHECK: Duration = Duration::from_secs(1);

/// Once a stream sees the node draining, it ends this much later: by then its connection's
/// own drain check (`tcp.rs`'s `WATCH_INTERVAL` for HTTP/1.1 and HTTP/2, `h3::serve`'s
/// `DRAIN_CHECK` for HTTP/3, whichever is longer) has sent GOAWAY, so a client learns that
/// the node is going before its event stream ends, and reconnects elsewhere rather than
/// here. Without it the two checks raced, and a stream could end first (a CI run saw
/// `nghttp` close the connection before the server's GOAWAY).
const DRAIN_END_DELAY: Duration = {
    let (tcp, h3) = (crate::tcp::WATCH_INTERVAL, crate::h3::serve::DRAIN_CHECK);
    if tcp.as_nanos() > h3.as_nanos() {
        tcp
    } else {
        h3
    }
};

/// One SSE frame. `data` must be one line (compact JSON is).
pub fn frame(event: Option<&str>, id: Option<u64>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(event) = event {
        out.push_str("event: ");
        out.push_str(event);
        out.push('\n');
    }
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(&id.to_string());
        out.push('\n');
    }
    // a line break inside `data` would end the field: each line gets its own `data:`
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// One of the node's `sse_max_streams`; released when dropped (with the response body).
pub(crate) struct StreamSlot(HttpState);

impl StreamSlot {
    pub(crate) fn take(state: &HttpState) -> Option<Self> {
        let open = &state.metrics.sse_open;
        if open.inc() >= i64::try_from(state.config.sse_max_streams).unwrap_or(i64::MAX) {
            open.dec();
            return None;
        }
        Some(Self(state.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.metrics.sse_open.dec();
    }
}

/// The response body of an SSE stream: the producer's frames, keep-alive comments while
/// idle; ends when the producer is done or the node drains.
struct SseBody {
    frames: mpsc::Receiver<Bytes>,
    sleep: WorkerSleep,
    last_sent: Instant,
    /// When this stream first saw the node draining (it ends [`DRAIN_END_DELAY`] later).
    drain_seen: Option<Instant>,
    state: HttpState,
    _slot: StreamSlot,
}

impl Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.frames.poll_recv(cx) {
            Poll::Ready(Some(frame)) => {
                this.last_sent = Instant::now();
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        loop {
            let now = Instant::now();
            if this.drain_seen.is_none() && this.state.status().is_some_and(|s| s.draining()) {
                this.drain_seen = Some(now);
            }
            let end_at = this.drain_seen.map(|seen| seen + DRAIN_END_DELAY);
            if end_at.is_some_and(|end| now >= end) {
                return Poll::Ready(None);
            }
            let keep_alive_at = this.last_sent + this.state.config.sse_keep_alive;
            if now >= keep_alive_at {
                this.last_sent = now;
                return Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE))));
            }
            let wake = keep_alive_at.min(end_at.unwrap_or(now + DRAIN_CHECK));
            this.sleep.reset(wake);
            match Pin::new(&mut this.sleep).poll(cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

pub(crate) fn sse_response(
    state: &HttpState,
    frames: mpsc::Receiver<Bytes>,
    slot: StreamSlot,
) -> Response {
    let now = Instant::now();
    let body = SseBody {
        frames,
        sleep: WorkerSleep::until(now),
        last_sent: now,
        drain_seen: None,
        state: state.clone(),
        _slot: slot,
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-cache"),
            // nginx and friends: do not buffer the stream
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

pub(crate) fn too_many(state: &HttpState) -> Response {
    error_response(
        ErrorCode::Unavailable,
        format!(
            "sse_max_streams ({}) streams are open",
            state.config.sse_max_streams
        ),
    )
}

/// `GET /api/events/{topic}`: the topic's events as they are published, under the ACL of
/// the call handler's `subscribe` (the topic's scopes, by default `subscribe:<topic>`).
pub async fn events(
    State(state): State<HttpState>,
    Path(topic): Path<String>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
) -> Response {
    let Some(invoker) = state.invoker.clone() else {
        return error_response(ErrorCode::NotFound, "no topics on this node");
    };
    let identity = match request_identity(conn.as_deref(), &headers) {
        Ok(i) => i,
        Err(e) => return error_response(ErrorCode::Unauthenticated, e.to_string()),
    };
    let Some(slot) = StreamSlot::take(&state) else {
        return too_many(&state);
    };
    let mut sub = match invoker.subscribe(identity.as_ref(), &topic, state.config.sse_queue_events)
    {
        Ok(s) => s,
        Err(f) => return error_response(f.code, f.message),
    };
    let (tx, rx) = mpsc::channel(state.config.sse_buffer_frames);
    // capacity >= 1 (validated), and nothing else has sent yet
    let _ = tx.try_send(Bytes::from_static(SUBSCRIBED));
    let metrics = state.metrics.clone();
    spawn_guarded("http sse topic", async move {
        loop {
            let delivery = monoio::select! {
                d = sub.next() => d,
                _ = tx.closed() => break,
            };
            let (frame, last) = match delivery {
                TopicDelivery::Event { seq, data } => {
                    (frame(None, Some(seq), &data.to_string()), false)
                }
                TopicDelivery::Lagged { capacity } => {
                    metrics.sse_lagged.inc();
                    let data = json!({ "capacity": capacity }).to_string();
                    (frame(Some("lagged"), None, &data), true)
                }
                TopicDelivery::Closed => break,
            };
            if tx.send(frame).await.is_err() || last {
                break;
            }
        }
        // dropping `sub` unsubscribes
    });
    sse_response(&state, rx, slot)
}

/// Tells the route how a streaming operation started: `Ok` at its first item (or its end
/// without items), `Err` when it failed before any.
type StartSender = futures_channel::oneshot::Sender<Result<(), OperationFailure>>;

/// Hands a streaming operation's items to the SSE stream; the first one (or the end)
/// tells the route to answer 200 with the stream.
struct SseOutlet {
    frames: mpsc::Sender<Bytes>,
    started: Rc<RefCell<Option<StartSender>>>,
    seq: u64,
}

impl ItemOutlet for SseOutlet {
    fn send(&mut self, item: Value) -> LocalBoxFuture<'_, Result<(), OutletClosed>> {
        Box::pin(async move {
            if let Some(started) = self.started.borrow_mut().take() {
                let _ = started.send(Ok(()));
            }
            let f = frame(Some("item"), Some(self.seq), &item.to_string());
            self.seq += 1;
            self.frames.send(f).await.map_err(|_| OutletClosed)
        })
    }
}

/// `POST /api/call/{operationId}` of a streaming operation: runs it on this worker, its
/// items as SSE.
pub async fn call_stream(
    state: &HttpState,
    invoker: Arc<dyn OperationInvoker>,
    identity: Option<Identity>,
    remote: SocketAddr,
    operation: String,
    input: Value,
) -> Response {
    let Some(slot) = StreamSlot::take(state) else {
        return too_many(state);
    };
    let (tx, rx) = mpsc::channel(state.config.sse_buffer_frames);
    let (started_tx, started_rx) = futures_channel::oneshot::channel();
    spawn_guarded("http sse call", async move {
        let started = Rc::new(RefCell::new(Some(started_tx)));
        let outlet = SseOutlet {
            frames: tx.clone(),
            started: started.clone(),
            seq: 0,
        };
        let result = invoker
            .invoke_stream(identity, remote, &operation, input, Box::new(outlet))
            .await;
        let before_first_item = started.borrow_mut().take();
        let end = match result {
            Err(f) => {
                if let Some(started) = before_first_item {
                    // the route answers with a plain error response
                    let _ = started.send(Err(f));
                    return;
                }
                let data = json!({ "code": f.code.as_str(), "message": f.message });
                frame(Some("error"), None, &data.to_string())
            }
            Ok(()) => {
                if let Some(started) = before_first_item {
                    let _ = started.send(Ok(()));
                }
                frame(Some("end"), None, "{}")
            }
        };
        let _ = tx.send(end).await;
    });
    match started_rx.await {
        Ok(Ok(())) => sse_response(state, rx, slot),
        Ok(Err(f)) => error_response(f.code, f.message),
        // the task panicked
        Err(_) => error_response(ErrorCode::Internal, "the operation ended without an answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_the_event_stream_format() {
        assert_eq!(
            &frame(None, Some(7), "{\"a\":1}")[..],
            b"id: 7\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(
            &frame(Some("end"), None, "{}")[..],
            b"event: end\ndata: {}\n\n"
        );
        // a line break cannot end the event early
        assert_eq!(
            &frame(Some("x"), None, "a\r\nb\nc")[..],
            b"event: x\ndata: a\ndata: b\ndata: c\n\n"
        );
    }
}
