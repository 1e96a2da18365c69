//! Gzip for the documents the node writes itself and clients fetch whole: `/metrics` (every
//! Prometheus scrape asks with `Accept-Encoding: gzip`, as Prometheus' own exporters
//! answer), `/openapi.json` and the dashboard page (the metrics text shrinks about fivefold,
//! the page about threefold).
//!
//! Nothing else is compressed on the fly: files are served with their precompressed
//! siblings (`files.rs`, see `encoding.rs`), and call results and event streams are not
//! compressed at all. None of these three documents carries a secret beside bytes the
//! requester chose, which is what a compression side channel (BREACH) needs.

use std::io::Write;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::routes::encoding::{self, Coding};

/// True when the request's `Accept-Encoding` allows gzip (RFC 9110, section 12.5.3).
pub fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| encoding::acceptable(accept).contains(&Coding::Gzip))
}

/// `body` gzip-compressed at `level`.
pub fn gzip(body: &[u8], level: flate2::Compression) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), level);
    encoder.write_all(body)?;
    encoder.finish()
}

/// A 200 with `headers` and `plain`, or with `compressed(&plain)` (the document gzipped) and
/// `Content-Encoding: gzip` when the request accepts it; `Vary: accept-encoding` either
/// way, so a cache keeps the two apart. `what` names the document in the log line of a
/// compression that failed (it fails only if memory does): the plain document answers then.
pub fn respond(
    request: &HeaderMap,
    what: &str,
    headers: &[(HeaderName, &'static str)],
    plain: Bytes,
    compressed: impl FnOnce(&[u8]) -> std::io::Result<Bytes>,
) -> Response {
    let gzipped = accepts_gzip(request)
        .then(|| compressed(&plain))
        .and_then(|r| {
            r.inspect_err(|e| tracing::warn!("gzip of {what} failed, answering it plain: {e}"))
                .ok()
        });
    let (body, coding) = match gzipped {
        Some(body) => (body, Some(Coding::Gzip.name())),
        None => (plain, None),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    for (name, value) in headers {
        h.insert(name.clone(), HeaderValue::from_static(value));
    }
    if let Some(coding) = coding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
    }
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    response
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn request(accept: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = accept {
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(a));
        }
        h
    }

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .expect("gzip");
        out
    }

    async fn body(r: Response) -> Bytes {
        axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .expect("body")
    }

    fn answer(accept: Option<&'static str>, doc: &'static [u8]) -> Response {
        respond(
            &request(accept),
            "a test document",
            &[(header::CONTENT_TYPE, "text/plain")],
            Bytes::from_static(doc),
            |doc| gzip(doc, flate2::Compression::fast()).map(Bytes::from),
        )
    }

    #[test]
    fn gzip_only_for_a_client_that_accepts_it() {
        let doc: &'static [u8] = b"metric_a 1\nmetric_b 2\nmetric_a 1\nmetric_b 2\n";
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("runtime");
        for (accept, gzipped) in [
            (Some("gzip"), true),
            (Some("br;q=1.0, gzip;q=0.5"), true),
            (Some("*"), true),
            (Some("gzip;q=0"), false),
            (Some("identity"), false),
            (Some("br"), false),
            (None, false),
        ] {
            let r = answer(accept, doc);
            let h = r.headers().clone();
            assert_eq!(h[header::VARY], "accept-encoding", "{accept:?}");
            assert_eq!(h[header::CONTENT_TYPE], "text/plain", "{accept:?}");
            let got = rt.block_on(body(r));
            if gzipped {
                assert_eq!(h[header::CONTENT_ENCODING], "gzip", "{accept:?}");
                assert_eq!(gunzip(&got), doc, "{accept:?}");
            } else {
                assert!(h.get(header::CONTENT_ENCODING).is_none(), "{accept:?}");
                assert_eq!(&got[..], doc, "{accept:?}");
            }
        }
    }

    #[test]
    fn a_failed_compression_answers_the_plain_document() {
        let r = respond(
            &request(Some("gzip")),
            "a test document",
            &[],
            Bytes::from_static(b"plain"),
            |_| Err(std::io::Error::other("no memory")),
        );
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("runtime");
        assert_eq!(&rt.block_on(body(r))[..], b"plain");
    }
}
