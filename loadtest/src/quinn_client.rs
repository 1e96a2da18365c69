//! `--client quinn`: the perf-rr load generated the way `quinn-perf client` generates it
//! (`perf/src/client.rs` in the quinn repository), on quinn 0.11 and one tokio
//! current-thread runtime: one endpoint on one socket (2 MiB buffers, quinn's transport
//! defaults with `initial_mtu` 1200, `max_udp_payload_size` 1472), per connection a
//! semaphore of `--streams` permits (its `--bi-requests`), and per request a spawned task
//! that opens a bidirectional stream, writes the 8-byte download size and the upload as
//! static chunks, finishes, waits for `stopped()` when it uploaded, and reads the response
//! to FIN. It exists so that a ratio measured with our own client can be checked with the
//! peer's kind of client: a server that only wins against a friendly client has not won.
//!
//! `rr --client quinn` runs the `rr` workload's request (a new stream carrying `--size`
//! bytes to `alknet/echo`, finished, the echo read back whole and compared) in the same
//! endpoint and task structure, so that rr's ratio too can be checked with quinn's kind of
//! client.
//!
//! `h3 --h3-client quinn` uses the same endpoint and task structure for HTTP/3: per
//! connection the `h3` crate's client over `h3-quinn` (the client side of the stack the
//! quinn + h3-quinn baseline serves with), and per request a task that sends `GET /health`
//! and reads the answer ([`crate::h3::get_health`]).

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{ClientConfig, Endpoint, EndpointConfig, TokioRuntime, TransportConfig};

use crate::baseline::{PERF_INITIAL_MTU, PERF_MAX_UDP_PAYLOAD_SIZE, PERF_SOCKET_BUFFER_SIZE};
use crate::handshake::{echoed, record, PROBE};
use crate::harness::{
    restrict_client_thread, thread_cpu, unspecified_like, upload_chunks, Schedule, Tally, Target,
    CONNECT_TIMEOUT,
};

/// A request slower than this counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What each request of the quinn client is.
#[derive(Debug, Clone)]
pub enum QuinnRequest {
    /// quinn-perf's request on the `perf` ALPN.
    Perf { upload: u64, download: u64 },
    /// The `rr` workload's request on `alknet/echo`: this payload, echoed back whole.
    Echo { payload: Bytes },
    /// `GET /health` over HTTP/3 (`h3` crate + `h3-quinn`).
    H3Health,
    /// The `handshake` workload's loop with a quinn client: each of `connections` loops
    /// connects (resuming a TLS session when `resumption`), echoes one byte on
    /// `alknet/echo` so the handler really ran, closes, and starts again.
    Handshake { resumption: bool },
}

/// What the quinn client runs.
#[derive(Debug, Clone)]
pub struct QuinnPerfClient {
    pub target: Target,
    pub connections: usize,
    /// Client threads, each with its own runtime and endpoint.
    pub threads: usize,
    pub streams: usize,
    pub request: QuinnRequest,
    pub warmup: Duration,
    pub duration: Duration,
    /// CPUs the client thread is restricted to (`--split-cores`), or anywhere.
    pub cpus: Option<Vec<usize>>,
}

/// Runs the client on `client.threads` threads of its own (each a tokio current-thread
/// runtime and an endpoint, as a quinn-perf client each, the connections split between
/// them); `on_window` runs on this thread once the schedule is set (as in
/// [`crate::harness::run`]).
pub fn run<S>(client: QuinnPerfClient, on_window: impl FnOnce(Schedule) -> S) -> (Tally, S) {
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (warmup, duration) = (client.warmup, client.duration);
    let parts = crate::rr::split(client.connections, client.threads.max(1));
    let mut threads = Vec::new();
    for (i, connections) in parts.into_iter().enumerate() {
        let (sched_tx, sched_rx) = mpsc::channel::<Schedule>();
        let mine = QuinnPerfClient {
            connections,
            ..client.clone()
        };
        let ready = ready_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("loadtest-quinn-{i}"))
            .spawn(move || {
                if let Some(t) = restrict_client_thread(mine.cpus.as_deref()) {
                    return t;
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let mut t = Tally::default();
                        t.error("runtime", || e.to_string());
                        return t;
                    }
                };
                tokio::task::LocalSet::new().block_on(&rt, drive(mine, ready, sched_rx))
            })
            .expect("spawn a quinn client thread");
        threads.push((thread, sched_tx));
    }
    drop(ready_tx);
    // every thread connected (or given up): start the clock
    let give_up = Instant::now() + CONNECT_TIMEOUT * 2;
    for _ in 0..threads.len() {
        let left = give_up.saturating_duration_since(Instant::now());
        if ready_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let measure_from = Instant::now() + warmup;
    let sched = Schedule {
        measure_from,
        end: measure_from + duration,
    };
    for (_, tx) in &threads {
        let _ = tx.send(sched);
    }
    let sampled = on_window(sched);
    let mut tally = Tally::default();
    for (thread, _) in threads {
        tally.merge(thread.join().unwrap_or_else(|_| {
            let mut t = Tally::default();
            t.error("thread", || "a quinn client thread panicked".into());
            t
        }));
    }
    (tally, sampled)
}

/// The client thread's body: connect, report ready, load until the schedule's end.
async fn drive(
    client: QuinnPerfClient,
    ready: mpsc::Sender<()>,
    sched: mpsc::Receiver<Schedule>,
) -> Tally {
    let mut tally = Tally::default();
    let (alpn, resumption) = match client.request {
        QuinnRequest::Perf { .. } => (alknet_perf::ALPN, true),
        QuinnRequest::Echo { .. } => (alknet_echo::ALPN, true),
        QuinnRequest::H3Health => (alknet_http::h3::ALPN, true),
        QuinnRequest::Handshake { resumption } => (alknet_echo::ALPN, resumption),
    };
    let endpoint = match endpoint(&client.target, alpn, resumption) {
        Ok(e) => e,
        Err(e) => {
            tally.error("connect", || e);
            return tally;
        }
    };
    if let QuinnRequest::Handshake { .. } = client.request {
        return drive_handshakes(&client, endpoint, tally, ready, sched).await;
    }
    let mut conns = Vec::new();
    for _ in 0..client.connections {
        let attempt = async {
            endpoint
                .connect(client.target.addr, &client.target.host)
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => tally.error("connect", || e),
            Err(_) => tally.error("connect", || "handshake timed out".into()),
        }
    }
    tally.connected = conns.len() as u64;
    let Some(sched) = ready_for_schedule(ready, sched).await else {
        return tally;
    };
    let tally = Rc::new(RefCell::new(tally));
    let mut drivers = Vec::new();
    for conn in &conns {
        // what each connection's stream loops send: quinn-perf's request, rr's, or h3's
        drivers.push(match &client.request {
            &QuinnRequest::Perf { upload, download } => tokio::task::spawn_local(drive_bi(
                conn.clone(),
                client.streams,
                sched,
                tally.clone(),
                "quinn perf request",
                move |send, recv| async move {
                    request(send, recv, upload, download).await?;
                    Ok(upload + download)
                },
            )),
            QuinnRequest::Echo { payload } => {
                let payload = payload.clone();
                tokio::task::spawn_local(drive_bi(
                    conn.clone(),
                    client.streams,
                    sched,
                    tally.clone(),
                    "quinn echo request",
                    move |send, recv| {
                        let payload = payload.clone();
                        async move {
                            let bytes = 2 * payload.len() as u64;
                            echo(send, recv, payload).await?;
                            Ok(bytes)
                        }
                    },
                ))
            }
            QuinnRequest::H3Health => tokio::task::spawn_local(drive_h3(
                conn.clone(),
                client.streams,
                sched,
                tally.clone(),
            )),
            // connect loops, driven by `drive_handshakes` (returned above)
            QuinnRequest::Handshake { .. } => continue,
        });
    }
    let cpu_s = cpu_over_window(sched).await;
    for d in drivers {
        d.abort();
    }
    for c in &conns {
        c.close(0u32.into(), b"done");
    }
    settle(&endpoint, &tally, cpu_s).await
}

/// Reports this thread ready and waits for the schedule (`None`: the main thread gave up;
/// it answers at once after the last `ready` otherwise).
async fn ready_for_schedule(
    ready: mpsc::Sender<()>,
    sched: mpsc::Receiver<Schedule>,
) -> Option<Schedule> {
    let _ = ready.send(());
    tokio::task::spawn_blocking(move || sched.recv())
        .await
        .ok()?
        .ok()
}

/// This thread's CPU time over the measured window, on tokio's clock (the monoio clients'
/// is [`crate::harness::cpu_over_window`]).
async fn cpu_over_window(sched: Schedule) -> f64 {
    tokio::time::sleep_until(tokio::time::Instant::from_std(sched.measure_from)).await;
    let start = thread_cpu();
    tokio::time::sleep_until(tokio::time::Instant::from_std(sched.end)).await;
    (thread_cpu() - start).as_secs_f64()
}

/// Lets the endpoint deliver its closes (2 s at most) and hands over the tally with the
/// thread's CPU time over the window.
async fn settle(endpoint: &Endpoint, tally: &RefCell<Tally>, cpu_s: f64) -> Tally {
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    let mut t = tally.replace(Tally::default());
    t.cpu_s = cpu_s;
    t
}

/// [`QuinnRequest::Handshake`]: `client.connections` connect loops on the one endpoint
/// until the schedule's end, each handshake that ends inside the window recorded.
async fn drive_handshakes(
    client: &QuinnPerfClient,
    endpoint: Endpoint,
    tally: Tally,
    ready: mpsc::Sender<()>,
    sched: mpsc::Receiver<Schedule>,
) -> Tally {
    let Some(sched) = ready_for_schedule(ready, sched).await else {
        return tally;
    };
    let tally = Rc::new(RefCell::new(tally));
    let loops: Vec<_> = (0..client.connections)
        .map(|_| {
            tokio::task::spawn_local(handshake_loop(
                endpoint.clone(),
                client.target.clone(),
                sched,
                tally.clone(),
            ))
        })
        .collect();
    let cpu_s = cpu_over_window(sched).await;
    for l in loops {
        let _ = l.await;
    }
    settle(&endpoint, &tally, cpu_s).await
}

/// One connect loop of [`drive_handshakes`]: connect, one echoed byte, close, again.
async fn handshake_loop(
    endpoint: Endpoint,
    target: Target,
    sched: Schedule,
    tally: Rc<RefCell<Tally>>,
) {
    while Instant::now() < sched.end {
        let started = Instant::now();
        let attempt = async {
            let conn = endpoint
                .connect(target.addr, &target.host)
                .map_err(|_| "connect")?
                .await
                .map_err(|_| "connect")?;
            let exchange = async {
                let (mut send, mut recv) = conn.open_bi().await.map_err(|_| "open")?;
                send.write_all(PROBE).await.map_err(|_| "write")?;
                send.finish().map_err(|_| "write")?;
                echoed(recv.read_to_end(PROBE.len()).await.ok())
            };
            let r = exchange.await;
            conn.close(0u32.into(), b"");
            r
        };
        let result = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .unwrap_or(Err("timeout"));
        record(&tally, sched, started, result, |kind| {
            format!("quinn client handshake: {kind}")
        });
    }
}

/// quinn-perf client's endpoint: its socket, transport and crypto settings (TLS session
/// resumption as `resumption` says).
fn endpoint(target: &Target, alpn: &[u8], resumption: bool) -> Result<Endpoint, String> {
    let socket = std::net::UdpSocket::bind(unspecified_like(target.addr))
        .map_err(|e| format!("bind: {e}"))?;
    let state = quinn_udp::UdpSocketState::new((&socket).into()).map_err(|e| e.to_string())?;
    let _ = state.set_send_buffer_size((&socket).into(), PERF_SOCKET_BUFFER_SIZE);
    let _ = state.set_recv_buffer_size((&socket).into(), PERF_SOCKET_BUFFER_SIZE);
    let mut endpoint_config = EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(PERF_MAX_UDP_PAYLOAD_SIZE)
        .map_err(|e| e.to_string())?;
    let mut endpoint = Endpoint::new(endpoint_config, None, socket, Arc::new(TokioRuntime))
        .map_err(|e| format!("endpoint: {e}"))?;
    // the engine's client TLS settings (resumption on), wrapped in stock quinn's type
    let rustls_config = alknet_runtime::tls::client_rustls_config(
        &alknet_runtime::tls::ServerTrust::Fingerprint(target.fingerprint),
        vec![alpn.to_vec()],
        None,
        resumption,
    )
    .map_err(|e| e.to_string())?;
    let crypto = Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(rustls_config)
            .map_err(|e| e.to_string())?,
    );
    let mut transport = TransportConfig::default();
    transport.initial_mtu(PERF_INITIAL_MTU);
    let mut config = ClientConfig::new(crypto);
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// quinn-perf's `drive_bi`: keep `streams` requests in flight, each on a new
/// bidirectional stream and a task of its own; `request` runs one on its stream and
/// yields the bytes it moved.
async fn drive_bi<Request, Running>(
    conn: quinn::Connection,
    streams: usize,
    sched: Schedule,
    tally: Rc<RefCell<Tally>>,
    what: &'static str,
    request: Request,
) where
    Request: Fn(quinn::SendStream, quinn::RecvStream) -> Running,
    Running: Future<Output = Result<u64, &'static str>> + 'static,
{
    let next = || {
        let conn = conn.clone();
        let request = &request;
        async move {
            let (send, recv) = conn.open_bi().await.ok()?;
            Some(request(send, recv))
        }
    };
    keep_in_flight(streams, sched, &tally, what, next).await;
}

/// One `rr` request ([`crate::rr`]'s, on quinn): the payload out, finished, and the echo
/// read back whole and compared. Writing and reading run together so a payload larger
/// than the windows cannot deadlock against the echo.
async fn echo(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    payload: Bytes,
) -> Result<(), &'static str> {
    let writer = async {
        send.write_chunk(payload.clone())
            .await
            .map_err(|_| "write")?;
        send.finish().map_err(|_| "write")
    };
    let reader = async {
        match recv.read_to_end(payload.len()).await {
            Ok(echo) if echo == payload[..] => Ok(()),
            Ok(_) | Err(quinn::ReadToEndError::TooLong) => Err("mismatch"),
            Err(quinn::ReadToEndError::Read(_)) => Err("read"),
        }
    };
    let (wrote, read) = tokio::join!(writer, reader);
    wrote.and(read)
}

/// HTTP/3 on one connection as an h3-quinn client does it: h3's connection driver on a
/// task of its own, and `streams` requests in flight, a task each (as [`drive_bi`]).
async fn drive_h3(
    conn: quinn::Connection,
    streams: usize,
    sched: Schedule,
    tally: Rc<RefCell<Tally>>,
) {
    let (mut driver, send) = match h3::client::new(h3_quinn::Connection::new(conn)).await {
        Ok(c) => c,
        Err(e) => {
            tally.borrow_mut().error("h3 setup", || e.to_string());
            return;
        }
    };
    let closed = tokio::task::spawn_local(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let next = || {
        let mut send = send.clone();
        let open = !closed.is_finished();
        async move { open.then_some(async move { crate::h3::get_health(&mut send).await }) }
    };
    keep_in_flight(streams, sched, &tally, "GET /health", next).await;
}

/// quinn-perf's task structure: `streams` requests in flight, each on a task of its own,
/// and those that end inside the measured window recorded in `tally`. `next` starts the
/// next request (`None`: the connection is gone, stop); a request yields the bytes it moved.
async fn keep_in_flight<Next, Starting, Request>(
    streams: usize,
    sched: Schedule,
    tally: &Rc<RefCell<Tally>>,
    what: &'static str,
    mut next: Next,
) where
    Next: FnMut() -> Starting,
    Starting: Future<Output = Option<Request>>,
    Request: Future<Output = Result<u64, &'static str>> + 'static,
{
    let sem = Arc::new(tokio::sync::Semaphore::new(streams));
    loop {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            return;
        };
        let Some(request) = next().await else {
            return;
        };
        let tally = tally.clone();
        tokio::task::spawn_local(async move {
            let started = Instant::now();
            let res = tokio::time::timeout(REQUEST_TIMEOUT, request).await;
            let done = Instant::now();
            if sched.measuring(done) {
                let mut t = tally.borrow_mut();
                match res {
                    Ok(Ok(bytes)) => t.record(done - started, bytes),
                    Ok(Err(kind)) => t.error(kind, || what.into()),
                    Err(_) => t.error("timeout", || "timed out".into()),
                }
            }
            drop(permit);
        });
    }
}

/// quinn-perf's `request_bi`.
async fn request(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    upload: u64,
    download: u64,
) -> Result<(), &'static str> {
    send.write_all(&download.to_be_bytes())
        .await
        .map_err(|_| "write")?;
    for chunk in upload_chunks(upload) {
        send.write_chunk(chunk).await.map_err(|_| "write")?;
    }
    send.finish().map_err(|_| "write")?;
    if upload > 0 {
        let _ = send.stopped().await;
    }
    if download == 0 {
        return Ok(());
    }
    let mut bufs: [Bytes; 32] = std::array::from_fn(|_| Bytes::new());
    let mut got = 0u64;
    while let Some(n) = recv.read_chunks(&mut bufs).await.map_err(|_| "read")? {
        got += bufs[..n].iter().map(|b| b.len() as u64).sum::<u64>();
    }
    if got == download {
        Ok(())
    } else {
        Err("mismatch")
    }
}
