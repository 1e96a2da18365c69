//! Per-datagram cost of the server side of the packet path, with no sockets.
//!
//! A server worker endpoint (configured as the runtime configures one) and a client complete
//! a handshake in memory (`alknet_benches::pair`). The client then produces a batch of 1-RTT
//! datagrams carrying stream data, and the timed part feeds them to the server exactly as the
//! runtime's driver does: `CidLayout::route`, `Endpoint::handle`, `Connection::handle_event`,
//! endpoint events, application events (streams accepted and read, so flow control advances),
//! `poll_transmit` (the ACKs and window updates) into a reused buffer, `poll_timeout`.
//!
//! A datagram can be processed only once (its packet number), so every iteration gets a new
//! pair and batch from an untimed setup (`iter_batched`, one input per iteration). Throughput
//! is in datagrams: criterion's `elem/s` is datagrams per second for one worker.

use std::hint::black_box;

use alknet_benches::pair::{Load, Pair, PairConfig};
use alknet_runtime::tls::TlsIdentity;
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// Datagrams per batch.
const N: usize = 1000;

fn variants() -> [(&'static str, Load); 3] {
    [
        // a small request on its way, sent as soon as written
        ("write_64", Load::Writes(64)),
        // medium writes: a datagram about half full
        ("write_512", Load::Writes(512)),
        // a bulk upload: every datagram full (1200+ bytes; 1452 after MTU discovery)
        ("full_packets", Load::FullPackets),
    ]
}

fn setup(config: &PairConfig, load: Load) -> (Pair, Vec<BytesMut>) {
    let mut pair = Pair::connected(config);
    let batch = pair.client_batch(N, load);
    (pair, batch)
}

fn feed(mut pair: Pair, batch: Vec<BytesMut>) -> Pair {
    for d in batch {
        pair.server.receive(d);
    }
    // returned so the pair is dropped outside the timed section
    pair
}

/// Runs one batch untimed and checks it took the path the bench claims to measure.
fn check(config: &PairConfig, name: &str, load: Load) {
    let (pair, batch) = setup(config, load);
    let sizes: Vec<usize> = batch.iter().map(BytesMut::len).collect();
    let before = (pair.server.datagrams_to_conn, pair.server.bytes_read);
    let pair = feed(pair, batch);
    let s = &pair.server;
    assert_eq!(s.foreign, 0, "{name}: every datagram names this worker");
    assert_eq!(
        s.datagrams_to_conn - before.0,
        N as u64,
        "{name}: every datagram reached the connection"
    );
    let read = s.bytes_read - before.1;
    assert!(read > 0, "{name}: the application read stream data");
    let (min, max) = (sizes.iter().min(), sizes.iter().max());
    eprintln!(
        "{name}: {N} datagrams of {min:?}..={max:?} bytes, {read} stream bytes read, \
         {} server transmits",
        s.transmits
    );
}

fn bench_datagram_path(c: &mut Criterion) {
    let identity = TlsIdentity::generate_self_signed(&[]).expect("self-signed certificate");
    let config = PairConfig::steady(&identity);

    let mut g = c.benchmark_group("server_datagram_path");
    g.throughput(Throughput::Elements(N as u64));
    // Setup (a handshake and a batch) costs more than the timed part; fewer samples keep the
    // wall-clock time of a run reasonable.
    g.sample_size(30);
    for (name, load) in variants() {
        check(&config, name, load);
        g.bench_function(name, |b| {
            b.iter_batched(
                || setup(&config, load),
                |(pair, batch)| black_box(feed(pair, batch)),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench_datagram_path);
criterion_main!(benches);
