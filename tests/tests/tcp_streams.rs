//! `[tcp] stream_alpns`: QUIC handlers over TLS/TCP as one-stream connections, with the
//! runtime's own client (`connect_tls_tcp`): exact bytes through `alknet/echo` both ways
//! across the stream buffer, the clear refusal of every stream but the one and of
//! datagrams, the clean end, and an ALPN not offered over TCP.

use alknet_runtime::{DatagramError, TcpSetup};
use alknet_tests::*;
use bytes::Bytes;

fn server_with_tcp(stream_alpns: &[&str]) -> alknet_runtime::ServerHandle {
    let mut setup = TcpSetup::default();
    setup.limits.stream_alpns = stream_alpns.iter().map(|a| a.to_string()).collect();
    start_server(ServerOptions {
        workers: 2,
        handlers: vec![
            std::sync::Arc::new(alknet_echo::EchoHandler),
            std::sync::Arc::new(alknet_perf::PerfHandler),
        ],
        tcp: Some(setup),
        ..Default::default()
    })
}

fn assert_one_stream_error(what: &str, e: impl std::fmt::Display) {
    let text = e.to_string();
    assert!(
        text.contains("exactly one bidirectional stream"),
        "{what}: {text}"
    );
}

#[test]
fn one_stream_echoes_exact_bytes_and_more_streams_are_refused() {
    let server = server_with_tcp(&["alknet/echo"]);
    run_client(|| async {
        let conn = connect_tcp(&server, alknet_echo::ALPN)
            .await
            .expect("TLS/TCP connect");
        assert_eq!(conn.transport(), "tcp");
        assert_eq!(conn.alpn().as_deref(), Some(alknet_echo::ALPN));
        assert_eq!(conn.peer_fingerprint(), Some(server.fingerprint()));
        assert_eq!(conn.max_datagram_size(), None);
        assert_eq!(
            conn.send_datagram(Bytes::from_static(b"x")),
            Err(DatagramError::Unsupported)
        );
        assert_one_stream_error(
            "open_uni",
            conn.open_uni().await.expect_err("open_uni refused"),
        );

        // the one stream: 3 MiB + 7 both ways at once, past the 1 MiB stream buffer
        let data = payload(5, 3 * 1024 * 1024 + 7);
        let want = sha256(&data);
        let stream = conn.open_bi().await.expect("the one stream");
        assert_one_stream_error(
            "second open_bi",
            conn.open_bi()
                .await
                .err()
                .expect("a second stream is refused"),
        );
        let (mut send, mut recv) = stream.split();
        let writer = async move {
            let mut chunks: Vec<Bytes> = Bytes::from(data)
                .chunks(100_000)
                .map(Bytes::copy_from_slice)
                .collect();
            send.write_all_chunks(&mut chunks).await.expect("write");
            send.finish().expect("finish");
            send.stopped().await.expect("flushed")
        };
        let reader = async move {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut len = 0;
            while let Some(chunk) = recv.read_available(256 * 1024).await.expect("read") {
                len += chunk.len();
                ctx.update(&chunk);
            }
            (len, ctx.finish())
        };
        let (stopped, (len, digest)) = join(writer, reader).await;
        assert_eq!(stopped, None);
        assert_eq!(len, 3 * 1024 * 1024 + 7);
        assert_eq!(digest.as_ref(), want.as_slice());

        // both sides finished: the connection ends cleanly, and accept_bi says so
        let reason = conn.closed().await;
        assert!(
            matches!(reason, alknet_runtime::ConnectionError::ApplicationClosed(ref c) if c.error_code.into_inner() == 0),
            "{reason}"
        );
        assert!(conn.accept_bi().await.is_err());
    });
}

#[test]
fn a_service_not_in_stream_alpns_is_refused_at_the_handshake() {
    let server = server_with_tcp(&["alknet/echo"]);
    run_client(|| async {
        // perf is a handler, but not offered over TCP
        let err = connect_tcp(&server, alknet_perf::ALPN)
            .await
            .expect_err("perf over TCP refused");
        assert!(
            err.to_string().to_lowercase().contains("application"),
            "{err}"
        );
        // and echo still is
        let conn = connect_tcp(&server, alknet_echo::ALPN)
            .await
            .expect("echo over TCP");
        let digest = echo_roundtrip(&conn, payload(9, 1000)).await;
        assert_eq!(digest, sha256(&payload(9, 1000)));
    });
}

#[test]
fn the_per_service_cap_counts_tcp_and_quic_connections_together() {
    let mut setup = TcpSetup::default();
    setup.limits.stream_alpns = vec!["alknet/echo".into()];
    let mut admission = alknet_runtime::AdmissionLimits::default();
    admission
        .max_connections_per_alpn
        .insert("alknet/echo".into(), 1);
    let server = start_server(ServerOptions {
        tcp: Some(setup),
        admission,
        ..Default::default()
    });
    run_client(|| async {
        let first = connect_tcp(&server, alknet_echo::ALPN)
            .await
            .expect("first over TCP");
        // one echo on its stream, which stays open (and the connection with it)
        let (mut send, mut recv) = first.open_bi().await.expect("stream").split();
        send.write_all(b"held").await.expect("write");
        let mut got = Vec::new();
        while got.len() < 4 {
            match recv.read_chunk(4).await.expect("read") {
                Some(c) => got.extend_from_slice(&c),
                None => break,
            }
        }
        assert_eq!(got, b"held");
        // the cap is reached: a second TLS/TCP connection is cut after its handshake, and
        // a QUIC one is closed too
        let second = connect_tcp(&server, alknet_echo::ALPN)
            .await
            .expect("handshake completes");
        let reason = second.closed().await;
        assert!(
            !matches!(reason, alknet_runtime::ConnectionError::LocallyClosed),
            "{reason}"
        );
        let endpoint = client_endpoint();
        let quic = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("QUIC handshake");
        let reason = quic.closed().await.to_string();
        assert!(reason.contains("too many connections"), "{reason}");
        drop((send, recv, first));
    });
}
