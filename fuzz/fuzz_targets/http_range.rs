//! The static files' request headers (`alknet_http::routes::ranges` and `encoding`), as a
//! peer sends them: any bytes as `Range`, `If-Range`, `If-None-Match`, `If-Modified-Since`
//! and `Accept-Encoding` against a file of any length, with a limit on the ranges taken
//! from the input. Nothing panics, a range served is always inside the file
//! (`start <= end < len`), several ranges are two or more, within the limit and no more
//! than the file in all, and a coding is offered at most once.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use alknet_http::routes::encoding::acceptable;
use alknet_http::routes::ranges::{decide, parse_range, Answer, Span, Validators};
use axum::http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn inside(span: &Span, len: u64) {
    assert!(
        span.start <= span.end && span.end < len,
        "{}-{} of {len}",
        span.start,
        span.end
    );
}

fn check(answer: Answer, len: u64, max_ranges: usize) {
    match answer {
        Answer::Part(span) => inside(&span, len),
        Answer::Parts(spans) => {
            assert!(spans.len() >= 2 && spans.len() <= max_ranges.max(1));
            spans.iter().for_each(|s| inside(s, len));
            let total = spans
                .iter()
                .map(|s| u128::from(s.byte_count()))
                .sum::<u128>();
            assert!(total <= u128::from(len), "{total} bytes of {len}");
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let (len, rest) = data.split_at(8);
    let (max_ranges, rest) = (usize::from(rest[0] % 20), &rest[1..]);
    // lengths near zero and near u64::MAX both matter
    let len = u64::from_le_bytes(len.try_into().expect("eight bytes"));
    let mut parts = rest.split(|&b| b == b'\n');
    if let Ok(text) = std::str::from_utf8(parts.next().unwrap_or_default()) {
        check(parse_range(text, len, max_ranges), len, max_ranges);
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
    check(decide(&headers, len, &v, max_ranges), len, max_ranges);
    if let Ok(accept) = std::str::from_utf8(parts.next().unwrap_or_default()) {
        let codings = acceptable(accept);
        assert!(codings.len() <= 2 && (codings.len() < 2 || codings[0] != codings[1]));
    }
});
