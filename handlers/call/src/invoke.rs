//! The call node as an [`OperationInvoker`]: how other front ends (HTTP) run operations
//! with the same ACL, schemas, deadline, panic isolation and counters as the wire.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use alknet_runtime::rt::catch_panic;
use alknet_runtime::{
    AccessControl, Identity, ItemOutlet, LocalBoxFuture, OperationFailure, OperationInfo,
    OperationInvoker, OperationStats, Requirement, TopicDelivery, TopicSubscription,
};
use serde_json::Value;

use crate::context::{build_root_context, ItemSink, RootRequest, SinkOut};
use crate::error::CallError;
use crate::node::CallNode;
use crate::pubsub::{Delivery, Subscription};
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
            let result = counted(&node, run(&node, caller, remote, &operation, input, None)).await;
            result.map(|v| v.unwrap_or(Value::Null)).map_err(failure)
        })
    }

    fn streams(&self, operation: &str) -> Option<bool> {
        self.0
            .registry
            .lookup(operation)
            .filter(|r| !r.op.internal)
            .map(|r| r.op.is_streaming())
    }

    fn invoke_stream(
        &self,
        caller: Option<Identity>,
        remote: SocketAddr,
        operation: &str,
        input: Value,
        items: Box<dyn ItemOutlet>,
    ) -> LocalBoxFuture<'static, Result<(), OperationFailure>> {
        let node = self.0.clone();
        let operation = operation.to_string();
        Box::pin(async move {
            let run = run(&node, caller, remote, &operation, input, Some(items));
            counted(&node, run).await.map(|_| ()).map_err(failure)
        })
    }

    fn subscribe(
        &self,
        caller: Option<&Identity>,
        topic: &str,
        capacity: usize,
    ) -> Result<Box<dyn TopicSubscription>, OperationFailure> {
        let node = &self.0;
        let spec = node
            .registry
            .topic(topic)
            .ok_or_else(|| failure(CallError::not_found(format!("unknown topic {topic:?}"))))?;
        AccessControl::check(caller, &spec.name, &spec.access)
            .map_err(|denied| failure(denial(caller.is_some(), denied)))?;
        let sub = node.bus.subscribe(topic, capacity);
        node.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(BusSubscription(sub)))
    }
}

/// A topic-bus subscription as another front end holds it.
struct BusSubscription(Subscription);

impl TopicSubscription for BusSubscription {
    fn next(&mut self) -> LocalBoxFuture<'_, TopicDelivery> {
        Box::pin(async move {
            match self.0.queue.next().await {
                Delivery::Event(e) => TopicDelivery::Event {
                    seq: e.seq,
                    data: e.data,
                },
                Delivery::TooSlow { capacity } => TopicDelivery::Lagged { capacity },
                Delivery::Closed => TopicDelivery::Closed,
            }
        })
    }
}

fn denial(identified: bool, denied: alknet_runtime::AccessDenied) -> CallError {
    if identified {
        CallError::forbidden(denied.to_string())
    } else {
        CallError::unauthenticated(denied.to_string())
    }
}

/// Counts a call from another front end as the wire counts its requests.
async fn counted<T>(
    node: &CallNode,
    run: impl std::future::Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    node.stats.requests.fetch_add(1, Ordering::Relaxed);
    let result = run.await;
    match &result {
        Ok(_) => {
            node.stats.responses.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => node.stats.error(e.code),
    }
    result
}

/// Runs `operation` as `caller`: a unary one when `items` is `None` (its output), a
/// streaming one into `items` (`None` when it ends well). The other kind is refused.
async fn run(
    node: &Arc<CallNode>,
    caller: Option<Identity>,
    remote: SocketAddr,
    operation: &str,
    input: Value,
    items: Option<Box<dyn ItemOutlet>>,
) -> Result<Option<Value>, CallError> {
    let reg = node
        .registry
        .lookup(operation)
        .filter(|r| !r.op.internal)
        .ok_or_else(|| CallError::not_found(format!("unknown operation {operation:?}")))?;
    if let Err(denied) = AccessControl::check(caller.as_ref(), &reg.op.id, &reg.op.access) {
        return Err(denial(caller.is_some(), denied));
    }
    match (&reg.op.handler, items.is_some()) {
        (OperationHandler::Unary(_), true) => {
            return Err(CallError::invalid_argument(format!(
                "{operation} answers with one result, not a stream"
            )))
        }
        (OperationHandler::Stream(_), false) => {
            return Err(CallError::invalid_argument(format!(
                "{operation} streams its result; ask for a stream"
            )))
        }
        _ => {}
    }
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
    match (&reg.op.handler, items) {
        (OperationHandler::Unary(f), None) => {
            let outcome = monoio::time::timeout(remaining, catch_panic(f(ctx, input))).await;
            let value = settle(&reg.op.id, outcome)?;
            reg.check_output(&value)?;
            Ok(Some(value))
        }
        (OperationHandler::Stream(f), Some(items)) => {
            let sink = ItemSink {
                out: SinkOut::Outlet(items),
                seq: 0,
            };
            let outcome = monoio::time::timeout(remaining, catch_panic(f(ctx, input, sink))).await;
            settle(&reg.op.id, outcome)?;
            Ok(None)
        }
        // checked above
        _ => Err(CallError::internal("operation kind changed")),
    }
}
