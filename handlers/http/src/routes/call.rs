//! `POST /api/call/{operationId}`: the body is the operation's input (JSON; empty = null),
//! the answer its output, or `{"error": {"code", "message"}}` with the code's status.
//! Identity, ACL, schemas and deadline are the `alknet/call` handler's. A streaming
//! operation answers `text/event-stream` (see `sse.rs`).

use alknet_proto::call::ErrorCode;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::Value;

use crate::auth::{request_identity, ConnInfo};
use crate::routes::error_response;
use crate::rt::run_local;
use crate::HttpState;

pub async fn call(
    State(state): State<HttpState>,
    Path(operation): Path<String>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(invoker) = state.invoker.clone() else {
        return error_response(ErrorCode::NotFound, "no call operations on this node");
    };
    let Some(conn) = conn else {
        return error_response(ErrorCode::Internal, "request without connection info");
    };
    let identity = match request_identity(Some(&conn), &headers) {
        Ok(i) => i,
        Err(e) => return error_response(ErrorCode::Unauthenticated, e.to_string()),
    };
    let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error_response(
                    ErrorCode::InvalidArgument,
                    format!("the body is not JSON: {e}"),
                )
            }
        }
    };
    let remote = conn.remote();
    if invoker.streams(&operation) == Some(true) {
        return crate::routes::sse::call_stream(
            &state, invoker, identity, remote, operation, input,
        )
        .await;
    }
    let answer =
        run_local(async move { invoker.invoke(identity, remote, &operation, input).await });
    match answer.await {
        Some(Ok(output)) => (StatusCode::OK, Json(output)).into_response(),
        Some(Err(f)) => error_response(f.code, f.message),
        None => error_response(
            ErrorCode::Internal,
            "the operation task ended without an answer",
        ),
    }
}
