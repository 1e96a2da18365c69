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
    if !state.is_public("/metrics") {
        let identity = match request_identity(conn.as_deref(), &headers) {
            Ok(i) => i,
            Err(e) => return error_response(ErrorCode::Unauthenticated, e.to_string()),
        };
        let need = Requirement::Scopes(vec![METRICS_SCOPE.to_string()]);
        if let Err(denied) = AccessControl::check(identity.as_ref(), "/metrics", &need) {
            let code = if identity.is_none() {
                ErrorCode::Unauthenticated
            } else {
                ErrorCode::Forbidden
            };
            return error_response(code, denied.to_string());
        }
    }
    let calls = state.invoker.as_ref().map(|i| i.stats());
    match state.metrics.encode(state.status(), calls) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => error_response(ErrorCode::Internal, "encoding metrics failed"),
    }
}
