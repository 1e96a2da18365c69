//! The request/response scenario: `connections × streams` loops, each opening a stream,
//! sending `size` bytes, finishing, and reading the whole echo back.

use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use alknet_runtime::rt::run_local;
use alknet_runtime::tls::{client_crypto, ServerTrust};
use alknet_runtime::{
    ClientEndpoint, Connection, Fingerprint, Limits, ReadToEndError, VarInt, WorkerStatsSnapshot,
};
use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::{RrArgs, Target};

/// A handshake slower than this counts as a failed connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A request slower than this counts as an error (rather than stalling its loop).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connected thread waits for the others before giving up on the run.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for our CONNECTION_CLOSEs to go out at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a connected thread checks whether the run has started.
const START_POLL: Duration = Duration::from_millis(1);
/// Largest latency the histograms hold (µs); anything slower is clamped to it.
const MAX_LATENCY_US: u64 = 60_000_000;

/// What to run, resolved from the command line.
pub struct Plan {
    pub target: Target,
    pub fingerprint: Fingerprint,
    pub in_process_workers: Option<u16>,
    pub client_threads: usize,
    pub connections: usize,
    pub streams: usize,
    pub size: usize,
    pub duration: Duration,
    pub warmup: Duration,
}

impl Plan {
    pub fn new(args: &RrArgs, target: Target, fingerprint: Fingerprint) -> Self {
        let connections = args.connections as usize;
        Self {
            target,
            fingerprint,
            in_process_workers: args.target.is_none().then_some(args.server_workers),
            // a thread without a connection would only add noise
            client_threads: usize::from(args.client_threads).min(connections),
            connections,
            streams: args.streams as usize,
            size: args.size as usize,
            duration: Duration::from_secs(args.duration),
            warmup: Duration::from_secs(args.warmup),
        }
    }

    /// Connections of client thread `i`: an even split, the remainder to the first threads.
    fn connections_of(&self, i: usize) -> usize {
        let base = self.connections / self.client_threads;
        base + usize::from(i < self.connections % self.client_threads)
    }

    pub fn target_addr(&self) -> SocketAddr {
        self.target.addr
    }
}

/// When load starts, when measuring starts and when everything stops. Set once, by the
/// main thread, after every client thread has connected, so all threads measure the same
/// window.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    measure_from: Instant,
    end: Instant,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Open,
    Write,
    Read,
    Mismatch,
    Timeout,
}

/// Failed requests (and connections) by cause.
#[derive(Debug, Default, Clone, Copy)]
pub struct Errors {
    pub open: u64,
    pub write: u64,
    pub read: u64,
    /// The echo differed from what was sent (length or content).
    pub mismatch: u64,
    pub timeout: u64,
    /// Connections that did not complete their handshake.
    pub connect: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.open + self.write + self.read + self.mismatch + self.timeout + self.connect
    }

    fn count(&mut self, f: Failure) {
        match f {
            Failure::Open => self.open += 1,
            Failure::Write => self.write += 1,
            Failure::Read => self.read += 1,
            Failure::Mismatch => self.mismatch += 1,
            Failure::Timeout => self.timeout += 1,
        }
    }

    fn add(&mut self, o: &Errors) {
        self.open += o.open;
        self.write += o.write;
        self.read += o.read;
        self.mismatch += o.mismatch;
        self.timeout += o.timeout;
        self.connect += o.connect;
    }
}

/// What one client thread (or, merged, the whole run) measured.
pub struct Outcome {
    /// Latency in µs of each request completed inside the measured window.
    pub latency: Histogram<u64>,
    pub errors: Errors,
    pub connected: u64,
    /// Client endpoints' counters (whole run, handshakes and warm-up included).
    pub client: WorkerStatsSnapshot,
    /// First connection error seen, to say why a run went wrong.
    pub first_connect_error: Option<String>,
}

impl Outcome {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            errors: Errors::default(),
            connected: 0,
            client: WorkerStatsSnapshot::default(),
            first_connect_error: None,
        }
    }

    fn merge(&mut self, o: Outcome) {
        // Same bounds everywhere, so adding cannot fail.
        self.latency
            .add(&o.latency)
            .expect("histograms share bounds");
        self.errors.add(&o.errors);
        self.connected += o.connected;
        self.client = self.client + o.client;
        if self.first_connect_error.is_none() {
            self.first_connect_error = o.first_connect_error;
        }
    }
}

/// Runs the scenario on `plan.client_threads` threads and merges what they measured.
pub fn run(plan: &Plan) -> Outcome {
    let schedule = Arc::new(OnceLock::new());
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let threads: Vec<_> = (0..plan.client_threads)
        .map(|i| spawn_client_thread(plan, i, schedule.clone(), ready_tx.clone()))
        .collect();
    drop(ready_tx);
    wait_until_ready(&ready_rx, threads.len());
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let _ = schedule.set(Schedule {
        measure_from,
        end: measure_from + plan.duration,
    });
    let mut total = Outcome::new();
    for t in threads {
        match t.join() {
            Ok(o) => total.merge(o),
            Err(_) => eprintln!("alknet-loadtest: a client thread panicked"),
        }
    }
    total
}

/// Waits for every client thread to report that its connections are up (or failed). A
/// thread that died drops its sender, so this never waits on it past the others.
fn wait_until_ready(rx: &mpsc::Receiver<()>, threads: usize) {
    let give_up = Instant::now() + CONNECT_TIMEOUT + START_POLL * 100;
    for _ in 0..threads {
        let left = give_up.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            return;
        }
    }
}

/// Everything a client thread needs, owned so it can move to the thread.
#[derive(Clone)]
struct ThreadPlan {
    target: Target,
    fingerprint: Fingerprint,
    connections: usize,
    streams: usize,
    payload: Bytes,
}

fn spawn_client_thread(
    plan: &Plan,
    index: usize,
    schedule: Arc<OnceLock<Schedule>>,
    ready: mpsc::Sender<()>,
) -> std::thread::JoinHandle<Outcome> {
    let tp = ThreadPlan {
        target: plan.target.clone(),
        fingerprint: plan.fingerprint,
        connections: plan.connections_of(index),
        streams: plan.streams,
        payload: payload(plan.size),
    };
    std::thread::Builder::new()
        .name(format!("loadtest-c{index}"))
        .spawn(move || {
            run_local(|_| client_thread(tp, schedule, ready)).unwrap_or_else(|e| {
                eprintln!("alknet-loadtest: client runtime failed: {e}");
                Outcome::new()
            })
        })
        .expect("spawn a client thread")
}

/// A recognisable, non-constant payload, so a misplaced chunk shows up as a mismatch.
fn payload(size: usize) -> Bytes {
    (0..size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// One client thread: connect, report ready, wait for the shared start, load, close.
async fn client_thread(
    tp: ThreadPlan,
    schedule: Arc<OnceLock<Schedule>>,
    ready: mpsc::Sender<()>,
) -> Outcome {
    let mut out = Outcome::new();
    let endpoint = match ClientEndpoint::bind(unspecified_like(tp.target.addr), &Limits::default())
    {
        Ok(e) => e,
        Err(e) => {
            out.errors.connect += tp.connections as u64;
            out.first_connect_error = Some(format!("bind: {e}"));
            return out;
        }
    };
    let conns = connect_all(&endpoint, &tp, &mut out).await;
    let _ = ready.send(());
    drop(ready);
    if let Some(sched) = wait_for_start(&schedule).await {
        let tally = Rc::new(RefCell::new(out));
        load(&conns, &tp, sched, &tally).await;
        // Every request loop has ended, so nothing else borrows the tally now.
        out = tally.replace(Outcome::new());
    }
    close_all(&endpoint, conns).await;
    out.client = endpoint.stats();
    out
}

/// The wildcard address of the target's family, so the kernel picks the route.
fn unspecified_like(target: SocketAddr) -> SocketAddr {
    match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Opens this thread's connections concurrently; failures are counted, not fatal.
async fn connect_all(
    endpoint: &ClientEndpoint,
    tp: &ThreadPlan,
    out: &mut Outcome,
) -> Vec<Connection> {
    let crypto = client_crypto(
        &ServerTrust::Fingerprint(tp.fingerprint),
        vec![alknet_echo::ALPN.to_vec()],
        None,
    )
    .expect("client TLS configuration");
    let attempts: Vec<_> = (0..tp.connections)
        .map(|_| {
            let connecting = endpoint.connect(tp.target.addr, &tp.target.host, crypto.clone());
            monoio::time::timeout(CONNECT_TIMEOUT, connecting)
        })
        .collect();
    let mut conns = Vec::with_capacity(attempts.len());
    // Awaiting in order still runs the handshakes concurrently: the endpoint's driver task
    // moves them all, these futures only wait for the result.
    for attempt in attempts {
        match attempt.await {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => record_connect_error(out, e.to_string()),
            Err(_) => record_connect_error(out, "handshake timed out".into()),
        }
    }
    out.connected = conns.len() as u64;
    conns
}

fn record_connect_error(out: &mut Outcome, why: String) {
    out.errors.connect += 1;
    out.first_connect_error.get_or_insert(why);
}

/// Polls for the schedule the main thread sets once every thread is connected.
async fn wait_for_start(schedule: &OnceLock<Schedule>) -> Option<Schedule> {
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

/// Runs `streams` request loops on every connection until the schedule ends.
async fn load(
    conns: &[Connection],
    tp: &ThreadPlan,
    sched: Schedule,
    tally: &Rc<RefCell<Outcome>>,
) {
    let mut loops = Vec::with_capacity(conns.len() * tp.streams);
    for conn in conns {
        for _ in 0..tp.streams {
            loops.push(monoio::spawn(request_loop(
                conn.clone(),
                tp.payload.clone(),
                sched,
                tally.clone(),
            )));
        }
    }
    for l in loops {
        l.await;
    }
}

/// One in-flight slot: issues requests back to back until the end of the run.
async fn request_loop(
    conn: Connection,
    payload: Bytes,
    sched: Schedule,
    tally: Rc<RefCell<Outcome>>,
) {
    while Instant::now() < sched.end {
        let started = Instant::now();
        // Never past the end: a request still in flight then is neither success nor error.
        let deadline = (started + REQUEST_TIMEOUT).min(sched.end);
        let res = monoio::time::timeout_at(
            monoio::time::Instant::from_std(deadline),
            request(&conn, &payload),
        )
        .await;
        let done = Instant::now();
        let measured = done >= sched.measure_from;
        match res {
            Ok(Ok(())) if measured => record_latency(&tally, done - started),
            Ok(Err(f)) if measured => tally.borrow_mut().errors.count(f),
            Err(_) if measured && deadline < sched.end => {
                tally.borrow_mut().errors.count(Failure::Timeout)
            }
            _ => {}
        }
        // A dead connection fails every further request at once; spinning on it would
        // only inflate the error count and burn the CPU the other loops need.
        if conn.close_reason().is_some() {
            return;
        }
    }
}

fn record_latency(tally: &RefCell<Outcome>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    tally.borrow_mut().latency.saturating_record(us.max(1));
}

/// One request: a new bidirectional stream carrying `payload`, echoed back whole. Writing
/// and reading run together so a payload larger than the flow-control windows cannot
/// deadlock against the echo.
async fn request(conn: &Connection, payload: &Bytes) -> Result<(), Failure> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|_| Failure::Open)?.split();
    let writer = async {
        send.write_chunk(payload.clone())
            .await
            .map_err(|_| Failure::Write)?;
        send.finish().map_err(|_| Failure::Write)
    };
    let reader = async {
        match recv.read_to_end(payload.len()).await {
            Ok(echo) if echo == payload[..] => Ok(()),
            Ok(_) | Err(ReadToEndError::TooLong(_)) => Err(Failure::Mismatch),
            Err(ReadToEndError::Read(_)) => Err(Failure::Read),
        }
    };
    let (wrote, read) = monoio::join!(writer, reader);
    wrote.and(read)
}

/// Closes every connection and waits (bounded) for the closes to reach the server, so it
/// does not keep them until the idle timeout.
async fn close_all(endpoint: &ClientEndpoint, conns: Vec<Connection>) {
    for c in &conns {
        c.close(VarInt::from_u32(0), b"load test done");
    }
    drop(conns);
    let _ = monoio::time::timeout(CLOSE_TIMEOUT, endpoint.wait_idle()).await;
}
