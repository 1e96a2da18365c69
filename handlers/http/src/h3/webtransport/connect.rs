//! Answering an extended CONNECT with `:protocol = webtransport`: which handler the path
//! names, who is asking, and the session's life on its CONNECT stream.

use std::rc::Rc;
use std::sync::Arc;

use alknet_runtime::rt::{catch_panic, panic_message};
use alknet_runtime::{AuthContext, ConnectionError, ProtocolHandler};
use bytes::Bytes;
use h3::error::Code;
use h3::server::RequestStream;
use http::{Request, Response, StatusCode};

use super::session::WebTransportSession;
use super::sessions::Sessions;
use super::{WebTransportConfig, DRAFT_HEADER, DRAFT_VALUE};
use crate::h3::quic::H3BidiStream;

/// What the `h3` handler knows about the connection sessions come from.
pub struct WebTransportContext {
    pub sessions: Rc<Sessions>,
    /// The HTTP/3 connection's peer: address, client certificate, identity provider.
    pub auth: Arc<AuthContext>,
}

/// Why a CONNECT was refused, with the status it gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the path names no service that may be reached over WebTransport")]
    NotFound,
    #[error("the token is not known")]
    BadToken,
    #[error("too many sessions on this connection")]
    TooManySessions,
    #[error("the session ID is in use")]
    Duplicate,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::BadToken => StatusCode::UNAUTHORIZED,
            Refusal::TooManySessions => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Duplicate => StatusCode::BAD_REQUEST,
        }
    }
}

/// The `token` query parameter (percent-decoded), if any.
pub fn token_of(query: Option<&str>) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// The handler a session goes to and the identity it runs with, or why not. `lookup`
/// finds a registered handler by ALPN (the node's live registry).
pub fn route(
    path: &str,
    query: Option<&str>,
    config: &WebTransportConfig,
    auth: &AuthContext,
    lookup: impl FnOnce(&[u8]) -> Option<Arc<dyn ProtocolHandler>>,
) -> Result<(Arc<dyn ProtocolHandler>, AuthContext), Refusal> {
    let alpn = WebTransportConfig::alpn_of_path(path).ok_or(Refusal::NotFound)?;
    if !config.allows(alpn.as_bytes()) {
        return Err(Refusal::NotFound);
    }
    let handler = lookup(alpn.as_bytes()).ok_or(Refusal::NotFound)?;
    // a client certificate speaks first; else the token (browsers cannot set headers
    // on a WebTransport CONNECT, so it is a query parameter); else anonymous, as a QUIC
    // connection without a certificate is
    let identity = match (&auth.identity, token_of(query)) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(token)) => Some(
            auth.provider
                .resolve_from_token(&token)
                .ok_or(Refusal::BadToken)?,
        ),
        (None, None) => None,
    };
    let session_auth = AuthContext {
        remote: auth.remote,
        local: auth.local,
        alpn: alpn.as_bytes().to_vec(),
        peer_fingerprint: auth.peer_fingerprint,
        identity,
        provider: auth.provider.clone(),
    };
    Ok((handler, session_auth))
}

/// Serves one CONNECT request for a WebTransport session until the session ends.
pub async fn serve_session(
    req: Request<()>,
    mut stream: RequestStream<H3BidiStream, Bytes>,
    ctx: Rc<WebTransportContext>,
) {
    let id = stream.id().into_inner();
    let sessions = &ctx.sessions;
    let routed = if sessions.len() as u64 >= sessions.config().max_sessions_per_connection {
        Err(Refusal::TooManySessions)
    } else {
        route(
            req.uri().path(),
            req.uri().query(),
            sessions.config(),
            &ctx.auth,
            |alpn| alknet_runtime::running_handlers().and_then(|r| r.lookup(alpn).cloned()),
        )
    };
    let opened = routed.and_then(|r| sessions.open(id).map(|q| (r, q)).ok_or(Refusal::Duplicate));
    let ((handler, auth), queues) = match opened {
        Ok(x) => x,
        Err(refusal) => {
            tracing::debug!(path = req.uri().path(), remote = %ctx.auth.remote, "WebTransport session refused: {refusal}");
            sessions.refused(id);
            let head = Response::builder()
                .status(refusal.status())
                .body(())
                .expect("a status-only response is valid");
            if stream.send_response(head).await.is_ok() {
                let _ = stream.finish().await;
            }
            return;
        }
    };
    let head = Response::builder()
        .status(StatusCode::OK)
        .header(DRAFT_HEADER, DRAFT_VALUE)
        .body(())
        .expect("a fixed response is valid");
    if let Err(e) = stream.send_response(head).await {
        tracing::debug!("WebTransport session not answered: {e}");
        sessions.close(id, ConnectionError::LocallyClosed);
        return;
    }
    let alpn = auth.alpn.clone();
    let alpn_text = String::from_utf8_lossy(&alpn).into_owned();
    tracing::debug!(session = id, alpn = %alpn_text, remote = %auth.remote, "WebTransport session open");
    let conn = WebTransportSession::connection(sessions.clone(), id, queues.clone(), alpn);
    {
        let alpn_text = alpn_text.clone();
        alknet_runtime::rt::spawn_guarded("webtransport session", async move {
            run_handler(handler, conn, auth, &alpn_text).await;
        });
    }

    // the session lives as long as its CONNECT stream: the client ending it (or the
    // connection going) ends the session; the handler ending the session finishes it
    let ended_by_peer = loop {
        let closed = std::future::poll_fn(|cx| queues.borrow_mut().poll_closed(cx));
        monoio::select! {
            data = stream.recv_data() => match data {
                // capsules (draft-02 defines none the server must act on): read and dropped
                Ok(Some(_)) => continue,
                Ok(None) => break Some(ConnectionError::ApplicationClosed(
                    quinn_proto::ApplicationClose {
                        error_code: quinn_proto::VarInt::from_u32(0),
                        reason: Bytes::new(),
                    },
                )),
                Err(e) => {
                    tracing::debug!(session = id, "WebTransport CONNECT stream ended: {e}");
                    break Some(ConnectionError::Reset);
                }
            },
            _ = closed => break None,
        }
    };
    match ended_by_peer {
        Some(why) => {
            sessions.close(id, why);
            let _ = stream.finish().await;
        }
        None => {
            sessions.close(id, ConnectionError::LocallyClosed);
            if stream.finish().await.is_err() {
                stream.stop_stream(Code::H3_NO_ERROR);
            }
        }
    }
    tracing::debug!(session = id, alpn = %alpn_text, "WebTransport session closed");
}

/// Runs the session's handler as the worker runs a connection's: an error or a panic
/// ends only this session, and is logged.
async fn run_handler(
    handler: Arc<dyn ProtocolHandler>,
    conn: alknet_runtime::Connection,
    auth: AuthContext,
    alpn: &str,
) {
    match catch_panic(handler.handle(conn.clone(), auth)).await {
        Ok(Ok(())) => tracing::debug!(%alpn, "WebTransport session handler finished"),
        Ok(Err(e)) => {
            tracing::warn!(%alpn, "WebTransport session handler error: {e}");
            conn.close(e.close_code(), b"");
        }
        Err(panic) => {
            tracing::error!(%alpn, panic = %panic_message(&*panic), "WebTransport session handler panicked");
            conn.close(
                alknet_runtime::VarInt::from_u32(alknet_runtime::close_code::HANDLER_PANIC),
                b"",
            );
        }
    }
    // as on a QUIC connection, the session ends when the handler's last clone goes
}

#[cfg(test)]
mod tests {
    use super::*;
    use alknet_runtime::{ConfigIdentityProvider, IdentityEntry, LocalBoxFuture};

    struct Named;
    impl ProtocolHandler for Named {
        fn alpn(&self) -> &[u8] {
            b"alknet/echo"
        }
        fn handle(
            &self,
            _: alknet_runtime::Connection,
            _: AuthContext,
        ) -> LocalBoxFuture<'_, Result<(), alknet_runtime::HandlerError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn auth() -> AuthContext {
        let provider = ConfigIdentityProvider::new(&[IdentityEntry {
            name: "alice".into(),
            fingerprints: vec![],
            tokens: vec!["s3cret/+".into()],
            scopes: vec!["echo".into()],
        }])
        .expect("valid");
        AuthContext {
            remote: "127.0.0.1:9".parse().expect("addr"),
            local: None,
            alpn: b"h3".to_vec(),
            peer_fingerprint: None,
            identity: None,
            provider: Arc::new(provider),
        }
    }

    fn lookup(alpn: &[u8]) -> Option<Arc<dyn ProtocolHandler>> {
        (alpn == b"alknet/echo" || alpn == b"perf").then(|| Arc::new(Named) as _)
    }

    #[test]
    fn paths_route_to_allowed_registered_handlers() {
        let c = WebTransportConfig::default();
        let a = auth();
        let (h, sa) = route("/alknet/echo", None, &c, &a, lookup).expect("routed");
        assert_eq!(h.alpn(), b"alknet/echo");
        assert_eq!(sa.alpn, b"alknet/echo");
        assert_eq!(sa.identity, None, "no token: anonymous");
        let refused = |path| route(path, None, &c, &a, lookup).err();
        assert_eq!(refused("/alknet/nothing"), Some(Refusal::NotFound));
        assert_eq!(
            refused("/perf"),
            Some(Refusal::NotFound),
            "registered, not allowed"
        );
        assert_eq!(refused("/h3"), Some(Refusal::NotFound));
        assert_eq!(refused("/"), Some(Refusal::NotFound));
    }

    #[test]
    fn tokens_resolve_through_the_provider() {
        let c = WebTransportConfig::default();
        let a = auth();
        // percent-encoded in the query
        let (_, sa) = route(
            "/alknet/echo",
            Some("x=1&token=s3cret%2F%2B"),
            &c,
            &a,
            lookup,
        )
        .expect("ok");
        assert_eq!(sa.identity.map(|i| i.name), Some("alice".into()));
        assert_eq!(
            route("/alknet/echo", Some("token=wrong"), &c, &a, lookup).err(),
            Some(Refusal::BadToken)
        );
        assert_eq!(Refusal::BadToken.status(), StatusCode::UNAUTHORIZED);
    }
}
