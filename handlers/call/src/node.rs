//! What all connections of the call handler share: operations, topics, limits, the base
//! environment, and counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use alknet_proto::call::ErrorCode;
use serde_json::{json, Value};

use rustc_hash::FxHashMap;

use crate::env::{OperationEnv, SessionOverlaySource};
use crate::limits::CallLimits;
use crate::pubsub::TopicBus;
use crate::registry::{Operation, OperationRegistry};

/// Facts about the node that `node.info` reports.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub version: String,
    pub workers: usize,
    pub alpns: Vec<String>,
    pub started: Instant,
}

impl Default for NodeInfo {
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_string(),
            workers: 0,
            alpns: vec![String::from_utf8_lossy(crate::ALPN).into_owned()],
            started: Instant::now(),
        }
    }
}

/// Counters of the call handler, across workers.
#[derive(Debug, Default)]
pub struct CallStats {
    pub connections: AtomicU64,
    pub active_connections: AtomicU64,
    pub requests: AtomicU64,
    pub responses: AtomicU64,
    errors: [AtomicU64; 7],
    pub stream_framing_errors: AtomicU64,
    pub subscriptions: AtomicU64,
    pub swept: AtomicU64,
    pub failed_on_close: AtomicU64,
}

impl CallStats {
    pub fn error(&self, code: ErrorCode) {
        let i = ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn errors(&self, code: ErrorCode) -> u64 {
        let i = ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
        self.errors[i].load(Ordering::Relaxed)
    }

    pub fn to_json(&self) -> Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let errors: serde_json::Map<String, Value> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str().to_string(), json!(self.errors(*c))))
            .collect();
        json!({
            "connections": load(&self.connections),
            "active_connections": load(&self.active_connections),
            "requests": load(&self.requests),
            "responses": load(&self.responses),
            "errors": errors,
            "stream_framing_errors": load(&self.stream_framing_errors),
            "subscriptions": load(&self.subscriptions),
            "swept": load(&self.swept),
            "failed_on_close": load(&self.failed_on_close),
        })
    }
}

/// Shared state of one node's call service.
pub struct CallNode {
    pub registry: Arc<OperationRegistry>,
    pub bus: Arc<TopicBus>,
    pub limits: CallLimits,
    pub info: NodeInfo,
    /// Layer 0 variables every operation sees.
    pub base_env: BTreeMap<String, String>,
    pub session_source: Option<Arc<dyn SessionOverlaySource>>,
    /// Shared with the nodes [`CallNode::reconfigured`] makes from this one, so a reload
    /// does not reset the counters.
    pub stats: Arc<CallStats>,
    /// Layer 0 of each operation (node base under its scoped env), built on first use:
    /// the builders that change `base_env` run before the node is shared.
    pub(crate) base_layers: OnceLock<FxHashMap<String, Arc<dyn OperationEnv>>>,
}

/// A copy shares the registry and the topic bus; its counters start at zero.
impl Clone for CallNode {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            bus: self.bus.clone(),
            limits: self.limits.clone(),
            info: self.info.clone(),
            base_env: self.base_env.clone(),
            session_source: self.session_source.clone(),
            stats: Arc::default(),
            base_layers: OnceLock::new(),
        }
    }
}

impl CallNode {
    /// The node a live reload serves new connections with: `limits` and `info` replace
    /// this node's; the operations, the topic bus (subscribers on connections still served
    /// by this node get events published through the new one, and the other way round),
    /// the environment and the counters are shared.
    pub fn reconfigured(&self, limits: CallLimits, info: NodeInfo) -> Self {
        Self {
            registry: self.registry.clone(),
            bus: self.bus.clone(),
            limits,
            info,
            base_env: self.base_env.clone(),
            session_source: self.session_source.clone(),
            stats: self.stats.clone(),
            base_layers: OnceLock::new(),
        }
    }

    /// Layer 0 of the environment of `op`: the node's base variables under the
    /// operation's own scoped variables.
    pub(crate) fn base_layer(&self, op: &Operation) -> Arc<dyn OperationEnv> {
        let layers = self.base_layers.get_or_init(|| {
            self.registry
                .operations()
                .map(|o| {
                    let mut env = self.base_env.clone();
                    env.extend(o.scoped_env.iter().map(|(k, v)| (k.clone(), v.clone())));
                    (o.id.clone(), Arc::new(env) as Arc<dyn OperationEnv>)
                })
                .collect()
        });
        match layers.get(&op.id) {
            Some(l) => l.clone(),
            None => {
                // not from this registry (cannot happen through the handler): build it
                let mut env = self.base_env.clone();
                env.extend(op.scoped_env.iter().map(|(k, v)| (k.clone(), v.clone())));
                Arc::new(env)
            }
        }
    }

    /// Publishes on a topic from the node itself (not from an operation).
    pub fn publish(&self, topic: &str, data: Value) -> usize {
        self.bus.publish(topic, data)
    }
}
