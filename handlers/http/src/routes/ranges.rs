//! Conditional and range requests on the static files (RFC 9110, sections 13 and 14):
//! what a GET or HEAD asks of a file, decided from the request's headers and the file's
//! length and modification time alone, with no IO, so that every rule is unit-tested.
//!
//! Served as nginx serves files: a strong entity tag and `Last-Modified` on every answer,
//! `If-None-Match` (weak comparison, `*`) and otherwise `If-Modified-Since` answered with
//! 304, one byte range (`bytes=a-b`, `a-`, `-n`) answered with 206 and `Content-Range`,
//! `If-Range` honoured (the range only while the client's copy is this one), a range
//! wholly past the end answered with 416. Several ranges in one request get the whole
//! file, which RFC 9110 allows (a server may ignore `Range`), as do ranges in a unit other
//! than bytes and syntactically invalid ones.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};

/// A file's validators, as sent in `ETag` and `Last-Modified`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// Strong: the modification time to the nanosecond and the length, so a rewrite of
    /// the file within the same second still changes it.
    pub etag: String,
    /// The modification time to the second (what an HTTP date can carry).
    pub modified: SystemTime,
}

impl Validators {
    pub fn of(len: u64, modified: SystemTime) -> Self {
        let since_epoch = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            etag: format!("\"{:x}-{:x}\"", since_epoch.as_nanos(), len),
            modified: UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs()),
        }
    }

    /// `Last-Modified`'s value.
    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(self.modified)
    }
}

/// What to answer a GET or HEAD of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200, the whole file.
    Whole,
    /// 206, bytes `start..=end` (both inside the file).
    Part { start: u64, end: u64 },
    /// 304: the client's copy is current.
    NotModified,
    /// 416: the range starts past the end of the file (or asks for no byte of it).
    Unsatisfiable,
}

/// The answer to a request with `headers` for a file of `len` bytes with validators `v`
/// (RFC 9110, section 13.2.2's order for GET and HEAD: `If-None-Match`, else
/// `If-Modified-Since`; then `If-Range`, then `Range`).
pub fn decide(headers: &HeaderMap, len: u64, v: &Validators) -> Answer {
    let text = |name| headers.get(name).and_then(|h| h.to_str().ok());
    if headers.contains_key(header::IF_NONE_MATCH) {
        // a value that is not text matches nothing
        if text(header::IF_NONE_MATCH).is_some_and(|list| weak_match(list, &v.etag)) {
            return Answer::NotModified;
        }
    } else if let Some(since) =
        text(header::IF_MODIFIED_SINCE).and_then(|d| httpdate::parse_http_date(d).ok())
    {
        if v.modified <= since {
            return Answer::NotModified;
        }
    }
    let Some(range) = text(header::RANGE) else {
        return Answer::Whole;
    };
    if headers.contains_key(header::IF_RANGE) {
        let current = text(header::IF_RANGE).is_some_and(|validator| {
            let validator = validator.trim();
            if validator.starts_with('"') || validator.starts_with("W/") {
                // strong comparison: a weak tag never matches
                validator == v.etag
            } else {
                httpdate::parse_http_date(validator).is_ok_and(|d| d == v.modified)
            }
        });
        if !current {
            return Answer::Whole;
        }
    }
    parse_range(range, len)
}

/// `If-None-Match`'s list against our tag, by weak comparison (`W/` ignored), or `*`.
fn weak_match(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// A `Range` value for a file of `len` bytes: one byte range is served, anything else
/// (other units, several ranges, bad syntax) gets the whole file.
pub fn parse_range(value: &str, len: u64) -> Answer {
    let Some((unit, set)) = value.split_once('=') else {
        return Answer::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Answer::Whole;
    }
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return Answer::Whole;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Answer::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            // more digits than a u64 holds: further than any file reaches
            .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
    };
    if first.is_empty() {
        // the last `n` bytes
        let Some(n) = number(last) else {
            return Answer::Whole;
        };
        if n == 0 || len == 0 {
            return Answer::Unsatisfiable;
        }
        return Answer::Part {
            start: len.saturating_sub(n),
            end: len - 1,
        };
    }
    let Some(start) = number(first) else {
        return Answer::Whole;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            _ => return Answer::Whole,
        }
    };
    if start >= len {
        return Answer::Unsatisfiable;
    }
    Answer::Part {
        start,
        end: end.min(len - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(name.clone(), HeaderValue::from_str(value).expect("value"));
        }
        h
    }

    #[test]
    fn byte_ranges_as_rfc_9110_reads() {
        use Answer::*;
        let part = |start, end| Part { start, end };
        for (value, len, answer) in [
            ("bytes=0-99", 1000, part(0, 99)),
            ("bytes=100-", 1000, part(100, 999)),
            ("bytes=-100", 1000, part(900, 999)),
            ("bytes=-5000", 1000, part(0, 999)),
            ("bytes=990-5000", 1000, part(990, 999)),
            ("bytes=999-999", 1000, part(999, 999)),
            ("BYTES = 5-9", 1000, part(5, 9)),
            ("bytes=0-", 1, part(0, 0)),
            ("bytes=-99999999999999999999999", 10, part(0, 9)),
            ("bytes=1000-", 1000, Unsatisfiable),
            ("bytes=5000-6000", 1000, Unsatisfiable),
            ("bytes=99999999999999999999999-", 1000, Unsatisfiable),
            ("bytes=-0", 1000, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-1", 0, Unsatisfiable),
            // the whole file: other units, several ranges, bad syntax
            ("items=0-9", 1000, Whole),
            ("bytes=0-9,20-29", 1000, Whole),
            ("bytes=9-0", 1000, Whole),
            ("bytes=a-9", 1000, Whole),
            ("bytes=0-9x", 1000, Whole),
            ("bytes=+1-9", 1000, Whole),
            ("bytes=-", 1000, Whole),
            ("bytes=", 1000, Whole),
            ("bytes 0-9", 1000, Whole),
            ("", 1000, Whole),
        ] {
            assert_eq!(parse_range(value, len), answer, "{value:?} of {len}");
        }
    }

    #[test]
    fn validators_and_the_order_of_the_preconditions() {
        let modified = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let v = Validators::of(1000, modified);
        assert_eq!(
            v.etag,
            format!("\"{:x}-3e8\"", 1_700_000_000_123_456_789u128)
        );
        assert_eq!(v.last_modified(), "Tue, 14 Nov 2023 22:13:20 GMT");
        let later = "Wed, 15 Nov 2023 00:00:00 GMT";
        let earlier = "Mon, 13 Nov 2023 00:00:00 GMT";
        let etag = v.etag.as_str();
        let weak = format!("W/{etag}");
        let last_modified = v.last_modified();
        let last_modified = last_modified.as_str();
        use Answer::*;
        for (h, answer) in [
            (vec![], Whole),
            (vec![(header::IF_NONE_MATCH, etag)], NotModified),
            (vec![(header::IF_NONE_MATCH, weak.as_str())], NotModified),
            (vec![(header::IF_NONE_MATCH, "\"x\", *")], NotModified),
            (vec![(header::IF_NONE_MATCH, "\"other\"")], Whole),
            (
                vec![(header::IF_MODIFIED_SINCE, last_modified)],
                NotModified,
            ),
            (vec![(header::IF_MODIFIED_SINCE, later)], NotModified),
            (vec![(header::IF_MODIFIED_SINCE, earlier)], Whole),
            (vec![(header::IF_MODIFIED_SINCE, "yesterday")], Whole),
            // If-None-Match decides alone when present
            (
                vec![
                    (header::IF_NONE_MATCH, "\"other\""),
                    (header::IF_MODIFIED_SINCE, later),
                ],
                Whole,
            ),
            (
                vec![(header::RANGE, "bytes=0-9")],
                Part { start: 0, end: 9 },
            ),
            (
                vec![(header::RANGE, "bytes=0-9"), (header::IF_RANGE, etag)],
                Part { start: 0, end: 9 },
            ),
            (
                vec![
                    (header::RANGE, "bytes=0-9"),
                    (header::IF_RANGE, weak.as_str()),
                ],
                Whole,
            ),
            (
                vec![
                    (header::RANGE, "bytes=0-9"),
                    (header::IF_RANGE, "\"other\""),
                ],
                Whole,
            ),
            (
                vec![
                    (header::RANGE, "bytes=0-9"),
                    (header::IF_RANGE, last_modified),
                ],
                Part { start: 0, end: 9 },
            ),
            (
                vec![(header::RANGE, "bytes=0-9"), (header::IF_RANGE, later)],
                Whole,
            ),
            // a current copy is not sent again, range or not
            (
                vec![(header::RANGE, "bytes=0-9"), (header::IF_NONE_MATCH, etag)],
                NotModified,
            ),
            (vec![(header::RANGE, "bytes=2000-")], Unsatisfiable),
        ] {
            assert_eq!(decide(&headers(&h), 1000, &v), answer, "{h:?}");
        }
        // a rewrite within the same second changes the tag, not the date
        let again = Validators::of(1000, modified + Duration::from_nanos(1));
        assert_ne!(again.etag, v.etag);
        assert_eq!(again.modified, v.modified);
        assert_eq!(Validators::of(999, modified).modified, v.modified);
        assert_ne!(Validators::of(999, modified).etag, v.etag);
    }
}
