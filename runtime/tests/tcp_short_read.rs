//! The vendored monoio's `TcpStreamPoll::poll_read` forgets read readiness after a read
//! shorter than its buffer (PATCHES.md). These tests hold the two ways that could lose
//! data or hang, on both drivers: bytes that arrive after the short read must wake the
//! reader, and a FIN that arrived with the drained bytes must still read as end of stream.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Upper bound for every read in these tests: a lost wake-up fails the test instead of
/// hanging CI.
const READ_DEADLINE: Duration = Duration::from_secs(10);

/// The peer writes `pieces` with a pause between them, then closes its side.
fn peer(addr: std::net::SocketAddr, pieces: &'static [&'static [u8]], pause: Duration) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    for p in pieces {
        s.write_all(p).expect("write");
        std::thread::sleep(pause);
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    // Hold the socket open until the reader has seen the end of stream.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
}

/// Accepts one connection, optionally waits before the first read (so data and FIN are
/// both queued), and reads it to the end with a 64-byte buffer.
async fn read_all(
    pieces: &'static [&'static [u8]],
    pause: Duration,
    first_wait: Duration,
) -> Vec<u8> {
    let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let writer = std::thread::spawn(move || peer(addr, pieces, pause));
    let (stream, _) = listener.accept().await.expect("accept");
    let mut stream = stream
        .try_into_poll_io()
        .map_err(|(e, _)| e)
        .expect("poll io");
    monoio::time::sleep(first_wait).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let n = monoio::time::timeout(READ_DEADLINE, stream.read(&mut buf))
            .await
            .expect("read timed out: a wake-up was lost")
            .expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    writer.join().expect("peer thread");
    got
}

const PIECES: &[&[u8]] = &[b"abc", b"defgh", b"ij"];

fn run_on_both<F: Fn() -> Fut, Fut: std::future::Future<Output = Vec<u8>>>(f: F, want: &[u8]) {
    let mut uring = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build();
    // io_uring may be refused (seccomp, old kernel); the legacy driver is the fallback the
    // engine runs on then, so it is tested either way.
    if let Ok(rt) = uring.as_mut() {
        assert_eq!(rt.block_on(f()), want, "io_uring driver");
    }
    let mut legacy = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("legacy runtime");
    assert_eq!(legacy.block_on(f()), want, "legacy driver");
}

#[test]
fn bytes_after_a_short_read_wake_the_reader() {
    run_on_both(
        || read_all(PIECES, Duration::from_millis(30), Duration::ZERO),
        b"abcdefghij",
    );
}

#[test]
fn fin_queued_with_the_drained_bytes_still_ends_the_stream() {
    run_on_both(
        || read_all(&[b"xyz"], Duration::ZERO, Duration::from_millis(100)),
        b"xyz",
    );
}
