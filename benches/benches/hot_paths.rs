//! Per-datagram and per-connection hot paths that need no network: routing a datagram by
//! its destination CID, building and parsing our CIDs, finding a connection's handler by
//! ALPN, minting CIDs for quinn-proto, and encoding/decoding `alknet/call` frames.

use std::hint::black_box;

use alknet_benches::alpn::{registry, ALPNS};
use alknet_proto::call::{EventEnvelope, EventType, Frame, FrameDecoder, DEFAULT_MAX_FRAME_SIZE};
use alknet_proto::cid::{CidLayout, Route, CID_LEN};
use alknet_runtime::WorkerCidGenerator;
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quinn_proto::ConnectionIdGenerator;
use serde_json::json;

/// Workers in the benchmarked layout; 4 leaves room for a CID naming worker 1 to be valid.
const WORKERS: usize = 4;
const SERVER_ID: u16 = 0x1234;

fn layout() -> CidLayout {
    CidLayout::new(SERVER_ID, WORKERS).expect("valid layout")
}

/// A 1-RTT packet as a peer sends it: flags, our 8-byte CID, then ciphertext.
fn short_header_datagram(cid: &[u8; CID_LEN]) -> Vec<u8> {
    let mut d = vec![0x40];
    d.extend_from_slice(cid);
    d.extend_from_slice(&[0xaa; 1200]);
    d
}

/// A client's first Initial: long header, version 1, a client-chosen 16-byte DCID, and the
/// usual padding to 1200 bytes.
fn foreign_initial_datagram() -> Vec<u8> {
    let dcid = [0xee; 16];
    let mut d = vec![0xc0, 0, 0, 0, 1, dcid.len() as u8];
    d.extend_from_slice(&dcid);
    d.resize(1200, 0);
    d
}

fn bench_route(c: &mut Criterion) {
    let l = layout();
    let short = short_header_datagram(&l.encode(1, [7; 5]));
    let initial = foreign_initial_datagram();
    // Guard against benchmarking a path other than the one named.
    assert_eq!(l.route(&short), Route::Worker(1));
    assert_eq!(l.route(&initial), Route::Local);

    let mut g = c.benchmark_group("cid_route");
    g.bench_function("short_header_worker1", |b| {
        b.iter(|| black_box(&l).route(black_box(&short)))
    });
    g.bench_function("long_initial_foreign16", |b| {
        b.iter(|| black_box(&l).route(black_box(&initial)))
    });
    g.finish();
}

fn bench_encode_decode(c: &mut Criterion) {
    let l = layout();
    c.bench_function("cid_encode_decode", |b| {
        b.iter(|| {
            let l = black_box(&l);
            let cid = l.encode(black_box(2), black_box([1, 2, 3, 4, 5]));
            l.decode(black_box(&cid))
        })
    });
}

fn bench_alpn_lookup(c: &mut Criterion) {
    let r = registry();
    let last = ALPNS[ALPNS.len() - 1];
    let miss: &[u8] = b"alknet/nope";
    assert!(r.lookup(last).is_some());
    assert!(r.lookup(miss).is_none());

    let mut g = c.benchmark_group("alpn_lookup_7");
    g.bench_function("last_registered", |b| {
        b.iter(|| r.lookup(black_box(last)).is_some())
    });
    g.bench_function("miss", |b| b.iter(|| r.lookup(black_box(miss)).is_some()));
    g.finish();
}

fn bench_generate_cid(c: &mut Criterion) {
    let mut generator = WorkerCidGenerator::new(layout(), 1);
    c.bench_function("worker_cid_generate", |b| {
        b.iter(|| generator.generate_cid())
    });
}

/// A `call.requested` as a client sends it: a UUID-sized id and a payload of about
/// `payload_len` bytes of structured arguments (small objects, as RPC arguments are, not one
/// long string, which would measure string escaping alone).
fn call_requested(payload_len: usize) -> EventEnvelope {
    let mut items = Vec::new();
    let mut payload = json!({"method": "kv.get", "args": {"key": "user:1234", "limit": 10}});
    while serde_json::to_vec(&payload).expect("json").len() + 80 <= payload_len {
        let i = items.len();
        items.push(json!({"id": i, "name": format!("item-{i}"), "tags": ["a", "b"], "score": 0.5}));
        payload["args"]["items"] = json!(items);
    }
    EventEnvelope::new(
        EventType::CallRequested,
        Some("0191f2a8-7c3e-7b6a-9a41-3f2d1c0b9e87".to_owned()),
        payload,
    )
}

fn bench_framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("framing");
    for (name, payload_len) in [("64B", 64), ("4KiB", 4096)] {
        let env = call_requested(payload_len);
        let frame = env.encode().expect("encode");
        // Guard: the sizes are what the names say, and the frame decodes back.
        let body_len = frame.len() - 4;
        let payload_len_now = serde_json::to_vec(&env.payload).expect("json").len();
        assert!(
            payload_len_now.abs_diff(payload_len) < 100,
            "{payload_len_now}"
        );
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        d.push(frame.clone());
        let Some(Frame::Body(mut body)) = d.next_frame() else {
            panic!("no body")
        };
        assert_eq!(EventEnvelope::decode(&mut body).expect("decode"), env);

        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(format!("encode_{name}"), |b| {
            let mut out = BytesMut::with_capacity(frame.len());
            b.iter(|| {
                out.clear();
                black_box(&env).encode_into(&mut out).expect("encode");
            })
        });
        // A whole frame as received: push it, pop the body, parse it in place.
        g.bench_function(format!("decode_{name}"), |b| {
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
            b.iter(|| {
                d.push(black_box(frame.clone()));
                match d.next_frame() {
                    Some(Frame::Body(mut body)) => {
                        EventEnvelope::decode(&mut body).expect("decode")
                    }
                    _ => unreachable!("one whole frame was pushed"),
                }
            })
        });
        // The frame splitting alone (push, pop; the body copy included).
        g.bench_function(format!("split_{name}"), |b| {
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
            b.iter(|| {
                d.push(black_box(frame.clone()));
                d.next_frame()
            })
        });
        eprintln!("framing {name}: frame body {body_len} bytes, payload {payload_len_now} bytes");
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_route,
    bench_encode_decode,
    bench_alpn_lookup,
    bench_generate_cid,
    bench_framing
);
criterion_main!(benches);
