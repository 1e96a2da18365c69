//! `GET /health`: 200 while serving, 503 while draining (or before the server runs).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
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
    let body = Health {
        alpns: status.alpns(),
        quic_connections: status.open_connections(),
        status: if draining { "draining" } else { "serving" },
        version: state.version,
        workers: status.workers(),
    };
    (code, Json(body)).into_response()
}

/// The body of a serving (or draining) node, serialized straight from this struct: no
/// intermediate JSON map, no per-worker counter snapshot (only their number is shown).
/// Fields in alphabetical order, the order clients have seen.
#[derive(Serialize)]
struct Health {
    alpns: Vec<String>,
    quic_connections: usize,
    status: &'static str,
    version: &'static str,
    workers: usize,
}
