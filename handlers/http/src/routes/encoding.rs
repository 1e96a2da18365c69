//! Precompressed static files, as nginx's `gzip_static` serves them: beside `app.js` an
//! `app.js.br` or `app.js.gz` made at build time is sent, with `Content-Encoding`, to a
//! client whose `Accept-Encoding` allows it. Nothing is compressed on the fly (no CPU per
//! request, no compressor reachable by a peer). This module only reads `Accept-Encoding`
//! (RFC 9110, section 12.5.3), with no IO.

/// A content coding a static file may be stored in beside the file itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Gzip,
}

impl Coding {
    /// In the order they are preferred: brotli files are the smaller.
    pub const PREFERRED: [Coding; 2] = [Coding::Br, Coding::Gzip];

    /// `Content-Encoding`'s value.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// What the precompressed file's name adds to the file's.
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Gzip => ".gz",
        }
    }

    fn named(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("br") {
            Some(Coding::Br)
        } else if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
            Some(Coding::Gzip)
        } else {
            None
        }
    }
}

/// The codings `accept` (an `Accept-Encoding` value) allows, in [`Coding::PREFERRED`]
/// order: one listed with a weight above zero, or not listed while `*` has one. A weight
/// that does not parse drops its element (it cannot be told apart from a refusal).
pub fn acceptable(accept: &str) -> Vec<Coding> {
    // per coding: Some(allowed) once listed; and the same for `*`
    let mut listed: [Option<bool>; 2] = [None, None];
    let mut any: Option<bool> = None;
    for element in accept.split(',') {
        let mut parts = element.split(';');
        let token = parts.next().unwrap_or_default().trim();
        if token.is_empty() {
            continue;
        }
        let mut weight = Some(true);
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("q") {
                weight = qvalue(value.trim()).map(|q| q > 0);
            }
        }
        let Some(allowed) = weight else {
            continue;
        };
        if token == "*" {
            any = Some(allowed);
        } else if let Some(coding) = Coding::named(token) {
            let i = Coding::PREFERRED
                .iter()
                .position(|c| *c == coding)
                .unwrap_or(0);
            listed[i] = Some(allowed);
        }
    }
    Coding::PREFERRED
        .iter()
        .zip(listed)
        .filter(|(_, allowed)| allowed.or(any).unwrap_or(false))
        .map(|(coding, _)| *coding)
        .collect()
}

/// A weight (`qvalue`: `0`, `0.5`, `1.000`...) in thousandths, if it is one.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coding::*;

    #[test]
    fn accept_encoding_as_rfc_9110_reads() {
        for (accept, want) in [
            ("gzip", vec![Gzip]),
            ("br", vec![Br]),
            ("deflate, gzip, br, zstd", vec![Br, Gzip]),
            ("gzip;q=1.0, br;q=0", vec![Gzip]),
            ("BR;Q=0.5, X-GZIP", vec![Br, Gzip]),
            ("*", vec![Br, Gzip]),
            ("*;q=0.1, br;q=0", vec![Gzip]),
            ("gzip;q=0, *", vec![Br]),
            ("identity", vec![]),
            ("*;q=0", vec![]),
            ("", vec![]),
            (" , ,gzip", vec![Gzip]),
            // weights that are not qvalues drop their element
            ("gzip;q=2", vec![]),
            ("gzip;q=0.0001", vec![]),
            ("gzip;q=abc, br", vec![Br]),
            ("gzip;q=0.001", vec![Gzip]),
            ("gzip;q=1.", vec![Gzip]),
        ] {
            assert_eq!(acceptable(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn qvalues() {
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.125"), Some(125));
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("1.5"), None);
        assert_eq!(qvalue("0.1234"), None);
        assert_eq!(qvalue(".5"), None);
        assert_eq!(qvalue("-0"), None);
    }
}
