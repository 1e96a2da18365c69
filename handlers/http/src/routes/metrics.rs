//! `GET /metrics`: Prometheus text. Needs the scope `node:metrics`, unless `[http] public`
//! lists `/metrics`. Gzip-compressed for a client that accepts it, as Prometheus' own
//! exporters answer (every Prometheus scrape asks with `Accept-Encoding: gzip`): the text
//! grows with workers and ALPNs and compresses about fivefold.

use alknet_proto::call::ErrorCode;
use alknet_runtime::{AccessControl, Requirement};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;

use crate::auth::{request_identity, ConnInfo};
use crate::process_metrics::ProcessStats;
use crate::routes::compress;
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
    let mut process = ProcessStats::read();
    if let Some(p) = &mut process {
        p.open_fds = state.metrics.open_fds.count().await;
    }
    let Ok(text) = state
        .metrics
        .encode(state.status(), calls, process.as_ref())
    else {
        return error_response(ErrorCode::Internal, "encoding metrics failed");
    };
    compress::respond(
        &headers,
        "/metrics",
        &[(header::CONTENT_TYPE, CONTENT_TYPE)],
        Bytes::from(text),
        |text| compress::gzip(text, GZIP_LEVEL).map(Bytes::from),
    )
}

/// The fastest level: the scrape is answered on a worker, between its packets, and the
/// fastest level already takes the text to about a fifth (16.6 KB to 3.0 KB for a 2-worker
/// node, ~35 µs) where the default level gets a seventh for 3× the CPU.
const GZIP_LEVEL: flate2::Compression = flate2::Compression::fast();

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

#[cfg(test)]
mod tests {
    use std::io::Read;

    #[test]
    fn gzip_round_trips_and_shrinks_metric_text() {
        let text: String = (0..200)
            .map(|i| {
                format!(
                    "alknet_worker_datagrams_in_total{{worker=\"{}\"}} {}\n",
                    i % 8,
                    i * 7
                )
            })
            .collect();
        let packed =
            crate::routes::compress::gzip(text.as_bytes(), super::GZIP_LEVEL).expect("gzip");
        assert!(
            packed.len() * 4 < text.len(),
            "{} of {}",
            packed.len(),
            text.len()
        );
        let mut unpacked = String::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_string(&mut unpacked)
            .expect("gunzip");
        assert_eq!(unpacked, text);
    }
}
