//! Who sent a request: the connection's client certificate, or an `Authorization: Bearer`
//! token, both resolved by the node's `IdentityProvider` (the same as every handler's).

use std::net::SocketAddr;
use std::sync::Arc;

use alknet_runtime::{AuthContext, Identity};
use axum::http::{header, HeaderMap};

/// What the transport knows about a request's connection; the TCP and HTTP/3 sides insert
/// it into every request's extensions before the router sees it.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// Shared by the connection's requests: each request's copy is a reference count, not
    /// a copy of the context (its ALPN, identity).
    pub auth: Arc<AuthContext>,
    /// "HTTP/1.1", "HTTP/2" or "HTTP/3", for logs and metrics.
    pub protocol: &'static str,
}

impl ConnInfo {
    pub fn remote(&self) -> SocketAddr {
        self.auth.remote
    }
}

/// Why a request has no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the Authorization header is not a Bearer token")]
    NotBearer,
    #[error("the bearer token is not known")]
    UnknownToken,
}

/// The identity a request runs as: its bearer token's if it carries one (a token that does
/// not resolve is an error, never a fallback), else its connection's client certificate's,
/// else none (anonymous).
pub fn request_identity(
    conn: Option<&ConnInfo>,
    headers: &HeaderMap,
) -> Result<Option<Identity>, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::NotBearer)?;
        let conn = conn.ok_or(AuthError::UnknownToken)?;
        return conn
            .auth
            .provider
            .resolve_from_token(token)
            .map(Some)
            .ok_or(AuthError::UnknownToken);
    }
    Ok(conn.and_then(|c| c.auth.identity.clone()))
}
