//! Live reload: a new certificate reaches new handshakes while open connections go on, a
//! broken one changes nothing, and new identities reach open connections.

use std::sync::Arc;

use alknet_runtime::tls::{ClientAuth, TlsIdentity};
use alknet_runtime::{ConfigIdentityProvider, IdentityEntry, IdentityProvider};
use alknet_tests::*;

#[test]
fn certificate_rotation_under_load_loses_no_request() {
    let server = start_server(ServerOptions {
        workers: 2,
        ..Default::default()
    });
    let reload = server.reload_handle();
    let first = server.fingerprint();
    run_client(|| async {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("connect");
        let mut fingerprints = vec![first];
        for round in 0..20u64 {
            // requests on the open connection, before and after each rotation
            let data = payload(round, 4096);
            assert_eq!(echo_roundtrip(&conn, data.clone()).await, sha256(&data));
            let next = TlsIdentity::generate_self_signed(&[]).expect("generate");
            let fp = reload
                .reload_tls(&next, ClientAuth::Optional)
                .expect("reload");
            assert_eq!(fp, next.fingerprint());
            assert_eq!(server.fingerprint(), fp);
            fingerprints.push(fp);
            assert_eq!(echo_roundtrip(&conn, data.clone()).await, sha256(&data));
        }
        // a new connection pinning the newest certificate succeeds; the first one is gone
        let newest = *fingerprints.last().expect("rotated");
        let fresh = connect_addr(&endpoint, server.local_addr(), newest, alknet_echo::ALPN)
            .await
            .expect("new handshake sees the new certificate");
        let data = payload(99, 1000);
        assert_eq!(echo_roundtrip(&fresh, data.clone()).await, sha256(&data));
        assert!(
            connect_addr(&endpoint, server.local_addr(), first, alknet_echo::ALPN)
                .await
                .is_err(),
            "the old certificate is no longer served"
        );
    });
}

#[test]
fn a_certificate_that_does_not_match_its_key_changes_nothing() {
    let server = start_server(ServerOptions::default());
    let before = server.fingerprint();
    let a = TlsIdentity::generate_self_signed(&[]).expect("a");
    let b = TlsIdentity::generate_self_signed(&[]).expect("b");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("cert.pem"), a.chain_pem()).expect("cert");
    std::fs::write(dir.path().join("key.pem"), b.key_pem()).expect("key");
    let mismatched =
        TlsIdentity::from_pem_files(&dir.path().join("cert.pem"), &dir.path().join("key.pem"))
            .expect("both files parse");
    let err = server
        .reload_handle()
        .reload_tls(&mismatched, ClientAuth::Optional)
        .expect_err("a key that is not the certificate's is refused");
    assert!(!err.to_string().is_empty());
    assert_eq!(server.fingerprint(), before, "the old certificate stays");
    run_client(|| async {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("still served with the old certificate");
        let data = payload(1, 100);
        assert_eq!(echo_roundtrip(&conn, data.clone()).await, sha256(&data));
    });
}

#[test]
fn new_identities_reach_open_connections() {
    let server = start_server(ServerOptions::default());
    let reload = server.reload_handle();
    // what handlers hold: the server's live provider, as AuthContext carries it
    let entry = |token: &str| IdentityEntry {
        name: "ops".into(),
        fingerprints: vec![],
        tokens: vec![token.into()],
        scopes: vec!["node:admin".into()],
    };
    let provider = |token: &str| -> Arc<dyn IdentityProvider> {
        Arc::new(ConfigIdentityProvider::new(&[entry(token)]).expect("provider"))
    };
    reload.set_identity_provider(provider("old-token"));
    let live = reload.identity_provider();
    assert!(live.resolve_from_token("old-token").is_some());
    reload.set_identity_provider(provider("new-token"));
    assert!(live.resolve_from_token("old-token").is_none());
    assert_eq!(
        live.resolve_from_token("new-token").map(|i| i.name),
        Some("ops".to_string())
    );
}

#[test]
fn handlers_are_added_and_removed_while_serving_and_removed_ones_drain() {
    let echo: Arc<dyn alknet_runtime::ProtocolHandler> = Arc::new(alknet_echo::EchoHandler);
    let perf: Arc<dyn alknet_runtime::ProtocolHandler> = Arc::new(alknet_perf::PerfHandler);
    let server = start_server(ServerOptions {
        handlers: vec![echo.clone()],
        limits: alknet_runtime::Limits {
            shutdown_timeout: std::time::Duration::from_millis(500),
            ..Default::default()
        },
        ..Default::default()
    });
    let reload = server.reload_handle();
    run_client(|| async {
        let endpoint = client_endpoint();
        assert!(
            connect(&endpoint, &server, alknet_perf::ALPN)
                .await
                .is_err(),
            "perf is not offered yet"
        );
        let mut both = alknet_runtime::AlpnRegistry::new();
        both.register(echo.clone()).expect("echo");
        both.register(perf.clone()).expect("perf");
        reload.set_handlers(both).expect("add perf");
        let p = connect(&endpoint, &server, alknet_perf::ALPN)
            .await
            .expect("perf is offered now");
        let e = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("echo still");
        let data = payload(7, 3000);
        assert_eq!(echo_roundtrip(&e, data.clone()).await, sha256(&data));

        // echo removed: its open connection goes on until the drain time, new ones fail
        let mut only_perf = alknet_runtime::AlpnRegistry::new();
        only_perf.register(perf.clone()).expect("perf");
        reload.set_handlers(only_perf).expect("remove echo");
        assert_eq!(reload.handlers().alpns(), vec![alknet_perf::ALPN.to_vec()]);
        assert_eq!(echo_roundtrip(&e, data.clone()).await, sha256(&data));
        assert!(
            connect(&endpoint, &server, alknet_echo::ALPN)
                .await
                .is_err(),
            "echo is no longer offered"
        );
        match e.closed().await {
            alknet_runtime::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code, alknet_runtime::close_code::SHUTDOWN.into());
            }
            other => panic!("expected the drain to end with SHUTDOWN, got {other:?}"),
        }
        // the kept handler's connection is untouched
        assert!(p.close_reason().is_none(), "perf connection kept");
        assert!(reload
            .set_handlers(alknet_runtime::AlpnRegistry::new())
            .is_err());
        assert!(connect(&endpoint, &server, alknet_perf::ALPN).await.is_ok());
    });
}
