//! The baselines Alknet is compared against: quinn 0.11 on tokio, serving `alknet/echo` and
//! `perf` exactly as Alknet's handlers (`handlers/echo`, `handlers/perf`) do, and `h3`
//! with h3-quinn (`baseline_h3.rs`).
//!
//! [`Flavor::PerfServer`] is the strongest configuration we know of, and the one every
//! comparison uses: it is what quinn's own benchmark tool, `quinn-perf server` (`perf/` in
//! the quinn repository, 0.11.x branch and main), runs, setting by setting:
//!
//! * one tokio **current-thread** runtime (quinn-perf's `#[tokio::main(flavor =
//!   "current_thread")]`): quinn drives its endpoint from one task anyway, and a second
//!   runtime thread only adds cross-thread wake-ups (measured: the multi-thread baseline
//!   spent 2.2x the CPU per request of quinn-perf server);
//! * quinn's default [`TransportConfig`] with `initial_mtu` 1200 (quinn-perf's
//!   `--initial-mtu` default) and [`EndpointConfig`] with `max_udp_payload_size` 1472
//!   (its `--max-udp-payload-size` default);
//! * 2 MiB socket send and receive buffers set through quinn-udp (its `--send-buffer-size`
//!   and `--recv-buffer-size` defaults);
//! * rustls with *ring*, TLS 1.3 only, AES-128-GCM preferred over AES-256-GCM and
//!   ChaCha20-Poly1305 (its `PERF_CIPHER_SUITES`), no client authentication, a self-signed
//!   ECDSA P-256 certificate from rcgen;
//! * one task per connection running the uni and bi accept loops together (`try_join!`),
//!   one task per stream, zero-copy `read_chunks`/`write_chunk` from a static 1 MiB
//!   buffer.
//!
//! [`Flavor::MultiThread`] is the baseline this project used before: a multi-thread runtime
//! with `threads` workers and Alknet's own [`Limits`] (transport parameters, socket
//! buffers). It is kept only to show, in one run, how much weaker it is.

use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use alknet_runtime::tls::{
    initial_suite, server_rustls_config, ClientAuth, ServerRandom, TlsIdentity,
};
use alknet_runtime::HandshakePolicy;
use alknet_runtime::{close_code, Limits, CLOSE_LINGER};
use bytes::Bytes;
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use quinn::{
    Connection, ConnectionError, Endpoint, EndpointConfig, Incoming, ReadError, RecvStream,
    SendStream, ServerConfig, TokioRuntime, TransportConfig, VarInt, WriteError,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc::UnboundedSender;
use tracing::debug;

/// ALPN of the echo protocol (as `alknet_echo::ALPN`).
const ECHO_ALPN: &[u8] = b"alknet/echo";
/// ALPN of quinn's perf protocol (as `alknet_perf::ALPN`).
const PERF_ALPN: &[u8] = b"perf";
/// ALPN of HTTP/3 (as `alknet_http::h3::ALPN`).
const H3_ALPN: &[u8] = b"h3";
/// Largest chunk the echo takes from a stream at once (as the Alknet echo handler).
const MAX_CHUNK: usize = 64 * 1024;
/// Perf responses are slices of this buffer, as in quinn-perf and the Alknet perf handler.
static RESPONSE: [u8; 1024 * 1024] = [42; 1024 * 1024];

/// quinn-perf's `--initial-mtu` default.
pub const PERF_INITIAL_MTU: u16 = 1200;
/// quinn-perf's `--max-udp-payload-size` default.
pub const PERF_MAX_UDP_PAYLOAD_SIZE: u16 = 1472;
/// quinn-perf's `--send-buffer-size` and `--recv-buffer-size` defaults.
pub const PERF_SOCKET_BUFFER_SIZE: usize = 2 << 20;
/// Read slots per `read_chunks` call (quinn-perf drains with 32).
const DRAIN_CHUNKS: usize = 32;

/// How the baseline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// As `quinn-perf server`: current-thread runtime, quinn's transport defaults.
    PerfServer,
    /// The former baseline: a multi-thread runtime with `threads` workers, Alknet's limits.
    MultiThread,
}

/// What to run: where, how, on how many tokio worker threads (multi-thread only), with
/// which limits (multi-thread only; the perf-server flavor uses quinn-perf's settings).
#[derive(Debug, Clone)]
pub struct BaselineOptions {
    pub listen: SocketAddr,
    pub flavor: Flavor,
    pub threads: usize,
    pub limits: Limits,
    /// The certificate and key (ECDSA P-256 as quinn-perf generates, unless the run says).
    pub identity: TlsIdentity,
}

/// [`Limits::transport_config`] in stock quinn's types, for [`Flavor::MultiThread`]: the
/// same transport parameters and path-MTU bound. The engine's two additions to path MTU
/// discovery (`first_search_after_packets`, `upper_bound_first`) exist only in its
/// vendored quinn-proto; stock quinn probes right after the handshake and searches from
/// the bottom, as every quinn user's server does.
fn stock_transport_config(limits: &Limits) -> TransportConfig {
    let (mut t, mtud) =
        alknet_runtime::limits_transport_config!(quinn, limits, limits.max_udp_payload_size);
    t.mtu_discovery_config(Some(mtud));
    t
}

/// Runs until SIGINT/SIGTERM or until stdin is closed (so a parent process can stop it by
/// dropping the pipe); prints to stdout, one per line, flushed: `listening <addr>` and
/// `fingerprint <64 hex>` once ready.
///
/// On stop, every connection is closed at once (application code `close_code::SHUTDOWN`)
/// and the endpoint gets [`CLOSE_LINGER`] to deliver the CONNECTION_CLOSEs, as Alknet's
/// immediate shutdown does. An error is returned only when the server cannot start.
pub fn run(opts: BaselineOptions) -> Result<(), String> {
    opts.limits.validate().map_err(|e| e.to_string())?;
    if opts.threads == 0 {
        return Err("the baseline needs at least one worker thread".into());
    }
    let identity = opts.identity.clone();
    let mut rustls_config = server_rustls_config(
        &identity,
        vec![ECHO_ALPN.to_vec(), PERF_ALPN.to_vec(), H3_ALPN.to_vec()],
        ClientAuth::None,
        &HandshakePolicy::default(),
        // rustls' default with ring: a getrandom(2) per random piece, as quinn-perf runs
        ServerRandom::Kernel,
        // rustls' single-use session cache, as quinn-perf's default rustls config keeps
        None,
    )
    .map_err(|e| e.to_string())?;
    // ALKNET_BASELINE_TICKETS=stateless: rustls' own stateless ticketer (random keys,
    // rotated every 6 h) instead of its cache, the stronger choice for resumption load
    if std::env::var("ALKNET_BASELINE_TICKETS").as_deref() == Ok("stateless") {
        rustls_config.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
    }
    let crypto = QuicServerConfig::with_initial(
        Arc::new(rustls_config),
        initial_suite().map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let (transport, max_udp_payload, socket_buffer) = match opts.flavor {
        Flavor::PerfServer => {
            let mut t = TransportConfig::default();
            t.initial_mtu(PERF_INITIAL_MTU);
            (t, PERF_MAX_UDP_PAYLOAD_SIZE, PERF_SOCKET_BUFFER_SIZE)
        }
        Flavor::MultiThread => (
            stock_transport_config(&opts.limits),
            opts.limits.max_udp_payload_size,
            opts.limits.socket_buffer_size,
        ),
    };
    let mut server_config = ServerConfig::with_crypto(Arc::new(crypto));
    server_config
        .transport_config(Arc::new(transport))
        .migration(true);
    let mut endpoint_config = EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(max_udp_payload)
        .map_err(|e| format!("max_udp_payload_size: {e}"))?;
    let socket = bind_socket(opts.listen, socket_buffer)
        .map_err(|e| format!("binding UDP {}: {e}", opts.listen))?;

    let runtime = match opts.flavor {
        Flavor::PerfServer => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(opts.threads);
            b
        }
    }
    .thread_name("quinn-baseline")
    .enable_all()
    .build()
    .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    // Both ways to stop report here: a signal, or the end of stdin.
    let (stop_tx, mut stop) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let signals = SignalGuard::install(stop_tx.clone())
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    // Detached: it ends with the process if a signal stops us first.
    std::thread::Builder::new()
        .name("baseline-stdin".into())
        .spawn(move || {
            // whatever the parent writes is ignored; EOF (or an error) means "stop"
            let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
            let _ = stop_tx.send("stdin closed");
        })
        .map_err(|e| format!("starting the stdin watcher: {e}"))?;

    let max_connections = opts.limits.max_connections;
    let result = runtime.block_on(async move {
        // inside the runtime: the socket is registered with tokio's reactor and the
        // endpoint driver is spawned on the workers
        let endpoint = Endpoint::new(
            endpoint_config,
            Some(server_config),
            socket,
            Arc::new(TokioRuntime),
        )
        .map_err(|e| format!("starting the quinn endpoint: {e}"))?;
        let local = endpoint
            .local_addr()
            .map_err(|e| format!("endpoint address: {e}"))?;
        announce(local, &identity).map_err(|e| format!("writing to stdout: {e}"))?;

        let acceptor = tokio::spawn(accept_loop(endpoint.clone(), max_connections));
        // both senders live as long as their threads, so `None` cannot come first
        let why = stop.recv().await.unwrap_or("no way left to be stopped");
        debug!("baseline stopping ({why})");
        endpoint.close(
            VarInt::from_u32(close_code::SHUTDOWN),
            b"server shutting down",
        );
        let _ = acceptor.await;
        let _ = tokio::time::timeout(CLOSE_LINGER, endpoint.wait_idle()).await;
        Ok(())
    });
    drop(runtime);
    drop(signals);
    result
}

/// Prints the two lines the parent waits for.
fn announce(local: SocketAddr, identity: &TlsIdentity) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening {local}")?;
    writeln!(out, "fingerprint {}", identity.fingerprint())?;
    out.flush()
}

/// The server socket, set up as quinn-perf's `bind_socket` does: one socket (quinn serves
/// one endpoint from one socket, so no SO_REUSEPORT), buffers through quinn-udp.
fn bind_socket(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // [::] takes IPv4 too
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    if buffer > 0 {
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        // best effort: the kernel caps these at rmem_max/wmem_max (quinn-perf only warns)
        let _ = state.set_send_buffer_size((&socket).into(), buffer);
        let _ = state.set_recv_buffer_size((&socket).into(), buffer);
    }
    Ok(socket.into())
}

/// Accepts connection attempts until the endpoint is closed, one task per connection (as
/// quinn's example server does, including its connection limit).
async fn accept_loop(endpoint: Endpoint, max_connections: usize) {
    while let Some(incoming) = endpoint.accept().await {
        if endpoint.open_connections() >= max_connections {
            debug!(
                "refusing connection from {}: {max_connections} open",
                incoming.remote_address()
            );
            incoming.refuse();
            continue;
        }
        tokio::spawn(handle_connection(incoming));
    }
}

/// Completes the handshake and serves the connection by its negotiated ALPN until it ends.
async fn handle_connection(incoming: Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            debug!("handshake with {remote} failed: {e}");
            return;
        }
    };
    let alpn = conn
        .handshake_data()
        .and_then(|data| data.downcast::<HandshakeData>().ok())
        .and_then(|data| data.protocol);
    match alpn.as_deref() {
        Some(ECHO_ALPN) => serve_echo(conn).await,
        Some(PERF_ALPN) => serve_perf(conn).await,
        Some(H3_ALPN) => crate::baseline_h3::serve_h3(conn).await,
        // rustls refuses any other ALPN during the handshake; this cannot happen
        other => {
            debug!("{remote}: no handler for negotiated ALPN {other:?}");
            conn.close(
                VarInt::from_u32(close_code::NO_HANDLER),
                b"no handler for this ALPN",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// alknet/echo

/// Every bidirectional stream is echoed back on itself, every unidirectional stream on a
/// new unidirectional stream, every DATAGRAM as a DATAGRAM. Returns when the peer closes.
async fn serve_echo(conn: Connection) {
    let dgram = conn.clone();
    tokio::spawn(async move {
        while let Ok(d) = dgram.read_datagram().await {
            if dgram.send_datagram(d).is_err() {
                break;
            }
        }
    });
    let bi = async {
        while let Ok((send, recv)) = conn.accept_bi().await {
            tokio::spawn(async move { log_echo_end(echo_pump(recv, send).await) });
        }
    };
    let uni = async {
        while let Ok(recv) = conn.accept_uni().await {
            let conn = conn.clone();
            tokio::spawn(async move {
                if let Ok(send) = conn.open_uni().await {
                    log_echo_end(echo_pump(recv, send).await);
                }
            });
        }
    };
    // the two accept loops share the connection's task, as in quinn's perf server
    tokio::join!(bi, uni);
}

/// Copies `recv` to `send` chunk by chunk, then finishes `send`. A chunk is read only after
/// the previous one was accepted by the send side, so back-pressure holds.
async fn echo_pump(mut recv: RecvStream, mut send: SendStream) -> Result<u64, StreamError> {
    let mut total = 0u64;
    while let Some(chunk) = recv.read_chunk(MAX_CHUNK, true).await? {
        total += chunk.bytes.len() as u64;
        send.write_chunk(chunk.bytes).await?;
    }
    let _ = send.finish();
    Ok(total)
}

fn log_echo_end(result: Result<u64, StreamError>) {
    if let Err(e) = result {
        debug!("echo stream ended: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// perf

/// quinn-perf's protocol: each request is an 8-byte big-endian download size, then upload
/// bytes to FIN; the response is that many bytes, then FIN. A bidirectional request is
/// answered on its own stream, a unidirectional one on a new unidirectional stream.
async fn serve_perf(conn: Connection) {
    let bi = async {
        while let Ok((send, recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                log_request(async { respond(read_request(recv).await?, send).await }.await);
            });
        }
    };
    let uni = async {
        while let Ok(recv) = conn.accept_uni().await {
            let conn = conn.clone();
            tokio::spawn(async move {
                let result = async {
                    let size = read_request(recv).await?;
                    respond(size, conn.open_uni().await?).await
                };
                log_request(result.await);
            });
        }
    };
    tokio::join!(bi, uni);
}

/// Reads the 8-byte download size, then drains the upload to FIN.
async fn read_request(mut recv: RecvStream) -> Result<u64, StreamError> {
    let mut header = [0u8; 8];
    let mut have = 0;
    while have < header.len() {
        let chunk = recv
            .read_chunk(header.len() - have, true)
            .await?
            .ok_or(StreamError::ShortRequest(have))?;
        header[have..have + chunk.bytes.len()].copy_from_slice(&chunk.bytes);
        have += chunk.bytes.len();
    }
    let mut bufs: [Bytes; DRAIN_CHUNKS] = std::array::from_fn(|_| Bytes::new());
    while recv.read_chunks(&mut bufs).await?.is_some() {}
    Ok(u64::from_be_bytes(header))
}

async fn respond(mut size: u64, mut send: SendStream) -> Result<(), StreamError> {
    while size > 0 {
        let n = size.min(RESPONSE.len() as u64) as usize;
        send.write_chunk(Bytes::from_static(&RESPONSE[..n])).await?;
        size -= n as u64;
    }
    let _ = send.finish();
    Ok(())
}

fn log_request(result: Result<(), StreamError>) {
    match result {
        Ok(()) => {}
        // a client that abandons a request mid-way is normal under load tests
        Err(StreamError::Read(ReadError::ConnectionLost(_))) => {}
        Err(e) => debug!("perf request failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// errors and logging

/// Why serving one stream ended early.
#[derive(Debug)]
enum StreamError {
    Read(ReadError),
    Write(WriteError),
    Open(ConnectionError),
    /// The stream ended after this many of the 8 perf request bytes.
    ShortRequest(usize),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Read(e) => write!(f, "read: {e}"),
            StreamError::Write(e) => write!(f, "write: {e}"),
            StreamError::Open(e) => write!(f, "opening the response stream: {e}"),
            StreamError::ShortRequest(have) => {
                write!(f, "stream ended after {have} of 8 request bytes")
            }
        }
    }
}

impl From<ReadError> for StreamError {
    fn from(e: ReadError) -> Self {
        StreamError::Read(e)
    }
}

impl From<WriteError> for StreamError {
    fn from(e: WriteError) -> Self {
        StreamError::Write(e)
    }
}

impl From<ConnectionError> for StreamError {
    fn from(e: ConnectionError) -> Self {
        StreamError::Open(e)
    }
}

// ---------------------------------------------------------------------------------------
// signals

/// Write end of the self-pipe the signal handler writes to (-1 when none is installed).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // only async-signal-safe calls here, and errno as the interrupted code left it
        // SAFETY: `__errno_location` is this thread's errno; `write` is async-signal-safe and
        // the write end is non-blocking.
        unsafe {
            let errno = *libc::__errno_location();
            let byte = sig as u8;
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// SIGINT and SIGTERM handlers feeding a self-pipe, read by a thread that reports each
/// signal on `stop`. Dropping the guard restores the previous handlers and ends the thread.
/// (The crate's tokio is built without its `signal` feature; this is what it would do.)
struct SignalGuard {
    write: OwnedFd,
    previous: Vec<(libc::c_int, libc::sigaction)>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// What the reader thread takes as "stop reading" (no signal has number 0).
const WAKE_READER: u8 = 0;

impl SignalGuard {
    fn install(stop: UnboundedSender<&'static str>) -> io::Result<Self> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // the handler must never block: a full pipe already holds a pending signal
        // SAFETY: plain fcntl on a descriptor we own.
        if unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let reader = std::thread::Builder::new()
            .name("baseline-signals".into())
            .spawn(move || read_signals(read, stop))?;
        SIGNAL_PIPE.store(write.as_raw_fd(), Ordering::SeqCst);
        let mut guard = SignalGuard {
            write,
            previous: Vec::new(),
            reader: Some(reader),
        };
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a zeroed sigaction is a valid starting point; the handler only makes
            // async-signal-safe calls; `old` receives the previous action.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &action, &mut old) != 0 {
                    // `guard` drops here and undoes what was done so far
                    return Err(io::Error::last_os_error());
                }
                guard.previous.push((sig, old));
            }
        }
        Ok(guard)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, old) in self.previous.drain(..).rev() {
            // SAFETY: restores an action sigaction itself returned.
            unsafe {
                libc::sigaction(sig, &old, std::ptr::null_mut());
            }
        }
        SIGNAL_PIPE.store(-1, Ordering::SeqCst);
        let byte = WAKE_READER;
        // SAFETY: writes one byte from `byte` to the pipe we own.
        let woken = unsafe { libc::write(self.write.as_raw_fd(), (&byte as *const u8).cast(), 1) };
        if let Some(reader) = self.reader.take() {
            if woken == 1 {
                let _ = reader.join();
            }
        }
        // `self.write` closes after this
    }
}

/// The reader thread: reports each signal number the handler writes, until woken with
/// [`WAKE_READER`].
fn read_signals(read: OwnedFd, stop: UnboundedSender<&'static str>) {
    loop {
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into `byte` from a descriptor we own.
        let n = unsafe { libc::read(read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n != 1 || byte == WAKE_READER {
            return;
        }
        let name = match libc::c_int::from(byte) {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            _ => "a signal",
        };
        let _ = stop.send(name);
    }
}
