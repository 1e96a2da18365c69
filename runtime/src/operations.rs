//! The call operations, as other front ends reach them (HTTP `POST /api/call/{id}`,
//! OpenAPI, MCP). The call handler owns the registry; a handler crate never depends on
//! another, so the binary hands the call node to the HTTP handler as this trait object.

use std::net::SocketAddr;

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

    /// The node's call counters, for `/metrics`.
    fn stats(&self) -> OperationStats {
        OperationStats::default()
    }
}
