//! `test/whoami`: a handler that answers each stream with what the engine told it about
//! the peer, and the client that asks it. Used by the identity tests (config file, peer
//! database).

use alknet_runtime::tls::{client_crypto, ServerTrust, TlsIdentity};
use alknet_runtime::{
    AuthContext, Connection, HandlerError, LocalBoxFuture, ProtocolHandler, ServerHandle,
};

use crate::client_endpoint;

pub const WHOAMI_ALPN: &[u8] = b"test/whoami";

/// Answers each stream with "`<fingerprint or -> <identity name or -> <scopes>`".
pub struct WhoAmI;

impl ProtocolHandler for WhoAmI {
    fn alpn(&self) -> &[u8] {
        WHOAMI_ALPN
    }
    fn handle(
        &self,
        conn: Connection,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            assert_eq!(conn.peer_fingerprint(), auth.peer_fingerprint);
            assert_eq!(conn.alpn().as_deref(), Some(WHOAMI_ALPN));
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

/// Connects (presenting `identity`'s certificate, if any) and returns the server's answer.
pub async fn ask_whoami(
    server: &ServerHandle,
    identity: Option<&TlsIdentity>,
) -> Result<String, String> {
    let endpoint = client_endpoint();
    let crypto = client_crypto(
        &ServerTrust::Fingerprint(server.fingerprint()),
        vec![WHOAMI_ALPN.to_vec()],
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

/// Panics with install instructions unless Python's aioquic is importable.
pub fn require_aioquic() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import aioquic"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "python3 with aioquic is required: pip install -r tests/interop/requirements.txt"
        ),
    }
}
