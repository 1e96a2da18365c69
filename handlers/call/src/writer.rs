//! The write half of one call stream, shared by every request task answering on it.
//!
//! Responders queue encoded frames; one writer task drains whatever is queued into a
//! single gathered write, so many small responses cost one stream write, not one each.
//! The queue is bounded in bytes: at the bound, responders wait for the peer to read.
//! When the last handle is dropped (the reader saw the peer finish and every request on
//! the stream has answered) the stream is finished.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use alknet_proto::call::EventEnvelope;
use alknet_runtime::rt::spawn_guarded;
use alknet_runtime::{Bytes, SendStream, VarInt};

/// The stream can take no more frames (the peer stopped it, the connection closed, or it
/// was reset after a framing error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("call stream closed")]
pub struct StreamClosed;

struct State {
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    limit: usize,
    handles: usize,
    closed: bool,
    reset: Option<VarInt>,
    writer: Option<Waker>,
    blocked: Vec<Waker>,
}

/// A handle on the write half; cloning it keeps the stream open.
pub struct StreamWriter {
    state: Rc<RefCell<State>>,
}

impl Clone for StreamWriter {
    fn clone(&self) -> Self {
        self.state.borrow_mut().handles += 1;
        Self {
            state: self.state.clone(),
        }
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        let mut st = self.state.borrow_mut();
        st.handles -= 1;
        if st.handles == 0 {
            if let Some(w) = st.writer.take() {
                w.wake();
            }
        }
    }
}

impl StreamWriter {
    /// Starts the writer task for `send` with a queue bound of `limit` bytes.
    pub fn spawn(mut send: SendStream, limit: usize) -> Self {
        let state = Rc::new(RefCell::new(State {
            queue: VecDeque::new(),
            queued_bytes: 0,
            limit,
            handles: 1,
            closed: false,
            reset: None,
            writer: None,
            blocked: Vec::new(),
        }));
        let task_state = state.clone();
        spawn_guarded("call stream writer", async move {
            let mut batch: Vec<Bytes> = Vec::new();
            loop {
                let more = poll_fn(|cx| {
                    let mut st = task_state.borrow_mut();
                    if st.reset.is_none() && !st.queue.is_empty() {
                        batch.extend(st.queue.drain(..));
                        st.queued_bytes = 0;
                        for w in st.blocked.drain(..) {
                            w.wake();
                        }
                        return Poll::Ready(true);
                    }
                    if st.handles == 0 || st.reset.is_some() {
                        return Poll::Ready(false);
                    }
                    st.writer = Some(cx.waker().clone());
                    Poll::Pending
                })
                .await;
                if !more {
                    break;
                }
                if let Err(e) = send.write_all_chunks(&mut batch).await {
                    tracing::debug!("call stream write failed: {e}");
                    close(&task_state);
                    return;
                }
                batch.clear();
            }
            let reset = task_state.borrow().reset;
            match reset {
                Some(code) => {
                    let _ = send.reset(code);
                }
                None => {
                    let _ = send.finish();
                }
            }
            close(&task_state);
        });
        Self { state }
    }

    /// Queues one encoded frame, waiting while the queue is at its bound.
    pub async fn send(&self, frame: Bytes) -> Result<(), StreamClosed> {
        let mut frame = Some(frame);
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if st.closed || st.reset.is_some() {
                return Poll::Ready(Err(StreamClosed));
            }
            // an empty queue takes any one frame, so a frame above the bound still goes
            if st.queued_bytes >= st.limit && !st.queue.is_empty() {
                st.blocked.push(cx.waker().clone());
                return Poll::Pending;
            }
            if let Some(f) = frame.take() {
                st.queued_bytes += f.len();
                st.queue.push_back(f);
                if let Some(w) = st.writer.take() {
                    w.wake();
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Encodes and queues an envelope.
    pub async fn send_envelope(&self, env: &EventEnvelope) -> Result<(), StreamClosed> {
        match env.encode() {
            Ok(frame) => self.send(frame).await,
            Err(e) => {
                // only a body over 4 GiB cannot be framed; max_frame_size is far below
                tracing::error!("cannot encode {:?} frame: {e}", env.kind);
                Err(StreamClosed)
            }
        }
    }

    /// Drops what is queued and resets the stream with `code` (after a framing error).
    pub fn reset(&self, code: VarInt) {
        let mut st = self.state.borrow_mut();
        st.reset = Some(code);
        st.queue.clear();
        st.queued_bytes = 0;
        if let Some(w) = st.writer.take() {
            w.wake();
        }
        for w in st.blocked.drain(..) {
            w.wake();
        }
    }
}

fn close(state: &Rc<RefCell<State>>) {
    let mut st = state.borrow_mut();
    st.closed = true;
    st.queue.clear();
    st.queued_bytes = 0;
    for w in st.blocked.drain(..) {
        w.wake();
    }
}
