//! QUIC streams (the [`super::SendStream`]/[`super::RecvStream`] QUIC variants). Data moves as `bytes::Bytes`: received chunks are slices of
//! the decrypted packet buffers, and written `Bytes` are queued without copying. Flow
//! control is quinn-proto's: nothing here buffers beyond its windows, so a reader that
//! stops reading stops the peer.

use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use quinn_proto::{ClosedStream, ConnectionError, FinishError, StreamId, VarInt, Written};

use super::{ReadError, WriteError, STREAM_PANIC_CODE};
use crate::connection::ConnectionRef;

/// The sending half of a QUIC stream.
pub(crate) struct QuicSend {
    conn: ConnectionRef,
    id: StreamId,
    /// finish() or reset() was called: nothing to do on drop.
    closed: bool,
}

impl QuicSend {
    pub(crate) fn new(conn: ConnectionRef, id: StreamId) -> Self {
        Self {
            conn,
            id,
            closed: false,
        }
    }

    pub(crate) fn id(&self) -> StreamId {
        self.id
    }

    pub(crate) fn stall_timeout(&self) -> std::time::Duration {
        self.conn.0.send_stall_timeout
    }

    pub(crate) fn count_stall(&self) {
        crate::stats::WorkerStats::add(&self.conn.0.stats.streams_stalled, 1);
    }

    fn poll_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut quinn_proto::SendStream<'_>) -> Result<R, quinn_proto::WriteError>,
    ) -> Poll<Result<R, WriteError>> {
        let mut st = self.conn.state.borrow_mut();
        if let Some(e) = &st.error {
            return Poll::Ready(Err(WriteError::ConnectionLost(e.clone())));
        }
        match f(&mut st.conn.send_stream(self.id)) {
            Ok(r) => {
                drop(st);
                self.conn.0.wake_driver();
                Poll::Ready(Ok(r))
            }
            Err(quinn_proto::WriteError::Blocked) => {
                st.writers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Err(quinn_proto::WriteError::Stopped(code)) => {
                Poll::Ready(Err(WriteError::Stopped(code)))
            }
            Err(quinn_proto::WriteError::ClosedStream) => {
                Poll::Ready(Err(WriteError::ClosedStream))
            }
        }
    }

    /// Writes some of `data` (copied into the send buffer); returns how much.
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<Result<usize, WriteError>> {
        self.poll_with(cx, |s| s.write(data))
    }

    /// Poll form of [`SendStream::write_chunks`](super::SendStream::write_chunks), for
    /// poll-based adapters (HTTP/3).
    pub(crate) fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut [Bytes],
    ) -> Poll<Result<Written, WriteError>> {
        self.poll_with(cx, |s| s.write_chunks(chunks))
    }

    /// Ends the stream after what was written. Delivery is not awaited: see
    /// [`SendStream::stopped`](super::SendStream::stopped).
    pub(crate) fn finish(&mut self) -> Result<(), ClosedStream> {
        let res = self
            .conn
            .state
            .borrow_mut()
            .conn
            .send_stream(self.id)
            .finish();
        self.closed = true;
        self.conn.0.wake_driver();
        match res {
            Ok(()) => Ok(()),
            Err(FinishError::Stopped(_)) => Ok(()),
            Err(FinishError::ClosedStream) => Err(ClosedStream::default()),
        }
    }

    /// Abandons the stream: unsent data is discarded and the peer sees `code`.
    pub(crate) fn reset(&mut self, code: VarInt) -> Result<(), ClosedStream> {
        let res = {
            let mut st = self.conn.state.borrow_mut();
            // a write that waited (a stall) left its waker; nothing waits on a reset stream
            st.writers.remove(&self.id);
            st.conn.send_stream(self.id).reset(code)
        };
        self.closed = true;
        self.conn.0.wake_driver();
        res
    }

    /// Poll form of [`SendStream::stopped`](super::SendStream::stopped).
    pub(crate) fn poll_stopped(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<VarInt>, ConnectionError>> {
        let mut st = self.conn.state.borrow_mut();
        match st.conn.send_stream(self.id).stopped() {
            Err(_) => Poll::Ready(Ok(None)),
            Ok(Some(code)) => Poll::Ready(Ok(Some(code))),
            Ok(None) => {
                if let Some(e) = &st.error {
                    return Poll::Ready(Err(e.clone()));
                }
                st.stopped.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Relative priority among this connection's streams (higher is sent first).
    pub(crate) fn set_priority(&mut self, priority: i32) -> Result<(), ClosedStream> {
        self.conn
            .state
            .borrow_mut()
            .conn
            .send_stream(self.id)
            .set_priority(priority)
    }
}

impl Drop for QuicSend {
    /// Finishes the stream, as quinn does; resets it instead when dropped by a panic, so
    /// the peer never mistakes a truncated stream for a complete one.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let mut st = self.conn.state.borrow_mut();
        if st.error.is_some() {
            return;
        }
        let mut s = st.conn.send_stream(self.id);
        let changed = if crate::rt::dropping_panicked_task() {
            s.reset(VarInt::from_u32(STREAM_PANIC_CODE)).is_ok()
        } else {
            match s.finish() {
                Ok(()) => true,
                Err(FinishError::Stopped(code)) => s.reset(code).is_ok(),
                Err(FinishError::ClosedStream) => false,
            }
        };
        drop(st);
        if changed {
            self.conn.0.wake_driver();
        }
    }
}

/// The receiving half of a QUIC stream.
pub(crate) struct QuicRecv {
    conn: ConnectionRef,
    id: StreamId,
    /// FIN seen, reset seen, or stop() called: nothing to do on drop.
    done: bool,
    reset: Option<VarInt>,
    /// A chunk taken from quinn-proto ahead of the reader (see
    /// [`RecvStream::read_chunk`](super::RecvStream::read_chunk)), returned by the next read
    /// before anything else. At most one.
    stashed: Option<Bytes>,
}

impl QuicRecv {
    pub(crate) fn new(conn: ConnectionRef, id: StreamId) -> Self {
        Self {
            conn,
            id,
            done: false,
            reset: None,
            stashed: None,
        }
    }

    /// The stashed chunk, or its first `max` bytes.
    fn take_stashed(&mut self, max: usize) -> Option<Bytes> {
        let mut chunk = self.stashed.take()?;
        if chunk.len() > max {
            let head = chunk.split_to(max);
            self.stashed = Some(chunk);
            return Some(head);
        }
        Some(chunk)
    }

    pub(crate) fn id(&self) -> StreamId {
        self.id
    }

    /// Poll form of [`RecvStream::read_chunk`](super::RecvStream::read_chunk), for
    /// poll-based adapters (HTTP/3).
    pub(crate) fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        self.poll_read_with(cx, max, |chunks, stashed| match chunks.next(max) {
            Ok(Some(chunk)) => {
                // Look one step further in the same pass. Each pass takes the stream's
                // state out of quinn-proto's map and puts it back (and settles credit): a
                // request that arrived whole, data and FIN in one packet, then costs one
                // pass instead of two, and in a long stream every other read is served
                // from the stash.
                let end = match chunks.next(usize::MAX) {
                    Ok(Some(more)) => {
                        *stashed = Some(more.bytes);
                        None
                    }
                    other => end_of(other),
                };
                (Some(chunk.bytes), end)
            }
            other => (None, end_of(other)),
        })
    }

    /// Poll form of [`RecvStream::read_available`](super::RecvStream::read_available).
    pub(crate) fn poll_read_available(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        self.poll_read_with(cx, max, |chunks, stashed| {
            let mut batch = Batch::Empty;
            let end = loop {
                let room = max.saturating_sub(batch.len());
                if room == 0 || matches!(&batch, Batch::One(b) if b.len() >= UNMERGED_CHUNK) {
                    break None;
                }
                match chunks.next(room) {
                    // a large chunk behind data already taken is not copied into a merged
                    // batch: it waits in the stash for the next call, which returns it as
                    // it is
                    Ok(Some(chunk)) if chunk.bytes.len() >= UNMERGED_CHUNK && batch.len() > 0 => {
                        *stashed = Some(chunk.bytes);
                        break None;
                    }
                    Ok(Some(chunk)) => batch.push(chunk.bytes),
                    other => break end_of(other),
                }
            };
            (batch.into_bytes(), end)
        })
    }

    /// What both reads share: the stash first (left by a read that looked ahead or met a
    /// large chunk), then an end already seen; else one pass over quinn-proto's stream, in
    /// which `take` returns the data it took (or none) and how the stream ends behind it
    /// (`None`: it goes on, or is blocked; `Some(Err(code))`: reset), and may stash one
    /// chunk for the next call. With no data and no end the reader waits for the driver.
    #[inline(always)]
    fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        take: impl FnOnce(
            &mut quinn_proto::Chunks<'_>,
            &mut Option<Bytes>,
        ) -> (Option<Bytes>, StreamEnd),
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        if let Some(chunk) = self.take_stashed(max) {
            return Poll::Ready(Ok(Some(chunk)));
        }
        if let Some(code) = self.reset {
            return Poll::Ready(Err(ReadError::Reset(code)));
        }
        if self.done {
            return Poll::Ready(Ok(None));
        }
        let mut guard = self.conn.state.borrow_mut();
        let st = &mut *guard;
        let mut recv = st.conn.recv_stream(self.id);
        let mut chunks = match recv.read(true) {
            Ok(c) => c,
            Err(_) => return Poll::Ready(Err(ReadError::ClosedStream)),
        };
        let (data, end) = take(&mut chunks, &mut self.stashed);
        let transmit = chunks.finalize().should_transmit();
        if let Some(how) = end {
            // reported by the next call when data comes first
            self.done = true;
            self.reset = how.err();
        }
        let out = match (data, end) {
            (Some(data), _) => Poll::Ready(Ok(Some(data))),
            (None, Some(Ok(()))) => Poll::Ready(Ok(None)),
            (None, Some(Err(code))) => Poll::Ready(Err(ReadError::Reset(code))),
            (None, None) => match &st.error {
                Some(e) => Poll::Ready(Err(ReadError::ConnectionLost(e.clone()))),
                None => {
                    st.readers.insert(self.id, cx.waker().clone());
                    Poll::Pending
                }
            },
        };
        drop(guard);
        if transmit {
            // flow-control credit (MAX_STREAM_DATA) is due
            self.conn.0.wake_driver();
        }
        out
    }

    /// Tells the peer to stop sending; unread data is discarded.
    pub(crate) fn stop(&mut self, code: VarInt) -> Result<(), ClosedStream> {
        self.done = true;
        self.stashed = None;
        let res = self
            .conn
            .state
            .borrow_mut()
            .conn
            .recv_stream(self.id)
            .stop(code);
        self.conn.0.wake_driver();
        res
    }
}

impl Drop for QuicRecv {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let stopped = {
            let mut st = self.conn.state.borrow_mut();
            st.error.is_none()
                && st
                    .conn
                    .recv_stream(self.id)
                    .stop(VarInt::from_u32(0))
                    .is_ok()
        };
        if stopped {
            self.conn.0.wake_driver();
        }
    }
}

/// How a stream ends behind the data a read took: `None`, it goes on (or is blocked);
/// `Some(Ok(()))`, FIN; `Some(Err(code))`, reset by the peer.
type StreamEnd = Option<Result<(), VarInt>>;

/// The end a quinn-proto read result stands for. Callers take data (`Ok(Some(_))`)
/// before they ask, so a chunk here stands for no end. quinn-proto resets only empty
/// buffers: a reset is never behind data still unread.
fn end_of(r: Result<Option<quinn_proto::Chunk>, quinn_proto::ReadError>) -> StreamEnd {
    match r {
        Ok(Some(_)) | Err(quinn_proto::ReadError::Blocked) => None,
        Ok(None) => Some(Ok(())),
        Err(quinn_proto::ReadError::Reset(code)) => Some(Err(code)),
    }
}

/// The chunks taken by one [`RecvStream::read_available`](super::RecvStream::read_available):
/// the first is kept as it is, a second starts a copy (only chunks under
/// [`UNMERGED_CHUNK`] are merged).
enum Batch {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Batch::Empty => 0,
            Batch::One(b) => b.len(),
            Batch::Many(b) => b.len(),
        }
    }

    fn push(&mut self, chunk: Bytes) {
        *self = match std::mem::replace(self, Batch::Empty) {
            Batch::Empty => Batch::One(chunk),
            Batch::One(first) => {
                let mut buf =
                    BytesMut::with_capacity(BATCH_CAPACITY.max(first.len() + chunk.len()));
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&chunk);
                Batch::Many(buf)
            }
            Batch::Many(mut buf) => {
                buf.extend_from_slice(&chunk);
                Batch::Many(buf)
            }
        };
    }

    fn into_bytes(self) -> Option<Bytes> {
        match self {
            Batch::Empty => None,
            Batch::One(b) => Some(b),
            Batch::Many(b) => Some(b.freeze()),
        }
    }
}

/// A chunk at least this large (a STREAM frame of a large packet, as on a loopback path
/// with a 64 KiB MTU) is returned alone by `poll_read_available` rather than copied into a
/// merged batch with the chunks before or behind it: merging exists to spare a system call per
/// 1.2 KB packet, and a chunk this large costs more to copy than to pass on by itself.
pub const UNMERGED_CHUNK: usize = 16 * 1024;

/// First allocation of a merged batch (it grows past this when `max` allows).
const BATCH_CAPACITY: usize = 64 * 1024;
