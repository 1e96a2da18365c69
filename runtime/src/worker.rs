//! One worker: a socket, a `quinn_proto::Endpoint`, its connections, and the driver task
//! that moves datagrams between them. All of it lives on one thread.
//!
//! The driver is a hand-written future (like quinn's `EndpointDriver`) so it can keep its
//! readiness, timer and inbox registrations alive across polls instead of cancelling and
//! resubmitting io_uring operations every time a handler wakes it. Each poll does a
//! bounded amount of work and re-wakes itself if more is left, so handler tasks on the
//! same thread get their turn.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use alknet_proto::cid::{CidLayout, Route};
use alknet_proto::Fingerprint;
use arc_swap::ArcSwap;
use bytes::BytesMut;
use quinn_proto::{ConnectionHandle, DatagramEvent, Endpoint, Incoming, VarInt};
use quinn_udp::RecvMeta;

use crate::admission::{AdmissionLimits, AlpnCount, AlpnTicket, Refusal, RefusalLog, SourceTable};
use crate::connection::{ConnInner, ConnState, Connection, DriverNotify};
use crate::handshake::HandshakePolicy;
use crate::identity::{AuthContext, IdentityProvider};
use crate::inbox::{Inbox, StrayDatagram};
use crate::limits::Limits;
use crate::log_throttle::LogThrottle;
use crate::qlog::QlogDir;
use crate::recv_slots::SlotRecycler;
use crate::reload::LiveIdentityProvider;
use crate::router::{close_code, AlpnRegistry, LocalBoxFuture};
use crate::rt::{catch_panic, panic_message};
use crate::send_batch::{send_one, SendBatch};
use crate::socket::UdpIo;
use crate::stats::WorkerStats;
use crate::tls::{ClientAuth, TlsIdentity};

/// GRO batches read per readiness before the driver yields to handler tasks.
pub const RECV_BATCHES_PER_POLL: usize = 16;
/// Fewest `recvmmsg` slots (each one GRO batch) a receive offers the kernel. The slot count
/// adapts between this and quinn-udp's `BATCH_SIZE`: it doubles when a receive fills every
/// slot and halves when one fills less than a quarter. Each offered slot costs a message
/// header prepared in user space whether the kernel fills it or not; at request/response
/// rates one or two datagrams wait per wake-up, while a busy hub fills all of them.
pub const MIN_RECV_SLOTS: usize = 4;
/// GSO batches one connection may send per driver pass before others get a turn.
pub const TRANSMITS_PER_CONNECTION: usize = 8;
/// Most datagrams in one GSO batch (the kernel's limit is 64).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Most bytes in one GSO batch: a UDP send is one IP datagram to the kernel, at most 65535
/// bytes including the 8-byte UDP and 20-byte IPv4 headers. A larger batch is refused with
/// EMSGSIZE, which quinn-udp reports as success (it expects it only from MTU probes).
pub const MAX_GSO_BYTES: usize = 65_535 - 8 - 20;
/// After the drain timeout, how long closed connections get to deliver CONNECTION_CLOSE.
pub const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// Shutdown phases, shared by all workers of a server.
pub(crate) const RUNNING: u8 = 0;
pub(crate) const DRAINING: u8 = 1;
pub(crate) const CLOSE_NOW: u8 = 2;

/// What all workers of one server share (read-mostly; atomics only off the packet path).
pub(crate) struct ServerShared {
    /// Live: the handlers, by ALPN ([`crate::ConfigReloadHandle::set_handlers`]); read
    /// once per completed handshake. The ALPNs the TLS config offers follow it.
    pub registry: ArcSwap<AlpnRegistry>,
    /// What the TLS config is built from, for rebuilding it when the handlers or the
    /// certificate change (only the reload path takes this lock).
    pub tls_source: std::sync::Mutex<(TlsIdentity, ClientAuth)>,
    /// The reset and token keys, for the process's life: a rebuilt server config keeps
    /// the token key, so Retry tokens minted before a reload still validate.
    pub keys: crate::host_key::EndpointKeys,
    /// Live: replaced by [`crate::ConfigReloadHandle::set_identity_provider`]; handlers get
    /// this one, so a token resolved on an open connection sees the new identities too.
    pub provider: Arc<LiveIdentityProvider>,
    /// Live: the TLS/QUIC server config new handshakes use. Workers compare
    /// `tls_generation` (one atomic load per driver poll) and install a new config into
    /// their endpoint when it moved; open connections keep the config they started with.
    pub tls: ArcSwap<ServerTls>,
    pub tls_generation: AtomicU64,
    /// Per worker, the `tls_generation` it has installed (a reload waits for them).
    pub tls_installed: Box<[AtomicU64]>,
    pub layout: CidLayout,
    pub inboxes: Box<[Inbox]>,
    pub stats: Box<[Arc<WorkerStats>]>,
    pub shutdown: AtomicU8,
    pub open_connections: AtomicUsize,
    /// Live: `[limits]`, read when a connection is accepted or a drain starts (the
    /// fields that need a restart are refused by the reload, see `reload.rs`).
    pub limits: ArcSwap<Limits>,
    /// Live: `[quic]`, read per Incoming (Retry) and when server configs are built.
    pub handshake: ArcSwap<HandshakePolicy>,
    /// Live: `[admission]`, loaded once per new connection.
    pub admission: ArcSwap<AdmissionLimits>,
    /// Open connections and new-connection rates per source, shared by the workers.
    pub sources: Arc<SourceTable>,
    /// Open connections per ALPN ever registered (a removed ALPN keeps its count while
    /// its connections drain).
    pub alpn_counts: ArcSwap<Vec<Arc<AlpnCount>>>,
    /// Per-connection qlog traces, when a directory is configured.
    pub qlog: Option<QlogDir>,
    /// Live: the TLS-over-TCP listener's handlers and limits, when it is on
    /// ([`crate::ConfigReloadHandle::set_tcp`]); loaded once per accepted connection.
    pub tcp: Option<ArcSwap<crate::tcp::TcpSetup>>,
}

impl ServerShared {
    /// What a handler learns about a connection that completed its handshake (QUIC or
    /// TLS over TCP): the client certificate resolved through the live identity provider.
    pub fn auth_context(
        &self,
        remote: std::net::SocketAddr,
        local: Option<std::net::SocketAddr>,
        alpn: Vec<u8>,
        peer_fingerprint: Option<Fingerprint>,
    ) -> AuthContext {
        let identity = peer_fingerprint.and_then(|fp| self.provider.resolve_from_fingerprint(&fp));
        let provider: Arc<dyn IdentityProvider> = self.provider.clone();
        AuthContext {
            remote,
            local,
            alpn,
            peer_fingerprint,
            identity,
            provider,
        }
    }

    pub fn request_shutdown(&self, phase: u8) {
        self.shutdown.fetch_max(phase, Ordering::AcqRel);
        for inbox in self.inboxes.iter() {
            inbox.wake();
        }
    }
}

thread_local! {
    /// The server whose worker runs on this thread (see [`running_handlers`]).
    static RUNNING_SERVER: RefCell<std::sync::Weak<ServerShared>> =
        const { RefCell::new(std::sync::Weak::new()) };
}

/// Called once by a server worker thread before its driver starts.
pub(crate) fn set_running_server(shared: &Arc<ServerShared>) {
    RUNNING_SERVER.with(|s| *s.borrow_mut() = Arc::downgrade(shared));
}

/// The handlers the server running on this worker thread serves now (live: a reload's new
/// registry shows at the next call), for a handler that hands a session on to another
/// ALPN's handler (WebTransport). `None` off a server worker thread.
pub fn running_handlers() -> Option<Arc<AlpnRegistry>> {
    RUNNING_SERVER.with(|s| s.borrow().upgrade().map(|s| s.registry.load_full()))
}

/// The server config new handshakes use, and its certificate's fingerprint.
pub(crate) struct ServerTls {
    pub config: Arc<quinn_proto::ServerConfig>,
    /// The same certificate for TLS over TCP, when the TCP listener is on.
    pub tcp: Option<Arc<rustls::ServerConfig>>,
    pub fingerprint: Fingerprint,
}

pub(crate) enum Role {
    Server(Arc<ServerShared>),
    Client,
}

/// State shared between the driver and the handles (connections, client endpoint) on
/// this worker's thread.
pub(crate) struct WorkerState {
    pub index: usize,
    pub role: Role,
    pub endpoint: RefCell<Endpoint>,
    conns: RefCell<Vec<Option<Rc<ConnInner>>>>,
    live: Cell<usize>,
    pub notify: Rc<DriverNotify>,
    pub io: RefCell<Rc<UdpIo>>,
    pub io_generation: Cell<u64>,
    /// Sockets on the preferred addresses (`[quic] preferred_address_v4/v6`), socket 1, 2
    /// after the main one (0). Set once, before the driver starts.
    preferred: RefCell<Vec<Rc<UdpIo>>>,
    /// Client endpoint handles; the client driver ends when none are left and all
    /// connections have drained.
    pub handles: Cell<usize>,
    idle_waiters: RefCell<Vec<Waker>>,
    pub stats: Arc<WorkerStats>,
    /// Handshakes in flight from addresses not validated yet (the `retry = "auto"` load).
    unvalidated: Cell<usize>,
    /// Handshakes in flight (`[admission] max_handshakes_per_worker`).
    handshakes: Cell<usize>,
    /// The next connection's [`ConnInner::serial`].
    next_serial: Cell<u64>,
}

impl WorkerState {
    pub fn new(
        index: usize,
        role: Role,
        endpoint: Endpoint,
        io: UdpIo,
        stats: Arc<WorkerStats>,
    ) -> Rc<Self> {
        Rc::new(Self {
            index,
            role,
            endpoint: RefCell::new(endpoint),
            conns: RefCell::new(Vec::new()),
            live: Cell::new(0),
            notify: Rc::new(DriverNotify::default()),
            io: RefCell::new(Rc::new(io)),
            io_generation: Cell::new(0),
            preferred: RefCell::new(Vec::new()),
            handles: Cell::new(0),
            idle_waiters: RefCell::new(Vec::new()),
            stats,
            unvalidated: Cell::new(0),
            handshakes: Cell::new(0),
            next_serial: Cell::new(0),
        })
    }

    pub fn set_preferred_sockets(&self, sockets: Vec<Rc<UdpIo>>) {
        *self.preferred.borrow_mut() = sockets;
    }

    pub fn insert(
        &self,
        handle: ConnectionHandle,
        conn: quinn_proto::Connection,
        counted: bool,
        send_stall_timeout: std::time::Duration,
    ) -> Rc<ConnInner> {
        let serial = self.next_serial.get();
        self.next_serial.set(serial + 1);
        let inner = ConnInner::new(self, handle, serial, conn, counted, send_stall_timeout);
        let mut conns = self.conns.borrow_mut();
        if conns.len() <= handle.0 {
            conns.resize(handle.0 + 1, None);
        }
        conns[handle.0] = Some(inner.clone());
        self.live.set(self.live.get() + 1);
        inner
    }

    fn get(&self, handle: usize) -> Option<Rc<ConnInner>> {
        self.conns.borrow().get(handle).and_then(Clone::clone)
    }

    fn remove(&self, inner: &ConnInner) {
        let mut conns = self.conns.borrow_mut();
        if let Some(slot) = conns.get_mut(inner.handle.0) {
            if slot.as_ref().is_some_and(|c| std::ptr::eq(&**c, inner)) {
                *slot = None;
                self.handshake_done(inner);
                // give back its places in the source and ALPN counts
                drop(std::mem::take(&mut *inner.admission.borrow_mut()));
                self.live.set(self.live.get() - 1);
                if inner.counted {
                    if let Role::Server(s) = &self.role {
                        s.open_connections.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }
        if self.live.get() == 0 {
            for w in self.idle_waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// The connection's handshake completed or it ended: no longer unvalidated load.
    fn handshake_done(&self, inner: &ConnInner) {
        if inner.unvalidated.replace(false) {
            self.unvalidated
                .set(self.unvalidated.get().saturating_sub(1));
        }
        if inner.in_handshake.replace(false) {
            self.handshakes.set(self.handshakes.get().saturating_sub(1));
        }
    }

    /// Gives up the handshakes to `e.destination` that have heard nothing from it (see
    /// [`ConnInner::give_up_unreachable`]). Only "port unreachable" (`ECONNREFUSED`), the
    /// ICMP counterpart of a TCP reset: host and network unreachable may pass (a route
    /// that comes back, a neighbour not resolved yet), and TCP too keeps trying on them.
    pub fn icmp_error(&self, e: crate::socket::IcmpError) {
        if e.errno != libc::ECONNREFUSED {
            tracing::debug!(destination = %e.destination, "ICMP error: {}", io::Error::from_raw_os_error(e.errno));
            return;
        }
        let dest = (e.destination.ip().to_canonical(), e.destination.port());
        for inner in self.all() {
            let remote = inner.state.borrow().conn.remote_address();
            if (remote.ip().to_canonical(), remote.port()) == dest
                && inner.give_up_unreachable(e.errno)
            {
                tracing::debug!(destination = %e.destination, "handshake given up: port unreachable");
            }
        }
    }

    fn all(&self) -> Vec<Rc<ConnInner>> {
        self.conns.borrow().iter().flatten().cloned().collect()
    }

    pub fn live(&self) -> usize {
        self.live.get()
    }

    /// Registers `waker` to be woken when the last connection has drained.
    pub fn poll_idle(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.live.get() == 0 {
            return Poll::Ready(());
        }
        self.idle_waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

enum Phase {
    Running,
    Draining { until: Instant },
    Closing { until: Instant },
}

/// The per-worker packet loop.
pub(crate) struct Driver {
    w: Rc<WorkerState>,
    /// The worker's sockets: 0 is the main address (replaced when a client endpoint
    /// rebinds), then one per preferred address.
    sockets: Vec<SocketSlot>,
    io_generation: u64,
    writable: Option<LocalBoxFuture<'static, io::Result<()>>>,
    /// This pass's transmits, sent together (see [`SendBatch`]).
    batch: SendBatch,
    /// A socket refused the batch's head with EAGAIN: nothing more is produced until the
    /// batch is out.
    send_blocked: bool,
    /// The socket the datagram being handled arrived on (stateless answers and new
    /// connections leave from it).
    arrival: u8,
    sleep: Option<Pin<Box<monoio::time::Sleep>>>,
    sleep_at: Option<Instant>,
    /// Connection timers: (deadline, handle), lazily invalidated against
    /// `ConnInner::scheduled`.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// One buffer per `recvmmsg` slot, each one GRO batch long (see
    /// [`crate::recv_slots::ADOPT_SLOT_DIVISOR`]).
    recv_bufs: Box<[BytesMut]>,
    /// Refills the slots whose buffers received datagrams took.
    recycler: SlotRecycler,
    /// Slots offered to the next receive (see [`MIN_RECV_SLOTS`]).
    recv_slots: usize,
    recv_meta: Box<[RecvMeta]>,
    response_buf: Vec<u8>,
    refusal_log: RefusalLog,
    /// Sends the kernel refused (see [`send_one`]).
    send_error_log: LogThrottle,
    dirty: Vec<Rc<ConnInner>>,
    phase: Phase,
    /// The [`ServerShared::tls_generation`] this worker's endpoint has installed.
    tls_generation: u64,
    /// Connections of removed handlers, and when their drain time ends.
    service_drains: Vec<(Instant, Rc<ConnInner>)>,
    /// Accepted connections in accept order with the end of their handshake time
    /// (`[admission] handshake_timeout_ms`; nondecreasing but for a reload that shortens
    /// it, which only delays the later ones). A connection gone, or a later one on its
    /// handle, is skipped. By handle and serial rather than by `Weak`: a `Weak` keeps the
    /// connection's allocation (~7 KB, quinn-proto's state inline) until the deadline, so
    /// the worker held every connection accepted in the last `handshake_timeout_ms` (300
    /// MB at 4 400 handshakes/s and the 10 s default) and faulted in fresh pages for each.
    handshake_deadlines: std::collections::VecDeque<(Instant, ConnectionHandle, u64)>,
    loopback_config: LoopbackServerConfig,
}

impl Driver {
    pub fn new(w: Rc<WorkerState>, max_udp_payload: u16) -> Self {
        let io = w.io.borrow().clone();
        let sockets: Vec<SocketSlot> = std::iter::once(io)
            .chain(w.preferred.borrow().iter().cloned())
            .map(SocketSlot::new)
            .collect();
        // Each recvmmsg slot holds one GRO batch of up to gro_segments datagrams.
        let gro = sockets
            .iter()
            .map(|s| s.io.gro_segments())
            .max()
            .unwrap_or(1);
        let recv_slot = usize::from(max_udp_payload) * gro.max(1);
        let recv_slot = recv_slot.min(u16::MAX as usize);
        let recycled = match w.role {
            Role::Server(_) => crate::recv_slots::RECYCLED_SLOTS,
            Role::Client => crate::recv_slots::CLIENT_RECYCLED_SLOTS,
        };
        Self {
            io_generation: w.io_generation.get(),
            sockets,
            w,
            writable: None,
            batch: SendBatch::new(),
            send_blocked: false,
            arrival: 0,
            sleep: None,
            sleep_at: None,
            timers: BinaryHeap::new(),
            recv_bufs: (0..quinn_udp::BATCH_SIZE)
                .map(|_| BytesMut::zeroed(recv_slot))
                .collect(),
            recycler: SlotRecycler::new(recycled),
            recv_slots: quinn_udp::BATCH_SIZE,
            recv_meta: vec![RecvMeta::default(); quinn_udp::BATCH_SIZE].into_boxed_slice(),
            response_buf: Vec::new(),
            refusal_log: RefusalLog::new(),
            send_error_log: LogThrottle::new(),
            dirty: Vec::new(),
            phase: Phase::Running,
            tls_generation: 0,
            service_drains: Vec::new(),
            handshake_deadlines: std::collections::VecDeque::new(),
            loopback_config: LoopbackServerConfig::default(),
        }
    }

    /// Socket `index` (an index that is not one falls back to the main socket).
    fn socket(&self, index: u8) -> &Rc<UdpIo> {
        &self
            .sockets
            .get(usize::from(index))
            .unwrap_or(&self.sockets[0])
            .io
    }

    /// Installs a server config published since the last poll (a certificate reload).
    fn refresh_tls(&mut self) {
        let Role::Server(s) = &self.w.role else {
            return;
        };
        let generation = s.tls_generation.load(Ordering::Acquire);
        if generation != self.tls_generation {
            self.tls_generation = generation;
            let config = s.tls.load().config.clone();
            self.w.endpoint.borrow_mut().set_server_config(Some(config));
            s.tls_installed[self.w.index].store(generation, Ordering::Release);
            tracing::debug!(
                worker = self.w.index,
                generation,
                "new TLS config installed"
            );
            // connections of a handler removed meanwhile drain as at shutdown
            let registry = s.registry.load();
            let until = Instant::now() + s.limits.load().shutdown_timeout;
            // already draining (an earlier reload): keep their deadline; a set, so a
            // reload that removes a busy handler stays linear in its connections
            let draining: std::collections::HashSet<*const ConnInner> = self
                .service_drains
                .iter()
                .map(|(_, d)| Rc::as_ptr(d))
                .collect();
            for c in self.w.all() {
                let removed = c
                    .state
                    .borrow()
                    .alpn
                    .as_deref()
                    .is_some_and(|a| registry.lookup(a).is_none());
                if removed && !draining.contains(&Rc::as_ptr(&c)) {
                    self.service_drains.push((until, c));
                }
            }
        }
    }

    /// Closes connections of removed handlers whose drain time is over (unless their ALPN
    /// was registered again meanwhile).
    /// Closes connections whose handshake outlived `handshake_timeout` (they give back
    /// their handshake and unvalidated places as they drain).
    fn expire_handshakes(&mut self, now: Instant) {
        while let Some(&(at, handle, serial)) = self.handshake_deadlines.front() {
            if at > now {
                break;
            }
            self.handshake_deadlines.pop_front();
            let Some(c) = self.w.get(handle.0) else {
                continue;
            };
            if c.serial != serial || !c.in_handshake.get() {
                continue;
            }
            WorkerStats::add(&self.w.stats.handshakes_timed_out, 1);
            c.close(
                VarInt::from_u32(close_code::HANDSHAKE_TIMEOUT),
                b"handshake timeout",
            );
            // it holds no handshake place from now on, whatever its close takes
            self.w.handshake_done(&c);
            self.drive(now, &c);
        }
    }

    fn close_drained_services(&mut self, now: Instant) {
        let Role::Server(s) = &self.w.role else {
            return;
        };
        if self.service_drains.is_empty() {
            return;
        }
        let registry = s.registry.load();
        let mut due = Vec::new();
        self.service_drains.retain(|(until, c)| {
            if c.state.borrow().conn.is_drained() {
                return false;
            }
            if *until > now {
                return true;
            }
            due.push(c.clone());
            false
        });
        for c in due {
            let still_removed = c
                .state
                .borrow()
                .alpn
                .as_deref()
                .is_some_and(|a| registry.lookup(a).is_none());
            if still_removed {
                c.close(VarInt::from_u32(close_code::SHUTDOWN), b"service removed");
                self.drive(now, &c);
            }
        }
    }

    fn refresh_socket(&mut self) {
        let generation = self.w.io_generation.get();
        if generation != self.io_generation {
            self.io_generation = generation;
            self.sockets[0] = SocketSlot::new(self.w.io.borrow().clone());
            self.writable = None;
        }
    }

    /// Sends the batch. Returns true while a socket is full: the rest waits, and the
    /// driver is woken when the socket at the head drains.
    fn flush_sends(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.try_flush() {
                self.writable = None;
                return false;
            }
            let io = self.socket(self.batch.head_socket()).clone();
            let fut = self
                .writable
                .get_or_insert_with(|| Box::pin(async move { io.writable().await }));
            match fut.as_mut().poll(cx) {
                Poll::Ready(_) => self.writable = None,
                Poll::Pending => return true,
            }
        }
    }

    /// Sends the batch without waiting; false if a socket refused the head with EAGAIN.
    fn try_flush(&mut self) -> bool {
        if self.batch.is_empty() {
            self.send_blocked = false;
            return true;
        }
        let sockets = &self.sockets;
        let socket = |i: u8| -> &UdpIo { &sockets.get(usize::from(i)).unwrap_or(&sockets[0]).io };
        self.send_blocked = self
            .batch
            .flush(socket, &self.w.stats, &self.send_error_log)
            .is_err();
        !self.send_blocked
    }

    fn drain_inbox(&mut self, now: Instant) -> bool {
        let Role::Server(s) = &self.w.role else {
            return false;
        };
        let s = s.clone();
        let inbox = &s.inboxes[self.w.index];
        let mut n = 0;
        while let Some(d) = inbox.pop() {
            n += 1;
            self.arrival = d.socket;
            self.handle_datagram(now, d.remote, d.local_ip, d.ecn, d.data);
            if n == quinn_udp::BATCH_SIZE * RECV_BATCHES_PER_POLL {
                WorkerStats::add(&self.w.stats.forwarded_in, n as u64);
                return true;
            }
        }
        WorkerStats::add(&self.w.stats.forwarded_in, n as u64);
        false
    }

    /// Reads what the sockets have, up to the per-poll budget of each. Returns true if
    /// more is left.
    fn receive(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut more = false;
        for socket in 0..self.sockets.len() {
            more |= self.receive_on(cx, now, socket);
        }
        more
    }

    /// Reads what one socket has, up to the per-poll budget.
    fn receive_on(&mut self, cx: &mut Context<'_>, now: Instant, socket: usize) -> bool {
        let mut budget = RECV_BATCHES_PER_POLL;
        // the index fits: at most three sockets (main, preferred v4 and v6)
        let tag = socket as u8;
        loop {
            let slot = &mut self.sockets[socket];
            if !slot.recv_ready {
                let io = slot.io.clone();
                let fut = slot
                    .readable
                    .get_or_insert_with(|| Box::pin(async move { io.readable().await }));
                match fut.as_mut().poll(cx) {
                    Poll::Ready(res) => {
                        slot.readable = None;
                        if let Err(e) = res {
                            tracing::warn!(worker = self.w.index, "waiting for readability: {e}");
                        }
                        slot.recv_ready = true;
                    }
                    Poll::Pending => return false,
                }
            }
            if budget == 0 {
                return true;
            }
            budget -= 1;
            let slots = self.recv_slots;
            let n = {
                let mut bufs = self.recv_bufs.iter_mut().take(slots);
                let mut slices: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] =
                    std::array::from_fn(|_| {
                        IoSliceMut::new(bufs.next().map_or(&mut [][..], |b| &mut b[..]))
                    });
                match self.sockets[socket]
                    .io
                    .recv(&mut slices[..slots], &mut self.recv_meta[..slots])
                {
                    Ok(n) => n,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            tracing::debug!(worker = self.w.index, "recv: {e}");
                        }
                        if matches!(self.w.role, Role::Client) {
                            // a client socket queues ICMP errors (`bind_client`): an
                            // unread queue would keep it polling ready
                            let io = self.sockets[socket].io.clone();
                            for icmp in io.drain_icmp_errors() {
                                self.w.icmp_error(icmp);
                            }
                        }
                        // drained: wait for readiness again (registered at the loop top)
                        self.sockets[socket].recv_ready = false;
                        continue;
                    }
                }
            };
            self.recv_slots = next_recv_slots(slots, n);
            if n < slots {
                // recvmmsg on a non-blocking socket stops short only when the queue ran
                // dry: wait for readiness (a poll armed on a socket that has data again
                // completes at once) instead of confirming with a read that fails. That
                // read was a system call per request-sized wake-up.
                self.sockets[socket].recv_ready = false;
            }
            for i in 0..n {
                let meta = self.recv_meta[i];
                // one buffer per GRO batch (the slot's own, or a copy of a small batch);
                // each datagram is a zero-copy split of it
                let mut batch = self.recycler.take(&mut self.recv_bufs[i], meta.len);
                let stride = meta.stride.max(1);
                let ecn = meta
                    .ecn
                    .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8));
                if let Some(e) = ecn {
                    count_ecn(&self.w.stats, e, meta.len.div_ceil(stride) as u64);
                }
                while !batch.is_empty() {
                    let seg = batch.split_to(stride.min(batch.len()));
                    WorkerStats::add(&self.w.stats.datagrams_received, 1);
                    if tag != 0 {
                        WorkerStats::add(&self.w.stats.preferred_received, 1);
                    }
                    match self.route(now, &seg, meta.addr) {
                        Arrival::Forward(owner) => {
                            self.forward(owner, seg, meta.addr, meta.dst_ip, ecn, tag)
                        }
                        Arrival::Handle => {
                            self.arrival = tag;
                            self.handle_datagram(now, meta.addr, meta.dst_ip, ecn, seg)
                        }
                        Arrival::Drop => {}
                    }
                }
            }
        }
    }

    /// Where a datagram from the socket goes: to the worker its CID names, to this worker's
    /// endpoint, or nowhere — an Initial of a new connection (its DCID is not one of ours)
    /// from a prefix that is over `[admission] new_connections_per_second`, dropped before
    /// quinn-proto decrypts it (that decryption is most of what an Initial costs).
    fn route(&mut self, now: Instant, datagram: &[u8], remote: std::net::SocketAddr) -> Arrival {
        let Role::Server(s) = &self.w.role else {
            return Arrival::Handle;
        };
        match s.layout.route(datagram) {
            Route::Worker(owner) if usize::from(owner) != self.w.index => {
                Arrival::Forward(usize::from(owner))
            }
            Route::Local
                if alknet_proto::cid::is_initial(datagram)
                    && s.sources.over_rate(&s.admission.load(), remote.ip(), now) =>
            {
                WorkerStats::add(&self.w.stats.refused_rate, 1);
                self.refusal_log
                    .refused(now, self.w.index, remote, Refusal::Rate.reason());
                Arrival::Drop
            }
            _ => Arrival::Handle,
        }
    }

    /// Hands a datagram to the worker that owns its connection (moved, not copied).
    fn forward(
        &self,
        owner: usize,
        data: BytesMut,
        remote: std::net::SocketAddr,
        local_ip: Option<std::net::IpAddr>,
        ecn: Option<quinn_proto::EcnCodepoint>,
        socket: u8,
    ) {
        if let Role::Server(s) = &self.w.role {
            WorkerStats::add(&self.w.stats.forwarded_out, 1);
            s.inboxes[owner].push(StrayDatagram {
                data,
                remote,
                local_ip,
                ecn,
                socket,
            });
        }
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        remote: std::net::SocketAddr,
        local_ip: Option<std::net::IpAddr>,
        ecn: Option<quinn_proto::EcnCodepoint>,
        data: BytesMut,
    ) {
        self.response_buf.clear();
        let event = self.w.endpoint.borrow_mut().handle(
            now,
            remote,
            local_ip,
            ecn,
            data,
            &mut self.response_buf,
        );
        match event {
            None => {}
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(c) = self.w.get(handle.0) {
                    // its packets leave from where the client last sent to (a client
                    // that moved to the preferred address hears from it)
                    c.sockets.borrow_mut().arrived(remote, self.arrival);
                    c.state.borrow_mut().conn.handle_event(event);
                    c.mark_dirty();
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.on_incoming(now, incoming),
            Some(DatagramEvent::Response(t)) => self.send_response(&t),
        }
    }

    fn send_response(&mut self, t: &quinn_proto::Transmit) {
        // Stateless responses are not retried: if the socket is full they are lost, as
        // they could be on the wire.
        let buf = std::mem::take(&mut self.response_buf);
        let _ = send_one(
            self.socket(self.arrival),
            &self.w.stats,
            &self.send_error_log,
            t,
            &buf,
        );
        self.response_buf = buf;
    }

    /// Answers a new connection with CONNECTION_REFUSED (stateless), counts it in
    /// `counter`, and logs why (rate-limited; not while draining, where it is expected).
    fn refuse(&mut self, now: Instant, incoming: Incoming, counter: &AtomicU64, why: Option<&str>) {
        WorkerStats::add(counter, 1);
        if let Some(why) = why {
            self.refusal_log
                .refused(now, self.w.index, incoming.remote_address(), why);
        }
        self.response_buf.clear();
        let t = self
            .w
            .endpoint
            .borrow_mut()
            .refuse(incoming, &mut self.response_buf);
        self.send_response(&t);
    }

    /// Decides, before any TLS work, what happens to a new connection: dropped unanswered
    /// (its source exceeds its rate), sent a Retry (`[quic] retry`), refused
    /// (CONNECTION_REFUSED: a cap is reached or the server is draining), or accepted.
    fn on_incoming(&mut self, now: Instant, incoming: Incoming) {
        let Role::Server(s) = &self.w.role else {
            self.w.endpoint.borrow_mut().ignore(incoming);
            return;
        };
        let s = s.clone();
        // the shared flag, not just our phase: shutdown may have been requested after this
        // pass began
        let accepting =
            matches!(self.phase, Phase::Running) && s.shutdown.load(Ordering::Acquire) == RUNNING;
        if !accepting {
            self.refuse(
                now,
                incoming,
                &s.stats[self.w.index].connections_refused,
                None,
            );
            return;
        }
        let admission = s.admission.load();
        let remote = incoming.remote_address();
        // a rate-limited source gets nothing back: a flood from it costs one hash and one
        // atomic per Initial, and is not reflected
        if admission.new_connections_per_second > 0
            && !s.sources.rate_allows(&admission, remote.ip(), now)
        {
            WorkerStats::add(&self.w.stats.refused_rate, 1);
            self.refusal_log
                .refused(now, self.w.index, remote, Refusal::Rate.reason());
            self.w.endpoint.borrow_mut().ignore(incoming);
            return;
        }
        if !incoming.remote_address_validated()
            && s.handshake.load().should_retry(self.w.unvalidated.get())
        {
            self.response_buf.clear();
            let retried = self
                .w
                .endpoint
                .borrow_mut()
                .retry(incoming, &mut self.response_buf);
            match retried {
                Ok(t) => {
                    WorkerStats::add(&self.w.stats.retries_sent, 1);
                    self.send_response(&t);
                }
                // only when the address was validated, which was ruled out above
                Err(e) => self.w.endpoint.borrow_mut().ignore(e.into_incoming()),
            }
            return;
        }
        let max_handshakes = admission.max_handshakes_per_worker as usize;
        if max_handshakes > 0 && self.w.handshakes.get() >= max_handshakes {
            let why = "handshakes in flight on this worker";
            self.refuse(
                now,
                incoming,
                &s.stats[self.w.index].refused_handshakes,
                Some(why),
            );
            return;
        }
        let ticket = match s.sources.admit(&admission, remote.ip()) {
            Ok(t) => t,
            Err(refusal) => {
                let why = refusal.reason();
                self.refuse(
                    now,
                    incoming,
                    &s.stats[self.w.index].refused_source,
                    Some(why),
                );
                return;
            }
        };
        let handshake_timeout = admission.handshake_timeout;
        drop(admission);
        let validated = incoming.remote_address_validated();
        if s.open_connections.fetch_add(1, Ordering::Relaxed) >= s.limits.load().max_connections {
            s.open_connections.fetch_sub(1, Ordering::Relaxed);
            let why = "max_connections reached";
            self.refuse(
                now,
                incoming,
                &s.stats[self.w.index].connections_refused,
                Some(why),
            );
            return;
        }
        self.response_buf.clear();
        let traced = s
            .qlog
            .as_ref()
            .and_then(|q| {
                q.server_config(
                    &incoming,
                    self.w.index,
                    &s.tls.load().config,
                    &s.limits.load(),
                )
            })
            .or_else(|| {
                let peer = incoming.remote_address().ip();
                crate::limits::is_loopback(peer).then_some(())?;
                self.loopback_config
                    .get(&s.tls.load().config, &s.limits.load_full(), peer)
            });
        let accepted =
            self.w
                .endpoint
                .borrow_mut()
                .accept(incoming, now, &mut self.response_buf, traced);
        match accepted {
            Ok((handle, conn)) => {
                WorkerStats::add(&self.w.stats.connections_accepted, 1);
                let stall = s.limits.load().send_stall_timeout;
                let c = self.w.insert(handle, conn, true, stall);
                let remote = c.state.borrow().conn.remote_address();
                c.sockets.borrow_mut().arrived(remote, self.arrival);
                if !validated {
                    c.unvalidated.set(true);
                    self.w.unvalidated.set(self.w.unvalidated.get() + 1);
                }
                c.in_handshake.set(true);
                self.w.handshakes.set(self.w.handshakes.get() + 1);
                if !handshake_timeout.is_zero() {
                    self.handshake_deadlines
                        .push_back((now + handshake_timeout, handle, c.serial));
                }
                c.admission.borrow_mut().source = Some(ticket);
                c.mark_dirty();
            }
            Err(e) => {
                s.open_connections.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!("accept failed: {}", e.cause);
                if let Some(t) = e.response {
                    self.send_response(&t);
                }
            }
        }
    }

    fn expire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, handle))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.w.get(handle) else {
                continue;
            };
            if c.scheduled.get() != Some(at) {
                continue; // superseded by an earlier entry
            }
            c.scheduled.set(None);
            match c.deadline.get() {
                Some(d) if d <= now => {
                    c.state.borrow_mut().conn.handle_timeout(now);
                    c.mark_dirty();
                }
                Some(d) => self.schedule(&c, d),
                None => {}
            }
        }
    }

    fn schedule(&mut self, c: &ConnInner, at: Instant) {
        if c.scheduled.get().is_none_or(|s| at < s) {
            c.scheduled.set(Some(at));
            self.timers.push(Reverse((at, c.handle.0)));
        }
    }

    /// Drives every connection marked dirty. Returns true if any asked for another turn.
    fn drive_dirty(&mut self, now: Instant) -> bool {
        let mut dirty = std::mem::take(&mut self.dirty);
        self.w.notify.take_dirty(&mut dirty);
        for c in dirty.drain(..) {
            c.clear_dirty();
            if self.send_blocked {
                // a socket is full: keep it queued until the batch is out
                c.mark_dirty();
                continue;
            }
            self.drive(now, &c);
        }
        self.dirty = dirty;
        self.w.notify.has_dirty()
    }

    fn drive(&mut self, now: Instant, c: &Rc<ConnInner>) {
        if self.w.get(c.handle.0).is_none_or(|x| !Rc::ptr_eq(&x, c)) {
            return; // already drained and removed
        }
        let mut connected = false;
        let mut woke_reader = false;
        let drained;
        {
            let mut st = c.state.borrow_mut();
            let st = &mut *st;
            forward_endpoint_events(&self.w, c, &mut st.conn);
            while let Some(event) = st.conn.poll() {
                let d = st.dispatch(event);
                connected |= d.connected;
                woke_reader |= d.woke_reader;
            }
            // A task was woken to read: it usually answers at once. Sending now would put
            // our ACKs in one packet and its answer in the next; give it this scheduling
            // round first (the driver re-polls after the tasks it woke have run), then send
            // both together. Deferred once: the next pass always sends.
            let defer = woke_reader && !c.deferred.get() && st.error.is_none();
            c.deferred.set(defer);
            if defer {
                c.mark_dirty();
            }
            if !defer {
                self.transmit(now, c, st);
            }
            forward_endpoint_events(&self.w, c, &mut st.conn);
            let deadline = st.conn.poll_timeout();
            c.deadline.set(deadline);
            drained = st.conn.is_drained();
            if let Some(d) = deadline {
                if !drained {
                    self.schedule(c, d);
                }
            }
        }
        if connected {
            self.w.handshake_done(c);
            if let Role::Server(s) = &self.w.role {
                start_handler(&self.w, s, c);
            }
        }
        if drained {
            self.w.remove(c);
        }
    }

    /// Sends what `c` has to send, up to [`TRANSMITS_PER_CONNECTION`] GSO batches.
    fn transmit(&mut self, now: Instant, c: &Rc<ConnInner>, st: &mut ConnState) {
        // the batch may leave from any of the sockets (by destination, decided per transmit);
        // as many datagrams of this connection's current path MTU as fit in one UDP send
        // (a loopback path's MTU may reach 64 KiB: one datagram per send)
        // (never below QUIC's 1200-byte minimum path MTU, so at most 54 datagrams)
        let by_size = MAX_GSO_BYTES
            / usize::from(
                st.conn
                    .current_mtu()
                    .max(crate::limits::MIN_UDP_PAYLOAD_SIZE),
            );
        let max_segments = self
            .sockets
            .iter()
            .map(|s| s.io.max_gso_segments())
            .min()
            .unwrap_or(1)
            .min(MAX_GSO_SEGMENTS)
            .min(by_size)
            .max(1);
        for _ in 0..TRANSMITS_PER_CONNECTION {
            if self.send_blocked || (self.batch.is_full() && !self.try_flush()) {
                // a socket is full: the rest waits in quinn-proto
                c.mark_dirty();
                return;
            }
            let Some(t) = st
                .conn
                .poll_transmit(now, max_segments, self.batch.next_buf())
            else {
                return;
            };
            let socket = c.sockets.borrow().socket_for(t.destination);
            self.batch.push(t, socket);
        }
        // more may be left: another turn after the other connections
        c.mark_dirty();
    }

    /// Shutdown and exit conditions; `true` means the driver is done.
    fn lifecycle(&mut self, now: Instant) -> bool {
        match &self.w.role {
            Role::Client => self.w.handles.get() == 0 && self.w.live() == 0,
            Role::Server(s) => {
                let requested = s.shutdown.load(Ordering::Acquire);
                if let Phase::Running = self.phase {
                    if requested == RUNNING {
                        return false;
                    }
                    tracing::info!(
                        worker = self.w.index,
                        connections = self.w.live(),
                        "shutting down: no new connections, draining open ones"
                    );
                    self.phase = Phase::Draining {
                        until: now + s.limits.load().shutdown_timeout,
                    };
                }
                if let Phase::Draining { until } = self.phase {
                    if now >= until || requested == CLOSE_NOW {
                        let open = self.w.all();
                        if !open.is_empty() {
                            tracing::info!(
                                worker = self.w.index,
                                connections = open.len(),
                                "closing connections still open"
                            );
                        }
                        for c in open {
                            c.close(
                                VarInt::from_u32(close_code::SHUTDOWN),
                                b"server shutting down",
                            );
                            self.drive(now, &c);
                        }
                        self.phase = Phase::Closing {
                            until: now + CLOSE_LINGER,
                        };
                    }
                }
                match self.phase {
                    Phase::Running => false,
                    Phase::Draining { .. } => self.w.live() == 0,
                    Phase::Closing { until } => self.w.live() == 0 || now >= until,
                }
            }
        }
    }

    /// Arms the timer for the earliest deadline. Returns true if it has already passed.
    fn arm_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let mut next = self.timers.peek().map(|Reverse((at, _))| *at);
        if let Phase::Draining { until } | Phase::Closing { until } = self.phase {
            next = Some(next.map_or(until, |n| n.min(until)));
        }
        if let Some(until) = self.service_drains.iter().map(|(u, _)| *u).min() {
            next = Some(next.map_or(until, |n| n.min(until)));
        }
        if let Some(&(until, _, _)) = self.handshake_deadlines.front() {
            next = Some(next.map_or(until, |n| n.min(until)));
        }
        let Some(at) = next else {
            self.sleep = None;
            self.sleep_at = None;
            return false;
        };
        let deadline = monoio::time::Instant::from_std(at);
        match &mut self.sleep {
            Some(s) if self.sleep_at == Some(at) => {
                return s.as_mut().poll(cx).is_ready();
            }
            Some(s) => s.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(monoio::time::sleep_until(deadline))),
        }
        self.sleep_at = Some(at);
        self.sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }

    fn finish(&mut self) {
        // break the Rc cycles between the dirty list and connections
        let mut rest = Vec::new();
        self.w.notify.take_dirty(&mut rest);
        self.dirty.clear();
        for c in self.w.all() {
            c.state
                .borrow_mut()
                .terminate(quinn_proto::ConnectionError::LocallyClosed);
            self.w.remove(&c);
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.w.notify.register(cx.waker());
        if let Role::Server(s) = &this.w.role {
            s.inboxes[this.w.index].register(cx.waker());
        }
        this.refresh_socket();
        this.refresh_tls();
        let now = Instant::now();
        let socket_full = this.flush_sends(cx);
        let mut more = this.drain_inbox(now);
        more |= this.receive(cx, now);
        this.expire_timers(now);
        this.expire_handshakes(now);
        this.close_drained_services(now);
        if !socket_full {
            more |= this.drive_dirty(now);
        }
        let done = this.lifecycle(now);
        // what this pass produced leaves now, in as few system calls as the sockets allow
        this.flush_sends(cx);
        if done {
            this.finish();
            return Poll::Ready(());
        }
        more |= this.arm_timer(cx);
        if more {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// One of a worker's sockets and its receive readiness.
struct SocketSlot {
    io: Rc<UdpIo>,
    readable: Option<LocalBoxFuture<'static, io::Result<()>>>,
    recv_ready: bool,
}

impl SocketSlot {
    fn new(io: Rc<UdpIo>) -> Self {
        Self {
            io,
            readable: None,
            recv_ready: true,
        }
    }
}

/// The slot count for the next receive after one that offered `slots` and got `filled`.
fn next_recv_slots(slots: usize, filled: usize) -> usize {
    if filled >= slots {
        (slots * 2).min(quinn_udp::BATCH_SIZE)
    } else if filled * 4 < slots {
        (slots / 2).max(MIN_RECV_SLOTS.min(quinn_udp::BATCH_SIZE))
    } else {
        slots
    }
}

fn forward_endpoint_events(w: &WorkerState, c: &ConnInner, conn: &mut quinn_proto::Connection) {
    while let Some(event) = conn.poll_endpoint_events() {
        if let Some(reply) = w.endpoint.borrow_mut().handle_event(c.handle, event) {
            conn.handle_event(reply);
        }
    }
}

/// Counts `n` datagrams received with ECN codepoint `e`.
fn count_ecn(stats: &WorkerStats, e: quinn_proto::EcnCodepoint, n: u64) {
    let counter = match e {
        quinn_proto::EcnCodepoint::Ect0 => &stats.ecn_ect0_received,
        quinn_proto::EcnCodepoint::Ect1 => &stats.ecn_ect1_received,
        quinn_proto::EcnCodepoint::Ce => &stats.ecn_ce_received,
    };
    WorkerStats::add(counter, n);
}

/// What the receive path does with one datagram (see `Driver::route`).
enum Arrival {
    Forward(usize),
    Handle,
    Drop,
}

/// Runs the handler for a connection whose handshake just completed, on this worker.
fn start_handler(w: &Rc<WorkerState>, s: &Arc<ServerShared>, c: &Rc<ConnInner>) {
    let (alpn, peer_fingerprint, remote, local_ip) = {
        let st = c.state.borrow();
        if st.resumed {
            WorkerStats::add(&w.stats.handshakes_resumed, 1);
        }
        if st.conn.version() == quinn_proto::QUIC_V2 {
            WorkerStats::add(&w.stats.handshakes_v2, 1);
        }
        (
            st.alpn.clone(),
            st.peer_fingerprint,
            st.conn.remote_address(),
            st.conn.local_ip(),
        )
    };
    // the socket's port, and the packets' destination address where the socket is bound
    // to a wildcard (the kernel reports it per datagram)
    let local = {
        let bound = w.io.borrow().local_addr();
        std::net::SocketAddr::new(local_ip.unwrap_or(bound.ip()), bound.port())
    };
    let registry = s.registry.load();
    let Some(handler) = alpn.as_deref().and_then(|a| registry.lookup(a)).cloned() else {
        tracing::warn!(%remote, "no handler for negotiated ALPN {:?}", alpn);
        c.close(
            VarInt::from_u32(close_code::NO_HANDLER),
            b"no handler for this ALPN",
        );
        return;
    };
    let alpn = alpn.unwrap_or_default();
    if let Some(count) = s.alpn_counts.load().iter().find(|n| *n.alpn == *alpn) {
        let cap = s.admission.load().alpn_cap(&alpn);
        match AlpnTicket::take(count, cap) {
            Some(ticket) => c.admission.borrow_mut().alpn = Some(ticket),
            None => {
                WorkerStats::add(&w.stats.refused_alpn, 1);
                tracing::debug!(%remote, alpn = %String::from_utf8_lossy(&alpn), "service connection cap reached");
                c.close(
                    VarInt::from_u32(close_code::ALPN_LIMIT),
                    b"too many connections to this service",
                );
                return;
            }
        }
    }
    let auth = s.auth_context(remote, Some(local), alpn, peer_fingerprint);
    let conn = Connection::new(c.clone());
    let stats = w.stats.clone();
    let worker = w.index;
    monoio::spawn(async move {
        let alpn = String::from_utf8_lossy(handler.alpn()).into_owned();
        tracing::debug!(worker, %remote, %alpn, "connection accepted");
        let outcome = catch_panic(handler.handle(conn.clone(), auth)).await;
        match outcome {
            Ok(Ok(())) => tracing::debug!(worker, %remote, %alpn, "handler finished"),
            Ok(Err(e)) => {
                WorkerStats::add(&stats.handler_errors, 1);
                tracing::warn!(worker, %remote, %alpn, "handler error: {e}");
                let reason = e.to_string();
                conn.close(e.close_code(), truncate_reason(&reason).as_bytes());
            }
            Err(panic) => {
                WorkerStats::add(&stats.handler_panics, 1);
                tracing::error!(worker, %remote, %alpn, panic = %panic_message(&*panic), "handler panicked");
                conn.close(
                    VarInt::from_u32(close_code::HANDLER_PANIC),
                    b"internal error",
                );
            }
        }
    });
}

/// Close reasons travel in one packet: keep them short, cut on a character boundary.
fn truncate_reason(reason: &str) -> &str {
    const MAX_REASON: usize = 256;
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The server config for connections from loopback peers when their path MTU discovery
/// bound differs from other connections' (`limits.loopback_max_udp_payload_size`), built
/// once per TLS config and limits (a reload of either replaces it) instead of once per
/// handshake.
#[derive(Default)]
struct LoopbackServerConfig {
    built: Option<LoopbackBuilt>,
}

struct LoopbackBuilt {
    /// The endpoint's config and the limits this was built from.
    base: Arc<quinn_proto::ServerConfig>,
    limits: Arc<Limits>,
    /// `None` when the loopback bound equals the ordinary one (the endpoint's own config
    /// serves loopback peers too).
    config: Option<Arc<quinn_proto::ServerConfig>>,
}

impl LoopbackServerConfig {
    fn get(
        &mut self,
        base: &Arc<quinn_proto::ServerConfig>,
        limits: &Arc<Limits>,
        loopback_peer: std::net::IpAddr,
    ) -> Option<Arc<quinn_proto::ServerConfig>> {
        let current = self
            .built
            .as_ref()
            .is_some_and(|b| Arc::ptr_eq(&b.base, base) && Arc::ptr_eq(&b.limits, limits));
        if !current {
            let config = (limits.loopback_max_udp_payload_size != limits.max_udp_payload_size)
                .then(|| {
                    let mut config = (**base).clone();
                    // the same for every loopback peer
                    config.transport_config(Arc::new(limits.transport_config_for(loopback_peer)));
                    Arc::new(config)
                });
            self.built = Some(LoopbackBuilt {
                base: base.clone(),
                limits: limits.clone(),
                config,
            });
        }
        self.built.as_ref().and_then(|b| b.config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_server_config_is_built_once_per_tls_config_and_limits() {
        let identity = TlsIdentity::generate_self_signed(&[]).expect("certificate");
        let crypto = crate::tls::server_crypto(&identity, vec![b"x".to_vec()], ClientAuth::None)
            .expect("server crypto");
        let base = Arc::new(quinn_proto::ServerConfig::with_crypto(crypto));
        let peer = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let limits = Arc::new(Limits {
            loopback_max_udp_payload_size: 65_507,
            ..Limits::default()
        });
        let mut cache = LoopbackServerConfig::default();
        let first = cache.get(&base, &limits, peer).expect("a loopback config");
        let again = cache.get(&base, &limits, peer).expect("a loopback config");
        assert!(Arc::ptr_eq(&first, &again), "no rebuild per handshake");
        // a reload publishes new limits (or a new TLS config): rebuilt from them
        let reloaded = Arc::new(Limits {
            loopback_max_udp_payload_size: 9_000,
            ..Limits::default()
        });
        let rebuilt = cache
            .get(&base, &reloaded, peer)
            .expect("a loopback config");
        assert!(!Arc::ptr_eq(&first, &rebuilt));
        // the same bound as other paths: the endpoint's own config serves
        let same = Arc::new(Limits {
            loopback_max_udp_payload_size: Limits::default().max_udp_payload_size,
            ..Limits::default()
        });
        assert!(cache.get(&base, &same, peer).is_none());
    }

    #[test]
    fn receive_slots_grow_when_full_and_shrink_when_mostly_empty() {
        let max = quinn_udp::BATCH_SIZE;
        // light load: one datagram per wake-up shrinks the offer to the floor
        let mut slots = max;
        for _ in 0..10 {
            slots = next_recv_slots(slots, 1);
        }
        assert_eq!(slots, MIN_RECV_SLOTS.min(max));
        // a burst that fills every slot doubles it back, never past the batch size
        for _ in 0..10 {
            slots = next_recv_slots(slots, slots);
        }
        assert_eq!(slots, max);
        // half-filled receives keep the count as it is
        assert_eq!(next_recv_slots(16, 8), 16);
        assert_eq!(next_recv_slots(16, 4), 16);
        assert_eq!(next_recv_slots(16, 3), 8);
    }
}
