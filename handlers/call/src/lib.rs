//! `alknet/call`: JSON operations over QUIC streams.
//!
//! Frames are `EventEnvelope`s (`alknet_proto::call`: u32 big-endian length + JSON). A
//! client opens bidirectional streams and sends `call.requested` frames; each request
//! runs as its own task on the connection's worker under a root [`CallContext`] (identity
//! from the connection or the request's `auth_token`, a deadline, the registration's
//! capabilities and environment) and is answered on the same stream with
//! `call.responded` or `call.error`, or with `call.stream.item`… `call.stream.end` for a
//! streaming operation. `subscribe` / `unsubscribe` manage topic subscriptions, whose
//! events come as `event` frames. See the README's "alknet/call" section for the wire
//! format.

mod builtin;
mod client;
mod context;
mod env;
mod error;
mod invoke;
mod limits;
mod node;
mod pubsub;
mod registry;
mod response;
mod session;
mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alknet_runtime::{AuthContext, Connection, HandlerError, LocalBoxFuture, ProtocolHandler};

pub use alknet_proto::call::{ErrorCode, EventEnvelope, EventType};
pub use builtin::{
    builtin_operations, default_registry, ADMIN_SCOPE, ECHO_STREAM_MAX_ITEMS, NODE_EVENTS_TOPIC,
};
pub use client::{CallClient, CallOptions, ItemStream, SubscriptionStream, TopicMessage};
pub use context::{CallContext, ItemSink};
pub use env::{CompositeOperationEnv, EnvLayer, OperationEnv, SessionOverlaySource};
pub use error::CallError;
pub use invoke::NodeInvoker;
pub use limits::*;
pub use node::{CallNode, CallStats, NodeInfo};
pub use pubsub::{Delivery, Subscription, TopicBus, TopicEvent};
pub use registry::{
    strip_slash, Operation, OperationHandler, OperationRegistry, OperationRegistryError,
    RegisteredOperation, Topic,
};
pub use response::{NotAResponse, ResponseEnvelope};
pub use session::{resolve_identity, PendingRequestMap, STREAM_FRAMING_ERROR, STREAM_UNSUPPORTED};

/// The ALPN this handler serves.
pub const ALPN: &[u8] = b"alknet/call";

/// The `alknet/call` protocol handler.
pub struct CallAdapter {
    node: Arc<CallNode>,
}

impl CallAdapter {
    /// A handler serving `registry` with the default limits (30 s default timeout).
    pub fn new(registry: OperationRegistry) -> Self {
        Self::with_parts(registry, CallLimits::default(), NodeInfo::default(), None)
    }

    /// Everything at once: the registry, limits, node facts and an optional session
    /// overlay source.
    pub fn with_parts(
        registry: OperationRegistry,
        limits: CallLimits,
        info: NodeInfo,
        session_source: Option<Arc<dyn SessionOverlaySource>>,
    ) -> Self {
        Self {
            node: Arc::new(CallNode {
                registry: Arc::new(registry),
                bus: TopicBus::new(),
                limits,
                info,
                base_env: BTreeMap::new(),
                session_source,
                stats: Arc::default(),
                base_layers: std::sync::OnceLock::new(),
            }),
        }
    }

    /// A handler serving `node` as it is (e.g. one made by [`CallNode::reconfigured`]).
    pub fn from_node(node: Arc<CallNode>) -> Self {
        Self { node }
    }

    /// Adds a session overlay source (layer 1 of every operation's environment).
    pub fn with_session_source(mut self, source: Arc<dyn SessionOverlaySource>) -> Self {
        self.node_mut().session_source = Some(source);
        self
    }

    /// Sets the default request timeout (a request may ask for less, never more).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.node_mut().limits.default_timeout_ms = timeout.as_millis().max(1) as u64;
        self
    }

    pub fn with_limits(mut self, limits: CallLimits) -> Self {
        self.node_mut().limits = limits;
        self
    }

    pub fn with_node_info(mut self, info: NodeInfo) -> Self {
        self.node_mut().info = info;
        self
    }

    /// Layer 0 variables every operation sees.
    pub fn with_base_env(mut self, env: BTreeMap<String, String>) -> Self {
        self.node_mut().base_env = env;
        self
    }

    pub fn default_timeout(&self) -> Duration {
        self.node.limits.default_timeout()
    }

    /// The shared node state: publish from outside an operation, read counters.
    pub fn node(&self) -> Arc<CallNode> {
        self.node.clone()
    }

    /// The builders run before serving starts. Should the node be shared already (someone
    /// called [`CallAdapter::node`] first), the adapter continues with a copy that shares
    /// the registry and topics but not that handle's counters.
    fn node_mut(&mut self) -> &mut CallNode {
        Arc::make_mut(&mut self.node)
    }
}

impl ProtocolHandler for CallAdapter {
    fn alpn(&self) -> &[u8] {
        ALPN
    }

    fn handle(
        &self,
        conn: Connection,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        let node = self.node.clone();
        Box::pin(async move {
            session::Session::new(node, conn, auth).run().await;
            // a connection ending is how a call session normally ends
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
