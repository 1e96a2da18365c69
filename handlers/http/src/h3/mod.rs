//! HTTP/3 (ALPN `h3`): the `h3` crate's server over the runtime's QUIC connection, serving
//! an axum `Router` (or any `tower::Service` with the same shape) on the worker that owns
//! the connection. No tokio runtime: h3 uses only `tokio::sync`, and the router's futures
//! are polled by the request task.
//!
//! - [`quic`]: the `h3::quic` traits over `alknet_runtime` connections and streams;
//! - [`serve`]: one connection: accept requests, run the service, stream responses;
//! - [`body`]: the bridge from the worker-local request stream to the router's `Send` body;
//! - [`limits`]: what a client may ask, named and configurable.

pub mod body;
pub mod limits;
pub mod quic;
pub mod serve;
pub mod webtransport;

use std::rc::Rc;

use alknet_runtime::{
    AuthContext, Connection, HandlerError, LocalBoxFuture, ProtocolHandler, VarInt,
};

pub use limits::H3Limits;
pub use serve::{serve_connection, DrainProbe, H3Request, ServeError, WebTransportSetup};
pub use webtransport::WebTransportConfig;

/// The ALPN of HTTP/3 (RFC 9114).
pub const ALPN: &[u8] = b"h3";

/// Serves HTTP/3 with one axum `Router`, shared by every worker (a `Router` is a cheap,
/// `Send + Sync` handle; each request gets its own clone).
#[derive(Clone)]
pub struct H3Handler {
    router: axum::Router,
    limits: H3Limits,
    draining: Option<DrainProbe>,
    webtransport: Option<WebTransportConfig>,
}

impl H3Handler {
    pub fn new(router: axum::Router, limits: H3Limits) -> Self {
        Self {
            router,
            limits,
            draining: None,
            webtransport: None,
        }
    }

    /// Offers WebTransport sessions, routed to the node's other handlers by path.
    pub fn with_webtransport(mut self, config: WebTransportConfig) -> Self {
        self.webtransport = config.enabled.then_some(config);
        self
    }

    /// Sends GOAWAY on every connection once the node of `state` drains.
    pub fn with_drain_of(mut self, state: crate::HttpState) -> Self {
        self.draining = Some(std::sync::Arc::new(move || {
            state.status().is_some_and(|s| s.draining())
        }));
        self
    }
}

impl ProtocolHandler for H3Handler {
    fn alpn(&self) -> &[u8] {
        ALPN
    }

    fn handle(
        &self,
        conn: Connection,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        // who is asking, for the routes (identity, metrics), as the TCP side does
        let auth = std::sync::Arc::new(auth);
        let webtransport = self.webtransport.as_ref().map(|c| WebTransportSetup {
            config: Rc::new(c.clone()),
            auth: auth.clone(),
        });
        let info = crate::ConnInfo {
            auth,
            protocol: "HTTP/3",
        };
        // inserted into each request's extensions by a plain map, not by layering the
        // router (which would rebuild every route's service stack per connection)
        let router = tower::ServiceExt::map_request(
            self.router.clone(),
            move |mut req: serve::H3Request| {
                req.extensions_mut().insert(info.clone());
                req
            },
        );
        let limits = Rc::new(self.limits.clone());
        let draining = self.draining.clone();
        Box::pin(async move {
            match serve_connection(conn, router, limits, draining, webtransport).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    let code = match &e {
                        ServeError::Setup(_) => h3::error::Code::H3_INTERNAL_ERROR,
                        ServeError::Connection(_) => h3::error::Code::H3_GENERAL_PROTOCOL_ERROR,
                    };
                    Err(HandlerError::Protocol {
                        code: VarInt::from_u64(code.value()).unwrap_or(VarInt::from_u32(0x101)),
                        reason: e.to_string(),
                    })
                }
            }
        })
    }
}
