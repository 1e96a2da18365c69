//! Connection lifecycle at the edges: graceful shutdown, the connection limit, abandoned
//! peers, and garbage on the port.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use alknet_runtime::{
    close_code, ConnectError, ConnectionError, Limits, ReadError, ReadToEndError, VarInt,
    STREAM_STALLED_CODE,
};
use alknet_tests::*;

/// Polls `cond` every 20 ms for at most `limit`.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn refused(e: &ConnectError) -> bool {
    matches!(e, ConnectError::Handshake(ConnectionError::ConnectionClosed(c))
        if u64::from(c.error_code) == 0x2 /* CONNECTION_REFUSED */)
}

#[test]
fn graceful_shutdown_drains_an_in_flight_stream_and_refuses_new_connections() {
    let server = start_server(ServerOptions {
        workers: 2,
        limits: Limits {
            shutdown_timeout: Duration::from_secs(30),
            ..Limits::default()
        },
        ..Default::default()
    });
    let trigger = server.shutdown_trigger();
    let addr = server.local_addr();
    let fp = server.fingerprint();
    run_client(|| async {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("connect");
        let data = payload(5, 4 << 20);
        let want = sha256(&data);
        let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
        let (first, rest) = data.split_at(data.len() / 2);
        send.write_all(first).await.expect("first half");

        trigger.graceful();

        // a new connection is refused while draining
        let other = client_endpoint();
        let err = connect_addr(&other, addr, fp, alknet_echo::ALPN)
            .await
            .expect_err("new connections are refused during shutdown");
        assert!(refused(&err), "{err}");

        // the in-flight stream completes
        let rest = rest.to_vec();
        let writer = async move {
            send.write_all(&rest).await.expect("second half");
            send.finish().expect("finish");
        };
        let reader = async move { recv.read_to_end(8 << 20).await.expect("echo") };
        let ((), echoed) = join(writer, reader).await;
        assert_eq!(sha256(&echoed), want);
        conn.close(0u32.into(), b"done");
        drop(conn);
        endpoint.wait_idle().await;
    });
    // the server stops as soon as its last connection is gone, long before the timeout
    let start = Instant::now();
    server.join();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "drain took {:?}",
        start.elapsed()
    );
}

#[test]
fn shutdown_timeout_closes_remaining_connections_with_the_shutdown_code() {
    let server = start_server(ServerOptions {
        limits: Limits {
            shutdown_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        ..Default::default()
    });
    let trigger = server.shutdown_trigger();
    run_client(|| async {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("connect");
        trigger.graceful();
        match conn.closed().await {
            ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code.into_inner(), u64::from(close_code::SHUTDOWN));
                assert_eq!(&c.reason[..], b"server shutting down");
            }
            other => panic!("unexpected close: {other}"),
        }
    });
    server.join();
}

#[test]
fn connection_limit_refuses_the_excess_and_frees_slots() {
    let server = start_server(ServerOptions {
        workers: 2,
        limits: Limits {
            max_connections: 2,
            ..Limits::default()
        },
        ..Default::default()
    });
    run_client(|| async {
        let endpoint = client_endpoint();
        let a = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("first");
        let _b = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("second");
        let err = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect_err("third is over the limit");
        assert!(refused(&err), "{err}");
        a.close(0u32.into(), b"");
        drop(a);
        // the slot frees once the server has drained the closed connection
        let mut ok = false;
        for _ in 0..100 {
            monoio::time::sleep(Duration::from_millis(50)).await;
            if server.open_connections() < 2 {
                ok = connect(&endpoint, &server, alknet_echo::ALPN).await.is_ok();
                break;
            }
        }
        assert!(ok, "a slot never freed up");
    });
    let refusals = server.total_stats().connections_refused;
    assert_eq!(refusals, 1);
}

#[test]
fn abandoned_peer_is_reaped_by_the_idle_timeout() {
    let server = start_server(ServerOptions {
        limits: Limits {
            idle_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
        ..Default::default()
    });
    // The client's runtime ends without ever sending CONNECTION_CLOSE: its driver task is
    // dropped with the runtime, like a process that was killed.
    run_client(|| async {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("connect");
        let data = payload(3, 10_000);
        assert_eq!(echo_roundtrip(&conn, data.clone()).await, sha256(&data));
        std::mem::forget(endpoint);
        std::mem::forget(conn);
    });
    assert_eq!(server.open_connections(), 1);
    assert!(
        wait_until(Duration::from_secs(10), || server.open_connections() == 0),
        "abandoned connection still open"
    );
}

#[test]
fn garbage_datagrams_are_dropped_and_service_continues() {
    let server = start_server(ServerOptions {
        workers: 2,
        ..Default::default()
    });
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let target = server.local_addr();
    let layout = alknet_proto::CidLayout::new(0, 2).expect("layout");
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x40],
        vec![0xc0, 0, 0, 0],
        // long header, unknown version: version negotiation
        [
            &[0xc0u8, 0xde, 0xad, 0xbe, 0xef, 8][..],
            &[1; 8],
            &[0; 1200],
        ]
        .concat(),
        // short header with our CID format naming each worker: forwarded, then dropped
        [&[0x40u8][..], &layout.encode(1, [1; 5]), &[0xaa; 60]].concat(),
        [&[0x40u8][..], &layout.encode(0, [2; 5]), &[0xaa; 60]].concat(),
        // Initial-looking packet with an absurd DCID length
        [&[0xc0u8, 0, 0, 0, 1, 255][..], &[0; 40]].concat(),
    ];
    for seed in 0..50 {
        junk.push(payload(seed, (seed as usize * 37) % 1400 + 1));
    }
    for d in &junk {
        sock.send_to(d, target).expect("send junk");
    }
    run_client(|| async {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("connect");
        let data = payload(4, 50_000);
        assert_eq!(echo_roundtrip(&conn, data.clone()).await, sha256(&data));
    });
    let stats: alknet_runtime::WorkerStatsSnapshot = server.total_stats();
    assert!(stats.datagrams_received >= junk.len() as u64);
    assert_eq!(stats.connections_accepted, 1);
}

/// Records where it ran, and leaves a task on each worker that answers over a channel.
struct RecordingHook {
    ran: std::sync::Mutex<Vec<(alknet_runtime::WorkerStart, String)>>,
    answers: std::sync::mpsc::Sender<String>,
}

impl alknet_runtime::WorkerHook for RecordingHook {
    fn on_worker_start(&self, start: alknet_runtime::WorkerStart) -> std::io::Result<()> {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        self.ran.lock().expect("lock").push((start, thread));
        let answers = self.answers.clone();
        // a task spawned here runs on this worker, after the hook returns
        alknet_runtime::rt::spawn_guarded("test hook", async move {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            let _ = answers.send(thread);
        });
        Ok(())
    }
}

#[test]
fn worker_hooks_run_once_on_each_worker_before_it_listens() {
    let (tx, rx) = std::sync::mpsc::channel();
    let hook = std::sync::Arc::new(RecordingHook {
        ran: Default::default(),
        answers: tx,
    });
    let server = start_server(ServerOptions {
        workers: 2,
        hooks: vec![hook.clone()],
        ..ServerOptions::default()
    });
    // start_server returns once every worker listens, so every hook has run
    let mut ran = hook.ran.lock().expect("lock").clone();
    ran.sort_by_key(|(s, _)| s.index);
    let want: Vec<_> = (0..2)
        .map(|index| {
            let start = alknet_runtime::WorkerStart { index, workers: 2 };
            (start, format!("alknet-w{index}"))
        })
        .collect();
    assert_eq!(ran, want);
    let mut tasks: Vec<String> = (0..2)
        .map(|_| rx.recv_timeout(Duration::from_secs(20)).expect("task ran"))
        .collect();
    tasks.sort();
    assert_eq!(tasks, ["alknet-w0", "alknet-w1"]);
    drop(server);
}

#[test]
fn a_peer_that_never_reads_has_its_stream_reset_after_the_send_stall_timeout() {
    let stall = Duration::from_secs(1);
    let server = start_server(ServerOptions {
        limits: Limits {
            send_stall_timeout: stall,
            ..Limits::default()
        },
        ..Default::default()
    });
    run_client(|| async {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("connect");
        let data = payload(9, 3 << 19);

        // a slow reader (64 KiB every 20 ms) is served to the end: every credit it gives
        // restarts the echo's clock
        let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
        let writer = async {
            send.write_all(&data).await.expect("upload");
            send.finish().expect("finish");
        };
        let reader = async {
            let mut got = Vec::new();
            loop {
                monoio::time::sleep(Duration::from_millis(20)).await;
                match recv.read_available(64 * 1024).await.expect("read") {
                    Some(chunk) => got.extend_from_slice(&chunk),
                    None => return got,
                }
            }
        };
        let ((), echoed) = join(writer, reader).await;
        assert_eq!(sha256(&echoed), sha256(&data));

        // a peer that acknowledges everything and reads nothing: the echo fills this
        // client's stream window (1.25 MB), waits the whole timeout, and resets the stream
        let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
        send.write_all(&data)
            .await
            .expect("upload (the server buffers it)");
        send.finish().expect("finish");
        monoio::time::sleep(stall + Duration::from_millis(500)).await;
        let end = recv.read_to_end(8 << 20).await;
        assert_eq!(
            end,
            Err(ReadToEndError::Read(ReadError::Reset(VarInt::from_u32(
                STREAM_STALLED_CODE
            )))),
        );
        let stalled: u64 = server.stats().iter().map(|w| w.streams_stalled).sum();
        assert_eq!(stalled, 1, "counted once, the slow reader not at all");

        // only that stream: the connection goes on
        let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
        send.write_all(b"still here").await.expect("write");
        send.finish().expect("finish");
        assert_eq!(recv.read_to_end(64).await.expect("echo"), b"still here");
        conn.close(0u32.into(), b"done");
        drop(conn);
        endpoint.wait_idle().await;
    });
    server.shutdown();
}
