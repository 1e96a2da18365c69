//! The pkarr relay API (pkarr's `design/relays.md`) at `/pkarr/{z-base32 key}`, so stock
//! pkarr clients publish and resolve through this node with the relay URL
//! `https://<node>/pkarr`: `GET` answers the stored signed packet (relay payload:
//! signature ‖ timestamp ‖ DNS packet), `PUT` stores one after the DNS handler verified its
//! signature and that it is newer. The names it publishes are answered over DNS at once.
//!
//! Statuses, as the spec gives them: `GET` 200, 304 (`If-Modified-Since` not older than the
//! packet), 400 (not a key), 404; `PUT` 204, 400 (bad key, signature or packet), 409 (not
//! newer than the stored packet), 412 (`If-Match` is not the stored timestamp), 413 (over
//! [`PKARR_MAX_RELAY_PAYLOAD`] bytes), 500 (the store failed). Every answer carries the
//! CORS headers public relays send; `OPTIONS` answers the preflight. No DHT: the node is
//! the only place the packet goes (so no `Pkarr-Dht-Stored-Nodes`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alknet_runtime::{RelayError, PKARR_MAX_RELAY_PAYLOAD};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::routes::doh::plain;
use crate::HttpState;

/// The relay payload's media type.
pub const RELAY_PAYLOAD: &str = "application/pkarr.org/relays#payload";

const CORS: [(HeaderName, &str); 2] = [
    (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
    (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, PUT, OPTIONS"),
];

fn with_cors(mut r: Response) -> Response {
    for (name, value) in CORS {
        r.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    r
}

fn no_relay() -> Response {
    plain(StatusCode::NOT_FOUND, "no pkarr relay on this node")
}

pub async fn get(
    State(state): State<HttpState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(relay) = state.pkarr_relay() else {
        return with_cors(no_relay());
    };
    let packet = match relay.get(&key) {
        Ok(Some(p)) => p,
        Ok(None) => return with_cors(plain(StatusCode::NOT_FOUND, "no packet for this key")),
        Err(e) => return with_cors(relay_error(&e)),
    };
    let modified = UNIX_EPOCH + Duration::from_micros(packet.timestamp);
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    // HTTP dates have whole seconds: the packet is not newer than a date in its second
    let whole = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    if since.is_some_and(|s| whole(modified) <= whole(s)) {
        return with_cors(StatusCode::NOT_MODIFIED.into_response());
    }
    let last_modified = HeaderValue::from_str(&httpdate::fmt_http_date(modified));
    let cache = HeaderValue::from_str(&format!("public, max-age={}", packet.min_ttl));
    let mut r = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(RELAY_PAYLOAD),
        )],
        packet.payload,
    )
        .into_response();
    if let (Ok(lm), Ok(cc)) = (last_modified, cache) {
        r.headers_mut().insert(header::LAST_MODIFIED, lm);
        r.headers_mut().insert(header::CACHE_CONTROL, cc);
    }
    with_cors(r)
}

pub async fn put(
    State(state): State<HttpState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(relay) = state.pkarr_relay() else {
        return with_cors(no_relay());
    };
    let if_match = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => match v
            .to_str()
            .ok()
            .and_then(|v| v.trim().trim_matches('"').parse::<u64>().ok())
        {
            Some(ts) => Some(ts),
            None => {
                return with_cors(plain(
                    StatusCode::BAD_REQUEST,
                    "If-Match must be a timestamp in microseconds",
                ))
            }
        },
    };
    let Ok(payload) = axum::body::to_bytes(body, PKARR_MAX_RELAY_PAYLOAD).await else {
        return with_cors(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the payload is over 1072 bytes",
        ));
    };
    match relay.put(&key, &payload, if_match) {
        Ok(()) => with_cors(StatusCode::NO_CONTENT.into_response()),
        Err(e) => with_cors(relay_error(&e)),
    }
}

/// The CORS preflight.
pub async fn options() -> Response {
    with_cors(StatusCode::NO_CONTENT.into_response())
}

fn relay_error(e: &RelayError) -> Response {
    let status = match e {
        RelayError::Key(_) | RelayError::Invalid(_) => StatusCode::BAD_REQUEST,
        RelayError::Stale(_) => StatusCode::CONFLICT,
        RelayError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        RelayError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        RelayError::Storage(_) => {
            tracing::warn!("pkarr relay: {e}");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        e.to_string(),
    )
        .into_response()
}
