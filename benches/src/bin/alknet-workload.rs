//! A small, fixed, deterministic workload whose instruction counts `callgrind-gate.sh` tracks.
//!
//! ```text
//! alknet-workload handshake        # HANDSHAKES full handshakes, client and server
//! alknet-workload datagrams        # DATAGRAMS request datagrams through the server path
//! alknet-workload routing          # CID routing/encoding/minting and ALPN lookups
//! alknet-workload framing          # alknet/call frames: encode, split, decode
//! alknet-workload streams          # perf requests through a real worker thread and runtime
//! alknet-workload initial-dropped  # INITIALS new connections dropped over their source's rate
//! alknet-workload initial-refused  # INITIALS new connections refused (CONNECTION_REFUSED)
//! alknet-workload initial-retry    # INITIALS new connections answered with Retry
//! alknet-workload write-identity DIR   # (re)generate the fixed certificate (see below)
//! ```
//!
//! Each scenario does its setup first and then runs its measured part inside
//! [`alknet_workload_measured`]; the gate runs callgrind with `--collect-atstart=no
//! --toggle-collect=alknet_workload_measured`, so only that part is counted. `streams` runs
//! two threads (the server's worker and this one), and collection toggles per thread, so it
//! brackets its measured part with callgrind's start/stop-instrumentation requests instead
//! (global; the gate runs it with `--instr-atstart=no`).
//!
//! What is fixed: the certificate (`benches/data/{cert,key}.pem`, generated once with
//! `write-identity`, since generating one uses randomness), the endpoints' RNG seeds, the
//! simulated clock, and every count below. What is not: TLS key shares, signature nonces and
//! the random bytes of CIDs (`WorkerCidGenerator` uses `thread_rng`, as in production). They
//! move the `handshake` count by up to ~0.04% run to run; `datagrams` moves by a couple of
//! hundred instructions (glibc malloc state) and `routing` not at all. See the gate's header.
//! `framing` is deterministic too (simd-json picks its SIMD code by CPU, like ring).

use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use alknet_benches::alpn::{self, ALPNS};
use alknet_benches::pair::{steady_limits, Load, Pair, PairConfig, WORKER};
use alknet_benches::valgrind;
use alknet_proto::call::{EventEnvelope, EventType, Frame, FrameDecoder, DEFAULT_MAX_FRAME_SIZE};
use alknet_proto::cid::{CidLayout, Route};
use alknet_runtime::rt::{run_local, DRIVER_ENV};
use alknet_runtime::tls::{client_crypto, ClientAuth, ServerTrust, TlsIdentity};
use alknet_runtime::{
    AdmissionLimits, AlpnRegistry, ClientEndpoint, Connection, EngineConfig, NoIdentities,
    PinWorkers, SourceTable, VarInt, WorkerCidGenerator,
};
use bytes::{Bytes, BytesMut};
use quinn_proto::ConnectionIdGenerator;
use serde_json::json;

/// Full handshakes in the `handshake` scenario.
const HANDSHAKES: usize = 4;
/// Request-sized (64-byte write) datagrams in the `datagrams` scenario.
const DATAGRAMS: usize = 2000;
const REQUEST_SIZE: usize = 64;
/// Rounds of the `routing` scenario (each: two routes, an encode/decode, two ALPN lookups).
const ROUTING_ROUNDS: u32 = 100_000;
/// CIDs minted in the `routing` scenario.
const CIDS_MINTED: usize = 10_000;

/// `framing`: small (~64-byte payload) and large (~4 KiB payload) `call.requested` frames,
/// encoded into one stream, then pushed through a `FrameDecoder` in QUIC-sized chunks and
/// every body decoded.
const FRAMES_SMALL: usize = 2000;
const FRAMES_LARGE: usize = 100;
const FRAMING_CHUNK: usize = 1200;

/// `streams`: rounds of perf requests (quinn-perf's wire format: 8-byte download size,
/// upload bytes, FIN), each round opening [`STREAMS_PER_ROUND`] bidirectional streams at
/// once and then reading every answer; warm-up rounds first, not counted.
const STREAM_ROUNDS: usize = 1000;
const STREAMS_PER_ROUND: usize = 4;
const STREAM_WARMUP_ROUNDS: usize = 20;
/// Upload and download bytes of each request (perf-rr's 64 B).
const STREAM_REQUEST_SIZE: usize = 64;

/// New connections' first datagrams in each of the `initial-*` scenarios.
const INITIALS: usize = 1000;

const SCENARIOS: [&str; 8] = [
    "handshake",
    "datagrams",
    "routing",
    "framing",
    "streams",
    "initial-dropped",
    "initial-refused",
    "initial-retry",
];

/// Callgrind counts only what runs inside this function (`--toggle-collect`). Unmangled so
/// the gate can name it; never inlined so it exists.
#[no_mangle]
#[inline(never)]
fn alknet_workload_measured(f: &mut dyn FnMut()) {
    f();
}

fn identity() -> TlsIdentity {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    TlsIdentity::from_pem_files(&dir.join("cert.pem"), &dir.join("key.pem"))
        .expect("benches/data/cert.pem and key.pem (alknet-workload write-identity benches/data)")
}

fn handshake() {
    let config = PairConfig::new(&identity());
    let mut pairs = Vec::with_capacity(HANDSHAKES);
    alknet_workload_measured(&mut || {
        for _ in 0..HANDSHAKES {
            let mut pair = Pair::new(&config);
            pair.handshake();
            pairs.push(pair);
        }
    });
    assert!(pairs
        .iter()
        .all(|p| p.client.connected && p.server.connected));
}

/// What the worker does with a new connection's first datagram before any TLS work, as
/// `Driver::route` and `on_incoming` in `runtime/src/worker.rs` do it. Dropped: the Initial
/// comes from a prefix over its rate and is dropped before quinn-proto decrypts it.
/// Refused and Retry: the endpoint decodes the Initial (derives the Initial keys from its
/// DCID, removes header protection, decrypts the payload), then it is refused or sent a
/// Retry. Compare with `handshake` (a full handshake, both sides) divided by HANDSHAKES.
#[derive(Clone, Copy)]
enum InitialFate {
    Dropped,
    Refused,
    Retry,
}

fn initials(fate: InitialFate) {
    let config = PairConfig::new(&identity());
    let mut endpoint = alknet_benches::pair::server_endpoint(&config);
    let mut batch = alknet_benches::pair::client_initials(&config, INITIALS);
    let sources = SourceTable::new();
    let layout = CidLayout::new(
        alknet_benches::pair::SERVER_ID,
        alknet_benches::pair::WORKERS,
    )
    .expect("valid layout");
    // a rate limit the source is already over, for the dropped case
    let limits = AdmissionLimits {
        new_connections_per_second: 1,
        new_connection_burst: 1,
        ..AdmissionLimits::default()
    };
    let now = std::time::Instant::now();
    let client = alknet_benches::pair::CLIENT_ADDR;
    assert!(sources.rate_allows(&limits, client.ip(), now));
    let mut response = Vec::with_capacity(1500);
    let (mut dropped, mut answered) = (0usize, 0usize);
    alknet_workload_measured(&mut || {
        for d in batch.drain(..) {
            if matches!(fate, InitialFate::Dropped) {
                // Driver::route
                assert!(
                    matches!(layout.route(&d), Route::Local)
                        && alknet_proto::cid::is_initial(&d)
                        && sources.over_rate(&limits, client.ip(), now)
                );
                dropped += 1;
                continue;
            }
            response.clear();
            let event = endpoint.handle(now, client, None, None, d, &mut response);
            let Some(quinn_proto::DatagramEvent::NewConnection(incoming)) = event else {
                panic!("an Initial makes a new connection");
            };
            match fate {
                InitialFate::Dropped => unreachable!("dropped before decoding"),
                InitialFate::Refused => {
                    let t = endpoint.refuse(incoming, &mut response);
                    answered += usize::from(t.size > 0);
                }
                InitialFate::Retry => {
                    let t = endpoint
                        .retry(incoming, &mut response)
                        .unwrap_or_else(|_| panic!("retry of an unvalidated address"));
                    answered += usize::from(t.size > 0);
                }
            }
        }
    });
    assert_eq!(dropped + answered, INITIALS);
}

fn datagrams() {
    let config = PairConfig::steady(&identity());
    let mut pair = Pair::connected(&config);
    let mut batch = pair.client_batch(DATAGRAMS, Load::Writes(REQUEST_SIZE));
    let before = (pair.server.datagrams_to_conn, pair.server.bytes_read);
    alknet_workload_measured(&mut || {
        for d in batch.drain(..) {
            pair.server.receive(d);
        }
    });
    let s = &pair.server;
    assert_eq!(s.foreign, 0);
    assert_eq!(s.datagrams_to_conn - before.0, DATAGRAMS as u64);
    assert_eq!(
        s.bytes_read - before.1,
        (DATAGRAMS * REQUEST_SIZE) as u64,
        "the server read every request byte"
    );
}

fn routing() {
    let layout = CidLayout::new(0x1234, 4).expect("valid layout");
    let mut short = vec![0x40];
    short.extend_from_slice(&layout.encode(1, [7; 5]));
    short.resize(1200, 0xaa);
    let mut initial = vec![0xc0, 0, 0, 0, 1, 16];
    initial.extend_from_slice(&[0xee; 16]);
    initial.resize(1200, 0);
    let registry = alpn::registry();
    let last = ALPNS[ALPNS.len() - 1];
    let miss: &[u8] = b"alknet/nope";
    let mut generator = WorkerCidGenerator::new(layout, WORKER);

    let mut routed = 0u32;
    let mut decoded = 0u32;
    let mut found = 0u32;
    alknet_workload_measured(&mut || {
        for i in 0..ROUTING_ROUNDS {
            let l = black_box(&layout);
            routed += u32::from(l.route(black_box(&short)) == Route::Worker(1));
            routed += u32::from(l.route(black_box(&initial)) == Route::Local);
            let [a, b, c, d] = i.to_le_bytes();
            let cid = l.encode(black_box((i % 4) as u8), [a, b, c, d, 0x5a]);
            decoded += u32::from(l.decode(black_box(&cid)).is_some());
            found += u32::from(registry.lookup(black_box(last)).is_some());
            found += u32::from(registry.lookup(black_box(miss)).is_some());
        }
        for _ in 0..CIDS_MINTED {
            black_box(generator.generate_cid());
        }
    });
    assert_eq!(routed, 2 * ROUTING_ROUNDS);
    assert_eq!(decoded, ROUTING_ROUNDS);
    assert_eq!(found, ROUTING_ROUNDS);
}

/// A `call.requested` with `items` small objects in its arguments (0: a ~60-byte payload,
/// 55: ~4 KiB); the same shape as the `framing` criterion bench.
fn call_requested(i: usize, items: usize) -> EventEnvelope {
    let list: Vec<_> = (0..items)
        .map(|j| json!({"id": j, "name": format!("item-{j}"), "tags": ["a", "b"], "score": 0.5}))
        .collect();
    let mut payload = json!({"method": "kv.get", "args": {"key": "user:1234", "limit": 10}});
    if items > 0 {
        payload["args"]["items"] = json!(list);
    }
    EventEnvelope::new(
        EventType::CallRequested,
        Some(format!("req-{i:08}")),
        payload,
    )
}

fn framing() {
    let envelopes: Vec<_> = (0..FRAMES_SMALL + FRAMES_LARGE)
        .map(|i| call_requested(i, if i % 21 == 20 { 55 } else { 0 }))
        .collect();
    let mut stream = BytesMut::new();
    let mut decoded = Vec::with_capacity(envelopes.len());
    let mut frames = 0usize;
    alknet_workload_measured(&mut || {
        for env in &envelopes {
            env.encode_into(&mut stream).expect("encode");
        }
        let stream = stream.split().freeze();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        for at in (0..stream.len()).step_by(FRAMING_CHUNK) {
            decoder.push(stream.slice(at..stream.len().min(at + FRAMING_CHUNK)));
            while let Some(frame) = decoder.next_frame() {
                frames += 1;
                if let Frame::Body(mut body) = frame {
                    decoded.push(EventEnvelope::decode(&mut body).expect("decode"));
                }
            }
        }
    });
    assert_eq!(frames, envelopes.len());
    assert_eq!(
        decoded, envelopes,
        "every frame decoded back to what was encoded"
    );
    assert_eq!(
        envelopes
            .iter()
            .filter(|e| e.payload["args"]["items"].is_array())
            .count(),
        FRAMES_LARGE
    );
}

/// The stream/task path end to end, which the other scenarios (quinn-proto driven directly
/// through [`Pair`]) do not reach: a real server (one worker thread, its socket, driver,
/// `ConnInner` and stream wakers, the perf handler's task per stream) and a client endpoint
/// of the same runtime on this thread, over loopback UDP. Both sides are counted, user space
/// only: the kernel's share (syscalls, wake-ups) is not in callgrind's count.
///
/// On monoio's legacy (epoll) driver: valgrind does not see work the kernel does for
/// io_uring, and its counts must not depend on whether this machine allows io_uring. With
/// one request round at a time the packet exchange is the same from run to run; what can
/// vary is when a timer (delayed ACK, loss detection) fires against the slowed-down clock.
fn streams() {
    // Before any thread starts; the worker and this thread both read it.
    std::env::set_var(DRIVER_ENV, "legacy");
    let mut registry = AlpnRegistry::new();
    registry
        .register(Arc::new(alknet_perf::PerfHandler))
        .expect("register perf");
    let tls = identity();
    let fingerprint = tls.fingerprint();
    let config = EngineConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        workers: 1,
        pin_workers: PinWorkers::Always(false),
        server_id: 0,
        // steady: the path MTU search (on loopback up to 64 KiB) ends in the warm-up
        limits: steady_limits(),
        tls,
        client_auth: ClientAuth::Optional,
        kernel_steering: false,
        handshake: alknet_runtime::HandshakePolicy::default(),
        admission: alknet_runtime::AdmissionLimits::default(),
        qlog_dir: None,
        quic_host_key: None,
    };
    let server = alknet_runtime::start(config, registry, Arc::new(NoIdentities)).expect("start");
    let addr = server.local_addr();
    let handle = &server;
    let received = run_local(|_| async move {
        let endpoint = ClientEndpoint::bind("127.0.0.1:0".parse().expect("addr"), &steady_limits())
            .expect("bind client");
        let crypto = client_crypto(
            &ServerTrust::Fingerprint(fingerprint),
            vec![alknet_perf::ALPN.to_vec()],
            None,
        )
        .expect("client crypto");
        let conn = endpoint
            .connect(addr, "localhost", crypto)
            .await
            .expect("connect");
        for _ in 0..STREAM_WARMUP_ROUNDS {
            perf_round(&conn).await;
        }
        let before = (endpoint.stats(), handle.total_stats());
        valgrind::start_instrumentation();
        let mut received = 0;
        for _ in 0..STREAM_ROUNDS {
            received += perf_round(&conn).await;
        }
        valgrind::stop_instrumentation();
        let after = (endpoint.stats(), handle.total_stats());
        conn.close(VarInt::from_u32(0), b"done");
        endpoint.wait_idle().await;
        // What callgrind does not count: the kernel's work, in datagrams and send syscalls
        // per request (a reading, not gated: it moves with timers like the count does).
        let requests = (STREAM_ROUNDS * STREAMS_PER_ROUND) as f64;
        for (side, b, a) in [("client", before.0, after.0), ("server", before.1, after.1)] {
            println!(
                "{side}: {:.2} datagrams received, {:.2} sent in {:.2} send calls per request",
                (a.datagrams_received - b.datagrams_received) as f64 / requests,
                (a.datagrams_sent - b.datagrams_sent) as f64 / requests,
                (a.send_calls - b.send_calls) as f64 / requests,
            );
        }
        received
    })
    .expect("client runtime");
    server.shutdown();
    server.join();
    assert_eq!(
        received,
        STREAM_ROUNDS * STREAMS_PER_ROUND * STREAM_REQUEST_SIZE,
        "every response byte arrived"
    );
}

/// One round: [`STREAMS_PER_ROUND`] requests sent, then every response read to FIN.
/// Returns the response bytes.
async fn perf_round(conn: &Connection) -> usize {
    static UPLOAD: [u8; STREAM_REQUEST_SIZE] = [7; STREAM_REQUEST_SIZE];
    let header = Bytes::copy_from_slice(&(STREAM_REQUEST_SIZE as u64).to_be_bytes());
    let mut readers = Vec::with_capacity(STREAMS_PER_ROUND);
    for _ in 0..STREAMS_PER_ROUND {
        let (mut send, recv) = conn.open_bi().await.expect("open").split();
        send.write_all_chunks(&mut [header.clone(), Bytes::from_static(&UPLOAD)])
            .await
            .expect("request");
        send.finish().expect("finish");
        readers.push(recv);
    }
    let mut received = 0;
    for mut recv in readers {
        while let Some(chunk) = recv.read_chunk(usize::MAX).await.expect("response") {
            assert!(
                chunk.iter().all(|b| *b == 42),
                "quinn-perf's response bytes"
            );
            received += chunk.len();
        }
    }
    received
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["handshake"] => handshake(),
        ["datagrams"] => datagrams(),
        ["routing"] => routing(),
        ["framing"] => framing(),
        ["streams"] => streams(),
        ["initial-dropped"] => initials(InitialFate::Dropped),
        ["initial-refused"] => initials(InitialFate::Refused),
        ["initial-retry"] => initials(InitialFate::Retry),
        ["write-identity", dir] => match TlsIdentity::load_or_generate(Path::new(dir)) {
            Ok((_, true)) => println!("wrote {dir}/cert.pem and {dir}/key.pem"),
            Ok((_, false)) => println!("{dir} already holds an identity; left as is"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        ["list"] => println!("{}", SCENARIOS.join("\n")),
        _ => {
            eprintln!(
                "usage: alknet-workload {{{}|list|write-identity DIR}}",
                SCENARIOS.join("|")
            );
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
