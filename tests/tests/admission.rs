//! `[admission]`: per-source caps and rates refuse a source before any TLS work and leave
//! other sources alone; per-ALPN caps close connections over the cap; a reload changes the
//! limits for the next connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use alknet_runtime::{
    close_code, AdmissionLimits, ClientEndpoint, ConnectError, ConnectionError, Limits,
    ServerHandle,
};
use alknet_tests::*;

/// A client endpoint on another loopback address (all of 127/8 reaches `lo`).
fn endpoint_on(ip: &str) -> ClientEndpoint {
    let addr: SocketAddr = format!("{ip}:0").parse().expect("addr");
    ClientEndpoint::bind(addr, &Limits::default()).expect("bind client")
}

fn refused(r: &Result<alknet_runtime::Connection, ConnectError>) -> bool {
    match r {
        Err(ConnectError::Handshake(ConnectionError::ConnectionClosed(c))) => {
            c.error_code == quinn_proto::TransportErrorCode::CONNECTION_REFUSED
        }
        _ => false,
    }
}

/// Waits (bounded) until the server has forgotten closed connections.
async fn wait_open(server: &ServerHandle, n: usize) {
    for _ in 0..200 {
        if server.open_connections() == n {
            return;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("open connections stayed at {}", server.open_connections());
}

#[test]
fn per_address_and_per_prefix_caps_refuse_only_that_source() {
    let server = start_server(ServerOptions {
        admission: AdmissionLimits {
            max_connections_per_address: 2,
            max_connections_per_prefix: 3,
            ..AdmissionLimits::default()
        },
        ..Default::default()
    });
    run_client(|| async {
        let a = endpoint_on("127.0.0.1");
        let first = connect(&a, &server, alknet_echo::ALPN).await.expect("1st");
        let _second = connect(&a, &server, alknet_echo::ALPN).await.expect("2nd");
        let third = connect(&a, &server, alknet_echo::ALPN).await;
        assert!(refused(&third), "address cap: {third:?}");
        // another address of the same /24: one more place in the prefix, then full
        let b = endpoint_on("127.0.0.2");
        let _b1 = connect(&b, &server, alknet_echo::ALPN).await.expect("b1");
        let b2 = connect(&b, &server, alknet_echo::ALPN).await;
        assert!(refused(&b2), "prefix cap: {b2:?}");
        // another /24 is not affected
        let c = endpoint_on("127.0.1.1");
        let c1 = connect(&c, &server, alknet_echo::ALPN)
            .await
            .expect("other prefix");
        let data = payload(1, 1000);
        assert_eq!(echo_roundtrip(&c1, data.clone()).await, sha256(&data));
        // a closed connection gives its place back
        first.close(0u32.into(), b"done");
        wait_open(&server, 3).await;
        let again = connect(&a, &server, alknet_echo::ALPN)
            .await
            .expect("place given back");
        assert_eq!(echo_roundtrip(&again, data.clone()).await, sha256(&data));
    });
    let stats = server.total_stats();
    assert_eq!(stats.refused_source, 2);
    assert_eq!(stats.refused_rate, 0);
}

#[test]
fn a_source_over_its_rate_gets_no_answer_and_others_go_on() {
    let server = start_server(ServerOptions {
        admission: AdmissionLimits {
            new_connections_per_second: 1,
            new_connection_burst: 2,
            ..AdmissionLimits::default()
        },
        ..Default::default()
    });
    run_client(|| async {
        let flooder = endpoint_on("127.0.2.1");
        let _f1 = connect(&flooder, &server, alknet_echo::ALPN)
            .await
            .expect("burst 1");
        let _f2 = connect(&flooder, &server, alknet_echo::ALPN)
            .await
            .expect("burst 2");
        // the bucket is empty: the Initial is dropped, nothing comes back
        let third = monoio::time::timeout(
            Duration::from_millis(700),
            connect(&flooder, &server, alknet_echo::ALPN),
        )
        .await;
        assert!(third.is_err(), "an over-rate source must get no answer");
        // a legitimate client on another prefix is served at once
        let legit = endpoint_on("127.0.0.1");
        let conn = connect(&legit, &server, alknet_echo::ALPN)
            .await
            .expect("legitimate client");
        let data = payload(2, 5000);
        assert_eq!(echo_roundtrip(&conn, data.clone()).await, sha256(&data));
    });
    let stats = server.total_stats();
    assert!(stats.refused_rate >= 1, "{stats:?}");
    // the dropped Initials cost no handshake: only the three that passed were accepted
    assert_eq!(stats.connections_accepted, 3, "{stats:?}");
}

#[test]
fn per_alpn_cap_closes_the_newcomer_and_a_reload_changes_it() {
    let server = start_server(ServerOptions {
        admission: AdmissionLimits {
            max_connections_per_alpn: BTreeMap::from([(
                String::from_utf8_lossy(alknet_echo::ALPN).into_owned(),
                1,
            )]),
            ..AdmissionLimits::default()
        },
        ..Default::default()
    });
    let reload = server.reload_handle();
    run_client(|| async {
        let endpoint = client_endpoint();
        let first = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("first");
        let data = payload(3, 100);
        assert_eq!(echo_roundtrip(&first, data.clone()).await, sha256(&data));
        // the handshake completes, then the service's cap closes it with ALPN_LIMIT
        let second = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("handshake");
        match second.closed().await {
            ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code, close_code::ALPN_LIMIT.into());
            }
            other => panic!("expected ALPN_LIMIT, got {other:?}"),
        }
        // a reload lifts the cap for the next connection; the first one is untouched
        reload
            .set_admission(AdmissionLimits::default())
            .expect("reload");
        let third = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("third");
        assert_eq!(echo_roundtrip(&third, data.clone()).await, sha256(&data));
        assert_eq!(echo_roundtrip(&first, data.clone()).await, sha256(&data));
        // and a reload that lowers the address cap refuses newcomers, closing no one
        reload
            .set_admission(AdmissionLimits {
                max_connections_per_address: 1,
                ..AdmissionLimits::default()
            })
            .expect("reload");
        let fourth = connect(&endpoint, &server, alknet_echo::ALPN).await;
        assert!(refused(&fourth), "{fourth:?}");
        assert_eq!(echo_roundtrip(&third, data.clone()).await, sha256(&data));
        // an invalid reload is refused and changes nothing
        assert!(reload
            .set_admission(AdmissionLimits {
                ipv4_prefix_len: 0,
                ..AdmissionLimits::default()
            })
            .is_err());
        let fifth = connect(&endpoint, &server, alknet_echo::ALPN).await;
        assert!(refused(&fifth), "the previous limits still hold: {fifth:?}");
    });
    assert_eq!(server.total_stats().refused_alpn, 1);
}

/// A client's first datagram (a real Initial with its ClientHello) for `server`; whoever
/// sends it never goes on with the handshake.
fn lone_initial(server: &ServerHandle) -> Vec<u8> {
    let crypto = alknet_runtime::tls::client_crypto(
        &alknet_runtime::tls::ServerTrust::Fingerprint(server.fingerprint()),
        vec![alknet_echo::ALPN.to_vec()],
        None,
    )
    .expect("crypto");
    let mut endpoint = quinn_proto::Endpoint::new(
        std::sync::Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        true,
        None,
    );
    let now = std::time::Instant::now();
    let (_, mut conn) = endpoint
        .connect(
            now,
            quinn_proto::ClientConfig::new(crypto),
            server.local_addr(),
            "localhost",
        )
        .expect("connect");
    let mut buf = Vec::new();
    let t = conn.poll_transmit(now, 1, &mut buf).expect("an Initial");
    buf.truncate(t.size);
    buf
}

/// A one-worker server whose handshakes time out after `timeout`.
fn server_with_handshake_timeout(timeout: Duration) -> ServerHandle {
    start_server(ServerOptions {
        admission: AdmissionLimits {
            handshake_timeout: timeout,
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Handshakes the server closed at their timeout, over all workers.
fn timed_out(s: &ServerHandle) -> u64 {
    s.total_stats().handshakes_timed_out
}

#[test]
fn a_handshake_that_never_completes_is_closed_at_its_timeout_and_others_stay() {
    let server = server_with_handshake_timeout(Duration::from_millis(300));
    run_client(|| async {
        // a client that completes its handshake, then idles past the timeout
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("connect");
        // one that sends its Initial and vanishes
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        silent
            .send_to(&lone_initial(&server), server.local_addr())
            .expect("send");
        wait_open(&server, 2).await;
        // bounded wait for the timeout to fire (it is 300 ms; idle_timeout is 30 s)
        for _ in 0..500 {
            if timed_out(&server) == 1 && server.open_connections() == 1 {
                break;
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(timed_out(&server), 1, "the half-open handshake was closed");
        wait_open(&server, 1).await;
        let data = payload(3, 2000);
        assert_eq!(
            echo_roundtrip(&conn, data.clone()).await,
            sha256(&data),
            "the completed connection outlives the handshake timeout"
        );
        assert_eq!(timed_out(&server), 1);
    });
}

/// The handshake deadlines name connections by handle and serial number, not by `Weak`
/// (which kept every accepted connection's ~7 KB for the whole timeout): a deadline left
/// behind by a connection that completed and went away must not close a later half-open
/// handshake that quinn-proto gave the freed handle (its slab hands out the last freed
/// key, and this server has one worker), only that handshake's own deadline may.
#[test]
fn an_old_handshake_deadline_does_not_close_a_later_connection_on_its_handle() {
    let timeout = Duration::from_millis(2000);
    let server = server_with_handshake_timeout(timeout);
    run_client(|| async {
        let started = std::time::Instant::now();
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("connect");
        conn.close(0u32.into(), b"done");
        drop(conn);
        // drained and forgotten: its handle is free, its deadline still queued
        wait_open(&server, 0).await;
        monoio::time::sleep(
            (started + timeout / 2).saturating_duration_since(std::time::Instant::now()),
        )
        .await;
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        silent
            .send_to(&lone_initial(&server), server.local_addr())
            .expect("send");
        let second_sent = std::time::Instant::now();
        wait_open(&server, 1).await;
        // past the first connection's deadline, 0.6 s before the second's
        let check = started + timeout + Duration::from_millis(400);
        assert!(
            check + Duration::from_millis(200) < second_sent + timeout,
            "the test's own timing"
        );
        monoio::time::sleep(check.saturating_duration_since(std::time::Instant::now())).await;
        assert_eq!(
            timed_out(&server),
            0,
            "the first connection's deadline closed the half-open handshake after it"
        );
        assert_eq!(server.open_connections(), 1);
        // its own deadline closes it (bounded wait)
        for _ in 0..500 {
            if timed_out(&server) == 1 {
                break;
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            timed_out(&server),
            1,
            "the half-open handshake timed out at its own deadline"
        );
    });
}

/// Resident memory of this process.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// Handshakes that complete and close leave nothing behind on the server: its memory stays
/// flat over hundreds of short connections. The handshake deadlines once held every
/// accepted connection (~7 KB each) for `handshake_timeout_ms` (10 s by default), so 800
/// of them grew it by ~5.5 MB.
#[test]
fn completed_handshakes_leave_no_memory_behind() {
    // in a process of its own: what it measures is the process's resident memory, which
    // the other tests `cargo test` runs in threads beside it would move
    const CHILD: &str = "ALKNET_TEST_MEMORY_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "completed_handshakes_leave_no_memory_behind",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .status()
            .expect("run the test in its own process");
        assert!(status.success(), "the measuring process failed: {status}");
        return;
    }
    let server = start_server(ServerOptions::default());
    run_client(|| async {
        let endpoint = client_endpoint();
        let handshakes = |n: usize| {
            let (endpoint, server) = (&endpoint, &server);
            async move {
                for _ in 0..n {
                    let conn = connect(endpoint, server, alknet_echo::ALPN)
                        .await
                        .expect("connect");
                    conn.close(0u32.into(), b"done");
                }
                wait_open(server, 0).await;
            }
        };
        // warm up the allocator's free lists and the session cache
        handshakes(150).await;
        let before = rss_bytes();
        handshakes(800).await;
        let grown = rss_bytes().saturating_sub(before);
        assert!(
            grown < 2 << 20,
            "800 closed connections grew the process by {grown} bytes"
        );
    });
}
