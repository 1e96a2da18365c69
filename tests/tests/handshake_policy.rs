//! The `[quic]` handshake policy against our own client: Retry always, and "auto" under a
//! burst of handshakes; every connection still completes and echoes.

use alknet_runtime::{HandshakePolicy, RetryMode};
use alknet_tests::*;

/// Opens `n` connections at once from one endpoint and echoes a little on each.
fn burst(server: &alknet_runtime::ServerHandle, n: usize) {
    run_client(|| async {
        let endpoint = client_endpoint();
        let conns = futures_util::future::join_all(
            (0..n).map(|_| connect(&endpoint, server, alknet_echo::ALPN)),
        )
        .await;
        for (i, c) in conns.into_iter().enumerate() {
            let c = c.unwrap_or_else(|e| panic!("connection {i}: {e}"));
            let data = payload(i as u64, 1000);
            assert_eq!(echo_roundtrip(&c, data.clone()).await, sha256(&data));
        }
    });
}

#[test]
fn retry_always_validates_every_new_address() {
    let server = start_server(ServerOptions {
        handshake: HandshakePolicy {
            retry: RetryMode::Always,
            ..HandshakePolicy::default()
        },
        ..Default::default()
    });
    burst(&server, 3);
    assert_eq!(server.total_stats().retries_sent, 3);
}

#[test]
fn retry_auto_starts_past_the_threshold_of_unvalidated_handshakes() {
    // threshold 1: while the first handshake is in flight, the others get a Retry
    let server = start_server(ServerOptions {
        handshake: HandshakePolicy {
            retry: RetryMode::Auto,
            retry_auto_threshold: 1,
            ..HandshakePolicy::default()
        },
        ..Default::default()
    });
    burst(&server, 8);
    let retries = server.total_stats().retries_sent;
    assert!((1..8).contains(&retries), "retries {retries}");
    // the default threshold is far above a burst of 8: no Retry
    let server = start_server(ServerOptions::default());
    burst(&server, 8);
    assert_eq!(server.total_stats().retries_sent, 0);
}
