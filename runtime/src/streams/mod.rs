//! Streams for handlers, whatever carries the connection: a QUIC stream (also a
//! WebTransport session's stream, which is a QUIC stream of its HTTP/3 connection) or the
//! one byte stream of a TLS/TCP connection. The QUIC path stays what it was: each call
//! costs one enum branch, nothing is boxed.
//!
//! Data moves as `bytes::Bytes`: QUIC chunks are slices of the decrypted packet buffers,
//! and written `Bytes` are queued without copying. Flow control is the carrier's (QUIC's
//! windows; on TCP a bounded buffer each way, [`crate::TcpLimits::stream_buffer`]), so a
//! reader that stops reading stops the peer.

use std::future::poll_fn;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use quinn_proto::{ClosedStream, ConnectionError, StreamId, VarInt, Written};

mod quic;
mod stall;

pub(crate) use quic::{QuicRecv, QuicSend};

use crate::tcp_connection::{TcpRecv, TcpSend};
use stall::StallWatch;

/// Errors writing to a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("the peer stopped the stream (error code {0})")]
    Stopped(VarInt),
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
    #[error("the stream was already finished or reset")]
    ClosedStream,
    /// The peer took nothing for the send stall timeout (`[limits] send_stall_timeout_ms`);
    /// the stream was reset with [`STREAM_STALLED_CODE`].
    #[error("the peer took no data for {0:?}; the stream was reset")]
    Stalled(Duration),
}

/// Errors reading from a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("the peer reset the stream (error code {0})")]
    Reset(VarInt),
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
    #[error("the stream was already stopped or fully read")]
    ClosedStream,
}

/// Errors reading a whole stream into memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadToEndError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the stream is longer than the {0}-byte limit")]
    TooLong(usize),
}

/// Application error code used when a stream is dropped while its task panics.
pub const STREAM_PANIC_CODE: u32 = 0x1;
/// Application error code of a stream reset because its peer took no data for the send
/// stall timeout (see [`WriteError::Stalled`]).
pub const STREAM_STALLED_CODE: u32 = 0x2;

/// What carries a sending half.
enum SendKind {
    Quic(QuicSend),
    Tcp(TcpSend),
}

/// The sending half of a stream. Dropping it finishes the stream (resets it when dropped
/// by a panicking task, so the peer never mistakes a truncated stream for a complete one).
/// A write the peer lets wait longer than the connection's send stall timeout fails with
/// [`WriteError::Stalled`] and resets the stream.
pub struct SendStream {
    kind: SendKind,
    stall: StallWatch,
}

impl From<QuicSend> for SendStream {
    fn from(s: QuicSend) -> Self {
        Self {
            stall: StallWatch::new(s.stall_timeout()),
            kind: SendKind::Quic(s),
        }
    }
}

impl From<TcpSend> for SendStream {
    fn from(s: TcpSend) -> Self {
        Self {
            stall: StallWatch::new(s.stall_timeout()),
            kind: SendKind::Tcp(s),
        }
    }
}

impl std::fmt::Debug for SendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            SendKind::Quic(s) => write!(f, "SendStream(quic {})", s.id()),
            SendKind::Tcp(_) => f.write_str("SendStream(tcp)"),
        }
    }
}

impl SendStream {
    /// The stream's ID (a TLS/TCP connection's one stream is client bidirectional 0).
    pub fn id(&self) -> StreamId {
        match &self.kind {
            SendKind::Quic(s) => s.id(),
            SendKind::Tcp(_) => crate::tcp_connection::tcp_stream_id(),
        }
    }

    /// Whether this is the byte stream of a TLS/TCP connection.
    pub fn is_tcp(&self) -> bool {
        matches!(self.kind, SendKind::Tcp(_))
    }

    /// How long a write may wait for a peer that takes no data before it fails with
    /// [`WriteError::Stalled`] (zero: for ever); the connection's `send_stall_timeout`
    /// until set. Zero is for a stream that carries a tunnel or an interactive session:
    /// its reader may rightly pause as long as it likes (a consumer that waits, a
    /// suspended terminal), and its liveness is watched by other means (QUIC's idle
    /// timeout and keep-alives, SSH's own).
    pub fn set_stall_timeout(&mut self, after: Duration) {
        self.stall.set(after);
    }

    /// Poll form of [`SendStream::write`].
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<Result<usize, WriteError>> {
        let res = match &mut self.kind {
            SendKind::Quic(s) => s.poll_write(cx, data),
            SendKind::Tcp(s) => s.poll_write(cx, data),
        };
        self.watch(cx, res)
    }

    /// Writes some of `data`, waiting for flow-control credit; returns how much.
    pub async fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        poll_fn(|cx| self.poll_write(cx, data)).await
    }

    /// Writes all of `data` (copying it once into the send buffer).
    pub async fn write_all(&mut self, mut data: &[u8]) -> Result<(), WriteError> {
        while !data.is_empty() {
            let n = self.write(data).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Queues as many of `chunks` as flow control allows, without copying. Fully written
    /// chunks are emptied; a partly written one is advanced past what was taken.
    pub async fn write_chunks(&mut self, chunks: &mut [Bytes]) -> Result<Written, WriteError> {
        poll_fn(|cx| self.poll_write_chunks(cx, chunks)).await
    }

    /// Poll form of [`SendStream::write_chunks`], for poll-based adapters (HTTP/3).
    pub fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut [Bytes],
    ) -> Poll<Result<Written, WriteError>> {
        let res = match &mut self.kind {
            SendKind::Quic(s) => s.poll_write_chunks(cx, chunks),
            SendKind::Tcp(s) => s.poll_write_chunks(cx, chunks),
        };
        self.watch(cx, res)
    }

    /// A write's outcome through the stall watch: a ready write restarts the clock; a
    /// waiting one fails, and resets the stream, once it has waited the whole timeout.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        res: Poll<Result<T, WriteError>>,
    ) -> Poll<Result<T, WriteError>> {
        if res.is_ready() {
            self.stall.progressed();
            return res;
        }
        let Poll::Ready(waited) = self.stall.poll_stalled(cx) else {
            return Poll::Pending;
        };
        tracing::debug!(stream = %self.id(), ?waited, "the peer took no data: stream reset");
        match &self.kind {
            SendKind::Quic(s) => s.count_stall(),
            SendKind::Tcp(s) => s.count_stall(),
        }
        let _ = self.reset(VarInt::from_u32(STREAM_STALLED_CODE));
        Poll::Ready(Err(WriteError::Stalled(waited)))
    }

    /// Queues all of `chunks` without copying.
    pub async fn write_all_chunks(&mut self, chunks: &mut [Bytes]) -> Result<(), WriteError> {
        let mut i = 0;
        while i < chunks.len() {
            if chunks[i].is_empty() {
                i += 1;
                continue;
            }
            let written = self.write_chunks(&mut chunks[i..]).await?;
            i += written.chunks;
        }
        Ok(())
    }

    /// Queues one chunk without copying.
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), WriteError> {
        self.write_all_chunks(&mut [chunk]).await
    }

    /// Ends the stream after what was written. Delivery is not awaited: see
    /// [`SendStream::stopped`].
    pub fn finish(&mut self) -> Result<(), ClosedStream> {
        match &mut self.kind {
            SendKind::Quic(s) => s.finish(),
            SendKind::Tcp(s) => s.finish(),
        }
    }

    /// Abandons the stream: unsent data is discarded and the peer sees `code` (on TLS/TCP
    /// the connection is cut without a TLS close_notify, which the peer sees as an error:
    /// TCP has no way to carry the code).
    pub fn reset(&mut self, code: VarInt) -> Result<(), ClosedStream> {
        match &mut self.kind {
            SendKind::Quic(s) => s.reset(code),
            SendKind::Tcp(s) => s.reset(code),
        }
    }

    /// Waits until the peer has acknowledged everything up to `finish` (`Ok(None)`) or
    /// stopped the stream (`Ok(Some(code))`). On TLS/TCP: until everything up to the
    /// close_notify has been handed to the kernel.
    pub async fn stopped(&mut self) -> Result<Option<VarInt>, ConnectionError> {
        poll_fn(|cx| self.poll_stopped(cx)).await
    }

    /// Poll form of [`SendStream::stopped`].
    pub fn poll_stopped(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<VarInt>, ConnectionError>> {
        match &mut self.kind {
            SendKind::Quic(s) => s.poll_stopped(cx),
            SendKind::Tcp(s) => s.poll_stopped(cx),
        }
    }

    /// Relative priority among this connection's streams (higher is sent first). A
    /// TLS/TCP connection has one stream: nothing to order, accepted and ignored.
    pub fn set_priority(&mut self, priority: i32) -> Result<(), ClosedStream> {
        match &mut self.kind {
            SendKind::Quic(s) => s.set_priority(priority),
            SendKind::Tcp(_) => Ok(()),
        }
    }
}

/// What carries a receiving half.
enum RecvKind {
    Quic(QuicRecv),
    Tcp(TcpRecv),
}

/// The receiving half of a stream.
pub struct RecvStream(RecvKind);

impl From<QuicRecv> for RecvStream {
    fn from(s: QuicRecv) -> Self {
        Self(RecvKind::Quic(s))
    }
}

impl From<TcpRecv> for RecvStream {
    fn from(s: TcpRecv) -> Self {
        Self(RecvKind::Tcp(s))
    }
}

impl std::fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            RecvKind::Quic(s) => write!(f, "RecvStream(quic {})", s.id()),
            RecvKind::Tcp(_) => f.write_str("RecvStream(tcp)"),
        }
    }
}

impl RecvStream {
    /// The stream's ID (a TLS/TCP connection's one stream is client bidirectional 0).
    pub fn id(&self) -> StreamId {
        match &self.0 {
            RecvKind::Quic(s) => s.id(),
            RecvKind::Tcp(_) => crate::tcp_connection::tcp_stream_id(),
        }
    }

    /// Whether this is the byte stream of a TLS/TCP connection.
    pub fn is_tcp(&self) -> bool {
        matches!(self.0, RecvKind::Tcp(_))
    }

    /// Poll form of [`RecvStream::read_chunk`], for poll-based adapters (HTTP/3).
    pub fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        match &mut self.0 {
            RecvKind::Quic(s) => s.poll_read_chunk(cx, max),
            RecvKind::Tcp(s) => s.poll_read_chunk(cx, max),
        }
    }

    /// The next chunk of at most `max` bytes, in order, without copying; `None` at the end.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        poll_fn(|cx| self.poll_read_chunk(cx, max)).await
    }

    /// Poll form of [`RecvStream::read_available`].
    pub fn poll_read_available(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        match &mut self.0 {
            RecvKind::Quic(s) => s.poll_read_available(cx, max),
            RecvKind::Tcp(s) => s.poll_read_available(cx, max),
        }
    }

    /// Waits for data, then returns everything already received, up to `max` bytes, as
    /// one `Bytes`; `None` at the end. Received QUIC chunks are one packet's payload each
    /// (about 1.2 KB): a reader that hands data on to another thread or a pipe would pay a
    /// hop or a system call per packet, so the chunks waiting are merged (one copy; a
    /// single chunk is returned as it is). An end or reset behind the data is reported by
    /// the next call.
    pub async fn read_available(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        poll_fn(|cx| self.poll_read_available(cx, max)).await
    }

    /// Reads into `buf`; `None` at the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        if buf.is_empty() {
            return Ok(Some(0));
        }
        Ok(self.read_chunk(buf.len()).await?.map(|c| {
            buf[..c.len()].copy_from_slice(&c);
            c.len()
        }))
    }

    /// Reads the whole stream, failing (and stopping the stream) past `limit` bytes.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, ReadToEndError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.read_chunk(usize::MAX).await? {
            if out.len() + chunk.len() > limit {
                let _ = self.stop(VarInt::from_u32(0));
                return Err(ReadToEndError::TooLong(limit));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Tells the peer to stop sending; unread data is discarded. (On TLS/TCP the peer
    /// cannot be told: what it still sends is read and discarded.)
    pub fn stop(&mut self, code: VarInt) -> Result<(), ClosedStream> {
        match &mut self.0 {
            RecvKind::Quic(s) => s.stop(code),
            RecvKind::Tcp(s) => s.stop(code),
        }
    }
}

/// Both halves of a bidirectional stream.
pub struct BiStream {
    pub send: SendStream,
    pub recv: RecvStream,
}

impl BiStream {
    pub fn id(&self) -> StreamId {
        self.send.id()
    }

    pub fn split(self) -> (SendStream, RecvStream) {
        (self.send, self.recv)
    }
}
