//! Operations and topics a node serves, by id, with their schemas and access rules.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use alknet_runtime::{LocalBoxFuture, Requirement};
use rustc_hash::FxHashMap;
use serde_json::{json, Value};

use crate::context::{CallContext, ItemSink};
use crate::error::CallError;

/// A request/response operation body.
pub type UnaryFn =
    dyn Fn(CallContext, Value) -> LocalBoxFuture<'static, Result<Value, CallError>> + Send + Sync;
/// A streaming operation body: items go to the sink, the result ends the stream.
pub type StreamFn = dyn Fn(CallContext, Value, ItemSink) -> LocalBoxFuture<'static, Result<(), CallError>>
    + Send
    + Sync;

#[derive(Clone)]
pub enum OperationHandler {
    Unary(Arc<UnaryFn>),
    Stream(Arc<StreamFn>),
}

/// One operation: its registration bundle and its body.
///
/// Access is denied by default: an operation requires the scope `call:<id>` unless
/// registered with other [`scopes`](Operation::scopes) or made [`public`](Operation::public).
#[derive(Clone)]
pub struct Operation {
    pub id: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Value,
    /// Callable only from other operations (`CallContext::call_internal`), never from the
    /// wire, where it answers `NOT_FOUND` as if it did not exist.
    pub internal: bool,
    pub access: Requirement,
    /// Capabilities handed to the operation's context (what it may do, e.g. "publish").
    pub capabilities: Vec<String>,
    /// Variables of layer 0 that only this operation sees.
    pub scoped_env: Arc<BTreeMap<String, String>>,
    pub handler: OperationHandler,
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operation")
            .field("id", &self.id)
            .field("internal", &self.internal)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl Operation {
    fn with_handler(id: &str, handler: OperationHandler) -> Self {
        Self {
            id: id.to_string(),
            description: String::new(),
            input_schema: json!({}),
            output_schema: json!({}),
            internal: false,
            access: Requirement::Scopes(vec![format!("call:{id}")]),
            capabilities: Vec::new(),
            scoped_env: Arc::default(),
            handler,
        }
    }

    /// A request/response operation.
    pub fn unary<F, Fut>(id: &str, f: F) -> Self
    where
        F: Fn(CallContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, CallError>> + 'static,
    {
        Self::with_handler(
            id,
            OperationHandler::Unary(Arc::new(move |ctx, input| Box::pin(f(ctx, input)))),
        )
    }

    /// An operation that answers with a stream of items.
    pub fn streaming<F, Fut>(id: &str, f: F) -> Self
    where
        F: Fn(CallContext, Value, ItemSink) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallError>> + 'static,
    {
        Self::with_handler(
            id,
            OperationHandler::Stream(Arc::new(move |ctx, input, sink| {
                Box::pin(f(ctx, input, sink))
            })),
        )
    }

    pub fn describe(mut self, text: &str) -> Self {
        self.description = text.to_string();
        self
    }
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.input_schema = schema;
        self
    }
    pub fn output_schema(mut self, schema: Value) -> Self {
        self.output_schema = schema;
        self
    }
    pub fn internal(mut self) -> Self {
        self.internal = true;
        self
    }
    /// Callable by anyone, anonymous peers included.
    pub fn public(mut self) -> Self {
        self.access = Requirement::Public;
        self
    }
    /// Requires every one of `scopes` (replacing the default `call:<id>`).
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.access = Requirement::Scopes(scopes.into_iter().map(Into::into).collect());
        self
    }
    pub fn capability(mut self, cap: &str) -> Self {
        self.capabilities.push(cap.to_string());
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        Arc::make_mut(&mut self.scoped_env).insert(key.to_string(), value.to_string());
        self
    }

    pub fn is_streaming(&self) -> bool {
        matches!(self.handler, OperationHandler::Stream(_))
    }

    /// What `schema.list` / `schema.get` say about it.
    pub fn descriptor(&self) -> Value {
        json!({
            "operationId": self.id,
            "description": self.description,
            "streaming": self.is_streaming(),
            "input": self.input_schema,
            "output": self.output_schema,
            "access": access_json(&self.access),
        })
    }
}

fn access_json(access: &Requirement) -> Value {
    match access {
        Requirement::Public => json!("public"),
        Requirement::Scopes(s) => json!({ "scopes": s }),
    }
}

/// A pub/sub topic that clients may subscribe to. Publishing is server-side only.
#[derive(Debug, Clone)]
pub struct Topic {
    pub name: String,
    pub description: String,
    /// Default: the scope `subscribe:<name>`.
    pub access: Requirement,
}

impl Topic {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            description: String::new(),
            access: Requirement::Scopes(vec![format!("subscribe:{name}")]),
        }
    }
    pub fn describe(mut self, text: &str) -> Self {
        self.description = text.to_string();
        self
    }
    pub fn public(mut self) -> Self {
        self.access = Requirement::Public;
        self
    }
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.access = Requirement::Scopes(scopes.into_iter().map(Into::into).collect());
        self
    }
}

/// An operation with its compiled schemas.
pub struct RegisteredOperation {
    pub op: Operation,
    input: Option<jsonschema::Validator>,
    output: Option<jsonschema::Validator>,
}

impl RegisteredOperation {
    /// `INVALID_ARGUMENT` naming the first violation when `input` breaks the schema.
    pub fn check_input(&self, input: &Value) -> Result<(), CallError> {
        check(self.input.as_ref(), input)
            .map_err(|e| CallError::invalid_argument(format!("input: {e}")))
    }

    /// An output that breaks the declared schema is the operation's bug: `INTERNAL`.
    pub fn check_output(&self, output: &Value) -> Result<(), CallError> {
        check(self.output.as_ref(), output).map_err(|e| {
            tracing::error!(op = %self.op.id, "output does not match its schema: {e}");
            CallError::internal(format!("operation {} produced invalid output", self.op.id))
        })
    }
}

fn check(validator: Option<&jsonschema::Validator>, value: &Value) -> Result<(), String> {
    match validator {
        None => Ok(()),
        Some(v) => v.validate(value).map_err(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        }),
    }
}

/// Compiles a schema, or `None` for the schemas that accept everything (`{}`, `true`), so
/// they cost nothing per call.
fn compile(schema: &Value) -> Result<Option<jsonschema::Validator>, String> {
    if schema == &json!({}) || schema == &json!(true) {
        return Ok(None);
    }
    jsonschema::validator_for(schema)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Registration mistakes, reported at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperationRegistryError {
    #[error("operation {0:?} is registered twice")]
    DuplicateOperation(String),
    #[error("topic {0:?} is registered twice")]
    DuplicateTopic(String),
    #[error("operation id {0:?} must be non-empty and not start with '/'")]
    BadId(String),
    #[error("operation {id:?}: {which} schema: {reason}")]
    BadSchema {
        id: String,
        which: &'static str,
        reason: String,
    },
    #[error("{0:?} requires an empty scope list; use .public() to make it public")]
    EmptyScopes(String),
}

/// The operations and topics of a node. Built at start-up, then shared read-only by all
/// workers.
#[derive(Default)]
pub struct OperationRegistry {
    ops: FxHashMap<String, RegisteredOperation>,
    topics: FxHashMap<String, Topic>,
}

impl OperationRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, op: Operation) -> Result<(), OperationRegistryError> {
        if op.id.is_empty() || op.id.starts_with('/') {
            return Err(OperationRegistryError::BadId(op.id));
        }
        if self.ops.contains_key(&op.id) {
            return Err(OperationRegistryError::DuplicateOperation(op.id));
        }
        if op.access == Requirement::Scopes(Vec::new()) {
            return Err(OperationRegistryError::EmptyScopes(op.id));
        }
        let schema_err = |which, reason| OperationRegistryError::BadSchema {
            id: op.id.clone(),
            which,
            reason,
        };
        let input = compile(&op.input_schema).map_err(|r| schema_err("input", r))?;
        let output = compile(&op.output_schema).map_err(|r| schema_err("output", r))?;
        self.ops
            .insert(op.id.clone(), RegisteredOperation { op, input, output });
        Ok(())
    }

    pub fn register_topic(&mut self, topic: Topic) -> Result<(), OperationRegistryError> {
        if topic.access == Requirement::Scopes(Vec::new()) {
            return Err(OperationRegistryError::EmptyScopes(topic.name));
        }
        if self.topics.contains_key(&topic.name) {
            return Err(OperationRegistryError::DuplicateTopic(topic.name));
        }
        self.topics.insert(topic.name.clone(), topic);
        Ok(())
    }

    /// The operation named `id`, with one leading slash ignored (`/node.info` is
    /// `node.info`), internal ones included.
    pub fn lookup(&self, id: &str) -> Option<&RegisteredOperation> {
        self.ops.get(strip_slash(id))
    }

    /// Every operation, internal ones included, in no particular order.
    pub fn operations(&self) -> impl Iterator<Item = &Operation> {
        self.ops.values().map(|r| &r.op)
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Descriptors of the operations callable from the wire, sorted by id.
    pub fn public_descriptors(&self) -> Vec<Value> {
        let mut ops: Vec<&Operation> = self
            .ops
            .values()
            .map(|r| &r.op)
            .filter(|o| !o.internal)
            .collect();
        ops.sort_by(|a, b| a.id.cmp(&b.id));
        ops.into_iter().map(Operation::descriptor).collect()
    }

    /// Descriptors of the topics, sorted by name.
    pub fn topic_descriptors(&self) -> Vec<Value> {
        let mut topics: Vec<&Topic> = self.topics.values().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
            .into_iter()
            .map(|t| json!({"topic": t.name, "description": t.description, "access": access_json(&t.access)}))
            .collect()
    }
}

/// `operationId` as sent may carry a leading slash (path style); ids are stored without.
pub fn strip_slash(id: &str) -> &str {
    id.strip_prefix('/').unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(id: &str) -> Operation {
        Operation::unary(id, |_ctx, input| async move { Ok(input) })
    }

    #[test]
    fn slash_is_stripped_before_lookup() {
        let mut r = OperationRegistry::new();
        r.register(noop("a.b")).expect("register");
        assert!(r.lookup("a.b").is_some());
        assert!(r.lookup("/a.b").is_some());
        assert!(r.lookup("//a.b").is_none());
        assert!(r.lookup("a").is_none());
        assert_eq!(strip_slash("/x"), "x");
        assert_eq!(strip_slash("x"), "x");
    }

    #[test]
    fn registration_mistakes_are_refused() {
        let mut r = OperationRegistry::new();
        r.register(noop("a")).expect("register");
        assert!(matches!(
            r.register(noop("a")),
            Err(OperationRegistryError::DuplicateOperation(_))
        ));
        assert!(matches!(
            r.register(noop("/b")),
            Err(OperationRegistryError::BadId(_))
        ));
        assert!(matches!(
            r.register(noop("c").scopes(Vec::<String>::new())),
            Err(OperationRegistryError::EmptyScopes(_))
        ));
        assert!(matches!(
            r.register(noop("d").input_schema(json!({"type": 12}))),
            Err(OperationRegistryError::BadSchema { .. })
        ));
    }

    #[test]
    fn default_access_is_a_scope_named_after_the_operation() {
        let op = noop("x.y");
        assert_eq!(op.access, Requirement::Scopes(vec!["call:x.y".into()]));
        assert_eq!(noop("x").public().access, Requirement::Public);
    }

    #[test]
    fn schemas_are_enforced() {
        let mut r = OperationRegistry::new();
        r.register(
            noop("s")
                .input_schema(json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}))
                .output_schema(json!({"type": "string"})),
        )
        .expect("register");
        let op = r.lookup("s").expect("s");
        assert!(op.check_input(&json!({"n": 1})).is_ok());
        let e = op.check_input(&json!({"n": "one"})).expect_err("bad type");
        assert_eq!(e.code, alknet_proto::call::ErrorCode::InvalidArgument);
        assert!(e.message.contains("/n"), "{e}");
        assert!(op.check_input(&json!({})).is_err());
        assert!(op.check_output(&json!("ok")).is_ok());
        assert_eq!(
            op.check_output(&json!(1)).expect_err("bad output").code,
            alknet_proto::call::ErrorCode::Internal
        );
    }

    #[test]
    fn internal_operations_are_not_listed() {
        let mut r = OperationRegistry::new();
        r.register(noop("pub").public()).expect("register");
        r.register(noop("hidden").internal()).expect("register");
        let list = r.public_descriptors();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["operationId"], "pub");
        assert!(r.lookup("hidden").is_some(), "still callable internally");
    }
}
