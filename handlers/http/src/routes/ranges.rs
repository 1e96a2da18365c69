//! Conditional and range requests on the static files (RFC 9110, sections 13 and 14):
//! what a GET or HEAD asks of a file, decided from the request's headers and the file's
//! length and modification time alone, with no IO, so that every rule is unit-tested.
//!
//! Served as nginx serves files: a strong entity tag and `Last-Modified` on every answer,
//! `If-None-Match` (weak comparison, `*`) and otherwise `If-Modified-Since` answered with
//! 304, one byte range (`bytes=a-b`, `a-`, `-n`) answered with 206 and `Content-Range`,
//! `If-Range` honoured (the range only while the client's copy is this one), a range
//! wholly past the end answered with 416. Several ranges in one request are served as a
//! `multipart/byteranges` body (RFC 9110, section 14.6), in the order asked, up to
//! `[http] static_max_ranges` of them; the whole file goes instead (RFC 9110 lets a server
//! ignore `Range`) to a request with more ranges than that, or whose ranges add up to more
//! than the file (overlapping ranges, the "Apache Killer" request: nginx's rule), or with
//! ranges in a unit other than bytes or syntactically invalid ones. Ranges past the end
//! are dropped from a set that has others; a set of only those is 416.

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

/// Bytes `start..=end` of a file, both inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    /// Bytes in the span (at least one).
    pub fn byte_count(&self) -> u64 {
        self.end - self.start + 1
    }

    /// `Content-Range`'s value for this span of a file of `of` bytes.
    pub fn content_range(&self, of: u64) -> String {
        format!("bytes {}-{}/{of}", self.start, self.end)
    }
}

/// What to answer a GET or HEAD of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200, the whole file.
    Whole,
    /// 206 with `Content-Range`: one span.
    Part(Span),
    /// 206, `multipart/byteranges`: two or more spans, in the order the client asked, none
    /// past the end, adding up to no more than the file.
    Parts(Vec<Span>),
    /// 304: the client's copy is current.
    NotModified,
    /// 416: the range starts past the end of the file (or asks for no byte of it).
    Unsatisfiable,
}

/// The answer to a request with `headers` for a file of `len` bytes with validators `v`
/// (RFC 9110, section 13.2.2's order for GET and HEAD: `If-None-Match`, else
/// `If-Modified-Since`; then `If-Range`, then `Range`), serving at most `max_ranges`
/// ranges in one response.
pub fn decide(headers: &HeaderMap, len: u64, v: &Validators, max_ranges: usize) -> Answer {
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
    parse_range(range, len, max_ranges)
}

/// `If-None-Match`'s list against our tag, by weak comparison (`W/` ignored), or `*`.
fn weak_match(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// A `Range` value for a file of `len` bytes, serving at most `max_ranges` ranges: what
/// the module's header says.
pub fn parse_range(value: &str, len: u64, max_ranges: usize) -> Answer {
    let Some((unit, set)) = value.split_once('=') else {
        return Answer::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Answer::Whole;
    }
    // empty list elements are allowed (RFC 9110, section 5.6.1)
    let specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let mut spans = Vec::new();
    let mut asked = 0usize;
    for spec in specs {
        asked += 1;
        if asked > max_ranges.max(1) {
            return Answer::Whole;
        }
        match parse_spec(spec, len) {
            Spec::Invalid => return Answer::Whole,
            Spec::PastTheEnd => {}
            Spec::Satisfiable(span) => spans.push(span),
        }
    }
    if asked == 0 {
        return Answer::Whole;
    }
    match spans.len() {
        0 => Answer::Unsatisfiable,
        1 => Answer::Part(spans[0]),
        _ => {
            let total = spans
                .iter()
                .fold(0u64, |t, s| t.saturating_add(s.byte_count()));
            if total > len {
                Answer::Whole
            } else {
                Answer::Parts(spans)
            }
        }
    }
}

/// One range of a `Range` header.
enum Spec {
    /// Not a byte range (the whole header is then ignored).
    Invalid,
    /// Starts past the end of the file, or asks for no byte of it.
    PastTheEnd,
    Satisfiable(Span),
}

/// `a-b`, `a-` or `-n` of a file of `len` bytes.
fn parse_spec(spec: &str, len: u64) -> Spec {
    let Some((first, last)) = spec.split_once('-') else {
        return Spec::Invalid;
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
            return Spec::Invalid;
        };
        if n == 0 || len == 0 {
            return Spec::PastTheEnd;
        }
        return Spec::Satisfiable(Span {
            start: len.saturating_sub(n),
            end: len - 1,
        });
    }
    let Some(start) = number(first) else {
        return Spec::Invalid;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            _ => return Spec::Invalid,
        }
    };
    if start >= len {
        return Spec::PastTheEnd;
    }
    Spec::Satisfiable(Span {
        start,
        end: end.min(len - 1),
    })
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

    fn span(start: u64, end: u64) -> Span {
        Span { start, end }
    }

    #[test]
    fn byte_ranges_as_rfc_9110_reads() {
        use Answer::*;
        let part = |start, end| Part(span(start, end));
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
            // several: in the order asked, those past the end dropped
            (
                "bytes=0-9,20-29",
                1000,
                Parts(vec![span(0, 9), span(20, 29)]),
            ),
            (
                "bytes=500-599, -10 ,0-0",
                1000,
                Parts(vec![span(500, 599), span(990, 999), span(0, 0)]),
            ),
            ("bytes=0-9,2000-", 1000, part(0, 9)),
            ("bytes=,0-9,,", 1000, part(0, 9)),
            ("bytes=2000-,3000-3999,-0", 1000, Unsatisfiable),
            // overlapping, but no more than the file in all
            (
                "bytes=0-499,250-749",
                1000,
                Parts(vec![span(0, 499), span(250, 749)]),
            ),
            // the whole file: more than the file in all, other units, bad syntax
            ("bytes=0-,0-", 1000, Whole),
            ("bytes=0-600,500-999", 1000, Whole),
            ("items=0-9", 1000, Whole),
            ("bytes=0-9,x", 1000, Whole),
            ("bytes=9-0", 1000, Whole),
            ("bytes=a-9", 1000, Whole),
            ("bytes=0-9x", 1000, Whole),
            ("bytes=+1-9", 1000, Whole),
            ("bytes=-", 1000, Whole),
            ("bytes=", 1000, Whole),
            ("bytes=,", 1000, Whole),
            ("bytes 0-9", 1000, Whole),
            ("", 1000, Whole),
        ] {
            assert_eq!(parse_range(value, len, 4), answer, "{value:?} of {len}");
        }
    }

    /// More ranges than `max_ranges` get the whole file, however small they are (each
    /// part costs a read and a part header); 1 serves single ranges only.
    #[test]
    fn the_number_of_ranges_is_bounded() {
        let four = "bytes=0-0,2-2,4-4,6-6";
        assert_eq!(
            parse_range(four, 100, 4),
            Answer::Parts(vec![span(0, 0), span(2, 2), span(4, 4), span(6, 6)])
        );
        assert_eq!(parse_range(four, 100, 3), Answer::Whole);
        assert_eq!(parse_range("bytes=0-0,2-2", 100, 1), Answer::Whole);
        assert_eq!(parse_range("bytes=0-0", 100, 1), Answer::Part(span(0, 0)));
        // a limit of zero is taken as one (the configuration refuses it anyway)
        assert_eq!(parse_range("bytes=5-", 100, 0), Answer::Part(span(5, 99)));
        // a range past the end still counts: the header is what is bounded
        let many = format!("bytes=0-0{}", ",5000-".repeat(10));
        assert_eq!(parse_range(&many, 100, 4), Answer::Whole);
        assert_eq!(span(3, 9).byte_count(), 7);
        assert_eq!(span(3, 9).content_range(10), "bytes 3-9/10");
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
            (vec![(header::RANGE, "bytes=0-9")], Part(span(0, 9))),
            (
                vec![(header::RANGE, "bytes=0-9,20-29")],
                Parts(vec![span(0, 9), span(20, 29)]),
            ),
            (
                vec![(header::RANGE, "bytes=0-9"), (header::IF_RANGE, etag)],
                Part(span(0, 9)),
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
                Part(span(0, 9)),
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
            assert_eq!(decide(&headers(&h), 1000, &v, 16), answer, "{h:?}");
        }
        // a rewrite within the same second changes the tag, not the date
        let again = Validators::of(1000, modified + Duration::from_nanos(1));
        assert_ne!(again.etag, v.etag);
        assert_eq!(again.modified, v.modified);
        assert_eq!(Validators::of(999, modified).modified, v.modified);
        assert_ne!(Validators::of(999, modified).etag, v.etag);
    }
}
