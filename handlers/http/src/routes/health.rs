//! `GET /health`: 200 while serving, 503 while draining (or before the server runs).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::HttpState;

pub async fn health(State(state): State<HttpState>) -> Response {
    let Some(status) = state.status() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "starting", "version": state.version })),
        )
            .into_response();
    };
    let draining = status.draining();
    let code = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": if draining { "draining" } else { "serving" },
        "version": state.version,
        "workers": status.worker_stats().len(),
        "quic_connections": status.open_connections(),
        "alpns": status.alpns(),
    });
    (code, Json(body)).into_response()
}
