//! The bridge between the monoio workers (QUIC) and a tokio runtime (russh).
//!
//! russh is written for tokio: it spawns with `tokio::spawn` (through `russh_util`), sleeps
//! with `tokio::time` and reads and writes through `tokio::io::{AsyncRead, AsyncWrite}`.
//! The engine's packet path runs on monoio workers and must never wait on tokio. So there
//! is one shared, small tokio runtime ([`TokioBridge`], threads `alknet-ssh-N`) for what
//! needs one, and bytes cross between a QUIC stream and russh through a [`ByteStream`]: a
//! pair of bounded `async_channel`s of [`Bytes`], which wake tasks of either runtime
//! (their wakers are thread-safe).
//!
//! ```text
//!  monoio worker (owns the QUIC connection)        russh session loop
//!  RecvStream ──read_available─▶ [bounded channel] ──▶ ByteStream: AsyncRead
//!  SendStream ◀─write_chunk── [bounded channel] ◀── ByteStream: AsyncWrite
//! ```
//!
//! * **Where the session runs** ([`SessionPlacement`], `ssh.session_placement`). By
//!   default on the same worker: the worker sets a `russh_util` local spawner (a patched
//!   `russh-util`, `handlers/ssh/vendor/russh-util/PATCHES.md`), so russh's session loop
//!   and the session's own tasks ([`spawn_session_task`]) are monoio tasks, polled
//!   [`InTokioContext`] so that their timers, `spawn_blocking` and the helpers that need
//!   tokio's IO (a child's exit, a pty, forwarded TCP) live on the bridge runtime. A
//!   command's output pipes are the worker's own: read with io_uring by a task beside
//!   the session ([`spawn_worker_task`], `process.rs`). The channels
//!   are then same-thread hand-overs: a request and its answer cross no thread. With
//!   `"bridge"` the session runs on the bridge runtime instead, one cross-thread wake-up
//!   each way per round trip, with SSH's ciphers beside the worker rather than on it.
//! * **Source-agnostic.** The session sees only a [`ByteStream`]; what fills its other
//!   end ([`StreamEnd`]) is the caller's business. [`pump_quic_stream`] does it for a QUIC
//!   stream; a WebTransport stream or a TCP socket needs only another pump.
//! * **Back-pressure.** Each direction holds at most [`BRIDGE_CHANNEL_DEPTH`] chunks (plus
//!   one being handed over). A full channel stops the pump reading the QUIC stream, so QUIC
//!   flow control reaches the peer; a full channel the other way makes russh's writes wait.
//! * **Copies.** Chunks go to the `SendStream` as they came, without copying. Received
//!   chunks are the `Bytes` slices of the decrypted packets, one QUIC packet each: those
//!   already waiting are merged ([`alknet_runtime::RecvStream::read_available`]), one copy that saves a hop
//!   per packet. The session's side
//!   copies once each way, because `AsyncRead`/`AsyncWrite` work on borrowed buffers.
//! * **Ends.** FIN on the QUIC side is EOF on the tokio side, and `shutdown()` on the
//!   tokio side finishes the QUIC stream. A reset arrives as a read error
//!   (`ConnectionReset`); a `ByteStream` dropped without `shutdown()` resets the stream
//!   (code [`STREAM_ABORT_CODE`]), so a peer never takes a truncated session for a whole
//!   one.
//! * **Cost.** Measured with the stock `sftp` and `ssh` (README, SFTP): on the worker a
//!   small-file `get -r` through the `sftp` subsystem runs at sshd's rate with 0.4× the
//!   server CPU per file of the bridge placement; 1 GiB transfers are equal either way.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use alknet_runtime::rt::spawn_guarded;
use alknet_runtime::{BiStream, Bytes, Connection, ConnectionError, ReadError, VarInt};
use async_channel::{Receiver, Sender, TrySendError, WeakReceiver, WeakSender};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Chunks queued in each direction of a [`ByteStream`]. Small: it only has to cover the
/// hand-over between the two runtimes; the windows that matter are QUIC's.
pub const BRIDGE_CHANNEL_DEPTH: usize = 16;

/// Most bytes the QUIC pump takes from a stream at once (what has arrived, merged: see
/// [`alknet_runtime::RecvStream::read_available`]).
pub const BRIDGE_READ_CHUNK: usize = 64 * 1024;

/// Application error code of a QUIC stream reset because its tokio side was dropped
/// without `shutdown()` (the session failed) or stopped reading.
pub const STREAM_ABORT_CODE: u32 = 0x1;

/// The stream ended abortively (a QUIC reset, or the other side dropped without
/// finishing), as opposed to a clean end of stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream was reset (error code {0})")]
pub struct StreamAborted(pub u64);

/// What travels through the bridge channels: data, or an abortive end. A clean end is the
/// channel closing.
pub type Chunk = Result<Bytes, StreamAborted>;

type SendFuture = Pin<Box<dyn Future<Output = Result<(), ()>> + Send>>;

/// The tokio side of a bridged byte stream: `AsyncRead + AsyncWrite + Unpin + Send`, what
/// `russh::server::run_stream` and `russh::client::connect_stream` take.
pub struct ByteStream {
    rx: Pin<Box<Receiver<Chunk>>>,
    /// `None` after `shutdown()`.
    tx: Option<Sender<Chunk>>,
    /// A chunk accepted by `poll_write` while the channel was full, being handed over.
    sending: Option<SendFuture>,
    /// The unread rest of the last chunk received.
    leftover: Bytes,
    /// The read side ended: cleanly (`None`) or abortively.
    read_end: Option<Option<StreamAborted>>,
    /// Dropped without `shutdown()` after the peer ended its side cleanly: finish (FIN)
    /// instead of resetting. See [`ByteStream::finish_after_peer_end`].
    finish_after_peer_end: bool,
}

/// The other end of a [`ByteStream`], for whatever carries the bytes (a pump task).
pub struct StreamEnd {
    /// Chunks for the `ByteStream` to read. Drop it for EOF; send `Err` first to abort.
    pub to_stream: Sender<Chunk>,
    /// Chunks the `ByteStream` wrote. Closed without an `Err` after a clean `shutdown()`.
    pub from_stream: Receiver<Chunk>,
}

impl std::fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteStream")
            .field("shut_down", &self.tx.is_none())
            .field("read_end", &self.read_end)
            .finish()
    }
}

impl ByteStream {
    /// A new byte stream and its other end, each direction `depth` chunks deep.
    pub fn pair(depth: usize) -> (ByteStream, StreamEnd) {
        let (to_stream, rx) = async_channel::bounded(depth.max(1));
        let (tx, from_stream) = async_channel::bounded(depth.max(1));
        (
            ByteStream {
                rx: Box::pin(rx),
                tx: Some(tx),
                sending: None,
                leftover: Bytes::new(),
                read_end: None,
                finish_after_peer_end: false,
            },
            StreamEnd {
                to_stream,
                from_stream,
            },
        )
    }

    /// Two byte streams wired back to back (what one writes the other reads): an in-memory
    /// transport for tests, and for serving SSH to an in-process client.
    pub fn duplex(depth: usize) -> (ByteStream, ByteStream) {
        let (a_tx, b_rx) = async_channel::bounded(depth.max(1));
        let (b_tx, a_rx) = async_channel::bounded(depth.max(1));
        let make = |tx, rx| ByteStream {
            rx: Box::pin(rx),
            tx: Some(tx),
            sending: None,
            leftover: Bytes::new(),
            read_end: None,
            finish_after_peer_end: false,
        };
        (make(a_tx, a_rx), make(b_tx, b_rx))
    }

    /// When the stream is dropped without `shutdown()` after the peer ended its side
    /// cleanly (EOF was read), end ours cleanly too (FIN after the data already written)
    /// instead of resetting: a QUIC receiver discards unread data on a reset, so a peer
    /// that sent its part and finished (a probe sending a banner) would lose our answer.
    /// A drop while panicking, or before the peer's end, still resets. For protocols that
    /// detect truncation themselves (SSH's packets and close messages).
    pub fn finish_after_peer_end(&mut self) {
        self.finish_after_peer_end = true;
    }

    /// A handle that ends this stream abortively from outside (a watchdog), without owning
    /// it. It does not keep the stream open.
    pub fn closer(&self) -> StreamCloser {
        StreamCloser {
            tx: self.tx.as_ref().map(Sender::downgrade),
            rx: self.rx.downgrade(),
        }
    }

    /// Drives the chunk being handed over, if any.
    fn poll_sending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(fut) = self.sending.as_mut() {
            let res = ready!(fut.as_mut().poll(cx));
            self.sending = None;
            if res.is_err() {
                return Poll::Ready(Err(broken_pipe()));
            }
        }
        Poll::Ready(Ok(()))
    }
}

fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the bridged stream is closed")
}

impl AsyncRead for ByteStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.leftover.is_empty() {
                let n = this.leftover.len().min(buf.remaining());
                buf.put_slice(&this.leftover.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match this.read_end {
                Some(None) => return Poll::Ready(Ok(())),
                Some(Some(aborted)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        aborted,
                    )))
                }
                None => {}
            }
            match ready!(this.rx.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => this.leftover = chunk,
                Some(Err(aborted)) => this.read_end = Some(Some(aborted)),
                None => this.read_end = Some(None),
            }
        }
    }
}

impl AsyncWrite for ByteStream {
    /// Accepts `buf` as one chunk. When the channel is full the chunk is still accepted,
    /// and the next write (or flush) waits until it is handed over: at most one chunk
    /// beyond the channel depth is buffered.
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_sending(cx))?;
        let Some(tx) = self.tx.as_ref() else {
            return Poll::Ready(Err(broken_pipe()));
        };
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match tx.try_send(Ok(Bytes::copy_from_slice(buf))) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(TrySendError::Full(chunk)) => {
                let tx = tx.clone();
                self.sending = Some(Box::pin(
                    async move { tx.send(chunk).await.map_err(|_| ()) },
                ));
                Poll::Ready(Ok(buf.len()))
            }
            Err(TrySendError::Closed(_)) => Poll::Ready(Err(broken_pipe())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_sending(cx)
    }

    /// Flushes, then ends the stream cleanly (FIN on QUIC).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_sending(cx))?;
        // dropping the last sender closes the channel after the queued chunks
        self.tx = None;
        Poll::Ready(Ok(()))
    }
}

impl Drop for ByteStream {
    /// Without a `shutdown()` the stream did not end cleanly: say so, so the far side
    /// resets instead of finishing (unless [`ByteStream::finish_after_peer_end`] applies).
    fn drop(&mut self) {
        let peer_ended = matches!(self.read_end, Some(None));
        if self.finish_after_peer_end && peer_ended && !std::thread::panicking() {
            // dropping the sender closes the channel after the queued chunks: FIN
            self.tx = None;
            return;
        }
        if let Some(tx) = self.tx.take() {
            // force_send makes room by dropping the oldest queued chunk: we abort anyway
            let _ = tx.force_send(Err(StreamAborted(u64::from(STREAM_ABORT_CODE))));
        }
    }
}

/// Ends a [`ByteStream`] abortively: the far side sees a reset, the stream's own reads
/// end and its writes fail. See [`ByteStream::closer`].
#[derive(Debug, Clone)]
pub struct StreamCloser {
    tx: Option<WeakSender<Chunk>>,
    rx: WeakReceiver<Chunk>,
}

impl StreamCloser {
    pub fn abort(&self) {
        if let Some(tx) = self.tx.as_ref().and_then(WeakSender::upgrade) {
            let _ = tx.force_send(Err(StreamAborted(u64::from(STREAM_ABORT_CODE))));
            tx.close();
        }
        if let Some(rx) = self.rx.upgrade() {
            rx.close();
        }
    }
}

/// Pumps a QUIC bidirectional stream to and from a new [`ByteStream`], with two tasks on
/// the current monoio worker. Must be called on a worker (inside a handler).
pub fn pump_quic_stream(stream: BiStream) -> ByteStream {
    let (bytes, end) = ByteStream::pair(BRIDGE_CHANNEL_DEPTH);
    let StreamEnd {
        to_stream,
        from_stream,
    } = end;
    let (mut send, mut recv) = stream.split();
    // An SSH transport is not a request with a response: SSH's channel windows pace its
    // data, and its keep-alives and QUIC's idle timeout watch the peer. A QUIC-level
    // stall cut would end every channel of the session at once for one slow consumer.
    send.set_stall_timeout(std::time::Duration::ZERO);
    spawn_guarded("ssh bridge: quic to tokio", async move {
        loop {
            // what has arrived, merged (one QUIC packet a chunk would be a hop a packet)
            match recv.read_available(BRIDGE_READ_CHUNK).await {
                Ok(Some(batch)) => {
                    if to_stream.send(Ok(batch)).await.is_err() {
                        // the session is gone: tell the peer to stop sending
                        let _ = recv.stop(VarInt::from_u32(STREAM_ABORT_CODE));
                        return;
                    }
                }
                // FIN: dropping the sender is EOF on the tokio side
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!("ssh bridge: stream read ended: {e}");
                    let code = match e {
                        ReadError::Reset(code) => code.into_inner(),
                        _ => u64::from(STREAM_ABORT_CODE),
                    };
                    let _ = to_stream.send(Err(StreamAborted(code))).await;
                    return;
                }
            }
        }
    });
    spawn_guarded("ssh bridge: tokio to quic", async move {
        loop {
            match from_stream.recv().await {
                Ok(Ok(chunk)) => {
                    if let Err(e) = send.write_chunk(chunk).await {
                        // dropping `from_stream` makes the tokio side's writes fail
                        tracing::debug!("ssh bridge: stream write ended: {e}");
                        return;
                    }
                }
                Ok(Err(aborted)) => {
                    tracing::debug!("ssh bridge: {aborted}; resetting the stream");
                    let _ = send.reset(VarInt::from_u32(STREAM_ABORT_CODE));
                    return;
                }
                Err(_closed) => {
                    let _ = send.finish();
                    // keep the stream until the peer has it all (or stops it)
                    let _ = send.stopped().await;
                    return;
                }
            }
        }
    });
    bytes
}

/// Client side: opens a bidirectional stream on `conn` (a connection of this monoio
/// thread) and returns its tokio side, ready for `russh::client::connect_stream`.
pub async fn open_bridged_stream(conn: &Connection) -> Result<ByteStream, ConnectionError> {
    Ok(pump_quic_stream(conn.open_bi().await?))
}

/// Default number of bridge threads when nothing says otherwise.
const DEFAULT_BRIDGE_THREADS: usize = 1;

/// Most threads the bridge runtime may have.
pub const MAX_BRIDGE_THREADS: usize = 256;

static BRIDGE: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// Serves every bidirectional stream `conn` opens as one session: the stream is pumped to
/// a [`ByteStream`] and `session` runs with it where `placement` says (this worker, in
/// `rt`'s context, or on `rt`). At most
/// `max_sessions` at once per connection; a stream beyond that is reset and stopped with
/// [`STREAM_ABORT_CODE`] (logged, naming `what`), and the connection goes on. Returns when
/// the connection ends.
pub async fn serve_bridged_sessions<F, Fut>(
    conn: &Connection,
    rt: &tokio::runtime::Handle,
    placement: SessionPlacement,
    max_sessions: usize,
    what: &str,
    mut session: F,
) where
    F: FnMut(ByteStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let open = Arc::new(AtomicUsize::new(0));
    while let Ok(stream) = conn.accept_bi().await {
        if open.load(Ordering::Acquire) >= max_sessions {
            tracing::warn!(
                remote = %conn.remote_address(),
                "{what}: session limit ({max_sessions}) reached; stream refused"
            );
            let (mut send, mut recv) = stream.split();
            let _ = send.reset(VarInt::from_u32(STREAM_ABORT_CODE));
            let _ = recv.stop(VarInt::from_u32(STREAM_ABORT_CODE));
            continue;
        }
        open.fetch_add(1, Ordering::AcqRel);
        let slot = SessionSlot(open.clone());
        let fut = session(pump_quic_stream(stream));
        let fut = async move {
            let _slot = slot;
            fut.await;
        };
        match placement {
            SessionPlacement::Worker => {
                // russh starts the session's loop with its own spawn: make that local too
                russh_util::runtime::set_local_spawner(Some(spawn_on_worker));
                spawn_guarded("ssh session", InTokioContext::new(rt.clone(), fut));
            }
            SessionPlacement::Bridge => {
                rt.spawn(fut);
            }
        }
    }
}

/// Where an SSH session's own work (russh's loop: ciphers, packets, the handler's
/// callbacks, subsystems such as `sftp`) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionPlacement {
    /// On the monoio worker that owns the session's QUIC connection, with the bridge
    /// runtime's handle entered while it is polled (for `tokio::time`, and for the
    /// helpers that stay on the bridge: child processes, TCP forwarding). A round trip then
    /// costs no cross-thread wake-up between the QUIC stream and russh. The worker also
    /// does the SSH ciphers and whatever a subsystem does inline.
    #[default]
    Worker,
    /// On the bridge runtime's threads: every chunk crosses between the worker and a
    /// tokio thread (a wake-up each way when the other side sleeps), but SSH's own CPU
    /// work runs beside the worker instead of on it.
    Bridge,
}

/// A future polled with a tokio runtime's handle entered: what `tokio::time`,
/// `tokio::spawn` and `spawn_blocking` need to find a runtime when the future itself runs
/// on a monoio worker. Timers and spawned helpers live on that runtime; their wake-ups
/// reach the worker through its (thread-safe) waker.
pub struct InTokioContext {
    handle: tokio::runtime::Handle,
    fut: Pin<Box<dyn Future<Output = ()> + 'static>>,
}

impl InTokioContext {
    pub fn new(handle: tokio::runtime::Handle, fut: impl Future<Output = ()> + 'static) -> Self {
        InTokioContext {
            handle,
            fut: Box::pin(fut),
        }
    }
}

impl Future for InTokioContext {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let _entered = this.handle.enter();
        this.fut.as_mut().poll(cx)
    }
}

/// The [`russh_util::runtime::LocalSpawner`] of a worker serving SSH sessions: russh's
/// tasks (a session's loop) and the session's own (`spawn_session_task`) run on this
/// worker, in the bridge runtime's context.
fn spawn_on_worker(task: russh_util::runtime::LocalTask) {
    match TokioBridge::handle() {
        // the task is boxed already: wrap it as it is rather than box it again
        Some(handle) => spawn_guarded("ssh session task", InTokioContext { handle, fut: task }),
        // the spawner is set only after the runtime started; without it the task would
        // panic on its first timer, which the guard would catch and log
        None => spawn_guarded("ssh session task", task),
    }
}

/// Spawns a task that belongs to an SSH session where the session itself runs: on the
/// worker ([`SessionPlacement::Worker`]) or on the bridge runtime.
pub fn spawn_session_task<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    drop(russh_util::runtime::spawn(fut));
}

/// Spawns a task that must stay on this worker thread (it holds io_uring operations, see
/// [`alknet_runtime::pipe`]), in the bridge runtime's context like the session's own
/// tasks. Only for code that found itself on a worker
/// ([`alknet_runtime::rt::current_driver`]).
pub fn spawn_worker_task<F>(fut: F)
where
    F: Future<Output = ()> + 'static,
{
    match TokioBridge::handle() {
        Some(handle) => spawn_guarded("ssh session task", InTokioContext::new(handle, fut)),
        None => spawn_guarded("ssh session task", fut),
    }
}

/// Frees a connection's session slot when the session ends.
struct SessionSlot(Arc<AtomicUsize>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The process-wide tokio runtime for SSH sessions: multi-threaded, started on first use,
/// never stopped (its tasks end with their sessions).
#[derive(Debug, Clone, Copy)]
pub struct TokioBridge;

impl TokioBridge {
    /// The runtime's handle, starting it with `threads` threads (0 = 1) if this is the
    /// first call in the process; later calls get the same runtime whatever they ask.
    pub fn start(threads: usize) -> io::Result<tokio::runtime::Handle> {
        if let Some(rt) = BRIDGE.get() {
            return Ok(rt.handle().clone());
        }
        let threads = if threads == 0 {
            DEFAULT_BRIDGE_THREADS
        } else {
            threads.min(MAX_BRIDGE_THREADS)
        };
        let next = AtomicUsize::new(0);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name_fn(move || format!("alknet-ssh-{}", next.fetch_add(1, Ordering::Relaxed)))
            .enable_all()
            .build()?;
        // Two first callers at once: one runtime wins, the other is dropped unused.
        let rt = BRIDGE.get_or_init(|| rt);
        tracing::debug!(threads, "ssh bridge runtime started");
        Ok(rt.handle().clone())
    }

    /// The runtime's handle if it was started.
    pub fn handle() -> Option<tokio::runtime::Handle> {
        BRIDGE.get().map(|rt| rt.handle().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn duplex_carries_bytes_and_eof() {
        rt().block_on(async {
            let (mut a, mut b) = ByteStream::duplex(2);
            let writer = tokio::spawn(async move {
                for i in 0..100u8 {
                    a.write_all(&[i; 1000]).await.expect("write");
                }
                a.shutdown().await.expect("shutdown");
            });
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.expect("read");
            writer.await.expect("writer");
            assert_eq!(got.len(), 100_000);
            assert!(got
                .chunks(1000)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&x| x as usize == i)));
        });
    }

    #[test]
    fn drop_without_shutdown_is_an_abort() {
        rt().block_on(async {
            let (mut a, mut b) = ByteStream::duplex(4);
            a.write_all(b"partial").await.expect("write");
            drop(a);
            let mut buf = Vec::new();
            let e = b.read_to_end(&mut buf).await.expect_err("aborted");
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
            assert_eq!(buf, b"partial");
            // and writing to a side whose peer is gone fails
            assert_eq!(
                b.write_all(b"x").await.expect_err("peer gone").kind(),
                io::ErrorKind::BrokenPipe
            );
        });
    }

    #[test]
    fn after_the_peer_ends_cleanly_a_drop_finishes() {
        rt().block_on(async {
            // the peer sent its part and finished; we answered, then failed on the EOF
            let (mut stream, end) = ByteStream::pair(4);
            stream.finish_after_peer_end();
            end.to_stream
                .send(Ok(Bytes::from_static(b"hello")))
                .await
                .expect("send");
            drop(end.to_stream);
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.expect("clean EOF");
            stream.write_all(b"banner").await.expect("write");
            drop(stream);
            assert_eq!(
                end.from_stream.recv().await,
                Ok(Ok(Bytes::from_static(b"banner")))
            );
            // closed without an abort: FIN
            assert!(end.from_stream.recv().await.is_err());

            // before the peer's end, a drop still resets
            let (mut stream, end) = ByteStream::pair(4);
            stream.finish_after_peer_end();
            stream.write_all(b"x").await.expect("write");
            drop(stream);
            assert_eq!(
                end.from_stream.recv().await,
                Ok(Ok(Bytes::from_static(b"x")))
            );
            assert!(matches!(
                end.from_stream.recv().await,
                Ok(Err(StreamAborted(_)))
            ));

            // and without the opt-in, a drop after the peer's end resets too
            let (mut stream, end) = ByteStream::pair(4);
            drop(end.to_stream);
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.expect("clean EOF");
            drop(stream);
            assert!(matches!(
                end.from_stream.recv().await,
                Ok(Err(StreamAborted(_)))
            ));
        });
    }

    #[test]
    fn a_full_channel_holds_the_writer_back() {
        rt().block_on(async {
            let (mut stream, end) = ByteStream::pair(2);
            // two chunks fill the channel, a third is accepted and parked
            for _ in 0..3 {
                stream.write_all(b"abc").await.expect("write");
            }
            let fourth = tokio::time::timeout(
                std::time::Duration::from_millis(50),
                stream.write_all(b"def"),
            )
            .await;
            assert!(fourth.is_err(), "the fourth write must wait for the reader");
            assert_eq!(
                end.from_stream.recv().await.expect("chunk"),
                Ok(Bytes::from_static(b"abc"))
            );
            let writer = tokio::spawn(async move {
                stream.write_all(b"ghi").await.expect("room again");
                stream.shutdown().await.expect("shutdown");
            });
            let mut rest = Vec::new();
            while let Ok(chunk) = end.from_stream.recv().await {
                rest.extend_from_slice(&chunk.expect("data"));
            }
            writer.await.expect("writer");
            assert_eq!(rest, b"abcabcghi");
        });
    }

    #[test]
    fn a_closer_aborts_both_directions() {
        rt().block_on(async {
            let (mut stream, end) = ByteStream::pair(4);
            let closer = stream.closer();
            end.to_stream
                .send(Ok(Bytes::from_static(b"hi")))
                .await
                .expect("send");
            closer.abort();
            // the far side sees the abort, and cannot send any more
            assert_eq!(
                end.from_stream.recv().await.expect("abort marker"),
                Err(StreamAborted(u64::from(STREAM_ABORT_CODE)))
            );
            assert!(end.to_stream.send(Ok(Bytes::new())).await.is_err());
            // the stream reads what was queued, then ends; writes fail
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.expect("read");
            assert_eq!(got, b"hi");
            assert!(stream.write_all(b"x").await.is_err());
        });
    }

    #[test]
    fn a_closer_does_not_keep_the_stream_open() {
        rt().block_on(async {
            let (mut stream, end) = ByteStream::pair(4);
            let _closer = stream.closer();
            stream.shutdown().await.expect("shutdown");
            assert!(end.from_stream.recv().await.is_err(), "clean end seen");
            drop(stream);
            assert!(
                end.to_stream.send(Ok(Bytes::new())).await.is_err(),
                "reader gone"
            );
        });
    }

    #[test]
    fn with_the_worker_spawner_russh_tasks_run_on_the_worker_with_tokio_timers() {
        let handle = TokioBridge::start(1).expect("start");
        let worker = std::thread::current().id();
        let (ran_on, slept) = alknet_runtime::rt::run_local(|_| async move {
            let before = russh_util::runtime::set_local_spawner(Some(spawn_on_worker));
            // what russh's `run_stream` does with a session's loop
            let task = russh_util::runtime::spawn(async {
                let started = std::time::Instant::now();
                // a tokio timer, as russh's keep-alive and inactivity timers are
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                (std::thread::current().id(), started.elapsed())
            });
            let out = task.await.expect("task");
            russh_util::runtime::set_local_spawner(before);
            out
        })
        .expect("monoio runtime");
        assert_eq!(ran_on, worker, "the task ran on the worker's own thread");
        assert!(slept >= std::time::Duration::from_millis(20));
        // without a spawner it is tokio::spawn, onto the bridge runtime's threads
        let name = handle
            .block_on(async {
                russh_util::runtime::spawn(async {
                    std::thread::current().name().map(str::to_owned)
                })
                .await
            })
            .expect("task");
        assert!(name.is_some_and(|n| n.starts_with("alknet-ssh-")));
    }

    #[test]
    fn the_bridge_runtime_is_started_once() {
        let a = TokioBridge::start(2).expect("start");
        let b = TokioBridge::start(5).expect("again");
        assert_eq!(a.id(), b.id());
        let name = a
            .block_on(a.spawn(async { std::thread::current().name().map(str::to_owned) }))
            .expect("task");
        assert!(name.is_some_and(|n| n.starts_with("alknet-ssh-")));
    }
}
