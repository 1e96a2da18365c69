//! ALPN routing: a service IS an ALPN. Handlers register under their ALPN at start-up; the
//! TLS config advertises exactly those, so a client offering none of them fails the
//! handshake before any application byte, and a completed handshake always finds its
//! handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use quinn_proto::{ConnectionError, VarInt};

use crate::connection::Connection;
use crate::identity::AuthContext;
use crate::streams::{ReadError, ReadToEndError, WriteError};

/// A boxed future local to a worker (handlers hold `Rc` state, so it is not `Send`).
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Why a handler ended a connection. Its display text becomes the close reason.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("connection: {0}")]
    Connection(#[from] ConnectionError),
    #[error("read: {0}")]
    Read(#[from] ReadError),
    #[error("write: {0}")]
    Write(#[from] WriteError),
    #[error("read: {0}")]
    ReadToEnd(#[from] ReadToEndError),
    /// The peer broke the handler's protocol; closes with `code`.
    #[error("protocol error {code}: {reason}")]
    Protocol { code: VarInt, reason: String },
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl HandlerError {
    /// The application close code sent to the peer.
    pub fn close_code(&self) -> VarInt {
        match self {
            HandlerError::Protocol { code, .. } => *code,
            _ => VarInt::from_u32(close_code::HANDLER_ERROR),
        }
    }
}

/// Application close codes the engine itself uses. Handlers may use any others.
pub mod close_code {
    /// Normal end (also: last handle dropped).
    pub const OK: u32 = 0x0;
    /// The handler returned an error.
    pub const HANDLER_ERROR: u32 = 0x1;
    /// The handler panicked.
    pub const HANDLER_PANIC: u32 = 0x2;
    /// The server is shutting down and the drain timeout passed.
    pub const SHUTDOWN: u32 = 0x3;
    /// No handler for the negotiated ALPN (cannot happen unless TLS was misconfigured).
    pub const NO_HANDLER: u32 = 0x4;
    /// The service (ALPN) has `[admission] max_connections_per_alpn` open connections.
    pub const ALPN_LIMIT: u32 = 0x5;
    /// The handshake did not complete within `[admission] handshake_timeout_ms`.
    pub const HANDSHAKE_TIMEOUT: u32 = 0x6;
}

/// A protocol served under one ALPN.
///
/// The handler object is shared by all workers (`Send + Sync`); each connection's
/// `handle` future runs as a task on the worker that owns the connection and need not be
/// `Send`. It returns when the connection is done; an error or a panic closes only this
/// connection and is logged.
pub trait ProtocolHandler: Send + Sync + 'static {
    /// The ALPN identifier, e.g. `b"alknet/echo"`.
    fn alpn(&self) -> &[u8];
    /// Serves one connection.
    fn handle(
        &self,
        conn: Connection,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>>;

    /// A snapshot of the handler's own counters for `/metrics` (sessions, channels,
    /// refusals: whatever its operators watch). Called per scrape, never per connection.
    fn metrics(&self) -> Vec<crate::metrics::HandlerMetric> {
        Vec::new()
    }
}

/// Errors building an [`AlpnRegistry`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("ALPN {0:?} is registered twice")]
    Duplicate(String),
    #[error("ALPN must be 1 to 255 bytes, got {0}")]
    Length(usize),
}

/// The handlers of one server, by ALPN, in registration order (also the server's ALPN
/// preference order).
#[derive(Clone, Default)]
pub struct AlpnRegistry {
    handlers: Vec<Arc<dyn ProtocolHandler>>,
}

impl std::fmt::Debug for AlpnRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.handlers
                    .iter()
                    .map(|h| String::from_utf8_lossy(h.alpn())),
            )
            .finish()
    }
}

impl AlpnRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, handler: Arc<dyn ProtocolHandler>) -> Result<(), RegistryError> {
        let alpn = handler.alpn();
        if alpn.is_empty() || alpn.len() > 255 {
            return Err(RegistryError::Length(alpn.len()));
        }
        if self.lookup(alpn).is_some() {
            return Err(RegistryError::Duplicate(
                String::from_utf8_lossy(alpn).into_owned(),
            ));
        }
        self.handlers.push(handler);
        Ok(())
    }

    /// The handler for a negotiated ALPN. A linear scan: registries hold a handful of
    /// entries and this runs once per connection.
    pub fn lookup(&self, alpn: &[u8]) -> Option<&Arc<dyn ProtocolHandler>> {
        self.handlers.iter().find(|h| h.alpn() == alpn)
    }

    /// The handlers, in preference order.
    pub fn handlers(&self) -> impl Iterator<Item = &Arc<dyn ProtocolHandler>> {
        self.handlers.iter()
    }

    /// The ALPNs to advertise, in preference order.
    pub fn alpns(&self) -> Vec<Vec<u8>> {
        self.handlers.iter().map(|h| h.alpn().to_vec()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    pub fn len(&self) -> usize {
        self.handlers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static [u8]);

    impl ProtocolHandler for Named {
        fn alpn(&self) -> &[u8] {
            self.0
        }
        fn handle(
            &self,
            _: Connection,
            _: AuthContext,
        ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
            Box::pin(async { Ok(()) })
        }
    }

    #[test]
    fn registers_looks_up_and_rejects_duplicates() {
        let mut r = AlpnRegistry::new();
        r.register(Arc::new(Named(b"alknet/echo"))).expect("first");
        r.register(Arc::new(Named(b"h3"))).expect("second");
        assert_eq!(r.alpns(), vec![b"alknet/echo".to_vec(), b"h3".to_vec()]);
        assert!(r.lookup(b"h3").is_some());
        assert!(r.lookup(b"h2").is_none());
        assert!(r.lookup(b"").is_none());
        assert_eq!(
            r.register(Arc::new(Named(b"h3"))),
            Err(RegistryError::Duplicate("h3".into()))
        );
        assert_eq!(
            r.register(Arc::new(Named(b""))),
            Err(RegistryError::Length(0))
        );
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn protocol_errors_carry_their_code() {
        let e = HandlerError::Protocol {
            code: VarInt::from_u32(0x42),
            reason: "bad frame".into(),
        };
        assert_eq!(e.close_code(), VarInt::from_u32(0x42));
        assert_eq!(
            HandlerError::Other("x".into()).close_code(),
            VarInt::from_u32(close_code::HANDLER_ERROR)
        );
    }
}
