//! `GET /{path}`: the files of `[http] static_root` (off unless that is set), over every
//! HTTP version — what the QUIC interop runner's `http3` case downloads.
//!
//! The path is checked and the file opened by `alknet_runtime::files` (the same code as
//! `hq-interop`: plain components only, `openat2(RESOLVE_BENEATH)`, regular files only).
//! The path is taken as it is written in the request (no percent-decoding: a name with
//! `%` in it is asked for literally). A worker task reads the file chunk by chunk with
//! monoio (io_uring reads) into a channel of `static_channel_chunks` chunks, which the
//! `Send` response body drains: memory per response is bounded, and reading stops while
//! the client does not take the data. A read error part way fails the body, so the client
//! sees a reset stream, never a short file passed off as whole.
//!
//! Conditional and range requests (`ETag`, `Last-Modified`, 304, byte ranges with 206 and
//! `Content-Range`, several as `multipart/byteranges`, 416) are decided by
//! [`super::ranges`]; a precompressed copy (`FILE.br`,
//! `FILE.gz`) is sent instead of the file to a client that takes its coding
//! ([`super::encoding`]), with its own validators and ranges over its own bytes.
//!
//! A path ending in `/` (the root included) is the first of `[http] static_index` (default
//! `index.html`) that exists in that directory, as nginx's `index`; a
//! directory asked for without the `/` is redirected to it (301), as nginx and Apache do,
//! so the page's relative links resolve inside the directory.
//!
//! 400 for a path that is not plain, 404 for anything that is not a regular file inside
//! the root, 405 for methods other than GET and HEAD.

use alknet_proto::call::ErrorCode;
use alknet_runtime::files::{relative_path, ChunkedFile};
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::routes::encoding;
use crate::routes::error_response;
use crate::routes::media_types;
use crate::routes::ranges::{self, Answer, Span, Validators};
use crate::HttpState;

/// Response headers from names and values (ours: always valid header text).
fn header_map(pairs: Vec<(header::HeaderName, String)>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = value.parse() {
            headers.insert(name, value);
        }
    }
    headers
}

/// Answers a request for `path` from the static root (which the caller checked is set).
pub async fn serve(
    state: &HttpState,
    method: &Method,
    path: &str,
    request_headers: &HeaderMap,
) -> Response {
    let Some(root) = state.static_files.as_ref() else {
        return error_response(ErrorCode::NotFound, "no such route");
    };
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    let asked = path.trim_start_matches('/');
    let directory = asked.is_empty() || asked.ends_with('/');
    // a directory's path is its first index file that exists (nginx's `index`)
    let candidates: Vec<String> = if directory {
        let index = &state.config.static_index;
        index.iter().map(|i| format!("{asked}{i}")).collect()
    } else {
        vec![asked.to_string()]
    };
    let open = |relative: &std::path::Path| {
        root.open_file(relative)
            .and_then(|f| f.metadata().and_then(|m| Ok((f, m.len(), m.modified()?))))
    };
    let mut found = None;
    for name in candidates {
        let relative = match relative_path(name.as_bytes()) {
            Ok(p) => p,
            Err(e) => return error_response(ErrorCode::InvalidArgument, e.to_string()),
        };
        match open(&relative) {
            Ok(x) => {
                found = Some((name, relative, x));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory && !directory => {
                return (
                    StatusCode::MOVED_PERMANENTLY,
                    [(header::LOCATION, format!("{path}/"))],
                )
                    .into_response();
            }
            Err(e) => tracing::debug!("static file {}: {e}", relative.display()),
        }
    }
    let Some((name, relative, (mut file, mut len, mut modified))) = found else {
        return error_response(ErrorCode::NotFound, "no such file");
    };
    // a precompressed copy beside the file, when the client takes its coding
    let mut coding = None;
    let accept = request_headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok());
    for candidate in accept.map(encoding::acceptable).unwrap_or_default() {
        let mut stored = relative.clone().into_os_string();
        stored.push(candidate.suffix());
        if let Ok(found) = open(std::path::Path::new(&stored)) {
            (file, len, modified) = found;
            coding = Some(candidate);
            break;
        }
    }
    let validators = Validators::of(len, modified);
    let mut head = vec![
        (header::ETAG, validators.etag.clone()),
        (header::LAST_MODIFIED, validators.last_modified()),
        (header::ACCEPT_RANGES, "bytes".to_string()),
        // the answer depends on Accept-Encoding wherever a precompressed copy may exist
        (header::VARY, "accept-encoding".to_string()),
    ];
    if let Some(coding) = coding {
        head.push((header::CONTENT_ENCODING, coding.name().to_string()));
    }
    let content_type = media_types::of_path(&name);
    // what the body is: the spans of the file to send, each after its part header (empty
    // for a response of one span), then a closing delimiter (empty unless multipart)
    let mut spans: Vec<(Bytes, Span)> = Vec::new();
    let mut closing = Bytes::new();
    let status = match ranges::decide(
        request_headers,
        len,
        &validators,
        state.config.static_max_ranges,
    ) {
        Answer::NotModified => return (StatusCode::NOT_MODIFIED, header_map(head)).into_response(),
        Answer::Unsatisfiable => {
            head.push((header::CONTENT_RANGE, format!("bytes */{len}")));
            return (StatusCode::RANGE_NOT_SATISFIABLE, header_map(head)).into_response();
        }
        Answer::Whole => {
            if len > 0 {
                spans.push((
                    Bytes::new(),
                    Span {
                        start: 0,
                        end: len - 1,
                    },
                ));
            }
            head.push((header::CONTENT_TYPE, content_type.to_string()));
            StatusCode::OK
        }
        Answer::Part(span) => {
            head.push((header::CONTENT_RANGE, span.content_range(len)));
            head.push((header::CONTENT_TYPE, content_type.to_string()));
            spans.push((Bytes::new(), span));
            StatusCode::PARTIAL_CONTENT
        }
        Answer::Parts(parts) => {
            // RFC 9110, section 14.6 (as nginx writes it: every delimiter after a CRLF)
            let boundary = format!("{:020}", rand::random::<u64>());
            for span in parts {
                let part_head = format!(
                    "\r\n--{boundary}\r\ncontent-type: {content_type}\r\ncontent-range: {}\r\n\r\n",
                    span.content_range(len)
                );
                spans.push((Bytes::from(part_head), span));
            }
            closing = Bytes::from(format!("\r\n--{boundary}--\r\n"));
            head.push((
                header::CONTENT_TYPE,
                format!("multipart/byteranges; boundary={boundary}"),
            ));
            StatusCode::PARTIAL_CONTENT
        }
    };
    let count = spans
        .iter()
        .map(|(part_head, span)| part_head.len() as u64 + span.byte_count())
        .sum::<u64>()
        + closing.len() as u64;
    head.push((header::CONTENT_LENGTH, count.to_string()));
    let headers = header_map(head);
    if method == Method::HEAD || count == 0 {
        return (status, headers, Body::empty()).into_response();
    }
    let (tx, rx) =
        mpsc::channel::<std::io::Result<Bytes>>(state.config.static_channel_chunks.max(1));
    let chunk = state.config.static_chunk_bytes;
    // on the worker serving this request (the reads are worker-local io_uring operations)
    alknet_runtime::rt::spawn_guarded("http static file", async move {
        // the length announced: a file cut short meanwhile fails the body (a reset
        // stream), one grown meanwhile is sent as it was
        let mut file = match ChunkedFile::span(file, chunk, 0, 0) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        for (part_head, span) in spans {
            if !part_head.is_empty() && tx.send(Ok(part_head)).await.is_err() {
                return;
            }
            file.seek_span(span.start, span.byte_count());
            loop {
                match file.next_chunk().await {
                    Ok(Some(c)) => {
                        // the client went away: stop reading
                        if tx.send(Ok(c)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("static file: reading at {}: {e}", file.position());
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        }
        if !closing.is_empty() {
            let _ = tx.send(Ok(closing)).await;
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (status, headers, Body::from_stream(body)).into_response()
}
