//! Finding the request id in the first bytes of a frame that will not be parsed.
//!
//! A frame over the size limit is never buffered whole (that is the point of the limit),
//! so it can never be parsed as JSON. Its first [`ID_SNIFF_PREFIX`](super::ID_SNIFF_PREFIX)
//! bytes are kept, and this scanner looks there for the top-level `"id"`: with it the
//! server can answer the one call with `call.error` and keep the stream, instead of
//! closing a stream that may carry other calls. Our encoder writes `type`, `id`, then
//! `payload`, so for our own peers the id is always inside the prefix.
//!
//! The scanner is deliberately not a JSON validator: it only follows the structure of the
//! top-level object (key, colon, value, comma) and skips every other value by counting
//! brackets outside strings. It runs in one pass with no recursion and no allocation but
//! the id itself, so any input (it is peer data) costs time linear in its length.

/// Tolerant scan of a (possibly truncated) JSON object prefix for a top-level `"id"` whose
/// value is a string.
///
/// Handles whitespace, escapes in keys and strings (`\"`, `\\`, `\uXXXX` including
/// surrogate pairs, so `"\u0069d"` is the key `id`), and nested objects and arrays in
/// other values; an `"id"` inside a nested value is not the request's id and is never
/// returned. Returns `None` when the prefix is not the start of an object, ends before the
/// id string is complete, the first top-level `"id"` is not a string, or the string is not
/// valid (bad escape, raw control character, invalid UTF-8).
pub fn sniff_id(prefix: &[u8]) -> Option<String> {
    let mut s = Scanner { b: prefix, i: 0 };
    s.ws();
    s.eat(b'{')?;
    loop {
        s.ws();
        match s.peek()? {
            b'}' => return None,
            b'"' => {}
            _ => return None,
        }
        let is_id = s.key_is_id()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        if is_id {
            // The first top-level "id" decides: a later duplicate is not looked at.
            return if s.peek()? == b'"' { s.string() } else { None };
        }
        s.skip_value()?;
        s.ws();
        match s.peek()? {
            b',' => s.i += 1,
            _ => return None, // '}' (no id) or malformed
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// Reads a key string (at its opening quote) and says whether it decodes to `id`.
    /// Keys are decoded rather than compared raw so that an escaped spelling of `id`
    /// cannot hide the id from us while a full parser would see it.
    fn key_is_id(&mut self) -> Option<bool> {
        let start = self.i + 1;
        // Fast path: no escape in the key (all our encoder ever writes).
        if let Some(len) = self.b.get(start..)?.iter().position(|&c| c == b'"') {
            let raw = self.b.get(start..start + len)?;
            if !raw.contains(&b'\\') {
                self.i = start + len + 1;
                return Some(raw == b"id");
            }
        }
        Some(self.string()? == "id")
    }

    /// Decodes the string at the cursor (its opening quote), leaving the cursor after the
    /// closing quote.
    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let ch = self.unicode_escape()?;
                            let mut tmp = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => out.push(c),
            }
        }
    }

    /// After `\u`: four hex digits, and for a high surrogate the `\uXXXX` low half that
    /// must follow it.
    fn unicode_escape(&mut self) -> Option<char> {
        let hi = self.hex4()?;
        match hi {
            0xd800..=0xdbff => {
                self.eat(b'\\')?;
                self.eat(b'u')?;
                let lo = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&lo) {
                    return None;
                }
                char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
            }
            0xdc00..=0xdfff => None,
            _ => char::from_u32(hi),
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.i..self.i + 4)?;
        let mut v = 0u32;
        for &d in digits {
            v = (v << 4) | char::from(d).to_digit(16)?;
        }
        self.i += 4;
        Some(v)
    }

    /// Skips a string without decoding it.
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            let rest = self.b.get(self.i..)?;
            let n = rest.iter().position(|&c| c == b'"' || c == b'\\')?;
            self.i += n + 1;
            if rest[n] == b'"' {
                return Some(());
            }
            // A backslash: whatever follows it is escaped (covers `\"` and `\\`).
            self.i += 1;
        }
    }

    /// Skips one value of any kind: strings, nested objects and arrays (by bracket depth,
    /// ignoring brackets inside strings) and scalars (up to the next delimiter).
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                // Number, true/false/null (or garbage): up to the next delimiter. An empty
                // value (`"a":,`) is malformed.
                let start = self.i;
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.i += 1;
                }
                // Reaching the end of the prefix mid-scalar is fine: the caller then finds
                // no delimiter and gives up.
                (self.i > start).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sniff_id;

    fn sniff(s: &str) -> Option<String> {
        sniff_id(s.as_bytes())
    }

    #[test]
    fn plain_and_whitespace() {
        assert_eq!(sniff(r#"{"id":"a1"}"#).as_deref(), Some("a1"));
        assert_eq!(
            sniff(" \n\t{ \"type\" : \"call.requested\" ,\r\n \"id\" :\t\"x y\" , \"payload\":1}")
                .as_deref(),
            Some("x y")
        );
        assert_eq!(sniff(r#"{"id":""}"#).as_deref(), Some(""));
    }

    #[test]
    fn escapes() {
        assert_eq!(
            sniff(r#"{"id":"a\"b\\c\/d\n"}"#).as_deref(),
            Some("a\"b\\c/d\n")
        );
        assert_eq!(
            sniff(r#"{"id":"\u00e9\ud83d\ude00"}"#).as_deref(),
            Some("é😀")
        );
        // An escaped key spelling "id" is the key id.
        assert_eq!(sniff(r#"{"\u0069d":"k"}"#).as_deref(), Some("k"));
        // Keys and values before the id holding quotes and brackets.
        assert_eq!(
            sniff(r#"{"a\"id":"}\"{[","b":"\\","id":"ok"}"#).as_deref(),
            Some("ok")
        );
        // Invalid strings: bad escape, lone surrogates, raw control character.
        assert_eq!(sniff(r#"{"id":"\q"}"#), None);
        assert_eq!(sniff(r#"{"id":"\ud83d"}"#), None);
        assert_eq!(sniff(r#"{"id":"\ude00"}"#), None);
        assert_eq!(sniff("{\"id\":\"a\u{1}\"}"), None);
        assert_eq!(sniff_id(b"{\"id\":\"\xff\"}"), None);
    }

    #[test]
    fn nested_values_are_skipped_and_nested_ids_ignored() {
        let s = r#"{"type":"call.requested","payload":{"id":"inner","x":[1,{"id":"deep"},"]"]},"id":"outer"}"#;
        assert_eq!(sniff(s).as_deref(), Some("outer"));
        // Only nested ids: none.
        assert_eq!(sniff(r#"{"payload":{"id":"inner"}}"#), None);
        assert_eq!(sniff(r#"{"payload":[{"id":"inner"}],"x":null}"#), None);
        assert_eq!(
            sniff(r#"{"n":-1.5e3,"t":true,"f":false,"z":null,"id":"s"}"#).as_deref(),
            Some("s")
        );
    }

    #[test]
    fn truncated_prefixes() {
        let full = r#"{"type":"call.requested","id":"abc\u00e9","payload":{"big":"...."}}"#;
        let id_end = full.find(r#"","payload"#).unwrap() + 1;
        for cut in 0..full.len() {
            let got = sniff_id(&full.as_bytes()[..cut]);
            if cut >= id_end {
                assert_eq!(got.as_deref(), Some("abcé"), "cut {cut}");
            } else {
                assert_eq!(got, None, "cut {cut}");
            }
        }
        // The id after a value that is cut off.
        assert_eq!(sniff(r#"{"payload":{"a":[1,2"#), None);
        assert_eq!(sniff(r#"{"payload":"abc\"#), None);
    }

    #[test]
    fn not_an_object_or_not_a_string() {
        assert_eq!(sniff(""), None);
        assert_eq!(sniff(r#"["id","x"]"#), None);
        assert_eq!(sniff(r#""id""#), None);
        assert_eq!(sniff(r#"{"id":5}"#), None);
        assert_eq!(sniff(r#"{"id":null,"id":"later"}"#), None);
        assert_eq!(sniff(r#"{}"#), None);
        assert_eq!(sniff(r#"{"a":1}"#), None);
        assert_eq!(sniff(r#"{"a" "id":"x"}"#), None);
        assert_eq!(sniff(r#"{"a":,"id":"x"}"#), None);
        assert_eq!(sniff(r#"{id:"x"}"#), None);
    }

    #[test]
    fn unbalanced_brackets_never_panic() {
        for s in [
            "{\"a\":]]]]}",
            "{\"a\":[}}}}",
            "{\"a\":{",
            "{\"a\":\"\\",
            "{\"\\u12",
        ] {
            let _ = sniff(s);
        }
    }
}
