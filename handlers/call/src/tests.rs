//! Unit tests of the adapter pieces that need no connection (spec 000's list); the
//! round trips over real QUIC are in `tests/tests/call.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alknet_runtime::{
    AuthContext, ConfigIdentityProvider, Identity, IdentityEntry, ProtocolHandler,
};
use serde_json::json;

use crate::context::{build_root_context, RootRequest};
use crate::env::{EnvLayer, OperationEnv, SessionOverlaySource};
use crate::*;

fn provider() -> Arc<ConfigIdentityProvider> {
    Arc::new(
        ConfigIdentityProvider::new(&[IdentityEntry {
            name: "tok".into(),
            fingerprints: vec![],
            tokens: vec!["good-token".into()],
            scopes: vec!["call:x".into()],
        }])
        .expect("identities"),
    )
}

fn auth(identity: Option<Identity>) -> AuthContext {
    AuthContext {
        remote: "127.0.0.1:9".parse().expect("addr"),
        local: None,
        alpn: ALPN.to_vec(),
        peer_fingerprint: None,
        identity,
        provider: provider(),
    }
}

fn conn_identity() -> Identity {
    Identity {
        name: "conn".into(),
        scopes: vec!["a".into()],
    }
}

#[test]
fn alpn_is_alknet_call() {
    let a = CallAdapter::new(OperationRegistry::new());
    assert_eq!(a.alpn(), b"alknet/call");
    assert_eq!(ALPN, b"alknet/call");
}

#[test]
fn constructors_set_timeout_and_session_source() {
    let a = CallAdapter::new(OperationRegistry::new());
    assert_eq!(a.default_timeout(), Duration::from_secs(30));
    assert!(a.node().session_source.is_none());
    let a = CallAdapter::new(OperationRegistry::new())
        .with_timeout(Duration::from_millis(1500))
        .with_session_source(Arc::new(Overlay));
    assert_eq!(a.default_timeout(), Duration::from_millis(1500));
    assert!(a.node().session_source.is_some());
}

#[test]
fn token_overrides_and_failed_token_falls_back() {
    let a = auth(Some(conn_identity()));
    assert_eq!(
        resolve_identity(&a, None).map(|i| i.name),
        Some("conn".into())
    );
    assert_eq!(
        resolve_identity(&a, Some("good-token")).map(|i| i.name),
        Some("tok".into())
    );
    assert_eq!(
        resolve_identity(&a, Some("bad-token")).map(|i| i.name),
        Some("conn".into()),
        "an unresolvable token falls back to the connection identity"
    );
    let anon = auth(None);
    assert_eq!(resolve_identity(&anon, Some("bad-token")), None);
    assert_eq!(
        resolve_identity(&anon, Some("good-token")).map(|i| i.name),
        Some("tok".into())
    );
}

struct Overlay;

impl SessionOverlaySource for Overlay {
    fn overlay_for(&self, identity: Option<&Identity>, op: &str) -> Option<Arc<dyn OperationEnv>> {
        let name = identity?.name.clone();
        let mut m = BTreeMap::new();
        m.insert("SESSION".to_string(), format!("{name}:{op}"));
        m.insert("SHARED".to_string(), "session".to_string());
        Some(Arc::new(m))
    }
}

fn root_request(identity: Option<Identity>, timeout: Option<Duration>) -> RootRequest {
    let mut conn = BTreeMap::new();
    conn.insert("ALKNET_PEER_ADDR".to_string(), "127.0.0.1:9".to_string());
    conn.insert("SHARED".to_string(), "connection".to_string());
    RootRequest {
        request_id: Arc::from("r1"),
        identity,
        connection_identity: Some(conn_identity()),
        forwarded_for: Some(json!({"user": "carol"})),
        timeout,
        remote: "127.0.0.1:9".parse().expect("addr"),
        connection_overlay: Arc::new(conn),
    }
}

#[test]
fn root_context_fields() {
    let mut reg = OperationRegistry::new();
    reg.register(
        Operation::unary("op", |_, v| async move { Ok(v) })
            .capability("publish")
            .env("SCOPED", "yes")
            .env("SHARED", "base"),
    )
    .expect("register");
    let mut base = BTreeMap::new();
    base.insert("NODE".to_string(), "n1".to_string());
    let adapter = CallAdapter::new(reg).with_base_env(base);
    let node = adapter.node();
    let op = &node.registry.lookup("op").expect("op").op;
    let now = Instant::now();

    let ctx = build_root_context(&node, op, root_request(Some(conn_identity()), None), now);
    assert!(!ctx.internal);
    assert_eq!(ctx.parent_request_id, None);
    assert_eq!(ctx.deadline, now + Duration::from_secs(30));
    assert_eq!(ctx.capabilities, vec!["publish".to_string()]);
    assert!(ctx.has_capability("publish"));
    assert_eq!(
        ctx.scoped_env.get("SCOPED").map(String::as_str),
        Some("yes")
    );
    assert_eq!(ctx.forwarded_for, Some(json!({"user": "carol"})));
    // layers: base (node + scoped), connection; no session source configured
    assert_eq!(ctx.env.layers(), vec![EnvLayer::Base, EnvLayer::Connection]);
    assert_eq!(ctx.env.get("NODE").as_deref(), Some("n1"));
    assert_eq!(ctx.env.get("SCOPED").as_deref(), Some("yes"));
    assert_eq!(ctx.env.get("SHARED").as_deref(), Some("connection"));

    // a shorter requested timeout is honoured, a longer one is not
    let short = build_root_context(
        &node,
        op,
        root_request(None, Some(Duration::from_secs(2))),
        now,
    );
    assert_eq!(short.deadline, now + Duration::from_secs(2));
    let long = build_root_context(
        &node,
        op,
        root_request(None, Some(Duration::from_secs(99))),
        now,
    );
    assert_eq!(long.deadline, now + Duration::from_secs(30));
}

#[test]
fn session_overlay_joins_the_environment() {
    let mut reg = OperationRegistry::new();
    reg.register(Operation::unary("op", |_, v| async move { Ok(v) }).env("SHARED", "base"))
        .expect("register");
    let adapter = CallAdapter::new(reg).with_session_source(Arc::new(Overlay));
    let node = adapter.node();
    let op = &node.registry.lookup("op").expect("op").op;
    let ctx = build_root_context(
        &node,
        op,
        root_request(Some(conn_identity()), None),
        Instant::now(),
    );
    assert_eq!(
        ctx.env.layers(),
        vec![EnvLayer::Base, EnvLayer::Session, EnvLayer::Connection]
    );
    assert_eq!(ctx.env.get("SESSION").as_deref(), Some("conn:op"));
    assert_eq!(ctx.env.get("SHARED").as_deref(), Some("connection"));
    let vars = ctx.env.vars();
    assert!(vars.contains_key("SESSION") && vars.contains_key("ALKNET_PEER_ADDR"));
    // anonymous callers get no session overlay from this source
    let anon = build_root_context(&node, op, root_request(None, None), Instant::now());
    assert_eq!(
        anon.env.layers(),
        vec![EnvLayer::Base, EnvLayer::Connection]
    );
}

#[test]
fn builtins_register_and_list() {
    let reg = default_registry().expect("builtins");
    for id in [
        "node.info",
        "node.health",
        "node.stats",
        "echo",
        "echo.stream",
        "schema.list",
        "schema.get",
    ] {
        assert!(reg.lookup(id).is_some(), "{id}");
    }
    assert!(reg.topic(NODE_EVENTS_TOPIC).is_some());
    assert_eq!(
        reg.lookup("node.stats").expect("stats").op.access,
        alknet_runtime::Requirement::Scopes(vec![ADMIN_SCOPE.into()])
    );
}
