//! The ALPN registry the lookup benchmarks and the callgrind workload share.

use std::sync::Arc;

use alknet_runtime::{
    AlpnRegistry, AuthContext, Connection, HandlerError, LocalBoxFuture, ProtocolHandler,
};

/// A handler that only has an ALPN: lookup never calls `handle`.
pub struct Named(pub &'static [u8]);

impl ProtocolHandler for Named {
    fn alpn(&self) -> &[u8] {
        self.0
    }

    fn handle(
        &self,
        _conn: Connection,
        _auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Seven ALPNs of realistic lengths; the last one is the worst case for a linear scan.
pub const ALPNS: [&[u8]; 7] = [
    b"alknet/echo",
    b"h3",
    b"alknet/ssh",
    b"alknet/proxy",
    b"doq",
    b"alknet/files",
    b"alknet/metrics",
];

/// A registry of [`ALPNS`], in that order.
pub fn registry() -> AlpnRegistry {
    let mut r = AlpnRegistry::new();
    for alpn in ALPNS {
        r.register(Arc::new(Named(alpn))).expect("distinct ALPNs");
    }
    r
}
