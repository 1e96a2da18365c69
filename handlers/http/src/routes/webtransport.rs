//! `GET /api/webtransport`: what a page needs to open a WebTransport session to this node:
//! the SHA-256 of the certificate `h3` connections get (for `serverCertificateHashes`;
//! near a rotation the next one too), when it expires, and the session paths served.
//!
//! ```json
//! {"draft": "draft02",
//!  "hashes": [{"algorithm": "sha-256", "value": "<base64>", "hex": "…",
//!              "not_after": "Tue, 15 Dec 2026 10:00:00 GMT", "not_after_unix": 1797…}],
//!  "paths": ["/alknet/call", "/alknet/echo"]}
//! ```
//!
//! 404 when `[webtransport] enabled = false` or `h3` is not served. `hashes` is empty
//! when `tls.webtransport_cert` is off (the node's main certificate is presented then,
//! which a browser accepts only if a CA it trusts signed it).

use std::time::UNIX_EPOCH;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::h3::webtransport::{DRAFT_VALUE, PATH_PREFIX};
use crate::HttpState;

#[derive(Serialize)]
struct Info {
    draft: &'static str,
    hashes: Vec<Hash>,
    paths: Vec<String>,
}

#[derive(Serialize)]
struct Hash {
    algorithm: &'static str,
    value: String,
    hex: String,
    not_after: String,
    not_after_unix: u64,
}

fn hash_of(entry: &alknet_runtime::tls::WebTransportCertEntry) -> Hash {
    Hash {
        algorithm: "sha-256",
        value: data_encoding::BASE64.encode(&entry.sha256),
        hex: data_encoding::HEXLOWER.encode(&entry.sha256),
        not_after: httpdate::fmt_http_date(entry.not_after),
        not_after_unix: entry
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

pub async fn info(State(state): State<HttpState>) -> Response {
    let Some(publish) = state.webtransport() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let served = state.status().map(|s| s.alpns()).unwrap_or_default();
    if !publish.config.enabled || !served.iter().any(|a| a.as_bytes() == crate::h3::ALPN) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let paths = served
        .iter()
        .filter(|a| publish.config.allows(a.as_bytes()))
        .map(|a| format!("{PATH_PREFIX}{a}"))
        .collect();
    let hashes = match &publish.cert {
        Some(cert) => {
            let certs = cert.current();
            std::iter::once(&certs.current)
                .chain(certs.next.as_ref())
                .map(|e| hash_of(e))
                .collect()
        }
        None => Vec::new(),
    };
    let body = Info {
        draft: DRAFT_VALUE,
        hashes,
        paths,
    };
    // a page fetches this right before connecting: never from a cache
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}
