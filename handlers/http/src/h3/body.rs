//! The request body bridge: the router wants a `Send` body, the request stream is
//! worker-local (`Rc` state inside the runtime).
//!
//! Design: one bounded `tokio::sync::mpsc` channel per request with a body. A task on the
//! worker reads DATA frames from the stream and sends each chunk, as the `Bytes` the QUIC
//! stream produced (no copy), into the channel; [`RequestBody`] is the receiving end and is
//! what the router reads. Why this and not something else:
//! - it is the pattern of `handlers/ssh/src/bridge.rs` (the one way to reach a `Send`
//!   world), and tokio's `sync` needs no tokio runtime;
//! - both ends run on the same worker thread (the router's future is polled by the request
//!   task), so the channel's atomics are never contended and its waiter list is only
//!   touched when one side actually waits; the packet path (the worker's driver and
//!   quinn-proto) never sees the channel at all;
//! - the bound ([`super::limits::DEFAULT_BODY_CHANNEL_CHUNKS`]) plus QUIC flow control is
//!   the memory bound: when the router stops reading, the pump stops reading the stream and
//!   the client's window closes.
//!
//! A request whose stream has already ended when its headers are parsed (no DATA before
//! FIN, e.g. most GETs: the FIN travels with the HEADERS frame) gets an empty body and no
//! bridge ([`super::serve`] polls the stream once): the channel (an aligned allocation of
//! a block of slots) and the pump task were, before, an eighth of the server's CPU per
//! `GET /health`. Only a request that may still send data pays for them.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use super::quic::H3RecvStream;

/// Why the request body ended early, as the router sees it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    #[error("request body stream failed: {0}")]
    Stream(String),
    #[error("no request body data for {0:?}")]
    Idle(std::time::Duration),
}

type Item = Result<Bytes, BodyError>;

/// The router's end of a request body: `Send`, fed by [`pump`] on the worker.
pub struct RequestBody {
    rx: mpsc::Receiver<Item>,
    /// `content-length` as declared, for the size hint.
    declared: Option<u64>,
    received: u64,
}

/// A body channel of `depth` chunks: the router's end and the worker's end.
pub fn channel(depth: usize, declared: Option<u64>) -> (RequestBody, mpsc::Sender<Item>) {
    let (tx, rx) = mpsc::channel(depth);
    (
        RequestBody {
            rx,
            declared,
            received: 0,
        },
        tx,
    )
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Ok(data))) => {
                self.received += data.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.declared == Some(0) || self.rx.is_closed() && self.rx.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.received)),
            None => SizeHint::default(),
        }
    }
}

/// What ended a [`pump`] run.
#[derive(Debug, PartialEq, Eq)]
pub enum PumpEnd {
    /// The client finished the body.
    Finished,
    /// The router dropped the body before its end (it did not want the rest).
    Abandoned,
    /// The body grew past `max` bytes.
    TooLarge,
    /// No data for the idle timeout.
    Idle,
    /// The stream failed (reset, connection lost, malformed frames).
    Failed,
}

/// Moves the request body from the stream into the channel until its end, the limit, the
/// idle timeout or the router's loss of interest. `max` is enforced here as well as by the
/// router's `Limited` wrapper so a body nobody reads to the end cannot keep the stream busy
/// past it.
/// `first` is a chunk already taken from the stream (by the poll that found the body not
/// empty); it goes first, under the same limit.
pub async fn pump(
    stream: &mut RequestStream<H3RecvStream, Bytes>,
    tx: mpsc::Sender<Item>,
    first: Option<Bytes>,
    max: u64,
    idle: std::time::Duration,
) -> PumpEnd {
    let mut total = 0u64;
    let mut first = first;
    loop {
        if let Some(chunk) = first.take() {
            total += chunk.len() as u64;
            if tx.send(Ok(chunk)).await.is_err() {
                return PumpEnd::Abandoned;
            }
            if total > max {
                return PumpEnd::TooLarge;
            }
            continue;
        }
        let next = match monoio::time::timeout(idle, stream.recv_data()).await {
            Err(_elapsed) => {
                let _ = tx.send(Err(BodyError::Idle(idle))).await;
                return PumpEnd::Idle;
            }
            Ok(next) => next,
        };
        let mut buf = match next {
            Ok(Some(buf)) => buf,
            Ok(None) => return PumpEnd::Finished,
            Err(e) => {
                let _ = tx.send(Err(BodyError::Stream(e.to_string()))).await;
                return PumpEnd::Failed;
            }
        };
        // a `Bytes` already: taking it whole does not copy
        let chunk = buf.copy_to_bytes(buf.remaining());
        total += chunk.len() as u64;
        let over = total > max;
        // the chunk that crosses the limit still goes to the router's `Limited` wrapper,
        // which turns it into a "length limit exceeded" error (axum: 413)
        if tx.send(Ok(chunk)).await.is_err() {
            return PumpEnd::Abandoned;
        }
        if over {
            return PumpEnd::TooLarge;
        }
    }
}
