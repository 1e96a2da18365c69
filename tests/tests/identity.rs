//! Client certificates: their SHA-256 reaches the handler in `AuthContext`, resolved to an
//! identity by the configured `IdentityProvider`; `client_auth = required` refuses
//! clients without one.

use std::sync::Arc;

use alknet_runtime::tls::{client_crypto, ClientAuth, ServerTrust, TlsIdentity};
use alknet_runtime::{
    AuthContext, ConfigIdentityProvider, Connection, HandlerError, IdentityEntry, LocalBoxFuture,
    ProtocolHandler,
};
use alknet_tests::*;

/// Answers each stream with "<fingerprint or -> <identity name or -> <scopes>".
struct WhoAmI;

impl ProtocolHandler for WhoAmI {
    fn alpn(&self) -> &[u8] {
        b"test/whoami"
    }
    fn handle(
        &self,
        conn: Connection,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            assert_eq!(conn.peer_fingerprint(), auth.peer_fingerprint);
            assert_eq!(conn.alpn().as_deref(), Some(&b"test/whoami"[..]));
            let fp = auth
                .peer_fingerprint
                .map_or("-".to_string(), |f| f.to_string());
            let (name, scopes) = auth.identity.map_or(("-".to_string(), String::new()), |i| {
                (i.name, i.scopes.join(","))
            });
            while let Ok(mut s) = conn.accept_bi().await {
                s.send
                    .write_all(format!("{fp} {name} {scopes}").as_bytes())
                    .await?;
                s.send.finish().ok();
            }
            Ok(())
        })
    }
}

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

async fn ask(
    server: &alknet_runtime::ServerHandle,
    identity: Option<&TlsIdentity>,
) -> Result<String, String> {
    let endpoint = client_endpoint();
    let crypto = client_crypto(
        &ServerTrust::Fingerprint(server.fingerprint()),
        vec![b"test/whoami".to_vec()],
        identity,
    )
    .expect("client crypto");
    // In TLS 1.3 the client finishes its handshake before the server has judged its
    // certificate, so a refusal may surface at connect or at the first read.
    let conn = endpoint
        .connect(server.local_addr(), "localhost", crypto)
        .await
        .map_err(|e| e.to_string())?;
    let mut s = conn.open_bi().await.map_err(|e| e.to_string())?;
    s.send.finish().map_err(|e| e.to_string())?;
    let reply = s.recv.read_to_end(1024).await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8(reply).expect("utf8"))
}

#[test]
fn client_certificates_resolve_to_identities() {
    let alice = TlsIdentity::generate_self_signed(&[]).expect("alice cert");
    let stranger = TlsIdentity::generate_self_signed(&[]).expect("stranger cert");
    let server = server(ClientAuth::Optional, &alice);
    run_client(|| async {
        let reply = ask(&server, Some(&alice)).await.expect("alice connects");
        assert_eq!(reply, format!("{} alice echo,whoami", alice.fingerprint()));
        let reply = ask(&server, Some(&stranger))
            .await
            .expect("stranger connects");
        assert_eq!(reply, format!("{} - ", stranger.fingerprint()));
        let reply = ask(&server, None).await.expect("anonymous connects");
        assert_eq!(reply, "- - ");
    });
}

#[test]
fn required_client_auth_refuses_clients_without_a_certificate() {
    let alice = TlsIdentity::generate_self_signed(&[]).expect("alice cert");
    let server = server(ClientAuth::Required, &alice);
    run_client(|| async {
        let err = ask(&server, None)
            .await
            .expect_err("no certificate, no connection");
        // TLS alert certificate_required (116) as a QUIC CRYPTO_ERROR
        assert!(
            err.contains("error 116") && err.contains("no certificates"),
            "{err}"
        );
        let reply = ask(&server, Some(&alice)).await.expect("alice connects");
        assert!(reply.ends_with("alice echo,whoami"), "{reply}");
    });
}
