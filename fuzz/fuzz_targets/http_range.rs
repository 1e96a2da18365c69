//! The static files' request headers (`alknet_http::routes::ranges` and `encoding`), as a
//! peer sends them: any bytes as `Range`, `If-Range`, `If-None-Match`, `If-Modified-Since`
//! and `Accept-Encoding` against a file of any length. Nothing panics, a range served is
//! always inside the file (`start <= end < len`), and a coding is offered at most once.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use alknet_http::routes::encoding::acceptable;
use alknet_http::routes::ranges::{decide, parse_range, Answer, Validators};
use axum::http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn check(answer: Answer, len: u64) {
    if let Answer::Part { start, end } = answer {
        assert!(start <= end && end < len, "{start}-{end} of {len}");
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (len, rest) = data.split_at(8);
    // lengths near zero and near u64::MAX both matter
    let len = u64::from_le_bytes(len.try_into().expect("eight bytes"));
    let mut parts = rest.split(|&b| b == b'\n');
    if let Ok(text) = std::str::from_utf8(parts.next().unwrap_or_default()) {
        check(parse_range(text, len), len);
    }
    let mut headers = HeaderMap::new();
    for name in [
        header::RANGE,
        header::IF_RANGE,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
    ] {
        if let Some(value) = parts.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.insert(name, value);
        }
    }
    let v = Validators::of(len, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    check(decide(&headers, len, &v), len);
    if let Ok(accept) = std::str::from_utf8(parts.next().unwrap_or_default()) {
        let codings = acceptable(accept);
        assert!(codings.len() <= 2 && (codings.len() < 2 || codings[0] != codings[1]));
    }
});
