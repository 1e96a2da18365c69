//! Client certificates: their SHA-256 reaches the handler in `AuthContext`, resolved to an
//! identity by the configured `IdentityProvider`; `client_auth = required` refuses
//! clients without one.

use std::sync::Arc;

use alknet_runtime::tls::{ClientAuth, TlsIdentity};
use alknet_runtime::{ConfigIdentityProvider, IdentityEntry};
use alknet_tests::*;

fn server(client_auth: ClientAuth, known: &TlsIdentity) -> alknet_runtime::ServerHandle {
    let provider = ConfigIdentityProvider::new(&[IdentityEntry {
        name: "alice".into(),
        fingerprints: vec![known.fingerprint().to_string()],
        tokens: vec![],
        scopes: vec!["echo".into(), "whoami".into()],
    }])
    .expect("identities");
    start_server(ServerOptions {
        handlers: vec![Arc::new(WhoAmI)],
        provider: Arc::new(provider),
        client_auth,
        ..Default::default()
    })
}

#[test]
fn client_certificates_resolve_to_identities() {
    let alice = TlsIdentity::generate_self_signed(&[]).expect("alice cert");
    let stranger = TlsIdentity::generate_self_signed(&[]).expect("stranger cert");
    let server = server(ClientAuth::Optional, &alice);
    run_client(|| async {
        let reply = ask_whoami(&server, Some(&alice))
            .await
            .expect("alice connects");
        assert_eq!(reply, format!("{} alice echo,whoami", alice.fingerprint()));
        let reply = ask_whoami(&server, Some(&stranger))
            .await
            .expect("stranger connects");
        assert_eq!(reply, format!("{} - ", stranger.fingerprint()));
        let reply = ask_whoami(&server, None).await.expect("anonymous connects");
        assert_eq!(reply, "- - ");
    });
}

#[test]
fn required_client_auth_refuses_clients_without_a_certificate() {
    let alice = TlsIdentity::generate_self_signed(&[]).expect("alice cert");
    let server = server(ClientAuth::Required, &alice);
    run_client(|| async {
        let err = ask_whoami(&server, None)
            .await
            .expect_err("no certificate, no connection");
        // TLS alert certificate_required (116) as a QUIC CRYPTO_ERROR
        assert!(
            err.contains("error 116") && err.contains("no certificates"),
            "{err}"
        );
        let reply = ask_whoami(&server, Some(&alice))
            .await
            .expect("alice connects");
        assert!(reply.ends_with("alice echo,whoami"), "{reply}");
    });
}
