//! Operations every node serves, so a fresh server does something useful.

use serde_json::json;

use crate::error::CallError;
use crate::registry::{Operation, OperationRegistry, OperationRegistryError, Topic};

/// Scope of the node administration operations (`node.stats`, `node.publish`).
pub const ADMIN_SCOPE: &str = "node:admin";
/// Topic published by `node.publish` by default, and open to subscribers with
/// `subscribe:node.events`.
pub const NODE_EVENTS_TOPIC: &str = "node.events";
/// Largest `count` `echo.stream` accepts.
pub const ECHO_STREAM_MAX_ITEMS: u64 = 100_000;

/// The built-in operations and topics.
pub fn builtin_operations() -> (Vec<Operation>, Vec<Topic>) {
    let ops = vec![
        Operation::unary("node.info", |ctx, _| async move {
            let info = &ctx.node.info;
            Ok(json!({
                "name": "alknet",
                "version": info.version,
                "uptime_ms": info.started.elapsed().as_millis() as u64,
                "workers": info.workers,
                "alpns": info.alpns,
            }))
        })
        .public()
        .describe("Version, uptime, worker count and served ALPNs of this node")
        .output_schema(json!({
            "type": "object",
            "required": ["version", "uptime_ms", "workers", "alpns"],
            "properties": {
                "version": {"type": "string"},
                "uptime_ms": {"type": "integer", "minimum": 0},
                "workers": {"type": "integer", "minimum": 0},
                "alpns": {"type": "array", "items": {"type": "string"}}
            }
        })),
        Operation::unary("node.health", |_, _| async { Ok(json!({"status": "ok"})) })
            .public()
            .describe("Liveness: answers {\"status\": \"ok\"}"),
        Operation::unary("node.stats", |ctx, _| async move {
            let (published, dropped) = ctx.node.bus.counters();
            let mut stats = ctx.node.stats.to_json();
            stats["events_published"] = json!(published);
            stats["slow_subscribers_dropped"] = json!(dropped);
            Ok(stats)
        })
        .scopes([ADMIN_SCOPE])
        .describe("Call handler counters (requests, errors by code, connections, subscriptions)"),
        Operation::unary("node.publish", |ctx, input| async move {
            let topic = input["topic"]
                .as_str()
                .unwrap_or(NODE_EVENTS_TOPIC)
                .to_string();
            if ctx.node.registry.topic(&topic).is_none() {
                return Err(CallError::not_found(format!("unknown topic {topic:?}")));
            }
            let delivered = ctx.publish(&topic, input["data"].clone());
            Ok(json!({ "delivered": delivered }))
        })
        .scopes([ADMIN_SCOPE])
        .capability("publish")
        .describe("Publishes `data` on `topic` (default node.events)")
        .input_schema(json!({
            "type": "object",
            "required": ["data"],
            "properties": {"topic": {"type": "string"}, "data": {}}
        })),
        Operation::unary("echo", |_, input| async move { Ok(input) })
            .public()
            .describe("Returns its input; the request/response benchmark operation"),
        Operation::streaming("echo.stream", |_, input, mut sink| async move {
            let count = input["count"].as_u64().unwrap_or(0);
            for _ in 0..count {
                sink.send(input["item"].clone()).await?;
            }
            Ok(())
        })
        .public()
        .describe("Streams `item` back `count` times")
        .input_schema(json!({
            "type": "object",
            "required": ["count"],
            "properties": {
                "count": {"type": "integer", "minimum": 0, "maximum": ECHO_STREAM_MAX_ITEMS},
                "item": {}
            }
        })),
        Operation::unary("schema.list", |ctx, _| async move {
            Ok(json!({
                "operations": ctx.node.registry.public_descriptors(),
                "topics": ctx.node.registry.topic_descriptors(),
            }))
        })
        .public()
        .describe("The operations callable from the wire, with their schemas, and the topics"),
        Operation::unary("schema.get", |ctx, input| async move {
            let id = input["operationId"].as_str().unwrap_or_default();
            match ctx.node.registry.lookup(id) {
                Some(r) if !r.op.internal => Ok(r.op.descriptor()),
                _ => Err(CallError::not_found(format!("unknown operation {id:?}"))),
            }
        })
        .public()
        .describe("One operation's descriptor")
        .input_schema(json!({
            "type": "object",
            "required": ["operationId"],
            "properties": {"operationId": {"type": "string"}}
        })),
    ];
    let topics = vec![Topic::new(NODE_EVENTS_TOPIC).describe("Events published with node.publish")];
    (ops, topics)
}

/// A registry holding the built-ins; add your own operations to it.
pub fn default_registry() -> Result<OperationRegistry, OperationRegistryError> {
    let mut r = OperationRegistry::new();
    let (ops, topics) = builtin_operations();
    for op in ops {
        r.register(op)?;
    }
    for t in topics {
        r.register_topic(t)?;
    }
    Ok(r)
}
