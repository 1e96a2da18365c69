//! A [`crate::Connection`] carried by TLS over TCP: exactly one bidirectional stream.
//!
//! For networks that block UDP, the `alknet/*` services run over TLS/TCP on the QUIC port
//! (`[tcp] stream_alpns`) with the handler they have over QUIC. TCP has one byte stream
//! per connection, so the connection has one bidirectional stream: the client takes it
//! with its first `open_bi`, the server with its first `accept_bi`. A further `accept_bi`
//! waits until the connection ends and returns why (a handler's accept loop ends with the
//! connection, as over QUIC); opening another stream, and uni streams, fail at once with
//! [`one_stream_error`]; there are no datagrams.
//!
//! Shape: the state beside a thin IO driver, as for QUIC. The stream halves and the
//! [`TcpConnection`] handle change [`State`] (queue bytes, take bytes, finish) and wake the
//! driver; the driver task ([`TcpDriver::run`]) owns the TLS stream, moves queued bytes
//! into it and read bytes out of it, within [`crate::TcpLimits::stream_buffer`] bytes each
//! way (flow control: a reader that stops reading stops the peer, through TCP's window),
//! and wakes the halves. Written `Bytes` are queued without copying; rustls copies them
//! once as it encrypts. Everything is on one worker: `Rc<RefCell<…>>`, no locks.
//!
//! Ends: the connection ends cleanly when both directions have ended (our `finish` is
//! flushed with a TLS close_notify and the peer's close_notify arrived; a stopped reader's
//! data is discarded until then); a TCP or TLS error (a peer that cuts the connection without close_notify
//! included: truncation is never mistaken for an end) ends it with [`ConnectionError::Reset`]
//! or a transport error naming the cause. `close()`, a `reset()` of the send half, and
//! the last handle dropped without finishing cut it at once. After the last handle is
//! dropped a finished stream still gets [`TCP_CLOSE_LINGER`] to reach the kernel and to
//! see the peer's end.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use alknet_proto::Fingerprint;
use bytes::{Buf, Bytes, BytesMut};
use quinn_proto::{
    ApplicationClose, ClosedStream, ConnectionError, ConnectionStats, Dir, Side, StreamId,
    TransportError, TransportErrorCode, VarInt, Written,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::stats::WorkerStats;
use crate::streams::{BiStream, ReadError, RecvStream, SendStream, WriteError};

/// The stream ID a TLS/TCP connection's one stream reports: client bidirectional 0, as the
/// first stream of a QUIC connection.
pub(crate) fn tcp_stream_id() -> StreamId {
    StreamId::new(Side::Client, Dir::Bi, 0)
}

/// How long a finished stream whose handles are all dropped may take to flush to the
/// kernel and to see the peer's end (the peer must read, then finish) before the
/// connection is cut.
pub const TCP_CLOSE_LINGER: Duration = Duration::from_secs(5);
/// Bytes asked from the TLS stream per read (one allocation, split into chunks).
const READ_CHUNK: usize = 64 * 1024;

/// A TLS stream over TCP, client or server side: what the driver reads and writes.
pub(crate) trait ByteIo: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> ByteIo for T {}

/// The error every stream operation but the one stream gets on TLS/TCP.
pub fn one_stream_error(what: &str) -> ConnectionError {
    ConnectionError::TransportError(TransportError {
        code: TransportErrorCode::STREAM_LIMIT_ERROR,
        frame: None,
        reason: format!(
            "{what} is not available on TLS/TCP: the connection carries exactly one bidirectional stream (use QUIC for more streams)"
        ),
    })
}

/// What the handshake said about a TLS/TCP connection.
#[derive(Debug, Clone)]
pub(crate) struct TcpPeer {
    pub remote: SocketAddr,
    pub alpn: Vec<u8>,
    pub peer_fingerprint: Option<Fingerprint>,
    pub worker: usize,
    /// The socket, for the kernel's RTT estimate (`TCP_INFO`); -1 if unknown.
    pub fd: RawFd,
    /// Which side we are: the client opens the one stream, the server accepts it.
    pub side: Side,
}

#[derive(Default)]
struct State {
    /// The one stream has been handed out.
    taken: bool,
    // receiving
    recv: VecDeque<Bytes>,
    recv_len: usize,
    /// The peer's close_notify arrived (all of its data is in `recv`).
    eof: bool,
    /// The receiving half was stopped or dropped: what arrives is discarded.
    recv_stopped: bool,
    reader: Option<Waker>,
    // sending
    send: VecDeque<Bytes>,
    send_len: usize,
    /// Bytes handed to rustls since the last flush.
    unflushed: bool,
    /// `finish` was called: close_notify after the queue.
    fin: bool,
    /// Everything up to the close_notify reached the kernel.
    fin_sent: bool,
    /// Cut the connection (reset, close, last handle dropped unfinished).
    abort: bool,
    writer: Option<Waker>,
    stopped: Option<Waker>,
    // connection
    error: Option<ConnectionError>,
    /// Tasks waiting in `accept_bi` past the one stream, or in `closed`.
    waiters: Vec<Waker>,
    driver: Option<Waker>,
    bytes_rx: u64,
    bytes_tx: u64,
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

fn set_waker(slot: &mut Option<Waker>, waker: &Waker) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

impl State {
    /// Records why the connection ended and wakes everyone.
    fn end(&mut self, reason: ConnectionError) {
        if self.error.is_none() {
            self.error = Some(reason);
        }
        wake(&mut self.reader);
        wake(&mut self.writer);
        wake(&mut self.stopped);
        wake(&mut self.driver);
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }

    fn wake_driver(&mut self) {
        if let Some(w) = &self.driver {
            w.wake_by_ref();
        }
    }

    /// The clean end: both directions are done. A stopped receiving half still waits for
    /// the peer's end (what arrives is discarded): closing a socket with unread data makes
    /// the kernel send a reset, which can cost the peer the tail of what we sent.
    fn both_done(&self) -> bool {
        self.fin_sent && self.eof
    }
}

/// The state shared by the handle, the halves and the driver.
struct Shared {
    peer: TcpPeer,
    /// Bytes buffered at most each way.
    buffer: usize,
    /// How long a write may wait for room (`[tcp] send_stall_timeout_ms`).
    send_stall_timeout: Duration,
    /// The accepting worker's counters (none on a client).
    stats: Option<Arc<WorkerStats>>,
    st: RefCell<State>,
    /// Live handles (connection clones, stream halves); at zero the connection winds up.
    handles: Cell<usize>,
}

/// A counted reference: at zero handles the driver finishes a finished stream (within
/// [`TCP_CLOSE_LINGER`]) or cuts the connection.
struct TcpRef(Rc<Shared>);

impl TcpRef {
    fn new(shared: Rc<Shared>) -> Self {
        shared.handles.set(shared.handles.get() + 1);
        Self(shared)
    }
}

impl Clone for TcpRef {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl Drop for TcpRef {
    fn drop(&mut self) {
        let n = self.0.handles.get() - 1;
        self.0.handles.set(n);
        if n == 0 {
            self.0.st.borrow_mut().wake_driver();
        }
    }
}

impl std::ops::Deref for TcpRef {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The connection side of a TLS/TCP [`crate::Connection`].
#[derive(Clone)]
pub(crate) struct TcpConnection {
    shared: TcpRef,
}

/// Owns the TLS stream; run it as a task of the connection's worker.
pub(crate) struct TcpDriver {
    shared: Rc<Shared>,
    io: Box<dyn ByteIo>,
    rbuf: BytesMut,
}

/// Makes the connection and its driver for a TLS stream whose handshake is complete.
pub(crate) fn tcp_connection(
    io: Box<dyn ByteIo>,
    peer: TcpPeer,
    buffer: usize,
    send_stall_timeout: Duration,
    stats: Option<Arc<WorkerStats>>,
) -> (TcpConnection, TcpDriver) {
    let shared = Rc::new(Shared {
        peer,
        buffer: buffer.max(1),
        send_stall_timeout,
        stats,
        st: RefCell::new(State::default()),
        handles: Cell::new(0),
    });
    let conn = TcpConnection {
        shared: TcpRef::new(shared.clone()),
    };
    let driver = TcpDriver {
        shared,
        io,
        rbuf: BytesMut::new(),
    };
    (conn, driver)
}

/// What an IO error ends the connection with.
fn io_error(e: std::io::Error) -> ConnectionError {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe => ConnectionError::Reset,
        UnexpectedEof => ConnectionError::TransportError(TransportError {
            code: TransportErrorCode::PROTOCOL_VIOLATION,
            frame: None,
            // what a refused or failed session looks like from the other end: say so,
            // since TLS/TCP has no room for the reason QUIC's CONNECTION_CLOSE carries
            reason: "TLS/TCP: the peer cut the connection without a TLS close_notify: it \
                     aborted the session (a refusal or an error; unlike QUIC, TLS/TCP carries \
                     no reason: the peer's log has it), and data may be truncated"
                .into(),
        }),
        _ => ConnectionError::TransportError(TransportError {
            code: TransportErrorCode::INTERNAL_ERROR,
            frame: None,
            reason: format!("TLS/TCP: {e}"),
        }),
    }
}

/// The clean end of a TLS/TCP connection: both sides finished their stream.
fn clean_end() -> ConnectionError {
    ConnectionError::ApplicationClosed(ApplicationClose {
        error_code: VarInt::from_u32(crate::close_code::OK),
        reason: Bytes::from_static(b"TLS/TCP stream finished both ways"),
    })
}

impl TcpDriver {
    /// Drives the connection to its end; the TLS stream (and socket) is dropped at the end.
    pub async fn run(mut self) {
        let linger = std::future::poll_fn(|cx| self.poll_drive(cx, false)).await;
        if linger {
            // every handle is gone with the stream finished: let it flush, within bounds
            let flushed = monoio::time::timeout(
                TCP_CLOSE_LINGER,
                std::future::poll_fn(|cx| self.poll_drive(cx, true).map(|_| ())),
            )
            .await;
            if flushed.is_err() {
                tracing::debug!(remote = %self.shared.peer.remote, "TLS/TCP: close linger passed; cutting the connection");
            }
        }
        self.shared
            .st
            .borrow_mut()
            .end(ConnectionError::LocallyClosed);
    }

    /// One pass: writes what is queued, reads what fits, settles the end. Ready(true) when
    /// every handle is gone and only a finished stream's flush is left (first phase);
    /// Ready(false) when the connection has ended.
    fn poll_drive(&mut self, cx: &mut Context<'_>, lingering: bool) -> Poll<bool> {
        let shared = self.shared.clone();
        let mut st = shared.st.borrow_mut();
        set_waker(&mut st.driver, cx.waker());
        if st.error.is_some() {
            return Poll::Ready(false);
        }
        if st.abort {
            st.end(ConnectionError::LocallyClosed);
            return Poll::Ready(false);
        }
        if let Err(e) = self.write_side(cx, &mut st) {
            st.end(io_error(e));
            return Poll::Ready(false);
        }
        if let Err(e) = self.read_side(cx, &mut st, shared.buffer) {
            st.end(io_error(e));
            return Poll::Ready(false);
        }
        if st.both_done() {
            st.end(clean_end());
            return Poll::Ready(false);
        }
        if !lingering && shared.handles.get() == 0 {
            if st.fin {
                return Poll::Ready(true);
            }
            st.end(ConnectionError::LocallyClosed);
            return Poll::Ready(false);
        }
        Poll::Pending
    }

    fn write_side(&mut self, cx: &mut Context<'_>, st: &mut State) -> std::io::Result<()> {
        let mut io = Pin::new(&mut *self.io);
        loop {
            if let Some(front) = st.send.front_mut() {
                match io.as_mut().poll_write(cx, front) {
                    Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => {
                        front.advance(n);
                        if front.is_empty() {
                            st.send.pop_front();
                        }
                        st.send_len -= n;
                        st.bytes_tx += n as u64;
                        st.unflushed = true;
                        wake(&mut st.writer);
                    }
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => return Ok(()),
                }
            } else if st.unflushed {
                match io.as_mut().poll_flush(cx) {
                    Poll::Ready(Ok(())) => st.unflushed = false,
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => return Ok(()),
                }
            } else if st.fin && !st.fin_sent {
                // close_notify, flushed, then the TCP write side shut
                match io.as_mut().poll_shutdown(cx) {
                    Poll::Ready(Ok(())) => {
                        st.fin_sent = true;
                        wake(&mut st.stopped);
                    }
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => return Ok(()),
                }
            } else {
                return Ok(());
            }
        }
    }

    fn read_side(
        &mut self,
        cx: &mut Context<'_>,
        st: &mut State,
        buffer: usize,
    ) -> std::io::Result<()> {
        let mut io = Pin::new(&mut *self.io);
        while !st.eof && (st.recv_len < buffer || st.recv_stopped) {
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(io.as_mut(), cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => {
                    st.eof = true;
                    wake(&mut st.reader);
                }
                Poll::Ready(Ok(n)) => {
                    st.bytes_rx += n as u64;
                    let chunk = self.rbuf.split().freeze();
                    if !st.recv_stopped {
                        st.recv_len += n;
                        st.recv.push_back(chunk);
                        wake(&mut st.reader);
                    }
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(()),
            }
        }
        Ok(())
    }
}

impl TcpConnection {
    fn take_stream(&self, st: &mut State) -> BiStream {
        st.taken = true;
        BiStream {
            send: SendStream::from(TcpSend {
                shared: self.shared.clone(),
                closed: false,
            }),
            recv: RecvStream::from(TcpRecv {
                shared: self.shared.clone(),
                done: false,
            }),
        }
    }

    pub fn poll_accept_bi(&self, cx: &mut Context<'_>) -> Poll<Result<BiStream, ConnectionError>> {
        let mut st = self.shared.st.borrow_mut();
        if self.shared.peer.side == Side::Server && !st.taken && st.error.is_none() {
            return Poll::Ready(Ok(self.take_stream(&mut st)));
        }
        // the one stream is out (or is the client's to open): wait for the end
        if let Some(e) = &st.error {
            return Poll::Ready(Err(e.clone()));
        }
        push_waiter(&mut st.waiters, cx.waker());
        Poll::Pending
    }

    pub fn poll_open_bi(&self, _cx: &mut Context<'_>) -> Poll<Result<BiStream, ConnectionError>> {
        let mut st = self.shared.st.borrow_mut();
        if let Some(e) = &st.error {
            return Poll::Ready(Err(e.clone()));
        }
        if self.shared.peer.side == Side::Client && !st.taken {
            return Poll::Ready(Ok(self.take_stream(&mut st)));
        }
        Poll::Ready(Err(one_stream_error(match self.shared.peer.side {
            Side::Client => "a second bidirectional stream",
            Side::Server => "open_bi (the client opens the one stream)",
        })))
    }

    pub fn poll_open_uni(
        &self,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<SendStream, ConnectionError>> {
        Poll::Ready(Err(one_stream_error("a unidirectional stream")))
    }

    pub fn poll_accept_uni(
        &self,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<RecvStream, ConnectionError>> {
        Poll::Ready(Err(one_stream_error("a unidirectional stream")))
    }

    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<ConnectionError> {
        let mut st = self.shared.st.borrow_mut();
        if let Some(e) = &st.error {
            return Poll::Ready(e.clone());
        }
        push_waiter(&mut st.waiters, cx.waker());
        Poll::Pending
    }

    /// Cuts the connection (TCP cannot carry an application close code).
    pub fn close(&self, code: VarInt, reason: &[u8]) {
        let mut st = self.shared.st.borrow_mut();
        if st.error.is_none() {
            tracing::trace!(remote = %self.shared.peer.remote, %code, reason = %String::from_utf8_lossy(reason), "TLS/TCP connection closed locally");
            st.abort = true;
            st.end(ConnectionError::LocallyClosed);
        }
    }

    pub fn close_reason(&self) -> Option<ConnectionError> {
        self.shared.st.borrow().error.clone()
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.shared.peer.remote
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        Some(self.shared.peer.alpn.clone())
    }

    pub fn peer_fingerprint(&self) -> Option<Fingerprint> {
        self.shared.peer.peer_fingerprint
    }

    pub fn worker(&self) -> usize {
        self.shared.peer.worker
    }

    /// The kernel's smoothed RTT of the socket (`TCP_INFO`); zero if it cannot be read.
    pub fn rtt(&self) -> Duration {
        tcp_rtt(self.shared.peer.fd).unwrap_or_default()
    }

    /// The byte counts (TLS plaintext) in `udp_tx`/`udp_rx.bytes`, and the RTT.
    pub fn stats(&self) -> ConnectionStats {
        let st = self.shared.st.borrow();
        let mut stats = ConnectionStats::default();
        stats.udp_tx.bytes = st.bytes_tx;
        stats.udp_rx.bytes = st.bytes_rx;
        stats.path.rtt = self.rtt();
        stats
    }
}

fn push_waiter(list: &mut Vec<Waker>, waker: &Waker) {
    if !list.iter().any(|w| w.will_wake(waker)) {
        list.push(waker.clone());
    }
}

/// `TCP_INFO`'s smoothed RTT of `fd`.
fn tcp_rtt(fd: RawFd) -> Option<Duration> {
    if fd < 0 {
        return None;
    }
    let mut info: libc::tcp_info = unsafe_zeroed_tcp_info();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that large.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| Duration::from_micros(u64::from(info.tcpi_rtt)))
}

fn unsafe_zeroed_tcp_info() -> libc::tcp_info {
    // SAFETY: tcp_info is a plain C struct of integers; all-zero is a valid value.
    #[allow(unsafe_code)]
    unsafe {
        std::mem::zeroed()
    }
}

/// The sending half of a TLS/TCP connection's stream.
pub(crate) struct TcpSend {
    shared: TcpRef,
    /// finish() or reset() was called: nothing to do on drop.
    closed: bool,
}

impl TcpSend {
    pub(crate) fn stall_timeout(&self) -> Duration {
        self.shared.send_stall_timeout
    }

    pub(crate) fn count_stall(&self) {
        if let Some(stats) = &self.shared.stats {
            WorkerStats::add(&stats.streams_stalled, 1);
        }
    }

    /// Room in the send buffer, or why there is none (Pending: the waker is registered).
    fn room(&self, cx: &mut Context<'_>, st: &mut State) -> Poll<Result<usize, WriteError>> {
        if let Some(e) = &st.error {
            return Poll::Ready(Err(WriteError::ConnectionLost(e.clone())));
        }
        if st.fin || st.abort || self.closed {
            return Poll::Ready(Err(WriteError::ClosedStream));
        }
        let room = self.shared.buffer.saturating_sub(st.send_len);
        if room == 0 {
            set_waker(&mut st.writer, cx.waker());
            return Poll::Pending;
        }
        Poll::Ready(Ok(room))
    }

    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<Result<usize, WriteError>> {
        let mut st = self.shared.st.borrow_mut();
        let room = match self.room(cx, &mut st) {
            Poll::Ready(Ok(room)) => room,
            other => return other,
        };
        let n = room.min(data.len());
        if n > 0 {
            st.send.push_back(Bytes::copy_from_slice(&data[..n]));
            st.send_len += n;
            st.wake_driver();
        }
        Poll::Ready(Ok(n))
    }

    pub fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut [Bytes],
    ) -> Poll<Result<Written, WriteError>> {
        let mut st = self.shared.st.borrow_mut();
        let mut room = match self.room(cx, &mut st) {
            Poll::Ready(Ok(room)) => room,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let mut written = Written::default();
        for chunk in chunks.iter_mut() {
            if room == 0 {
                break;
            }
            if chunk.len() <= room {
                let taken = std::mem::take(chunk);
                room -= taken.len();
                written.bytes += taken.len();
                written.chunks += 1;
                st.send_len += taken.len();
                if !taken.is_empty() {
                    st.send.push_back(taken);
                }
            } else {
                let head = chunk.split_to(room);
                written.bytes += head.len();
                st.send_len += head.len();
                st.send.push_back(head);
                room = 0;
            }
        }
        if written.bytes > 0 {
            st.wake_driver();
        }
        Poll::Ready(Ok(written))
    }

    pub fn finish(&mut self) -> Result<(), ClosedStream> {
        let mut st = self.shared.st.borrow_mut();
        if self.closed || st.fin {
            return Err(ClosedStream::default());
        }
        self.closed = true;
        st.fin = true;
        st.wake_driver();
        Ok(())
    }

    /// Cuts the connection: TCP has no per-stream reset, and the peer must not take what
    /// it got for the whole stream.
    pub fn reset(&mut self, code: VarInt) -> Result<(), ClosedStream> {
        let mut st = self.shared.st.borrow_mut();
        if self.closed {
            return Err(ClosedStream::default());
        }
        self.closed = true;
        if st.error.is_none() {
            tracing::debug!(remote = %self.shared.peer.remote, %code, "TLS/TCP stream reset: cutting the connection");
            st.abort = true;
            st.send.clear();
            st.send_len = 0;
            st.wake_driver();
        }
        Ok(())
    }

    pub fn poll_stopped(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<VarInt>, ConnectionError>> {
        let mut st = self.shared.st.borrow_mut();
        if st.fin_sent {
            return Poll::Ready(Ok(None));
        }
        if let Some(e) = &st.error {
            return Poll::Ready(Err(e.clone()));
        }
        set_waker(&mut st.stopped, cx.waker());
        Poll::Pending
    }
}

impl Drop for TcpSend {
    /// Finishes the stream; cuts the connection when dropped by a panic, so the peer never
    /// mistakes a truncated stream for a complete one.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        if crate::rt::dropping_panicked_task() {
            let _ = self.reset(VarInt::from_u32(crate::streams::STREAM_PANIC_CODE));
        } else {
            let _ = self.finish();
        }
    }
}

/// The receiving half of a TLS/TCP connection's stream.
pub(crate) struct TcpRecv {
    shared: TcpRef,
    /// The end was returned, or stop() called.
    done: bool,
}

impl TcpRecv {
    /// Data (at most `max` bytes; `merge`: as many chunks as fit, in one `Bytes`), the
    /// end, or the error, in that order.
    fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        merge: bool,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        let shared = &self.shared;
        let mut guard = shared.st.borrow_mut();
        let st = &mut *guard;
        if self.done {
            return Poll::Ready(if st.recv_stopped {
                Err(ReadError::ClosedStream)
            } else {
                Ok(None)
            });
        }
        if max == 0 {
            return Poll::Ready(Ok(Some(Bytes::new())));
        }
        if let Some(front) = st.recv.front_mut() {
            let was_full = st.recv_len >= shared.buffer;
            let first = if front.len() > max {
                front.split_to(max)
            } else {
                st.recv.pop_front().unwrap_or_default()
            };
            let mut taken = first.len();
            let out = if merge && taken < max && !st.recv.is_empty() {
                let mut buf = BytesMut::with_capacity(max.min(st.recv_len));
                buf.extend_from_slice(&first);
                while taken < max {
                    let Some(next) = st.recv.front_mut() else {
                        break;
                    };
                    let want = max - taken;
                    if next.len() > want {
                        buf.extend_from_slice(&next.split_to(want));
                        taken = max;
                    } else {
                        taken += next.len();
                        buf.extend_from_slice(next);
                        st.recv.pop_front();
                    }
                }
                buf.freeze()
            } else {
                first
            };
            st.recv_len -= taken;
            if was_full {
                // the driver stopped reading at the limit: there is room again
                st.wake_driver();
            }
            return Poll::Ready(Ok(Some(out)));
        }
        if st.eof {
            self.done = true;
            return Poll::Ready(Ok(None));
        }
        if let Some(e) = &st.error {
            return Poll::Ready(Err(ReadError::ConnectionLost(e.clone())));
        }
        set_waker(&mut st.reader, cx.waker());
        Poll::Pending
    }

    pub fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        self.poll_take(cx, max, false)
    }

    pub fn poll_read_available(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        self.poll_take(cx, max, true)
    }

    /// Discards what arrived and what will: TCP cannot tell the peer to stop.
    pub fn stop(&mut self, _code: VarInt) -> Result<(), ClosedStream> {
        if self.done {
            return Err(ClosedStream::default());
        }
        self.done = true;
        let mut st = self.shared.st.borrow_mut();
        st.recv_stopped = true;
        st.recv.clear();
        st.recv_len = 0;
        st.wake_driver();
        Ok(())
    }
}

impl Drop for TcpRecv {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.stop(VarInt::from_u32(0));
        }
    }
}

#[cfg(test)]
mod tests {
    //! The connection over an in-memory byte stream (`tokio::io::duplex`, no TLS): the
    //! stream rules, flow control through a small buffer, and how it ends. Deterministic:
    //! no sockets, no timers.
    use super::*;
    use std::future::{poll_fn, Future};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn peer(side: Side) -> TcpPeer {
        TcpPeer {
            remote: SocketAddr::from(([127, 0, 0, 1], 4433)),
            alpn: b"alknet/echo".to_vec(),
            peer_fingerprint: None,
            worker: 0,
            fd: -1,
            side,
        }
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        crate::rt::run_local(|_| f).expect("monoio runtime")
    }

    fn conn(side: Side, buffer: usize) -> (crate::Connection, tokio::io::DuplexStream) {
        conn_stalling_after(side, buffer, crate::limits::DEFAULT_SEND_STALL_TIMEOUT)
    }

    fn conn_stalling_after(
        side: Side,
        buffer: usize,
        send_stall_timeout: Duration,
    ) -> (crate::Connection, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (c, driver) =
            tcp_connection(Box::new(ours), peer(side), buffer, send_stall_timeout, None);
        monoio::spawn(driver.run());
        (crate::Connection::from_tcp(c), theirs)
    }

    #[test]
    fn the_server_accepts_one_stream_and_refuses_every_other() {
        run(async {
            let (conn, mut other) = conn(Side::Server, 16);
            let stream = conn.accept_bi().await.expect("the one stream");
            assert_eq!(stream.id(), tcp_stream_id());
            for e in [
                conn.open_bi().await.err(),
                conn.open_uni().await.err(),
                conn.accept_uni().await.err(),
            ] {
                let e = e.expect("refused").to_string();
                assert!(e.contains("exactly one bidirectional stream"), "{e}");
            }
            assert_eq!(
                conn.send_datagram(Bytes::from_static(b"d")),
                Err(crate::DatagramError::Unsupported)
            );
            // a second accept waits: it is still pending after the peer's data went by
            let mut second = std::pin::pin!(conn.accept_bi());
            assert!(poll_fn(|cx| Poll::Ready(second.as_mut().poll(cx).is_pending())).await);

            // 1000 bytes through a 16-byte buffer, in order; then both ends finish
            let (mut send, mut recv) = stream.split();
            let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
            let writer = async {
                other.write_all(&data).await.expect("peer writes");
                other.shutdown().await.expect("peer finishes");
                let mut back = Vec::new();
                other.read_to_end(&mut back).await.expect("peer reads");
                back
            };
            let echo = async {
                let mut got = Vec::new();
                while let Some(c) = recv.read_chunk(usize::MAX).await.expect("read") {
                    got.extend_from_slice(&c);
                    send.write_all(&c).await.expect("write");
                }
                send.finish().expect("finish");
                assert_eq!(send.stopped().await, Ok(None));
                got
            };
            let (back, got) = monoio::join!(writer, echo);
            assert_eq!(got, data);
            assert_eq!(back, data);
            // both directions ended: the connection ends cleanly and the waiting accept
            // returns why
            let reason = second.await.err().expect("ended");
            assert!(
                matches!(reason, ConnectionError::ApplicationClosed(ref c) if c.error_code == VarInt::from_u32(0)),
                "{reason}"
            );
            assert_eq!(conn.closed().await, reason);
        });
    }

    #[test]
    fn the_client_opens_the_one_stream() {
        run(async {
            let (conn, _other) = conn(Side::Client, 1024);
            let _stream = conn.open_bi().await.expect("the one stream");
            let e = conn.open_bi().await.err().expect("a second is refused");
            assert!(e.to_string().contains("exactly one"), "{e}");
        });
    }

    #[test]
    fn close_cuts_the_connection_at_once() {
        run(async {
            let (conn, mut other) = conn(Side::Server, 1024);
            let (mut send, _recv) = conn.accept_bi().await.expect("stream").split();
            send.write_all(b"never sent").await.expect("queued");
            conn.close(VarInt::from_u32(7), b"bye");
            assert_eq!(conn.close_reason(), Some(ConnectionError::LocallyClosed));
            assert!(matches!(
                send.write(b"more").await,
                Err(WriteError::ConnectionLost(ConnectionError::LocallyClosed))
            ));
            // the peer sees the byte stream end (the driver dropped it), without the
            // queued bytes: close discards what is unsent
            let mut rest = Vec::new();
            other
                .read_to_end(&mut rest)
                .await
                .expect("peer sees the end");
            assert!(rest.is_empty(), "{rest:?}");
        });
    }

    #[test]
    fn a_peer_that_reads_nothing_is_cut_after_the_stall_timeout_and_a_slow_one_is_served() {
        run(async {
            let stall = Duration::from_millis(300);
            let data = vec![7u8; 512 * 1024];

            // 16 KiB at most every 30 ms: slow, but never still for the whole timeout
            let (conn, mut other) = conn_stalling_after(Side::Server, 16 * 1024, stall);
            let (mut send, _recv) = conn.accept_bi().await.expect("stream").split();
            let writer = async {
                send.write_all(&data)
                    .await
                    .expect("a slow reader is served");
                send.finish().expect("finish");
            };
            let reader = async {
                let (mut got, mut buf) = (0, vec![0u8; 16 * 1024]);
                while got < data.len() {
                    monoio::time::sleep(Duration::from_millis(30)).await;
                    got += other.read(&mut buf).await.expect("read");
                }
                got
            };
            let ((), got) = monoio::join!(writer, reader);
            assert_eq!(got, data.len());

            // a peer that takes nothing: the pipe, the kernel-side buffer and ours fill,
            // then the write waits the whole timeout, fails and cuts the connection
            let (conn, _other) = conn_stalling_after(Side::Server, 16 * 1024, stall);
            let (mut send, _recv) = conn.accept_bi().await.expect("stream").split();
            let started = std::time::Instant::now();
            assert_eq!(send.write_all(&data).await, Err(WriteError::Stalled(stall)));
            assert!(started.elapsed() >= stall, "{:?}", started.elapsed());
            assert_eq!(conn.closed().await, ConnectionError::LocallyClosed);
            assert_eq!(
                send.write(b"more").await.err(),
                Some(WriteError::ConnectionLost(ConnectionError::LocallyClosed))
            );
        });
    }

    #[test]
    fn reads_report_data_then_the_end_then_nothing_more() {
        run(async {
            let (conn, mut other) = conn(Side::Server, 1024);
            let (_send, mut recv) = conn.accept_bi().await.expect("stream").split();
            other.write_all(b"hello world").await.expect("write");
            other.shutdown().await.expect("finish");
            let mut got = Vec::new();
            while let Some(c) = recv.read_available(4).await.expect("read") {
                assert!(c.len() <= 4);
                got.extend_from_slice(&c);
            }
            assert_eq!(got, b"hello world");
            assert_eq!(recv.read_chunk(10).await, Ok(None));
        });
    }
}
