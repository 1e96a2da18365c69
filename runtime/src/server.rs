//! Starting a server: one pinned thread per worker, each with its own SO_REUSEPORT socket,
//! monoio runtime and `quinn_proto::Endpoint`.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize};

use arc_swap::ArcSwap;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use alknet_proto::cid::{CidLayout, CidLayoutError, MAX_WORKERS};
use alknet_proto::Fingerprint;
use quinn_proto::{Endpoint, EndpointConfig};

use crate::admission::{AdmissionError, AdmissionLimits, SourceTable};
use crate::cid::WorkerCidGenerator;
use crate::handshake::{HandshakePolicy, HandshakePolicyError};
use crate::host_key::EndpointKeys;
use crate::identity::IdentityProvider;
use crate::inbox::Inbox;
use crate::limits::{Limits, LimitsError};
use crate::pinning::PinWorkers;
use crate::qlog::QlogDir;
use crate::reload::{ConfigReloadHandle, LiveIdentityProvider};
use crate::router::AlpnRegistry;
use crate::rt::{run_local, DriverKind};
use crate::socket::{bind_reuseport_group, bind_udp_and_tcp_groups, BindError, UdpIo};
use crate::stats::{WorkerStats, WorkerStatsSnapshot};
use crate::tcp::{accept_loop, TcpSetup, WorkerTcp};
use crate::tls::{server_crypto_with_policy, tcp_server_config, ClientAuth, TlsError, TlsIdentity};
use crate::worker::{Driver, Role, ServerShared, ServerTls, WorkerState, CLOSE_NOW, DRAINING};
use crate::worker_hook::{WorkerHooks, WorkerStart};

/// Default listen address: loopback only, so a first `alknet serve` with a generated
/// certificate is not exposed to the network until the config says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4433";

/// What a server needs to start.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub listen: SocketAddr,
    /// Worker threads; 0 means one per available core.
    pub workers: usize,
    /// Pin worker `i` to core `i` (modulo the core count): always, never, or `Auto`
    /// (only on what looks like a dedicated machine; see [`PinWorkers`]).
    pub pin_workers: PinWorkers,
    /// Carried in every connection ID, for a future cross-machine load balancer.
    pub server_id: u16,
    pub limits: Limits,
    pub tls: TlsIdentity,
    pub client_auth: ClientAuth,
    /// Let the kernel pick the worker from the connection ID (SO_ATTACH_REUSEPORT_CBPF):
    /// connections spread over workers even from one client address, and migrated packets
    /// reach their owner without a userspace hop. Without it (or where the kernel refuses
    /// it) the kernel hashes the 4-tuple and stray datagrams are forwarded in userspace.
    pub kernel_steering: bool,
    /// Retry, resumption, 0-RTT and cipher suites (the `[quic]` section).
    pub handshake: HandshakePolicy,
    /// Per-source, per-worker and per-ALPN admission limits (the `[admission]` section);
    /// live-reloadable through [`crate::ConfigReloadHandle::set_admission`].
    pub admission: AdmissionLimits,
    /// Write a qlog trace of every connection into this directory (debugging; see
    /// `qlog.rs`). `alknet serve` takes it from `$QLOGDIR`.
    pub qlog_dir: Option<std::path::PathBuf>,
    /// The secret the stateless-reset and address-token keys are derived from; `None`: a
    /// random one per process, so a restarted server's resets are ignored by the old
    /// process's clients (see `host_key.rs`). `alknet serve` keeps one in the data
    /// directory, or derives it from the vault.
    pub quic_host_key: Option<crate::host_key::QuicHostKey>,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Limits(#[from] LimitsError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Handshake(#[from] HandshakePolicyError),
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("endpoint configuration: {0}")]
    Endpoint(#[from] quinn_proto::ConfigError),
    #[error("no protocol handlers are enabled")]
    NoHandlers,
    #[error(transparent)]
    Workers(#[from] CidLayoutError),
    #[error("worker {worker} failed to start: {message}")]
    Worker { worker: usize, message: String },
}

/// The QUIC server config for `tls`: the same for every worker, and rebuilt this way by a
/// TLS reload.
pub(crate) fn build_server_config(
    tls: &TlsIdentity,
    alpns: Vec<Vec<u8>>,
    client_auth: ClientAuth,
    limits: &Limits,
    handshake: &HandshakePolicy,
    keys: &EndpointKeys,
) -> Result<Arc<quinn_proto::ServerConfig>, TlsError> {
    let crypto =
        server_crypto_with_policy(tls, alpns, client_auth, handshake, Some(&keys.tickets))?;
    let mut server_config = quinn_proto::ServerConfig::new(crypto, keys.token.clone());
    server_config
        .transport_config(Arc::new(limits.transport_config()))
        .migration(true)
        .preferred_address_v4(handshake.preferred_address_v4)
        .preferred_address_v6(handshake.preferred_address_v6);
    Ok(Arc::new(server_config))
}

/// Number of workers to run for a configured count (0 = available cores), capped at what
/// a connection ID can name.
pub fn resolve_workers(configured: usize) -> usize {
    let n = if configured == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        configured
    };
    n.clamp(1, MAX_WORKERS)
}

/// A running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    drivers: Vec<DriverKind>,
    shared: Arc<ServerShared>,
    threads: Vec<JoinHandle<()>>,
}

/// What handlers may read about the running server: whether it drains, its counters.
#[derive(Clone)]
pub struct NodeStatus(Arc<ServerShared>, SocketAddr);

impl std::fmt::Debug for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStatus").finish_non_exhaustive()
    }
}

impl NodeStatus {
    /// The address (UDP, and TCP when its listener is on) the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.1
    }

    /// True once graceful (or immediate) shutdown was requested.
    pub fn draining(&self) -> bool {
        self.0.shutdown.load(std::sync::atomic::Ordering::Acquire) != crate::worker::RUNNING
    }

    /// How many workers run.
    pub fn workers(&self) -> usize {
        self.0.stats.len()
    }

    /// Counters of each worker, in worker order.
    pub fn worker_stats(&self) -> Vec<WorkerStatsSnapshot> {
        self.0
            .stats
            .iter()
            .zip(self.0.inboxes.iter())
            .map(|(s, i)| s.snapshot(i.dropped()))
            .collect()
    }

    /// QUIC connections open across all workers.
    pub fn open_connections(&self) -> usize {
        self.0
            .open_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// QUIC connections per ALPN: open now and accepted since start (the counts
    /// `[admission] max_connections_per_alpn` is checked against). An ALPN a reload removed
    /// stays listed while its connections are open.
    pub fn alpn_connections(&self) -> Vec<AlpnConnections> {
        use std::sync::atomic::Ordering::Relaxed;
        self.0
            .alpn_counts
            .load()
            .iter()
            .map(|c| AlpnConnections {
                alpn: String::from_utf8_lossy(&c.alpn).into_owned(),
                open: c.open.load(Relaxed) as u64,
                accepted: c.accepted.load(Relaxed),
                streams: c.stream_totals(),
            })
            .collect()
    }

    /// Every registered handler's own counters ([`crate::ProtocolHandler::metrics`]).
    pub fn handler_metrics(&self) -> Vec<crate::HandlerMetric> {
        self.0
            .registry
            .load()
            .handlers()
            .flat_map(|h| h.metrics())
            .collect()
    }

    /// The QUIC ALPNs served.
    pub fn alpns(&self) -> Vec<String> {
        self.0
            .registry
            .load()
            .alpns()
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }
}

/// One ALPN's QUIC connections (see [`NodeStatus::alpn_connections`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlpnConnections {
    pub alpn: String,
    pub open: u64,
    pub accepted: u64,
    /// Streams opened on its connections (QUIC streams; a TLS/TCP connection's one stream).
    pub streams: crate::StreamTotals,
}

/// Starts graceful shutdown from another thread (a signal handler, a test).
#[derive(Clone)]
pub struct ShutdownTrigger(Arc<ServerShared>);

impl ShutdownTrigger {
    /// Stop accepting and let open connections drain up to `shutdown_timeout`.
    pub fn graceful(&self) {
        self.0.request_shutdown(DRAINING);
    }

    /// Close every connection now.
    pub fn immediate(&self) {
        self.0.request_shutdown(CLOSE_NOW);
    }
}

/// The TLS-over-TCP config for the server's TCP handlers, if its TCP listener is on.
pub(crate) fn build_tcp_config(
    shared: &ServerShared,
    tls: &TlsIdentity,
    client_auth: ClientAuth,
    handshake: &HandshakePolicy,
    quic: &AlpnRegistry,
) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    shared
        .tcp
        .as_ref()
        .map(|t| {
            let alpns = t.load().offered_alpns(quic);
            tcp_server_config(
                tls,
                alpns,
                client_auth,
                handshake,
                Some(&shared.keys.tickets),
            )
        })
        .transpose()
}

/// Starts the workers and returns once every one of them is listening (QUIC only).
pub fn start(
    config: EngineConfig,
    registry: AlpnRegistry,
    provider: Arc<dyn IdentityProvider>,
) -> Result<ServerHandle, StartError> {
    start_with_tcp(config, registry, provider, None)
}

/// [`start`], with a TLS-over-TCP listener on the same address and port when `tcp` is given
/// with handlers and `enabled` (see `tcp.rs`).
pub fn start_with_tcp(
    config: EngineConfig,
    registry: AlpnRegistry,
    provider: Arc<dyn IdentityProvider>,
    tcp: Option<TcpSetup>,
) -> Result<ServerHandle, StartError> {
    start_with_hooks(config, registry, provider, tcp, WorkerHooks::new())
}

/// [`start_with_tcp`], running `hooks` on every worker as it starts (see
/// [`crate::WorkerHook`]): components with sockets of their own serve them on the workers.
pub fn start_with_hooks(
    mut config: EngineConfig,
    registry: AlpnRegistry,
    provider: Arc<dyn IdentityProvider>,
    tcp: Option<TcpSetup>,
    hooks: WorkerHooks,
) -> Result<ServerHandle, StartError> {
    let hooks = Arc::new(hooks);
    config.limits.validate()?;
    let tcp = tcp.filter(|t| t.limits.enabled && !t.offered_alpns(&registry).is_empty());
    if let Some(t) = &tcp {
        t.limits.validate()?;
    }
    config.handshake.validate()?;
    config.admission.validate()?;
    if registry.is_empty() {
        return Err(StartError::NoHandlers);
    }
    let workers = resolve_workers(config.workers);
    let layout = CidLayout::new(config.server_id, workers)?;
    // One more socket per worker for each preferred address, bound first so a port 0 in
    // the config is known before the transport parameters that announce it are built.
    let mut preferred_groups = Vec::new();
    for addr in config.handshake.preferred_addresses() {
        let group = bind_reuseport_group(addr, workers, config.limits.socket_buffer_size)?;
        let bound = group[0]
            .local_addr()
            .map_err(|source| BindError::Io { addr, source })?;
        config.handshake.set_preferred_bound(bound);
        tracing::info!(%bound, "offering a preferred address");
        preferred_groups.push(group);
    }
    // One token key and one reset key for all workers (and, from a kept host key, for
    // every process on this data directory): a retry token or reset token minted by one
    // worker is valid on every other.
    let keys = EndpointKeys::new(config.quic_host_key.as_ref());
    let server_config = build_server_config(
        &config.tls,
        registry.alpns(),
        config.client_auth,
        &config.limits,
        &config.handshake,
        &keys,
    )?;
    let mut base_endpoint = EndpointConfig::new(keys.reset.clone());
    base_endpoint.max_udp_payload_size(config.limits.endpoint_max_udp_payload_size())?;
    base_endpoint.supported_versions(config.handshake.wire_versions());

    // the TCP listeners take the port the UDP group got (it may have been 0)
    let (sockets, mut tcp_listeners) = bind_udp_and_tcp(
        config.listen,
        workers,
        config.limits.socket_buffer_size,
        tcp.as_ref().map(|t| t.limits.listen_backlog),
    )?;
    let steering = config.kernel_steering && workers > 1;
    if steering {
        // every group gets the program: socket i of each group is worker i's
        let program = alknet_proto::steering::steering_program(&layout);
        let mut groups = std::iter::once(&sockets).chain(preferred_groups.iter());
        let attached = groups.try_for_each(|g| crate::socket::attach_steering(&g[0], &program));
        match attached {
            Ok(()) => tracing::info!(workers, "kernel steers packets to workers by connection ID"),
            Err(e) => tracing::warn!(
                "kernel CID steering unavailable ({e}); using the 4-tuple hash and userspace forwarding"
            ),
        }
    }
    // worker i's preferred-address sockets, in the order of `preferred_addresses()`
    let mut extra_sockets: Vec<Vec<std::net::UdpSocket>> =
        (0..workers).map(|_| Vec::new()).collect();
    for group in preferred_groups {
        for (i, s) in group.into_iter().enumerate() {
            extra_sockets[i].push(s);
        }
    }
    let local_addr = sockets[0].local_addr().map_err(|source| BindError::Io {
        addr: config.listen,
        source,
    })?;
    let tcp_config = tcp
        .as_ref()
        .map(|t| {
            tcp_server_config(
                &config.tls,
                t.offered_alpns(&registry),
                config.client_auth,
                &config.handshake,
                Some(&keys.tickets),
            )
        })
        .transpose()?;

    let alpn_counts = crate::admission::alpn_counts(&registry, &[], workers);
    let shared = Arc::new(ServerShared {
        registry: ArcSwap::from_pointee(registry),
        tls_source: std::sync::Mutex::new((config.tls.clone(), config.client_auth)),
        keys,
        provider: Arc::new(LiveIdentityProvider::new(provider)),
        tls: ArcSwap::from_pointee(ServerTls {
            config: server_config.clone(),
            tcp: tcp_config,
            fingerprint: config.tls.fingerprint(),
        }),
        tls_generation: AtomicU64::new(0),
        tls_installed: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        layout,
        inboxes: (0..workers)
            .map(|_| Inbox::new(config.limits.inbox_capacity))
            .collect(),
        stats: (0..workers)
            .map(|_| Arc::new(WorkerStats::default()))
            .collect(),
        shutdown: AtomicU8::new(0),
        open_connections: AtomicUsize::new(0),
        limits: ArcSwap::from_pointee(config.limits.clone()),
        handshake: ArcSwap::from_pointee(config.handshake.clone()),
        admission: ArcSwap::from_pointee(config.admission.clone()),
        sources: SourceTable::new(),
        alpn_counts: ArcSwap::from_pointee(alpn_counts),
        qlog: config
            .qlog_dir
            .clone()
            .inspect(|_| {
                if !crate::qlog::QLOG_SUPPORTED {
                    tracing::warn!("a qlog directory is set, but this build has no qlog support (cargo feature \"qlog\"): no traces");
                }
            })
            .map(QlogDir::new),
        tcp: tcp.map(ArcSwap::from_pointee),
    });

    let usable = core_affinity::get_core_ids().unwrap_or_default();
    let pinning =
        config
            .pin_workers
            .decide(workers, usable.len(), crate::pinning::others_runnable());
    tracing::info!(
        workers,
        cores = usable.len(),
        pinned = pinning.pins(),
        "worker pinning: {}",
        pinning.reason()
    );
    let watch_contention = pinning.pins() && config.pin_workers.unpins_when_contended();
    let cores = if pinning.pins() { usable } else { Vec::new() };
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<DriverKind, String>)>();
    let mut threads = Vec::with_capacity(workers);
    for (index, socket) in sockets.into_iter().enumerate() {
        let worker_shared = shared.clone();
        let server_config = server_config.clone();
        let mut endpoint_config = base_endpoint.clone();
        let worker_id = u8::try_from(index).unwrap_or(u8::MAX);
        endpoint_config.cid_generator(move || Box::new(WorkerCidGenerator::new(layout, worker_id)));
        let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
        let ready_tx = ready_tx.clone();
        let max_udp = config.limits.endpoint_max_udp_payload_size();
        let tcp_listener = tcp_listeners[index].take();
        let extra = std::mem::take(&mut extra_sockets[index]);
        let hooks = hooks.clone();
        // a pinned worker that watches for contention unpins to every usable core
        let unpin_to = watch_contention.then(|| cores.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("alknet-w{index}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        tracing::warn!(worker = index, "could not pin to core {}", core.id);
                    }
                }
                let ran = run_local(|kind| async move {
                    let io = match UdpIo::new(socket) {
                        Ok(io) => io,
                        Err(e) => {
                            let _ = ready_tx.send((index, Err(e.to_string())));
                            return;
                        }
                    };
                    let extra: std::io::Result<Vec<_>> = extra
                        .into_iter()
                        .map(|s| UdpIo::new_preferred(s).map(Rc::new))
                        .collect();
                    let extra = match extra {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = ready_tx.send((index, Err(e.to_string())));
                            return;
                        }
                    };
                    let endpoint = Endpoint::new(
                        Arc::new(endpoint_config),
                        Some(server_config),
                        !io.may_fragment(),
                        None,
                    );
                    let tcp_state = Rc::new(WorkerTcp::default());
                    if let Some(l) = tcp_listener {
                        match monoio::net::TcpListener::from_std(l) {
                            Ok(l) => monoio::spawn(accept_loop(
                                index,
                                l,
                                worker_shared.clone(),
                                tcp_state.clone(),
                            )),
                            Err(e) => {
                                let _ = ready_tx.send((index, Err(format!("TCP listener: {e}"))));
                                return;
                            }
                        };
                    }
                    if let Some(all_cores) = unpin_to {
                        monoio::spawn(unpin_when_contended(index, all_cores));
                    }
                    let start = WorkerStart { index, workers };
                    if let Err(e) = crate::worker_hook::run_hooks(&hooks, start) {
                        let _ = ready_tx.send((index, Err(format!("worker start hook: {e}"))));
                        return;
                    }
                    let drain_shared = worker_shared.clone();
                    let stats = worker_shared.stats[index].clone();
                    crate::worker::set_running_server(&worker_shared);
                    let role = Role::Server(worker_shared);
                    let state = WorkerState::new(index, role, endpoint, io, stats);
                    state.set_preferred_sockets(extra);
                    tracing::info!(
                        worker = index,
                        core = core.map(|c| c.id),
                        driver = %kind,
                        gso_segments = state.io.borrow().max_gso_segments(),
                        gro_segments = state.io.borrow().gro_segments(),
                        "worker listening"
                    );
                    let _ = ready_tx.send((index, Ok(kind)));
                    drop(ready_tx);
                    Driver::new(state, max_udp).await;
                    // QUIC is done; TCP connections get the same drain time
                    let shutdown_timeout = drain_shared.limits.load().shutdown_timeout;
                    tcp_state.drain(&drain_shared, shutdown_timeout).await;
                    tracing::debug!(worker = index, "worker stopped");
                });
                if let Err(e) = ran {
                    tracing::error!(worker = index, "runtime failed: {e}");
                }
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                shared.request_shutdown(CLOSE_NOW);
                return Err(StartError::Worker {
                    worker: index,
                    message: e.to_string(),
                });
            }
        }
    }
    drop(ready_tx);

    let mut drivers = vec![DriverKind::Legacy; workers];
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok((i, Ok(kind))) => drivers[i] = kind,
            Ok((worker, Err(message))) => {
                shared.request_shutdown(CLOSE_NOW);
                return Err(StartError::Worker { worker, message });
            }
            Err(_) => {
                shared.request_shutdown(CLOSE_NOW);
                return Err(StartError::Worker {
                    worker: usize::MAX,
                    message: "a worker thread exited during start-up".into(),
                });
            }
        }
    }
    Ok(ServerHandle {
        local_addr,
        drivers,
        shared,
        threads,
    })
}

/// Binds the workers' UDP sockets and, with `tcp_backlog`, their TCP listeners on the same
/// port.
#[allow(clippy::type_complexity)]
fn bind_udp_and_tcp(
    listen: SocketAddr,
    workers: usize,
    buffer: usize,
    tcp_backlog: Option<u32>,
) -> Result<(Vec<std::net::UdpSocket>, Vec<Option<std::net::TcpListener>>), BindError> {
    match tcp_backlog {
        None => Ok((
            bind_reuseport_group(listen, workers, buffer)?,
            (0..workers).map(|_| None).collect(),
        )),
        Some(backlog) => {
            let (udp, tcp) = bind_udp_and_tcp_groups(listen, workers, buffer, backlog)?;
            Ok((udp, tcp.into_iter().map(Some).collect()))
        }
    }
}

/// Under `pin_workers = "auto"`, a pinned worker's watch: when it keeps waiting for its
/// core (another busy thread shares it), it lets itself run on every core. One way: a
/// worker that unpinned stays unpinned.
async fn unpin_when_contended(worker: usize, cores: Vec<core_affinity::CoreId>) {
    use crate::pinning::{thread_run_wait_ns, unpin_current, ContentionWatch, PIN_CHECK_INTERVAL};
    let Some(wait) = thread_run_wait_ns() else {
        tracing::debug!(
            worker,
            "no /proc/thread-self/schedstat: pinned workers stay pinned"
        );
        return;
    };
    let mut watch = ContentionWatch::new(wait, std::time::Instant::now());
    loop {
        monoio::time::sleep(PIN_CHECK_INTERVAL).await;
        let Some(wait) = thread_run_wait_ns() else {
            return;
        };
        if let Some(percent) = watch.sample(wait, std::time::Instant::now()) {
            if unpin_current(&cores) {
                tracing::info!(
                    worker,
                    waited_percent = percent,
                    "worker unpinned: it kept waiting for its core, which another busy thread shares (pin_workers = \"auto\")"
                );
            } else {
                tracing::warn!(
                    worker,
                    "could not unpin: {}",
                    std::io::Error::last_os_error()
                );
            }
            return;
        }
    }
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SHA-256 of the certificate new handshakes get (it changes with a TLS reload).
    pub fn fingerprint(&self) -> Fingerprint {
        self.shared.tls.load().fingerprint
    }

    /// What changes the running server's configuration; it can be sent to another thread
    /// (a signal handler, the `node.reload` operation).
    pub fn reload_handle(&self) -> ConfigReloadHandle {
        ConfigReloadHandle::new(self.shared.clone())
    }

    /// The monoio driver each worker runs.
    pub fn drivers(&self) -> &[DriverKind] {
        &self.drivers
    }

    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// A view of the running server for handlers (health, metrics), `Send + Sync`.
    pub fn status(&self) -> NodeStatus {
        NodeStatus(self.shared.clone(), self.local_addr)
    }

    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger(self.shared.clone())
    }

    /// Stop accepting and let open connections drain (see `Limits::shutdown_timeout`).
    pub fn shutdown(&self) {
        self.shared.request_shutdown(DRAINING);
    }

    /// Counters of each worker.
    pub fn stats(&self) -> Vec<WorkerStatsSnapshot> {
        self.shared
            .stats
            .iter()
            .zip(self.shared.inboxes.iter())
            .map(|(s, i)| s.snapshot(i.dropped()))
            .collect()
    }

    /// Counters summed over all workers.
    pub fn total_stats(&self) -> WorkerStatsSnapshot {
        self.stats()
            .into_iter()
            .fold(WorkerStatsSnapshot::default(), |a, b| a + b)
    }

    /// Connections open across all workers.
    pub fn open_connections(&self) -> usize {
        self.shared
            .open_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for every worker to stop (after `shutdown`); returns the final counters
    /// summed over all workers.
    pub fn join(mut self) -> WorkerStatsSnapshot {
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
        self.total_stats()
    }
}

impl Drop for ServerHandle {
    /// Dropping a handle that was not joined closes everything at once and waits.
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.shared.request_shutdown(CLOSE_NOW);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
