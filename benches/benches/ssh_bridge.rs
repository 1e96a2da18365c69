//! The cost of the monoio ⇄ tokio bridge that carries SSH bytes (`alknet_ssh::bridge`):
//! what a chunk costs to cross from a monoio thread to a tokio task and back, with no
//! network and no SSH, so the bridge's own share of an SSH session's cost is visible.
//!
//! - `bridge/throughput`: 64 KiB chunks (the pump's read size) pushed from a monoio
//!   thread and read by a tokio task through `AsyncRead`: the bridge's ceiling, to set
//!   beside what QUIC delivers on one stream (~1 GB/s here).
//! - `bridge/ping_pong`: one 64-byte chunk to the tokio side and back (an echo task):
//!   two cross-thread wake-ups, the latency the bridge adds to each SSH round trip.

use std::time::{Duration, Instant};

use alknet_ssh::bridge::{ByteStream, StreamEnd, BRIDGE_CHANNEL_DEPTH};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHUNK: usize = 64 * 1024;
const PING: usize = 64;

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn monoio_rt() -> monoio::Runtime<monoio::LegacyDriver> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .build()
        .expect("monoio runtime")
}

fn throughput(c: &mut Criterion) {
    let tokio = tokio_rt();
    let mut monoio = monoio_rt();
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let mut g = c.benchmark_group("bridge");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    g.bench_function("throughput_64k_chunks", |b| {
        b.iter_custom(|iters| {
            let (mut stream, end) = ByteStream::pair(BRIDGE_CHANNEL_DEPTH);
            let StreamEnd { to_stream, .. } = end;
            let reader = tokio.spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                let mut total = 0u64;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return total,
                        Ok(n) => total += n as u64,
                    }
                }
            });
            let started = Instant::now();
            monoio.block_on(async {
                for _ in 0..iters {
                    if to_stream.send(Ok(chunk.clone())).await.is_err() {
                        break;
                    }
                }
                drop(to_stream);
            });
            let total = tokio.block_on(reader).expect("reader");
            let elapsed = started.elapsed();
            assert_eq!(total, iters * CHUNK as u64);
            elapsed
        })
    });
    g.finish();
}

fn ping_pong(c: &mut Criterion) {
    let tokio = tokio_rt();
    let mut monoio = monoio_rt();
    let ping = Bytes::from(vec![1u8; PING]);
    let mut g = c.benchmark_group("bridge");
    g.bench_function("ping_pong_64b", |b| {
        b.iter_custom(|iters| {
            let (mut stream, end) = ByteStream::pair(BRIDGE_CHANNEL_DEPTH);
            let StreamEnd {
                to_stream,
                from_stream,
            } = end;
            let echo = tokio.spawn(async move {
                let mut buf = vec![0u8; PING];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            let elapsed = monoio.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    to_stream.send(Ok(ping.clone())).await.expect("send");
                    let mut got = 0;
                    while got < PING {
                        match from_stream.recv().await {
                            Ok(Ok(b)) => got += b.len(),
                            _ => panic!("echo ended"),
                        }
                    }
                }
                started.elapsed()
            });
            drop(to_stream);
            let _ = tokio.block_on(echo);
            elapsed
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = throughput, ping_pong
}
criterion_main!(benches);
