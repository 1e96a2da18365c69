//! `GET /metrics`: Prometheus text. Needs the scope `node:metrics`, unless `[http] public`
//! lists `/metrics`.

use alknet_proto::call::ErrorCode;
use alknet_runtime::{AccessControl, Requirement};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use crate::auth::{request_identity, ConnInfo};
use crate::routes::error_response;
use crate::{HttpState, METRICS_SCOPE};

/// The OpenMetrics text content type prometheus-client writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn metrics(
    State(state): State<HttpState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = access_refusal(&state, "/metrics", conn.as_deref(), &headers) {
        return refused;
    }
    let calls = state.invoker.as_ref().map(|i| i.stats());
    match state.metrics.encode(state.status(), calls) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => error_response(ErrorCode::Internal, "encoding metrics failed"),
    }
}

/// The access rule of the node's counters (`/metrics`, the dashboard): `path` listed in
/// `[http] public`, or a caller with the scope `node:metrics`. `Some` is the 401/403 answer
/// for a caller that may not.
pub fn access_refusal(
    state: &HttpState,
    path: &str,
    conn: Option<&ConnInfo>,
    headers: &HeaderMap,
) -> Option<Response> {
    if state.is_public(path) {
        return None;
    }
    let identity = match request_identity(conn, headers) {
        Ok(i) => i,
        Err(e) => return Some(error_response(ErrorCode::Unauthenticated, e.to_string())),
    };
    let need = Requirement::Scopes(vec![METRICS_SCOPE.to_string()]);
    let denied = AccessControl::check(identity.as_ref(), path, &need).err()?;
    let code = if identity.is_none() {
        ErrorCode::Unauthenticated
    } else {
        ErrorCode::Forbidden
    };
    Some(error_response(code, denied.to_string()))
}
