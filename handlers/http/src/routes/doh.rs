//! DNS over HTTPS (RFC 8484): `GET /dns-query?dns=<base64url message>` and `POST
//! /dns-query` with an `application/dns-message` body, over every HTTP version the router
//! serves (HTTP/1.1, HTTP/2, HTTP/3). The DNS handler answers, through the runtime's
//! [`alknet_runtime::DnsResolver`] (zones, pkarr names, and forwarding for callers the
//! recursion rules allow: a bearer token's or client certificate's `dns:recursion` scope,
//! or `[dns] recursion_allow`).
//!
//! The answer is `200 application/dns-message` whatever its RCODE (§4.2.1), with
//! `Cache-Control: max-age=` the smallest TTL that applies (§5.1), or `no-store` for an
//! answer no cache should keep. HTTP errors: 400 (no `dns` parameter, not base64url, not
//! a DNS query), 413 (over 65 535 bytes), 415 (a `POST` of another media type), 404 (no
//! DNS on this node), 401 (a bearer token that is not known).

use alknet_proto::call::ErrorCode;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;

use crate::auth::{request_identity, ConnInfo};
use crate::routes::error_response;
use crate::rt::run_local;
use crate::HttpState;

/// The media type of DoH messages (RFC 8484 §6).
pub const DNS_MESSAGE: &str = "application/dns-message";

/// The largest DNS message a request may carry: what a 2-byte DNS length can say.
pub const DOH_MAX_MESSAGE: usize = u16::MAX as usize;

#[derive(Debug, Deserialize)]
pub struct DohQuery {
    dns: Option<String>,
}

pub async fn get(
    State(state): State<HttpState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    Query(query): Query<DohQuery>,
) -> Response {
    let Some(encoded) = query.dns else {
        return plain(StatusCode::BAD_REQUEST, "the dns parameter is missing");
    };
    // base64url without padding (§4.1); padding is tolerated
    let encoded = encoded.trim_end_matches('=');
    if encoded.len() > DOH_MAX_MESSAGE.div_ceil(3) * 4 {
        return plain(
            StatusCode::URI_TOO_LONG,
            "the dns parameter is over 65535 bytes",
        );
    }
    let Ok(message) = data_encoding::BASE64URL_NOPAD.decode(encoded.as_bytes()) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "the dns parameter is not base64url",
        );
    };
    answer(state, conn, &headers, message.into()).await
}

pub async fn post(
    State(state): State<HttpState>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !media.is_some_and(|m| m.eq_ignore_ascii_case(DNS_MESSAGE)) {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/dns-message",
        );
    }
    let Ok(message) = axum::body::to_bytes(body, DOH_MAX_MESSAGE).await else {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the message is over 65535 bytes",
        );
    };
    answer(state, conn, &headers, message).await
}

async fn answer(
    state: HttpState,
    conn: Option<Extension<ConnInfo>>,
    headers: &HeaderMap,
    message: bytes::Bytes,
) -> Response {
    let Some(resolver) = state.dns_resolver() else {
        return error_response(ErrorCode::NotFound, "no DNS on this node");
    };
    let Some(Extension(conn)) = conn else {
        return error_response(ErrorCode::Internal, "request without connection info");
    };
    let caller = match request_identity(Some(&conn), headers) {
        Ok(i) => i,
        Err(e) => return error_response(ErrorCode::Unauthenticated, e.to_string()),
    };
    let source = conn.remote().ip();
    let Some(answer) = run_local(async move { resolver.resolve(message, source, caller).await })
        .await
        .flatten()
    else {
        return plain(StatusCode::BAD_REQUEST, "not a DNS query");
    };
    let no_store = || HeaderValue::from_static("no-store");
    let cache = answer.max_age.map_or_else(no_store, |s| {
        HeaderValue::from_str(&format!("max-age={s}")).unwrap_or_else(|_| no_store())
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(DNS_MESSAGE)),
            (header::CACHE_CONTROL, cache),
        ],
        answer.message,
    )
        .into_response()
}

/// A short text error (DoH clients read the status, not a body).
pub(crate) fn plain(status: StatusCode, message: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], message).into_response()
}
