//! TLS over TCP on the QUIC port, for clients whose UDP is blocked: HTTP/1.1, HTTP/2 and
//! DoT ([`TcpHandler`]s), and the QUIC services of `[tcp] stream_alpns` as one-stream
//! connections ([`crate::tcp_connection`]).
//!
//! Thread-per-core like the UDP side: every worker has its own SO_REUSEPORT listener on the
//! QUIC endpoint's address and port, accepts with monoio (io_uring accept, or epoll with
//! the legacy driver) and serves each connection on itself. The TLS handshake uses the
//! certificate and client-certificate policy new QUIC handshakes get (reloads included),
//! then the negotiated ALPN picks a [`TcpHandler`], as [`crate::AlpnRegistry`] does for
//! QUIC; a client with no ALPN is HTTP/1.1, unless a handler claims it by the first byte
//! it sends ([`TcpHandler::claims_without_alpn`]: DNS over TLS clients that offer no
//! ALPN). The QUIC packet path is not involved.
//!
//! The TLS stream: monoio's `TcpStreamPoll` (poll-io: readiness through the same ring)
//! implements tokio's `AsyncRead`/`AsyncWrite` traits, so `tokio-rustls` (rustls's own
//! async adapter, maintained with it) runs the record layer on it. No tokio runtime runs:
//! only its IO traits are used.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufRead;

use crate::admission::{AdmissionLimits, AlpnTicket, Refusal, SourceTable, SourceTicket};
use crate::connection::Connection;
use crate::identity::AuthContext;
use crate::limits::TcpLimits;
use crate::router::{AlpnRegistry, HandlerError, LocalBoxFuture, ProtocolHandler, RegistryError};
use crate::rt::{catch_panic, panic_message, spawn_guarded};
use crate::stats::WorkerStats;
use crate::tcp_connection::{tcp_connection, TcpPeer};
use crate::tls::fingerprint_of;
use crate::worker::{ServerShared, CLOSE_NOW, RUNNING};

/// A server-side TLS stream over TCP, as handed to a [`TcpHandler`]. It implements tokio's
/// `AsyncRead`/`AsyncWrite` (driven by the worker's monoio loop, not by tokio).
pub type TlsTcpStream =
    tokio_rustls::server::TlsStream<monoio::net::tcp::stream_poll::TcpStreamPoll>;

/// The ALPN a TLS client that offers none is served as.
pub const TCP_DEFAULT_ALPN: &[u8] = b"http/1.1";

/// How often a worker whose QUIC side has drained checks whether its TCP connections have
/// too (they end when their clients close or the handler's own timeouts close them).
const TCP_DRAIN_POLL: Duration = Duration::from_millis(50);
/// Pause after an accept error such as EMFILE, so a full fd table does not spin the worker.
/// Every TCP accept loop on the workers pauses this long (see [`accept_error_pause`]).
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// A protocol served over TLS on TCP under one or more ALPNs.
///
/// Shared by all workers; each connection's `handle` future runs on the worker that
/// accepted it and need not be `Send`. An error or a panic ends only that connection.
pub trait TcpHandler: Send + Sync + 'static {
    /// The ALPNs served, e.g. `[b"h2", b"http/1.1"]`.
    fn alpns(&self) -> Vec<Vec<u8>>;
    /// Whether this handler takes a connection that negotiated no ALPN, judging by the
    /// first byte the client sent after the handshake (e.g. DNS over TLS clients that
    /// offer no ALPN, whose first bytes are a message length). Without a claim, such a
    /// connection is [`TCP_DEFAULT_ALPN`]'s, and nothing is read before its handler runs.
    fn claims_without_alpn(&self, _first_byte: u8) -> bool {
        false
    }

    /// Serves one connection whose TLS handshake is complete.
    fn handle(
        &self,
        stream: TlsTcpStream,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>>;
}

/// The TCP handlers of one server, by ALPN, in preference order.
#[derive(Clone, Default)]
pub struct TcpRegistry {
    handlers: Vec<(Vec<u8>, Arc<dyn TcpHandler>)>,
    /// Some handler claims connections without ALPN by their first byte.
    sniffing: bool,
}

impl std::fmt::Debug for TcpRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.handlers
                    .iter()
                    .map(|(a, _)| String::from_utf8_lossy(a)),
            )
            .finish()
    }
}

impl TcpRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, handler: Arc<dyn TcpHandler>) -> Result<(), RegistryError> {
        for alpn in handler.alpns() {
            if alpn.is_empty() || alpn.len() > 255 {
                return Err(RegistryError::Length(alpn.len()));
            }
            if self.lookup(&alpn).is_some() {
                return Err(RegistryError::Duplicate(
                    String::from_utf8_lossy(&alpn).into_owned(),
                ));
            }
            self.handlers.push((alpn, handler.clone()));
        }
        self.sniffing |= (0..=u8::MAX).any(|b| handler.claims_without_alpn(b));
        Ok(())
    }

    pub fn lookup(&self, alpn: &[u8]) -> Option<&Arc<dyn TcpHandler>> {
        self.handlers
            .iter()
            .find(|(a, _)| a.as_slice() == alpn)
            .map(|(_, h)| h)
    }

    /// Whether any handler may claim a connection without ALPN by its first byte.
    fn sniffs_without_alpn(&self) -> bool {
        self.sniffing
    }

    /// The handler (and its ALPN) of a connection that negotiated none and sent
    /// `first_byte` first: the first that claims it, else [`TCP_DEFAULT_ALPN`]'s.
    fn without_alpn(&self, first_byte: u8) -> Option<(&[u8], &Arc<dyn TcpHandler>)> {
        self.handlers
            .iter()
            .find(|(_, h)| h.claims_without_alpn(first_byte))
            .or_else(|| self.handlers.iter().find(|(a, _)| a == TCP_DEFAULT_ALPN))
            .map(|(a, h)| (a.as_slice(), h))
    }

    /// The ALPNs to advertise, in preference order.
    pub fn alpns(&self) -> Vec<Vec<u8>> {
        self.handlers.iter().map(|(a, _)| a.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }
}

/// What a server's TCP side needs: its handlers and limits.
#[derive(Debug, Clone, Default)]
pub struct TcpSetup {
    pub registry: TcpRegistry,
    pub limits: TcpLimits,
}

impl TcpSetup {
    /// The ALPNs the TCP side offers, in preference order: its own handlers', then the
    /// `[tcp] stream_alpns` that `quic` serves (as one-stream connections).
    pub fn offered_alpns(&self, quic: &AlpnRegistry) -> Vec<Vec<u8>> {
        let mut alpns = self.registry.alpns();
        for alpn in &self.limits.stream_alpns {
            let alpn = alpn.as_bytes();
            if quic.lookup(alpn).is_some() && !alpns.iter().any(|a| a == alpn) {
                alpns.push(alpn.to_vec());
            }
        }
        alpns
    }

    /// Whether `alpn` is served over TCP as a one-stream connection of its QUIC handler.
    fn streams(&self, alpn: &[u8]) -> bool {
        self.limits
            .stream_alpns
            .iter()
            .any(|a| a.as_bytes() == alpn)
    }
}

/// Connections one worker's listener has open, for its limit and its drain.
#[derive(Default)]
pub(crate) struct WorkerTcp {
    open: Cell<usize>,
}

/// Holds a connection's place in its worker's count and, through its [`SourceTicket`], in
/// the server's per-source counts (shared with QUIC); dropping it frees both.
struct Slot {
    worker: Rc<WorkerTcp>,
    stats: Arc<WorkerStats>,
    _source: SourceTicket,
    counted_open: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.worker
            .open
            .set(self.worker.open.get().saturating_sub(1));
        if self.counted_open {
            self.stats.tcp_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl WorkerTcp {
    /// A place for a connection from `ip`, or why not: this worker's
    /// `[tcp] max_connections_per_worker`, then `[admission]` exactly as for a QUIC
    /// connection (the source's new-connection rate, its per-address and per-prefix caps,
    /// counted in the one table QUIC uses, so a source's TCP and QUIC connections add up).
    fn admit(
        self: &Rc<Self>,
        ip: IpAddr,
        limits: &TcpLimits,
        sources: &Arc<SourceTable>,
        admission: &AdmissionLimits,
        stats: &Arc<WorkerStats>,
    ) -> Result<Slot, &'static str> {
        if self.open.get() >= limits.max_connections_per_worker {
            return Err("tcp.max_connections_per_worker reached");
        }
        if !sources.rate_allows(admission, ip, Instant::now()) {
            return Err(Refusal::Rate.reason());
        }
        let ticket = sources.admit(admission, ip).map_err(Refusal::reason)?;
        self.open.set(self.open.get() + 1);
        Ok(Slot {
            worker: self.clone(),
            stats: stats.clone(),
            _source: ticket,
            counted_open: false,
        })
    }

    /// Waits until this worker's TCP connections are gone, `timeout` passed, or the server
    /// is told to close everything now. Bounded by `timeout`.
    pub(crate) async fn drain(&self, shared: &ServerShared, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.open.get() > 0
            && Instant::now() < until
            && shared.shutdown.load(Ordering::Acquire) != CLOSE_NOW
        {
            monoio::time::sleep(TCP_DRAIN_POLL).await;
        }
    }
}

/// How long a TCP accept loop waits before it accepts again after `error`: not at all when
/// the failure belonged to one connection (the peer reset it before it was accepted, or
/// the call was interrupted, or Linux passed on a pending protocol error, EPROTO, as
/// `accept(2)` says it may), [`ACCEPT_ERROR_PAUSE`] for anything else. Those are the
/// listener's own troubles (EMFILE, ENFILE, ENOBUFS, ENOMEM), which last until something
/// closes; accepting again at once would spin the worker and starve its other tasks.
pub fn accept_error_pause(error: &std::io::Error) -> Option<Duration> {
    use std::io::ErrorKind;
    if error.raw_os_error() == Some(libc::EPROTO) {
        return None;
    }
    match error.kind() {
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted => None,
        _ => Some(ACCEPT_ERROR_PAUSE),
    }
}

/// One accept on a worker's TCP listener: the connection, or `None` after an error, which
/// is logged (`what` names the listener) and waited out as [`accept_error_pause`] says, so
/// the caller just loops. The one accept step of every TCP listener on the workers.
pub async fn accept_or_pause(
    listener: &monoio::net::TcpListener,
    what: &str,
) -> Option<(monoio::net::TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(accepted) => Some(accepted),
        Err(e) => {
            let pause = accept_error_pause(&e);
            let local = listener.local_addr().ok();
            tracing::warn!(listener = what, ?local, ?pause, "accept failed: {e}");
            if let Some(pause) = pause {
                monoio::time::sleep(pause).await;
            }
            None
        }
    }
}

/// Accepts on one worker's listener until the server shuts down. An accept that completes
/// after shutdown was requested is closed at once; the task itself ends with the worker's
/// runtime (the accept is never cancelled mid-flight, so no accepted fd can leak).
pub(crate) async fn accept_loop(
    worker: usize,
    listener: monoio::net::TcpListener,
    shared: Arc<ServerShared>,
    state: Rc<WorkerTcp>,
) {
    let Some(live) = shared.tcp.as_ref() else {
        return;
    };
    let stats = shared.stats[worker].clone();
    loop {
        let Some((stream, remote)) = accept_or_pause(&listener, "TCP").await else {
            continue;
        };
        if shared.shutdown.load(Ordering::Acquire) != RUNNING {
            WorkerStats::add(&stats.tcp_refused, 1);
            drop(stream);
            continue;
        }
        // one load per connection: a reload's handlers and limits apply from the next
        // connection on; this one keeps the setup it was accepted with to its end
        let setup = live.load_full();
        let admitted = state.admit(
            remote.ip(),
            &setup.limits,
            &shared.sources,
            &shared.admission.load(),
            &stats,
        );
        let slot = match admitted {
            Ok(slot) => slot,
            Err(why) => {
                WorkerStats::add(&stats.tcp_refused, 1);
                tracing::debug!(worker, %remote, "TCP connection refused: {why}");
                drop(stream);
                continue;
            }
        };
        let shared = shared.clone();
        let stats = stats.clone();
        spawn_guarded("tcp connection", async move {
            serve_connection(worker, stream, remote, shared, &setup, stats, slot).await;
        });
    }
}

async fn serve_connection(
    worker: usize,
    stream: monoio::net::TcpStream,
    remote: SocketAddr,
    shared: Arc<ServerShared>,
    setup: &TcpSetup,
    stats: Arc<WorkerStats>,
    mut slot: Slot,
) {
    let _ = stream.set_nodelay(true);
    set_keepalive(&stream, setup.limits.keepalive_idle);
    let local = stream.local_addr().ok();
    let poll = match stream.try_into_poll_io() {
        Ok(p) => p,
        Err((e, _)) => {
            tracing::warn!(worker, %remote, "TCP stream to poll mode: {e}");
            return;
        }
    };
    let Some(config) = shared.tls.load().tcp.clone() else {
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshake =
        monoio::time::timeout(setup.limits.tls_handshake_timeout, acceptor.accept(poll)).await;
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            WorkerStats::add(&stats.tls_handshake_failures, 1);
            tracing::debug!(worker, %remote, "TLS over TCP handshake failed: {e}");
            return;
        }
        Err(_) => {
            WorkerStats::add(&stats.tls_handshake_failures, 1);
            tracing::debug!(worker, %remote, "TLS over TCP handshake timed out");
            return;
        }
    };
    let (negotiated, peer_fingerprint) = {
        let (_, conn) = tls.get_ref();
        if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            WorkerStats::add(&stats.tls_resumed, 1);
        }
        (
            conn.alpn_protocol().map(<[u8]>::to_vec),
            conn.peer_certificates()
                .and_then(|c| c.first())
                .map(fingerprint_of),
        )
    };
    let mut tls = tls;
    let alpn = match negotiated {
        Some(alpn) => alpn,
        None if setup.registry.sniffs_without_alpn() => {
            // the first byte decides (read, not consumed); bounded like the handshake
            let first = monoio::time::timeout(
                setup.limits.tls_handshake_timeout,
                std::future::poll_fn(|cx| {
                    std::pin::Pin::new(&mut tls)
                        .poll_fill_buf(cx)
                        .map_ok(|b| b.first().copied())
                }),
            )
            .await;
            let Ok(Ok(Some(first))) = first else {
                tracing::debug!(worker, %remote, "TLS over TCP: no ALPN and no data");
                return;
            };
            match setup.registry.without_alpn(first) {
                Some((alpn, _)) => alpn.to_vec(),
                None => TCP_DEFAULT_ALPN.to_vec(),
            }
        }
        None => TCP_DEFAULT_ALPN.to_vec(),
    };
    let handler = match setup.registry.lookup(&alpn) {
        Some(h) => Served::Tcp(h.clone()),
        None if setup.streams(&alpn) => match shared.registry.load().lookup(&alpn) {
            Some(h) => Served::Stream(h.clone()),
            None => {
                // offered when the TLS config was built; a handler reload removed it since
                tracing::debug!(worker, %remote, "ALPN {:?} is no longer served", String::from_utf8_lossy(&alpn));
                return;
            }
        },
        None => {
            // only without ALPN (rustls refuses ALPNs we do not advertise)
            tracing::debug!(worker, %remote, "no TCP handler for ALPN {:?}", String::from_utf8_lossy(&alpn));
            WorkerStats::add(&stats.tls_handshake_failures, 1);
            return;
        }
    };
    WorkerStats::add(&stats.tcp_accepted, 1);
    WorkerStats::add(&stats.tcp_open, 1);
    slot.counted_open = true;
    let auth = shared.auth_context(remote, local, alpn.clone(), peer_fingerprint);
    let handler = match handler {
        Served::Tcp(handler) => handler,
        Served::Stream(handler) => {
            // `[admission] max_connections_per_alpn` counts a service's TLS/TCP
            // connections with its QUIC ones
            let mut ticket = None;
            if let Some(count) = shared.alpn_counts.load().iter().find(|n| *n.alpn == *alpn) {
                let cap = shared.admission.load().alpn_cap(&alpn);
                match AlpnTicket::take(count, cap) {
                    Some(t) => ticket = Some(t),
                    None => {
                        WorkerStats::add(&stats.refused_alpn, 1);
                        tracing::debug!(worker, %remote, alpn = %String::from_utf8_lossy(&alpn), "service connection cap reached (TLS/TCP)");
                        return;
                    }
                }
            }
            if let Some(t) = &ticket {
                // the connection's one stream
                t.count_stream(worker, false, quinn_proto::Dir::Bi);
            }
            let peer = TcpPeer {
                remote,
                alpn,
                peer_fingerprint,
                worker,
                fd: std::os::fd::AsRawFd::as_raw_fd(tls.get_ref().0),
                side: quinn_proto::Side::Server,
            };
            serve_stream(handler, tls, peer, auth, &setup.limits, stats).await;
            drop(ticket);
            drop(slot);
            return;
        }
    };
    match catch_panic(handler.handle(tls, auth)).await {
        Ok(Ok(())) => tracing::trace!(worker, %remote, "TCP connection finished"),
        Ok(Err(e)) => {
            WorkerStats::add(&stats.handler_errors, 1);
            tracing::debug!(worker, %remote, "TCP handler error: {e}");
        }
        Err(panic) => {
            WorkerStats::add(&stats.handler_panics, 1);
            tracing::error!(worker, %remote, panic = %panic_message(&*panic), "TCP handler panicked");
        }
    }
    drop(slot);
}

/// TCP keep-alive after `idle` without traffic (zero: off); see
/// [`crate::DEFAULT_TCP_KEEPALIVE_IDLE`].
pub(crate) fn set_keepalive(stream: &monoio::net::TcpStream, idle: Duration) {
    if idle.is_zero() {
        return;
    }
    if let Err(e) = stream.set_tcp_keepalive(
        Some(idle),
        Some(crate::limits::TCP_KEEPALIVE_INTERVAL),
        Some(crate::limits::TCP_KEEPALIVE_PROBES),
    ) {
        tracing::debug!("TCP keep-alive not set: {e}");
    }
}

/// Which handler a TLS/TCP connection gets.
enum Served {
    /// A [`TcpHandler`], given the TLS stream.
    Tcp(Arc<dyn TcpHandler>),
    /// A QUIC [`ProtocolHandler`] of `[tcp] stream_alpns`, given a one-stream
    /// [`Connection`].
    Stream(Arc<dyn ProtocolHandler>),
}

/// Runs a QUIC handler on a one-stream [`Connection`] over `tls`, as the worker runs it on
/// a QUIC connection: an error or a panic ends only this connection. Returns when the
/// handler has returned and the connection has ended (a finished stream gets
/// [`crate::TCP_CLOSE_LINGER`] to flush).
async fn serve_stream(
    handler: Arc<dyn ProtocolHandler>,
    tls: TlsTcpStream,
    peer: TcpPeer,
    auth: AuthContext,
    limits: &TcpLimits,
    stats: Arc<WorkerStats>,
) {
    let (worker, remote) = (peer.worker, peer.remote);
    let (conn, driver) = tcp_connection(
        Box::new(tls),
        peer,
        limits.stream_buffer,
        limits.send_stall_timeout,
        Some(stats.clone()),
    );
    let conn = Connection::from_tcp(conn);
    let watcher = conn.clone();
    let handled = async move {
        let outcome = catch_panic(handler.handle(conn, auth)).await;
        match &outcome {
            Ok(Ok(())) => tracing::trace!(worker, %remote, "TLS/TCP stream connection finished"),
            Ok(Err(e)) => {
                WorkerStats::add(&stats.handler_errors, 1);
                tracing::debug!(worker, %remote, "handler error (TLS/TCP): {e}");
                watcher.close(e.close_code(), e.to_string().as_bytes());
            }
            Err(panic) => {
                WorkerStats::add(&stats.handler_panics, 1);
                tracing::error!(worker, %remote, panic = %panic_message(&**panic), "handler panicked (TLS/TCP)");
                watcher.close(
                    quinn_proto::VarInt::from_u32(crate::close_code::HANDLER_PANIC),
                    b"handler panicked",
                );
            }
        }
    };
    // the driver runs beside the handler and outlives it by the close linger at most
    let driving = monoio::spawn(driver.run());
    handled.await;
    driving.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_pauses_on_exhaustion_and_retries_a_lost_connection_at_once() {
        let os = std::io::Error::from_raw_os_error;
        // the fd table, the system's file table, socket buffers, memory: wait
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(
                accept_error_pause(&os(errno)),
                Some(ACCEPT_ERROR_PAUSE),
                "{errno}"
            );
        }
        // one connection's trouble: the next one may be fine, accept again now
        for errno in [libc::ECONNABORTED, libc::EINTR, libc::EPROTO] {
            assert_eq!(accept_error_pause(&os(errno)), None, "{errno}");
        }
        // anything unknown is treated as lasting
        let odd = std::io::Error::other("odd");
        assert_eq!(accept_error_pause(&odd), Some(ACCEPT_ERROR_PAUSE));
    }

    struct Named(Vec<Vec<u8>>);

    impl TcpHandler for Named {
        fn alpns(&self) -> Vec<Vec<u8>> {
            self.0.clone()
        }
        fn handle(
            &self,
            _: TlsTcpStream,
            _: AuthContext,
        ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
            Box::pin(async { Ok(()) })
        }
    }

    struct Sniffer;

    impl TcpHandler for Sniffer {
        fn alpns(&self) -> Vec<Vec<u8>> {
            vec![b"dot".to_vec()]
        }
        fn claims_without_alpn(&self, first_byte: u8) -> bool {
            first_byte < b'\r'
        }
        fn handle(
            &self,
            _: TlsTcpStream,
            _: AuthContext,
        ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
            Box::pin(async { Ok(()) })
        }
    }

    #[test]
    fn connections_without_alpn_go_to_a_claimant_or_the_default() {
        let mut r = TcpRegistry::new();
        r.register(Arc::new(Named(vec![b"h2".to_vec(), b"http/1.1".to_vec()])))
            .expect("registers");
        assert!(!r.sniffs_without_alpn(), "nothing to sniff for");
        assert_eq!(r.without_alpn(0).map(|(a, _)| a), Some(TCP_DEFAULT_ALPN));
        r.register(Arc::new(Sniffer)).expect("registers");
        assert!(r.sniffs_without_alpn());
        assert_eq!(r.without_alpn(0).map(|(a, _)| a), Some(&b"dot"[..]));
        assert_eq!(r.without_alpn(b'G').map(|(a, _)| a), Some(TCP_DEFAULT_ALPN));
        assert_eq!(
            r.without_alpn(b'\r').map(|(a, _)| a),
            Some(TCP_DEFAULT_ALPN)
        );
    }

    #[test]
    fn registry_maps_each_alpn_and_refuses_duplicates() {
        let mut r = TcpRegistry::new();
        r.register(Arc::new(Named(vec![b"h2".to_vec(), b"http/1.1".to_vec()])))
            .expect("registers");
        assert_eq!(r.alpns(), vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(r.lookup(TCP_DEFAULT_ALPN).is_some());
        assert!(r.lookup(b"h3").is_none());
        assert_eq!(
            r.register(Arc::new(Named(vec![b"h2".to_vec()]))).err(),
            Some(RegistryError::Duplicate("h2".into()))
        );
    }

    #[test]
    fn admission_counts_per_worker_and_per_source_across_workers() {
        let (w1, w2) = (Rc::new(WorkerTcp::default()), Rc::new(WorkerTcp::default()));
        let stats = Arc::new(WorkerStats::default());
        let sources = Arc::new(SourceTable::new());
        let limits = TcpLimits {
            max_connections_per_worker: 3,
            ..TcpLimits::default()
        };
        let admission = AdmissionLimits {
            max_connections_per_address: 2,
            ..AdmissionLimits::default()
        };
        let admit =
            |w: &Rc<WorkerTcp>, ip: IpAddr| w.admit(ip, &limits, &sources, &admission, &stats);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let s1 = admit(&w1, a).expect("first");
        let _s2 = admit(&w2, a).expect("second, on the other worker");
        assert_eq!(
            admit(&w1, a).err(),
            Some("connections open from its address"),
            "the per-address cap counts both workers"
        );
        let _s3 = admit(&w1, b).expect("other address");
        let _s4 = admit(&w1, b).expect("other address");
        assert_eq!(
            admit(&w1, [127, 0, 0, 3].into()).err(),
            Some("tcp.max_connections_per_worker reached")
        );
        drop(s1);
        assert!(admit(&w2, a).is_ok(), "a freed place is reused");
        assert_eq!(w1.open.get(), 2);
    }
}
