//! The call node as an [`OperationInvoker`]: how other front ends (HTTP) run operations
//! with the same ACL, schemas, deadline, panic isolation and counters as the wire.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use alknet_runtime::rt::catch_panic;
use alknet_runtime::{
    AccessControl, Identity, LocalBoxFuture, OperationFailure, OperationInfo, OperationInvoker,
    OperationStats, Requirement,
};
use serde_json::Value;

use crate::context::{build_root_context, RootRequest};
use crate::error::CallError;
use crate::node::CallNode;
use crate::registry::OperationHandler;
use crate::session::settle;

/// Request ids of calls from other front ends: `ext-N`, unique per process.
static NEXT_EXTERNAL_ID: AtomicU64 = AtomicU64::new(1);

fn failure(e: CallError) -> OperationFailure {
    OperationFailure {
        code: e.code,
        message: e.message,
    }
}

/// Wraps a shared call node (the one the `alknet/call` handler serves).
pub struct NodeInvoker(pub Arc<CallNode>);

impl OperationInvoker for NodeInvoker {
    fn operations(&self, caller: Option<&Identity>) -> Vec<OperationInfo> {
        self.0
            .registry
            .operations()
            .filter(|op| !op.internal)
            .filter(|op| AccessControl::check(caller, &op.id, &op.access).is_ok())
            .map(|op| OperationInfo {
                id: op.id.clone(),
                description: op.description.clone(),
                input_schema: op.input_schema.clone(),
                output_schema: op.output_schema.clone(),
                streaming: op.is_streaming(),
                public: op.access == Requirement::Public,
            })
            .collect()
    }

    fn stats(&self) -> OperationStats {
        let s = &self.0.stats;
        OperationStats {
            requests: s.requests.load(Ordering::Relaxed),
            responses: s.responses.load(Ordering::Relaxed),
            errors: alknet_proto::call::ErrorCode::ALL
                .iter()
                .map(|c| (*c, s.errors(*c)))
                .collect(),
        }
    }

    fn invoke(
        &self,
        caller: Option<Identity>,
        remote: SocketAddr,
        operation: &str,
        input: Value,
    ) -> LocalBoxFuture<'static, Result<Value, OperationFailure>> {
        let node = self.0.clone();
        let operation = operation.to_string();
        Box::pin(async move {
            node.stats.requests.fetch_add(1, Ordering::Relaxed);
            let result = run(&node, caller, remote, &operation, input).await;
            match &result {
                Ok(_) => {
                    node.stats.responses.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => node.stats.error(e.code),
            }
            result.map_err(failure)
        })
    }
}

async fn run(
    node: &Arc<CallNode>,
    caller: Option<Identity>,
    remote: SocketAddr,
    operation: &str,
    input: Value,
) -> Result<Value, CallError> {
    let reg = node
        .registry
        .lookup(operation)
        .filter(|r| !r.op.internal)
        .ok_or_else(|| CallError::not_found(format!("unknown operation {operation:?}")))?;
    if let Err(denied) = AccessControl::check(caller.as_ref(), &reg.op.id, &reg.op.access) {
        return Err(match caller {
            None => CallError::unauthenticated(denied.to_string()),
            Some(_) => CallError::forbidden(denied.to_string()),
        });
    }
    let OperationHandler::Unary(f) = &reg.op.handler else {
        return Err(CallError::invalid_argument(format!(
            "{operation} streams its result; call it over alknet/call"
        )));
    };
    reg.check_input(&input)?;
    let mut overlay = BTreeMap::new();
    overlay.insert("ALKNET_PEER_ADDR".to_string(), remote.to_string());
    if let Some(id) = &caller {
        overlay.insert("ALKNET_IDENTITY".to_string(), id.name.clone());
    }
    let id = NEXT_EXTERNAL_ID.fetch_add(1, Ordering::Relaxed);
    let ctx = build_root_context(
        node,
        &reg.op,
        RootRequest {
            request_id: format!("ext-{id}").into(),
            identity: caller.clone(),
            connection_identity: caller,
            forwarded_for: None,
            timeout: None,
            remote,
            connection_overlay: Arc::new(overlay),
        },
        Instant::now(),
    );
    let remaining = ctx.remaining();
    let outcome = monoio::time::timeout(remaining, catch_panic(f(ctx, input))).await;
    let value = settle(&reg.op.id, outcome)?;
    reg.check_output(&value)?;
    Ok(value)
}
