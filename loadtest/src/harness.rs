//! What every workload shares: client threads (each with its own monoio runtime and client
//! endpoint, as a server worker has), one measurement window for all of them, the tally
//! of what they measured, and CPU accounting.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use alknet_runtime::rt::run_local;
use alknet_runtime::tls::{client_crypto_with_resumption, QuicClientConfig, ServerTrust};
use alknet_runtime::{
    ClientEndpoint, Connection, Fingerprint, Limits, VarInt, WorkerStatsSnapshot,
};
use hdrhistogram::Histogram;

/// A handshake slower than this counts as a failed connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connected thread waits for the others before giving up on the run.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for our CONNECTION_CLOSEs to go out at the end.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a waiting thread checks whether the run has started.
const START_POLL: Duration = Duration::from_millis(1);
/// Largest latency the histograms hold (µs); anything slower is clamped to it.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Where the server is.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// TLS server name (the fingerprint is pinned, so it is not checked).
    pub host: String,
    pub fingerprint: Fingerprint,
    /// The QUIC version alknet's client starts its connections in (`--quic-version`).
    pub quic_version: alknet_runtime::QuicVersion,
}

/// When measuring starts and when everything stops. Set once by the main thread after
/// every client thread is ready, so all threads measure the same window.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub measure_from: Instant,
    pub end: Instant,
}

impl Schedule {
    pub fn measuring(&self, t: Instant) -> bool {
        t >= self.measure_from && t <= self.end
    }
}

/// What one client thread (or, merged, the whole run) measured.
pub struct Tally {
    /// Latency in µs of each operation completed inside the window.
    pub latency: Histogram<u64>,
    /// Operations completed inside the window (requests, handshakes, transfers).
    pub operations: u64,
    /// Payload bytes moved by those operations.
    pub bytes: u64,
    /// Failures by kind ("connect", "open", "read", …).
    pub errors: BTreeMap<&'static str, u64>,
    pub connected: u64,
    pub first_error: Option<String>,
    /// CPU seconds the client threads spent inside the window.
    pub cpu_s: f64,
    /// Seconds from the window's start until the last operation ended (transfers of many
    /// files, whose run time is not any one file's latency).
    pub span_s: f64,
    pub client: WorkerStatsSnapshot,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            operations: 0,
            bytes: 0,
            errors: BTreeMap::new(),
            connected: 0,
            first_error: None,
            cpu_s: 0.0,
            span_s: 0.0,
            client: WorkerStatsSnapshot::default(),
        }
    }
}

impl Tally {
    pub fn error(&mut self, kind: &'static str, why: impl FnOnce() -> String) {
        *self.errors.entry(kind).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{kind}: {}", why()));
        }
    }

    pub fn record(&mut self, latency: Duration, bytes: u64) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(us.max(1));
        self.operations += 1;
        self.bytes += bytes;
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn merge(&mut self, o: Tally) {
        self.latency
            .add(&o.latency)
            .expect("histograms share bounds");
        self.operations += o.operations;
        self.bytes += o.bytes;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.connected += o.connected;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.cpu_s += o.cpu_s;
        self.span_s = self.span_s.max(o.span_s);
        self.client = self.client + o.client;
    }
}

/// CPU time this thread has used.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The wildcard address of the target's family, so the kernel picks the route.
pub fn unspecified_like(target: SocketAddr) -> SocketAddr {
    match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// A client thread's view of the run, handed to the workload.
pub struct ClientThread {
    pub index: usize,
    pub endpoint: ClientEndpoint,
    pub target: Target,
    pub crypto: Arc<QuicClientConfig>,
    /// `--transport tcp`: the TLS-over-TCP client config (connections are one-stream
    /// TLS/TCP connections to the server's `[tcp] stream_alpns`); `None` for QUIC.
    pub tcp: Option<Arc<rustls::ClientConfig>>,
    /// `--transport webtransport`: each connection is a WebTransport session at this
    /// path (`/alknet/echo`) on its own HTTP/3 connection; `None` otherwise.
    pub webtransport: Option<String>,
    /// The HTTP/3 connections carrying the sessions, closed with them.
    pub carriers: std::cell::RefCell<Vec<Connection>>,
}

impl ClientThread {
    /// One connection attempt over the run's transport, bounded by [`CONNECT_TIMEOUT`].
    async fn attempt(&self) -> Result<Connection, String> {
        let attempt = async {
            match &self.tcp {
                Some(config) => alknet_runtime::connect_tls_tcp(
                    self.target.addr,
                    &self.target.host,
                    config.clone(),
                    alknet_runtime::DEFAULT_TCP_STREAM_BUFFER,
                )
                .await
                .map_err(|e| e.to_string()),
                None => {
                    let conn = self
                        .endpoint
                        .connect(self.target.addr, &self.target.host, self.crypto.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                    let Some(path) = &self.webtransport else {
                        return Ok(conn);
                    };
                    let authority = format!("{}:{}", self.target.host, self.target.addr.port());
                    let session = alknet_http::h3::webtransport::client::open_session(
                        conn.clone(),
                        &authority,
                        path,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    self.carriers.borrow_mut().push(conn);
                    Ok(session)
                }
            }
        };
        match monoio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err("handshake timed out".into()),
        }
    }

    /// Connects once; failures are tallied and return `None`.
    pub async fn connect(&self, tally: &mut Tally) -> Option<Connection> {
        match self.attempt().await {
            Ok(c) => {
                tally.connected += 1;
                Some(c)
            }
            Err(e) => {
                tally.error("connect", || e);
                None
            }
        }
    }

    /// Opens `n` connections concurrently (the endpoint's driver moves all handshakes).
    pub async fn connect_many(&self, n: usize, tally: &mut Tally) -> Vec<Connection> {
        let attempts: Vec<_> = (0..n).map(|_| self.attempt()).collect();
        let mut conns = Vec::with_capacity(n);
        for attempt in attempts {
            match attempt.await {
                Ok(c) => conns.push(c),
                Err(e) => tally.error("connect", || e),
            }
        }
        tally.connected += conns.len() as u64;
        conns
    }

    /// The common prologue: open this thread's `n` connections, report ready, and wait for
    /// the main thread's schedule (`None` if the run never starts).
    pub async fn connect_then_start(
        &self,
        n: usize,
        schedule: &OnceLock<Schedule>,
        ready: mpsc::Sender<()>,
        tally: &mut Tally,
    ) -> (Vec<Connection>, Option<Schedule>) {
        let conns = self.connect_many(n, tally).await;
        let _ = ready.send(());
        (conns, wait_for_start(schedule).await)
    }

    /// Closes `conns` and waits (bounded) for the closes to reach the server.
    pub async fn close_all(&self, conns: Vec<Connection>) {
        for c in conns.iter().chain(self.carriers.take().iter()) {
            c.close(VarInt::from_u32(0), b"load test done");
        }
        drop(conns);
        let _ = monoio::time::timeout(CLOSE_TIMEOUT, self.endpoint.wait_idle()).await;
    }
}

/// How the client side of a run is set up.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    pub target: Target,
    pub alpn: Vec<u8>,
    pub threads: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub resumption: bool,
    pub keep_alive: Duration,
    /// CPUs the client threads are restricted to (`--split-cores`), or anywhere.
    pub cpus: Option<Vec<usize>>,
    /// Connect over TLS/TCP instead of QUIC (`--transport tcp`).
    pub tcp: bool,
    /// Each connection a WebTransport session to `/<alpn>` over HTTP/3
    /// (`--transport webtransport`).
    pub webtransport: bool,
    /// The client certificate presented (sftp: the identity allowed SFTP), or none.
    pub identity: Option<Arc<alknet_runtime::tls::TlsIdentity>>,
    /// Load the server as `alknet connect` would, for workloads with no quinn baseline:
    /// the engine's own loopback packet size (64 KiB) instead of the comparisons' 1472
    /// bytes ([`crate::server::engine_limits`]), and connect's stream receive window.
    pub as_connect: bool,
}

/// A workload's per-thread body: prepare (connect), signal readiness through `ready`, wait
/// for the schedule with [`wait_for_start`], load, and return what it measured.
pub trait Workload: Clone + Send + 'static {
    fn run_thread(
        self,
        thread: ClientThread,
        schedule: Arc<OnceLock<Schedule>>,
        ready: mpsc::Sender<()>,
    ) -> impl std::future::Future<Output = Tally>;
}

/// Runs `workload` on `plan.threads` client threads. `on_window` is called on the main
/// thread with the schedule once it is set (to sample the server), and its result returned.
pub fn run<W: Workload, S>(
    plan: &ClientPlan,
    workload: W,
    on_window: impl FnOnce(Schedule) -> S,
) -> (Tally, S) {
    let schedule = Arc::new(OnceLock::new());
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    // over WebTransport the QUIC connection is HTTP/3's; the ALPN is the session's path
    let quic_alpn = if plan.webtransport {
        alknet_http::h3::ALPN.to_vec()
    } else {
        plan.alpn.clone()
    };
    let webtransport = plan
        .webtransport
        .then(|| format!("/{}", String::from_utf8_lossy(&plan.alpn)));
    let crypto = client_crypto_with_resumption(
        &ServerTrust::Fingerprint(plan.target.fingerprint),
        vec![quic_alpn],
        plan.identity.as_deref(),
        plan.resumption,
    )
    .expect("client TLS configuration");
    let tcp = plan.tcp.then(|| {
        alknet_runtime::tls::tcp_client_config(
            &ServerTrust::Fingerprint(plan.target.fingerprint),
            vec![plan.alpn.clone()],
            None,
        )
        .expect("client TLS-over-TCP configuration")
    });
    let mut limits = Limits {
        keep_alive_interval: plan.keep_alive,
        ..crate::server::engine_limits()
    };
    if plan.as_connect {
        limits.loopback_max_udp_payload_size = Limits::default().loopback_max_udp_payload_size;
        limits.stream_receive_window = alknet_runtime::CONNECT_STREAM_RECEIVE_WINDOW;
    }
    let threads: Vec<_> = (0..plan.threads)
        .map(|index| {
            let (workload, schedule, ready) =
                (workload.clone(), schedule.clone(), ready_tx.clone());
            let (target, crypto, limits) = (plan.target.clone(), crypto.clone(), limits.clone());
            let tcp = tcp.clone();
            let webtransport = webtransport.clone();
            let cpus = plan.cpus.clone();
            std::thread::Builder::new()
                .name(format!("loadtest-c{index}"))
                .spawn(move || {
                    if let Some(t) = restrict_client_thread(cpus.as_deref()) {
                        return t;
                    }
                    run_local(|_| async move {
                        let endpoint =
                            match ClientEndpoint::bind(unspecified_like(target.addr), &limits) {
                                Ok(e) => e,
                                Err(e) => {
                                    let mut t = Tally::default();
                                    t.error("connect", || format!("bind: {e}"));
                                    return t;
                                }
                            };
                        endpoint.set_quic_version(target.quic_version);
                        let thread = ClientThread {
                            index,
                            endpoint,
                            target,
                            crypto,
                            tcp,
                            webtransport,
                            carriers: Default::default(),
                        };
                        workload.run_thread(thread, schedule, ready).await
                    })
                    .unwrap_or_else(|e| {
                        let mut t = Tally::default();
                        t.error("runtime", || e.to_string());
                        t
                    })
                })
                .expect("spawn a client thread")
        })
        .collect();
    drop(ready_tx);
    // Every thread reports once it is ready (or drops its sender by dying).
    let give_up = Instant::now() + CONNECT_TIMEOUT * 2;
    for _ in 0..threads.len() {
        if ready_rx
            .recv_timeout(give_up.saturating_duration_since(Instant::now()))
            .is_err()
        {
            break;
        }
    }
    let measure_from = Instant::now() + plan.warmup;
    let sched = Schedule {
        measure_from,
        end: measure_from + plan.duration,
    };
    let _ = schedule.set(sched);
    let sampled = on_window(sched);
    let mut total = Tally::default();
    for t in threads {
        match t.join() {
            Ok(o) => total.merge(o),
            Err(_) => total.error("thread", || "a client thread panicked".into()),
        }
    }
    (total, sampled)
}

/// Polls for the schedule the main thread sets once every thread is ready.
pub async fn wait_for_start(schedule: &OnceLock<Schedule>) -> Option<Schedule> {
    let give_up = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(s) = schedule.get() {
            return Some(*s);
        }
        if Instant::now() >= give_up {
            return None;
        }
        monoio::time::sleep(START_POLL).await;
    }
}

/// Records this thread's CPU time over the window: spawn it when the schedule is known.
pub async fn cpu_over_window(sched: Schedule) -> f64 {
    monoio::time::sleep_until(monoio::time::Instant::from_std(sched.measure_from)).await;
    let start = thread_cpu();
    monoio::time::sleep_until(monoio::time::Instant::from_std(sched.end)).await;
    (thread_cpu() - start).as_secs_f64()
}

/// A closed-loop request slot: runs `op` back to back until the end of the run, recording
/// each one that completes inside the measured window (`Ok(bytes)`) or fails
/// (`Err((kind, why))`); a request still in flight at the end is neither. Stops early once
/// `dead()` says the connection is gone: spinning on it would only inflate the error
/// count and burn the CPU the other slots need.
pub async fn closed_loop<F, Fut>(
    sched: Schedule,
    tally: std::rc::Rc<std::cell::RefCell<Tally>>,
    timeout: Duration,
    dead: impl Fn() -> bool,
    mut op: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, (&'static str, String)>>,
{
    while Instant::now() < sched.end {
        let started = Instant::now();
        // never past the end
        let deadline = (started + timeout).min(sched.end);
        let res = monoio::time::timeout_at(monoio::time::Instant::from_std(deadline), op()).await;
        let done = Instant::now();
        if sched.measuring(done) {
            let mut t = tally.borrow_mut();
            match res {
                Ok(Ok(bytes)) => t.record(done - started, bytes),
                Ok(Err((kind, why))) => t.error(kind, || why),
                Err(_) if deadline < sched.end => t.error("timeout", || "timed out".into()),
                Err(_) => {}
            }
        }
        if dead() {
            return;
        }
    }
}

/// The body the request/response workloads share: open this thread's `n` connections, run
/// `slots` closed-loop request slots ([`closed_loop`]) on each until the end of the window,
/// then close. `request` makes one request on a connection: `Ok(payload bytes)` or
/// `Err(kind)` (the error's detail names the connection).
pub async fn run_request_slots<F, Fut>(
    thread: ClientThread,
    n: usize,
    slots: usize,
    schedule: Arc<OnceLock<Schedule>>,
    ready: mpsc::Sender<()>,
    timeout: Duration,
    request: F,
) -> Tally
where
    F: Fn(Connection) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = Result<u64, &'static str>> + 'static,
{
    let mut tally = Tally::default();
    let (conns, start) = thread
        .connect_then_start(n, &schedule, ready, &mut tally)
        .await;
    if let Some(sched) = start {
        let cpu = monoio::spawn(cpu_over_window(sched));
        let shared = std::rc::Rc::new(std::cell::RefCell::new(tally));
        let mut loops = Vec::new();
        for conn in &conns {
            for _ in 0..slots {
                let (conn, tally, request) = (conn.clone(), shared.clone(), request.clone());
                loops.push(monoio::spawn(async move {
                    closed_loop(
                        sched,
                        tally,
                        timeout,
                        || conn.close_reason().is_some(),
                        || {
                            let done = request(conn.clone());
                            let conn = &conn;
                            async move {
                                done.await
                                    .map_err(|kind| (kind, format!("request on {conn:?}")))
                            }
                        },
                    )
                    .await
                }));
            }
        }
        for l in loops {
            l.await;
        }
        tally = shared.replace(Tally::default());
        tally.cpu_s = cpu.await;
    }
    thread.close_all(conns).await;
    tally.client = thread.endpoint.stats();
    tally
}

/// Reads `recv` to its end without copying and checks it carried exactly `expected` bytes
/// (the perf protocol's response): `Err("read")` if the stream failed, `Err("mismatch")`
/// if it was longer or shorter.
pub async fn drain_expecting(
    recv: &mut alknet_runtime::RecvStream,
    expected: u64,
) -> Result<(), &'static str> {
    let mut got = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX).await.map_err(|_| "read")? {
        got += chunk.len() as u64;
    }
    if got == expected {
        Ok(())
    } else {
        Err("mismatch")
    }
}

/// Upload bytes of every workload are slices of this buffer (quinn-perf's `DATA`: 42s),
/// written without copying.
pub static UPLOAD: [u8; 1024 * 1024] = [42; 1024 * 1024];

/// The `UPLOAD` slices that make up `bytes` bytes, in order.
pub fn upload_chunks(mut bytes: u64) -> impl Iterator<Item = bytes::Bytes> {
    std::iter::from_fn(move || {
        (bytes > 0).then(|| {
            let n = bytes.min(UPLOAD.len() as u64) as usize;
            bytes -= n as u64;
            bytes::Bytes::from_static(&UPLOAD[..n])
        })
    })
}

/// Writes `bytes` upload bytes to `send` as `UPLOAD` slices.
pub async fn write_upload(
    send: &mut alknet_runtime::SendStream,
    bytes: u64,
) -> Result<(), &'static str> {
    for chunk in upload_chunks(bytes) {
        send.write_chunk(chunk).await.map_err(|_| "write")?;
    }
    Ok(())
}

/// Restricts a client thread to `cpus` (`--split-cores`). `Some` is the tally the thread
/// returns instead of running when that fails.
pub fn restrict_client_thread(cpus: Option<&[usize]>) -> Option<Tally> {
    let e = cpus.map(crate::cores::restrict_current)?.err()?;
    let mut t = Tally::default();
    t.error("affinity", || e.to_string());
    Some(t)
}
