//! Per-datagram and per-connection hot paths that need no network: routing a datagram by
//! its destination CID, building and parsing our CIDs, finding a connection's handler by
//! ALPN, and minting CIDs for quinn-proto.

use std::hint::black_box;

use alknet_benches::alpn::{registry, ALPNS};
use alknet_proto::cid::{CidLayout, Route, CID_LEN};
use alknet_runtime::WorkerCidGenerator;
use criterion::{criterion_group, criterion_main, Criterion};
use quinn_proto::ConnectionIdGenerator;

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

criterion_group!(
    benches,
    bench_route,
    bench_encode_decode,
    bench_alpn_lookup,
    bench_generate_cid
);
criterion_main!(benches);
