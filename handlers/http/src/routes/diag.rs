//! Diagnostic routes (`[http] diagnostics = true`, off by default): `POST /echo` and
//! `GET /bytes/{n}`, for checking an HTTP stack end to end — request bodies both ways and
//! long streamed responses whose every byte a client can verify — and for load tests.
//! Off by default: `/bytes` lets anyone ask for up to 1 GiB.

use axum::body::Body;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;

/// Largest `GET /bytes/{n}`.
pub const MAX_STREAMED_BYTES: u64 = 1 << 30;
/// Size of each chunk `GET /bytes/{n}` streams (all share one buffer).
const STREAM_CHUNK: usize = 64 * 1024;

static PATTERN: [u8; STREAM_CHUNK] = pattern();

/// `i % 251` at offset `i`: a client can check every byte, and the period does not divide
/// the chunk size, so a misplaced chunk shows.
const fn pattern() -> [u8; STREAM_CHUNK] {
    let mut p = [0u8; STREAM_CHUNK];
    let mut i = 0;
    while i < STREAM_CHUNK {
        p[i] = (i % 251) as u8;
        i += 1;
    }
    p
}

/// `POST /echo` → the body, `GET /bytes/{n}` → `n` bytes, byte `i` being `i % 251`,
/// streamed in 64 KiB chunks.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/bytes/{n}", get(bytes))
}

async fn bytes(Path(n): Path<u64>) -> Response {
    if n > MAX_STREAMED_BYTES {
        return (StatusCode::BAD_REQUEST, "at most 1 GiB").into_response();
    }
    let chunks = futures_util::stream::unfold(0u64, move |sent| async move {
        if sent >= n {
            return None;
        }
        // the chunk starts at offset `sent`, so it starts at phase `sent % 251`
        let phase = (sent % 251) as usize;
        let len = (n - sent).min((STREAM_CHUNK - 251) as u64) as usize;
        let chunk = Bytes::from_static(&PATTERN[phase..phase + len]);
        Some((Ok::<_, std::convert::Infallible>(chunk), sent + len as u64))
    });
    Body::from_stream(chunks).into_response()
}
