//! The environment an operation sees, in layers (spec 000):
//!
//! - layer 0, the curated base: the node's base variables plus the operation's own
//!   `scoped_env` from its registration;
//! - layer 1, optional, a session overlay from a [`SessionOverlaySource`] (for example an
//!   agent runtime keeping per-identity state);
//! - layer 2, the connection overlay: what the engine knows about this caller.
//!
//! A higher layer overrides a lower one key by key; listing aggregates all layers.

use std::collections::BTreeMap;
use std::sync::Arc;

use alknet_runtime::Identity;

/// A read-only set of variables.
pub trait OperationEnv: Send + Sync {
    fn get(&self, key: &str) -> Option<String>;
    /// Every variable of this layer.
    fn vars(&self) -> BTreeMap<String, String>;
}

impl OperationEnv for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        BTreeMap::get(self, key).cloned()
    }
    fn vars(&self) -> BTreeMap<String, String> {
        self.clone()
    }
}

/// Supplies layer 1 for a caller, if it has one.
pub trait SessionOverlaySource: Send + Sync + 'static {
    fn overlay_for(
        &self,
        identity: Option<&Identity>,
        operation_id: &str,
    ) -> Option<Arc<dyn OperationEnv>>;
}

/// Which layer a set of variables came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EnvLayer {
    Base = 0,
    Session = 1,
    Connection = 2,
}

/// Layers looked up from the highest down. Built per request, so it holds the layers
/// directly (no allocation beyond what the layers themselves share).
#[derive(Clone)]
pub struct CompositeOperationEnv {
    base: Arc<dyn OperationEnv>,
    session: Option<Arc<dyn OperationEnv>>,
    connection: Arc<dyn OperationEnv>,
}

impl std::fmt::Debug for CompositeOperationEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompositeOperationEnv")
            .field("layers", &self.layers())
            .finish()
    }
}

impl CompositeOperationEnv {
    /// Builds the three layers; `session` may be absent.
    pub fn new(
        base: Arc<dyn OperationEnv>,
        session: Option<Arc<dyn OperationEnv>>,
        connection: Arc<dyn OperationEnv>,
    ) -> Self {
        Self {
            base,
            session,
            connection,
        }
    }

    fn each(&self) -> impl DoubleEndedIterator<Item = (EnvLayer, &Arc<dyn OperationEnv>)> {
        [
            Some((EnvLayer::Base, &self.base)),
            self.session.as_ref().map(|s| (EnvLayer::Session, s)),
            Some((EnvLayer::Connection, &self.connection)),
        ]
        .into_iter()
        .flatten()
    }

    /// The layers present, lowest first.
    pub fn layers(&self) -> Vec<EnvLayer> {
        self.each().map(|l| l.0).collect()
    }

    /// The value from the highest layer that has `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.each().rev().find_map(|(_, l)| l.get(key))
    }

    /// All variables, higher layers overriding lower ones.
    pub fn vars(&self) -> BTreeMap<String, String> {
        let mut all = BTreeMap::new();
        for (_, l) in self.each() {
            all.extend(l.vars());
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(pairs: &[(&str, &str)]) -> Arc<dyn OperationEnv> {
        Arc::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn layers_aggregate_and_higher_layers_win() {
        let env = CompositeOperationEnv::new(
            layer(&[("A", "base"), ("B", "base")]),
            None,
            layer(&[("B", "conn"), ("C", "conn")]),
        );
        assert_eq!(env.layers(), vec![EnvLayer::Base, EnvLayer::Connection]);
        assert_eq!(env.get("A").as_deref(), Some("base"));
        assert_eq!(env.get("B").as_deref(), Some("conn"));
        assert_eq!(env.get("Z"), None);
        assert_eq!(env.vars().len(), 3);
    }

    #[test]
    fn session_overlay_sits_between_base_and_connection() {
        let env = CompositeOperationEnv::new(
            layer(&[("A", "base"), ("S", "base")]),
            Some(layer(&[
                ("A", "session"),
                ("S", "session"),
                ("X", "session"),
            ])),
            layer(&[("S", "conn")]),
        );
        assert_eq!(
            env.layers(),
            vec![EnvLayer::Base, EnvLayer::Session, EnvLayer::Connection]
        );
        assert_eq!(env.get("A").as_deref(), Some("session"));
        assert_eq!(env.get("S").as_deref(), Some("conn"));
        assert_eq!(env.get("X").as_deref(), Some("session"));
        assert_eq!(env.vars().len(), 3);
    }
}
