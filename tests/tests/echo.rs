//! `alknet/echo` end to end over loopback: exact bytes on many concurrent streams, uni
//! streams, datagrams, and ALPN refusal.

use alknet_tests::*;
use bytes::Bytes;

/// Sizes chosen to cross every boundary that matters: empty, one byte, one packet,
/// one GSO batch, the stream window (1.25 MB), and several MiB.
const SIZES: [usize; 8] = [
    0,
    1,
    1199,
    65_536,
    1_250_001,
    3 * 1024 * 1024 + 7,
    777,
    200_000,
];

fn many_streams(workers: usize) {
    let server = start_server(ServerOptions {
        workers,
        ..Default::default()
    });
    run_client(|| async {
        let endpoint = client_endpoint();
        let mut conns = Vec::new();
        for _ in 0..2 {
            conns.push(
                connect(&endpoint, &server, alknet_echo::ALPN)
                    .await
                    .expect("connect"),
            );
        }
        // 2 connections x 16 concurrent streams
        let mut tasks = Vec::new();
        for (c, conn) in conns.iter().enumerate() {
            for s in 0..16usize {
                let conn = conn.clone();
                let seed = (c * 100 + s) as u64;
                let len = SIZES[s % SIZES.len()];
                tasks.push(monoio::spawn(async move {
                    let data = payload(seed, len);
                    let want = sha256(&data);
                    (seed, len, want, echo_roundtrip(&conn, data).await)
                }));
            }
        }
        for t in tasks {
            let (seed, len, want, got) = t.await;
            assert_eq!(
                got, want,
                "stream {seed} ({len} bytes) echoed different bytes"
            );
        }
        for c in &conns {
            assert!(
                c.close_reason().is_none(),
                "connection closed: {:?}",
                c.close_reason()
            );
        }
    });
    let stats: alknet_runtime::WorkerStatsSnapshot = server.total_stats();
    assert_eq!(stats.connections_accepted, 2);
    assert_eq!(stats.handler_panics + stats.handler_errors, 0);
}

#[test]
fn many_concurrent_streams_echo_exact_bytes_one_worker() {
    many_streams(1);
}

#[test]
fn many_concurrent_streams_echo_exact_bytes_two_workers() {
    many_streams(2);
}

#[test]
fn uni_streams_and_datagrams_echo() {
    let server = start_server(ServerOptions::default());
    run_client(|| async {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("connect");

        let data = payload(9, 300_000);
        let mut send = conn.open_uni().await.expect("open uni");
        send.write_all(&data).await.expect("write uni");
        send.finish().expect("finish");
        let mut recv = conn.accept_uni().await.expect("echo uni stream");
        let back = recv.read_to_end(1 << 20).await.expect("read uni echo");
        assert_eq!(sha256(&back), sha256(&data));

        let max = conn.max_datagram_size().expect("datagrams negotiated");
        assert!(max >= 1000, "max datagram size {max}");
        for i in 0..3u8 {
            let d = Bytes::from(vec![i; 1000]);
            conn.send_datagram(d.clone()).expect("send datagram");
            let echoed = conn.read_datagram().await.expect("datagram echo");
            assert_eq!(echoed, d);
        }
        // read again with nothing awaited before the send: on loopback the path MTU (and
        // with it the largest datagram) may have grown meanwhile
        let max = conn.max_datagram_size().expect("datagrams negotiated");
        let too_big = Bytes::from(vec![0; max + 1]);
        assert!(matches!(
            conn.send_datagram(too_big),
            Err(alknet_runtime::DatagramError::TooLarge)
        ));
    });
}

#[test]
fn unknown_alpn_fails_the_handshake() {
    let server = start_server(ServerOptions::default());
    run_client(|| async {
        let endpoint = client_endpoint();
        let err = connect(&endpoint, &server, b"alknet/no-such-service")
            .await
            .expect_err("handshake must fail");
        let alknet_runtime::ConnectError::Handshake(
            alknet_runtime::ConnectionError::ConnectionClosed(close),
        ) = &err
        else {
            panic!("unexpected error: {err}");
        };
        // TLS alert no_application_protocol (120) as a QUIC CRYPTO_ERROR
        assert_eq!(u64::from(close.error_code), 0x100 + 120, "{err}");
        // the server still serves the ALPN it has
        connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("known ALPN");
    });
}

#[test]
fn wrong_pinned_fingerprint_is_refused_by_the_client() {
    let server = start_server(ServerOptions::default());
    run_client(|| async {
        let endpoint = client_endpoint();
        let wrong = alknet_runtime::Fingerprint([0x42; 32]);
        let err = connect_addr(&endpoint, server.local_addr(), wrong, alknet_echo::ALPN)
            .await
            .expect_err("must not trust another certificate");
        assert!(err.to_string().contains("does not match"), "{err}");
    });
}

/// Bulk data on loopback loses nothing: every GSO batch the engine builds must be one the
/// kernel accepts (a batch over 64 KiB is refused with EMSGSIZE, which quinn-udp reports as
/// success, so only loss counters reveal it).
#[test]
fn bulk_transfer_over_loopback_loses_no_packets() {
    let server = start_server(ServerOptions::default());
    run_client(|| async {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("connect");
        let data = payload(77, 3 << 20);
        assert_eq!(echo_roundtrip(&conn, data.clone()).await, sha256(&data));
        let stats = conn.stats();
        assert_eq!(
            stats.path.lost_packets, 0,
            "client lost {} packets on loopback ({} sent)",
            stats.path.lost_packets, stats.path.sent_packets
        );
    });
}

/// A loopback peer's path MTU grows past Ethernet's to `loopback_max_udp_payload_size`
/// (64 KiB packets: far less per-packet work for a local `alknet connect`), both ways and
/// without loss, with one probe; a server that sets it to `max_udp_payload_size` keeps its connections at
/// the ordinary bound (the endpoint advertises no more, so the client probes no higher).
#[test]
fn loopback_paths_probe_up_to_the_loopback_payload_limit() {
    let limit = alknet_runtime::Limits::default().max_udp_payload_size;
    // the default, and the ordinary bound; both ends ask for it explicitly
    for loopback in [65_507, limit] {
        let server = start_server(ServerOptions {
            limits: alknet_runtime::Limits {
                loopback_max_udp_payload_size: loopback,
                ..Default::default()
            },
            ..Default::default()
        });
        run_client(|| async {
            let endpoint = alknet_runtime::ClientEndpoint::bind(
                "127.0.0.1:0".parse().expect("addr"),
                &alknet_runtime::Limits {
                    loopback_max_udp_payload_size: loopback,
                    ..Default::default()
                },
            )
            .expect("bind client");
            let conn = connect(&endpoint, &server, alknet_echo::ALPN)
                .await
                .expect("connect");
            // enough round trips for path MTU discovery's probes to finish
            for seed in 0..4 {
                let data = payload(seed, 2 << 20);
                assert_eq!(echo_roundtrip(&conn, data.clone()).await, sha256(&data));
            }
            let path = conn.stats().path;
            if loopback > limit {
                // the bound is probed first (`upper_bound_first`): one probe, not a
                // binary search of nine
                assert_eq!(path.current_mtu, loopback, "MTU on loopback");
                assert_eq!(path.sent_plpmtud_probes, 1, "probes sent");
            } else {
                assert!(path.current_mtu <= limit, "MTU {}", path.current_mtu);
            }
            assert_eq!(path.lost_packets, 0, "lost {} packets", path.lost_packets);
        });
    }
}
