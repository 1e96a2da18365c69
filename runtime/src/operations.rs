//! The call operations, as other front ends reach them (HTTP `POST /api/call/{id}`,
//! OpenAPI, MCP). The call handler owns the registry; a handler crate never depends on
//! another, so the binary hands the call node to the HTTP handler as this trait object.

use std::net::SocketAddr;
use std::sync::Arc;

use alknet_proto::call::ErrorCode;
use serde_json::Value;

use crate::identity::Identity;
use crate::router::LocalBoxFuture;

/// One operation as a front end describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationInfo {
    pub id: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Value,
    /// Answers with a stream of items rather than one result.
    pub streaming: bool,
    /// Callable by anonymous peers.
    pub public: bool,
}

/// Why a call failed: a call error code and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct OperationFailure {
    pub code: ErrorCode,
    pub message: String,
}

/// Counters of the operations a node served, over every front end (wire and HTTP).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationStats {
    pub requests: u64,
    pub responses: u64,
    /// Failures by call error code.
    pub errors: Vec<(ErrorCode, u64)>,
}

/// Runs operations with the same ACL, schemas and deadlines as the `alknet/call` handler.
pub trait OperationInvoker: Send + Sync + 'static {
    /// The operations `caller` may call (public ones included), in registry order.
    fn operations(&self, caller: Option<&Identity>) -> Vec<OperationInfo>;

    /// Runs `operation` as `caller`, on the current worker. Streaming operations are
    /// refused with INVALID_ARGUMENT (a front end must stream them itself).
    fn invoke(
        &self,
        caller: Option<Identity>,
        remote: SocketAddr,
        operation: &str,
        input: Value,
    ) -> LocalBoxFuture<'static, Result<Value, OperationFailure>>;

    /// Whether `operation` answers with a stream of items (`None`: no such operation on the
    /// wire). Says nothing about who may call it.
    fn streams(&self, operation: &str) -> Option<bool>;

    /// Runs the streaming `operation` as `caller`, on the current worker, handing each
    /// item to `items` (which waits while the front end's reader is slow). Ends with the
    /// operation's result: the same ACL, schema, deadline and counters as [`Self::invoke`].
    /// A unary operation is refused with INVALID_ARGUMENT.
    fn invoke_stream(
        &self,
        caller: Option<Identity>,
        remote: SocketAddr,
        operation: &str,
        input: Value,
        items: Box<dyn ItemOutlet>,
    ) -> LocalBoxFuture<'static, Result<(), OperationFailure>>;

    /// Subscribes `caller` to `topic` with a queue of `capacity` events, under the ACL
    /// the call handler's `subscribe` applies (NOT_FOUND for an unknown topic,
    /// UNAUTHENTICATED / FORBIDDEN when denied).
    fn subscribe(
        &self,
        caller: Option<&Identity>,
        topic: &str,
        capacity: usize,
    ) -> Result<Box<dyn TopicSubscription>, OperationFailure>;

    /// The node's call counters, for `/metrics`.
    fn stats(&self) -> OperationStats {
        OperationStats::default()
    }
}

/// Where a streaming operation's items go when a front end other than the wire runs it.
pub trait ItemOutlet {
    /// Hands over one item, waiting while the reader is slow; `Err` once it is gone (the
    /// operation then fails with UNAVAILABLE).
    fn send(&mut self, item: Value) -> LocalBoxFuture<'_, Result<(), OutletClosed>>;
}

/// The reader of a streaming operation's items went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the reader of the items is gone")]
pub struct OutletClosed;

/// What a topic subscriber gets next.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicDelivery {
    Event {
        /// Per-topic publish sequence number (gaps mean missed events).
        seq: u64,
        data: Arc<Value>,
    },
    /// The subscriber fell `capacity` events behind and was dropped; nothing follows.
    Lagged { capacity: usize },
    /// The subscription ended (the topic bus dropped it).
    Closed,
}

/// A live subscription; dropping it unsubscribes.
pub trait TopicSubscription: Send {
    fn next(&mut self) -> LocalBoxFuture<'_, TopicDelivery>;
}
