//! `POST /mcp`: a Model Context Protocol server on its Streamable HTTP transport, answering
//! each JSON-RPC 2.0 request with one `application/json` response (no server-initiated
//! stream: `GET /mcp` is 405). Methods: `initialize`, `ping`, `tools/list` (each unary call
//! operation the caller may call, with its input schema) and `tools/call` (runs it as the
//! caller; an unknown tool is JSON-RPC error -32602, any other failure, a denied call
//! included, is a tool result with `isError` and the call error code, as MCP wants).
//! Notifications are acknowledged with 202.
//!
//! Sessions (`mcp_sessions.rs`): `initialize` answers with an `Mcp-Session-Id` header;
//! every later request must carry it (400 without, 404 for an unknown, expired or ended
//! id, or one another identity opened); `DELETE /mcp` with it ends the session (204).

use std::time::Instant;

use alknet_proto::call::ErrorCode;
use alknet_runtime::OperationInfo;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::auth::{request_identity, ConnInfo};
use crate::mcp_sessions::{Lookup, SESSION_HEADER};
use crate::routes::error_response;
use crate::rt::run_local;
use crate::HttpState;

/// Protocol revisions understood, newest first; a client asking for another gets the
/// newest (MCP's version negotiation).
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

fn rpc_error(id: Value, code: i64, message: impl Into<String>) -> Response {
    let message: String = message.into();
    Json(json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }))
        .into_response()
}

fn rpc_result(id: Value, result: Value) -> Response {
    Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })).into_response()
}

/// An MCP tool's input is a JSON object; operations with another input schema are offered
/// as taking any object.
fn tool_schema(op: &OperationInfo) -> Value {
    match op.input_schema.get("type") {
        Some(Value::String(t)) if t == "object" => op.input_schema.clone(),
        _ => json!({ "type": "object" }),
    }
}

pub async fn mcp_get() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        "this MCP server sends no server-initiated stream; POST JSON-RPC requests",
    )
        .into_response()
}

/// A JSON-RPC error without an id, with an HTTP status (the Streamable HTTP transport's
/// session refusals).
fn session_refusal(status: StatusCode, message: &str) -> Response {
    let body = json!({ "jsonrpc": "2.0", "id": null, "error": { "code": INVALID_REQUEST, "message": message } });
    (status, Json(body)).into_response()
}

/// `None` when the request's session is live and `owner`'s; else the refusal to answer.
fn session_refused(
    state: &HttpState,
    headers: &HeaderMap,
    owner: Option<&str>,
) -> Option<Response> {
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Some(session_refusal(
            StatusCode::BAD_REQUEST,
            "Mcp-Session-Id header required (send initialize first)",
        ));
    };
    let idle = state.config.mcp_session_idle_timeout;
    match state.mcp_sessions.touch(id, owner, Instant::now(), idle) {
        Lookup::Live => None,
        Lookup::Unknown => Some(session_refusal(
            StatusCode::NOT_FOUND,
            "unknown or expired MCP session: initialize again",
        )),
    }
}

/// `DELETE /mcp`: ends the session named by `Mcp-Session-Id`.
pub async fn mcp_delete(
    State(state): State<HttpState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
) -> Response {
    let identity = match request_identity(conn.as_deref(), &headers) {
        Ok(i) => i,
        Err(e) => return error_response(ErrorCode::Unauthenticated, e.to_string()),
    };
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return session_refusal(StatusCode::BAD_REQUEST, "Mcp-Session-Id header required");
    };
    let owner = identity.as_ref().map(|i| i.name.as_str());
    if state.mcp_sessions.end(id, owner) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        session_refusal(StatusCode::NOT_FOUND, "unknown or expired MCP session")
    }
}

pub async fn mcp(
    State(state): State<HttpState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let identity = match request_identity(conn.as_deref(), &headers) {
        Ok(i) => i,
        Err(e) => return error_response(ErrorCode::Unauthenticated, e.to_string()),
    };
    let message: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return rpc_error(Value::Null, PARSE_ERROR, format!("parse error: {e}")),
    };
    let Value::Object(mut message) = message else {
        return rpc_error(Value::Null, INVALID_REQUEST, "expected one JSON-RPC object");
    };
    let owner = identity.as_ref().map(|i| i.name.as_str());
    let initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
    if !initialize {
        if let Some(refused) = session_refused(&state, &headers, owner) {
            return refused;
        }
    }
    let method = match message.remove("method") {
        Some(Value::String(m)) => m,
        // a response or garbage from the client: nothing to answer
        _ if message.contains_key("result") || message.contains_key("error") => {
            return StatusCode::ACCEPTED.into_response()
        }
        _ => return rpc_error(Value::Null, INVALID_REQUEST, "no method"),
    };
    let Some(id) = message.remove("id") else {
        // a notification (notifications/initialized, cancelled, ...)
        return StatusCode::ACCEPTED.into_response();
    };
    let params = message.remove("params").unwrap_or(Value::Null);
    let ops = || {
        state
            .invoker
            .as_ref()
            .map(|i| i.operations(identity.as_ref()))
            .unwrap_or_default()
            .into_iter()
            .filter(|o| !o.streaming)
            .collect::<Vec<_>>()
    };
    match method.as_str() {
        "initialize" => {
            let asked = params.get("protocolVersion").and_then(Value::as_str);
            let version = asked
                .filter(|v| PROTOCOL_VERSIONS.contains(v))
                .unwrap_or(PROTOCOL_VERSIONS[0]);
            let cfg = &state.config;
            let (session, dropped) = state.mcp_sessions.open(
                owner,
                Instant::now(),
                cfg.mcp_max_sessions,
                cfg.mcp_session_idle_timeout,
            );
            if dropped > 0 {
                tracing::debug!(
                    dropped,
                    "MCP session table full: dropped expired or least recently used sessions"
                );
            }
            let mut response = rpc_result(
                id,
                json!({
                    "protocolVersion": version,
                    "capabilities": { "tools": { "listChanged": false } },
                    "serverInfo": { "name": "alknet", "version": state.version },
                }),
            );
            if let Ok(v) = HeaderValue::from_str(&session) {
                response.headers_mut().insert(SESSION_HEADER, v);
            }
            response
        }
        "ping" => rpc_result(id, json!({})),
        "tools/list" => {
            let tools: Vec<Value> = ops()
                .iter()
                .map(|op| {
                    json!({
                        "name": op.id,
                        "description": op.description,
                        "inputSchema": tool_schema(op),
                    })
                })
                .collect();
            rpc_result(id, json!({ "tools": tools }))
        }
        "tools/call" => {
            let Some(name) = params.get("name").and_then(Value::as_str) else {
                return rpc_error(id, INVALID_PARAMS, "tools/call needs a string \"name\"");
            };
            let (Some(invoker), Some(conn)) = (state.invoker.clone(), conn) else {
                return rpc_error(id, INVALID_PARAMS, format!("unknown tool {name:?}"));
            };
            let input = params
                .get("arguments")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let name = name.to_string();
            let remote = conn.remote();
            let answer =
                run_local(async move { invoker.invoke(identity, remote, &name, input).await });
            let result = match answer.await {
                Some(Ok(output)) => {
                    let text = output.to_string();
                    let mut r = json!({
                        "content": [{ "type": "text", "text": text }],
                        "isError": false,
                    });
                    if output.is_object() {
                        r["structuredContent"] = output;
                    }
                    r
                }
                Some(Err(f)) if f.code == ErrorCode::NotFound => {
                    return rpc_error(id, INVALID_PARAMS, f.message);
                }
                // denied, bad arguments, deadline...: a tool result the model can read
                Some(Err(f)) => json!({
                    "content": [{ "type": "text", "text": format!("{}: {}", f.code.as_str(), f.message) }],
                    "isError": true,
                }),
                None => json!({
                    "content": [{ "type": "text", "text": "INTERNAL: the operation ended without an answer" }],
                    "isError": true,
                }),
            };
            rpc_result(id, result)
        }
        other => rpc_error(id, METHOD_NOT_FOUND, format!("unknown method {other:?}")),
    }
}
