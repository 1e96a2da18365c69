//! The context a request runs in: who asked (after token resolution), until when, with
//! which capabilities and environment, and handles back to the node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alknet_proto::call::{EventEnvelope, EventType};
use alknet_runtime::{Identity, ItemOutlet};
use serde_json::{json, Value};

use crate::env::{CompositeOperationEnv, OperationEnv};
use crate::error::CallError;
use crate::node::CallNode;
use crate::registry::{Operation, OperationHandler};
use crate::writer::StreamWriter;

/// Everything an operation body may know about its call.
#[derive(Clone)]
pub struct CallContext {
    pub request_id: Arc<str>,
    pub operation_id: String,
    /// The identity the call runs as: the token's, else the connection's.
    pub identity: Option<Identity>,
    /// The identity of the connection (TLS client certificate), whatever the token said.
    pub connection_identity: Option<Identity>,
    /// Who a relaying caller says it acts for. Metadata only: never used for access.
    pub forwarded_for: Option<Value>,
    /// True only for calls made by another operation through [`CallContext::call_internal`].
    pub internal: bool,
    pub deadline: Instant,
    pub capabilities: Vec<String>,
    pub scoped_env: Arc<BTreeMap<String, String>>,
    pub env: CompositeOperationEnv,
    pub parent_request_id: Option<Arc<str>>,
    pub remote: SocketAddr,
    pub(crate) session_overlay: Option<Arc<dyn OperationEnv>>,
    pub(crate) connection_overlay: Arc<dyn OperationEnv>,
    pub node: Arc<CallNode>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("request_id", &self.request_id)
            .field("operation_id", &self.operation_id)
            .field("identity", &self.identity)
            .field("internal", &self.internal)
            .field("parent_request_id", &self.parent_request_id)
            .finish_non_exhaustive()
    }
}

/// The parts of a root context that come from the request and its connection.
pub(crate) struct RootRequest {
    pub request_id: Arc<str>,
    pub identity: Option<Identity>,
    pub connection_identity: Option<Identity>,
    pub forwarded_for: Option<Value>,
    /// The request's own timeout, honoured only when shorter than the default.
    pub timeout: Option<Duration>,
    pub remote: SocketAddr,
    pub connection_overlay: Arc<dyn OperationEnv>,
}

/// Composes the environment of a root call (spec 000 `compose_root_env`).
pub(crate) fn compose_root_env(
    node: &CallNode,
    op: &Operation,
    session: Option<Arc<dyn OperationEnv>>,
    connection: Arc<dyn OperationEnv>,
) -> CompositeOperationEnv {
    CompositeOperationEnv::new(node.base_layer(op), session, connection)
}

/// The root context of a call from the wire (spec 000 `build_root_context`).
pub(crate) fn build_root_context(
    node: &Arc<CallNode>,
    op: &Operation,
    req: RootRequest,
    now: Instant,
) -> CallContext {
    let default = node.limits.default_timeout();
    let timeout = req.timeout.map_or(default, |t| t.min(default));
    let session = node
        .session_source
        .as_ref()
        .and_then(|s| s.overlay_for(req.identity.as_ref(), &op.id));
    CallContext {
        request_id: req.request_id,
        operation_id: op.id.clone(),
        identity: req.identity,
        connection_identity: req.connection_identity,
        forwarded_for: req.forwarded_for,
        internal: false,
        deadline: now + timeout,
        capabilities: op.capabilities.clone(),
        scoped_env: op.scoped_env.clone(),
        env: compose_root_env(node, op, session.clone(), req.connection_overlay.clone()),
        parent_request_id: None,
        remote: req.remote,
        session_overlay: session,
        connection_overlay: req.connection_overlay,
        node: node.clone(),
    }
}

impl CallContext {
    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    pub fn has_capability(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }

    /// Publishes on a node topic; returns how many subscribers got it.
    pub fn publish(&self, topic: &str, data: Value) -> usize {
        self.node.bus.publish(topic, data)
    }

    /// Calls another operation of this node from inside an operation, internal ones
    /// included. The callee runs in this task under a child context (`internal: true`,
    /// same identity and deadline, `parent_request_id` = this request) and its own
    /// registration's capabilities and scoped environment. Operation code is trusted, so
    /// no ACL check applies here; its input and output schemas still do.
    pub async fn call_internal(
        &self,
        operation_id: &str,
        input: Value,
    ) -> Result<Value, CallError> {
        let node = self.node.clone();
        let reg = node
            .registry
            .lookup(operation_id)
            .ok_or_else(|| CallError::not_found(format!("unknown operation {operation_id:?}")))?;
        let OperationHandler::Unary(f) = &reg.op.handler else {
            return Err(CallError::invalid_argument(format!(
                "{operation_id} streams its result; call it from the wire"
            )));
        };
        reg.check_input(&input)?;
        let child = CallContext {
            request_id: self.request_id.clone(),
            operation_id: reg.op.id.clone(),
            internal: true,
            capabilities: reg.op.capabilities.clone(),
            scoped_env: reg.op.scoped_env.clone(),
            env: compose_root_env(
                &node,
                &reg.op,
                self.session_overlay.clone(),
                self.connection_overlay.clone(),
            ),
            parent_request_id: Some(self.request_id.clone()),
            ..self.clone()
        };
        let out = f(child, input).await?;
        reg.check_output(&out)?;
        Ok(out)
    }
}

/// Where a streaming operation sends its items: `call.stream.item` frames on the caller's
/// stream, or another front end's outlet (HTTP's Server-Sent Events). Sending waits while
/// the peer is slow to read.
pub struct ItemSink {
    pub(crate) out: SinkOut,
    pub(crate) seq: u64,
}

pub(crate) enum SinkOut {
    Wire { writer: StreamWriter, id: Arc<str> },
    Outlet(Box<dyn ItemOutlet>),
}

impl ItemSink {
    /// Sends one item; fails with `UNAVAILABLE` once the caller's stream is gone.
    pub async fn send(&mut self, item: Value) -> Result<(), CallError> {
        let seq = self.seq;
        self.seq += 1;
        let closed = || CallError::unavailable("the caller's stream is closed");
        match &mut self.out {
            SinkOut::Wire { writer, id } => {
                let env = EventEnvelope::new(
                    EventType::StreamItem,
                    Some(id.to_string()),
                    json!({ "seq": seq, "item": item }),
                );
                writer.send_envelope(&env).await.map_err(|_| closed())
            }
            SinkOut::Outlet(outlet) => outlet.send(item).await.map_err(|_| closed()),
        }
    }

    /// Items sent so far.
    pub fn sent(&self) -> u64 {
        self.seq
    }
}
