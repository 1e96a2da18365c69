//! Object filters of partial clone (`filter <spec>` in a v2 fetch, git's
//! `--filter=<spec>`): which trees and blobs a fetch leaves out. The client records the
//! pack as a promisor's and fetches what it lacks later, by id; objects a fetch wants by
//! id are always sent, whatever the filter.
//!
//! Supported, as git's `list-objects-filter` reads them: `blob:none`,
//! `blob:limit=<n>[kmg]` (blobs of at least n bytes left out) and `tree:<depth>` (trees
//! and blobs at depth ≥ depth below the root tree left out; `tree:0` sends commits and
//! tags only). Any other spec is refused with a clear error.

use gix::hash::oid;
use gix::objs::Find;

/// Longest filter spec accepted, bytes (git's own specs are a few dozen).
pub const MAX_FILTER_SPEC: usize = 256;

/// A parsed filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFilter {
    /// `blob:none`: no blobs.
    BlobNone,
    /// `blob:limit=<n>`: blobs smaller than n bytes only.
    BlobLimit(u64),
    /// `tree:<depth>`: trees and blobs less than depth below the root tree only.
    TreeDepth(u64),
}

impl ObjectFilter {
    /// Parses a spec (the text after `filter `).
    pub fn parse(spec: &[u8]) -> Result<Self, String> {
        let shown =
            || String::from_utf8_lossy(&spec[..spec.len().min(MAX_FILTER_SPEC)]).to_string();
        if spec.len() > MAX_FILTER_SPEC {
            return Err(format!("filter spec longer than {MAX_FILTER_SPEC} bytes"));
        }
        let text =
            std::str::from_utf8(spec).map_err(|_| format!("invalid filter spec {:?}", shown()))?;
        if text == "blob:none" {
            return Ok(ObjectFilter::BlobNone);
        }
        if let Some(n) = text.strip_prefix("blob:limit=") {
            return parse_size(n)
                .map(ObjectFilter::BlobLimit)
                .ok_or_else(|| format!("invalid filter spec {text:?}: bad size"));
        }
        if let Some(d) = text.strip_prefix("tree:") {
            return d
                .parse::<u64>()
                .ok()
                .filter(|_| d.bytes().all(|b| b.is_ascii_digit()))
                .map(ObjectFilter::TreeDepth)
                .ok_or_else(|| format!("invalid filter spec {text:?}: bad depth"));
        }
        Err(format!(
            "unsupported filter spec {text:?} (this server knows blob:none, blob:limit=<n>, tree:<depth>)"
        ))
    }

    /// Whether a tree or blob (`is_tree`) at `depth` below the root tree (the root is at
    /// 0) is left out; a blob's size is read from `db` only for `blob:limit`.
    pub fn omits(
        &self,
        db: &dyn Find,
        id: &oid,
        is_tree: bool,
        depth: u64,
    ) -> Result<bool, String> {
        Ok(match *self {
            ObjectFilter::BlobNone => !is_tree,
            ObjectFilter::BlobLimit(limit) => {
                !is_tree && super::objects::need(db, id)?.1.len() as u64 >= limit
            }
            ObjectFilter::TreeDepth(max) => depth >= max,
        })
    }
}

/// `<n>[kmg]`, as git's `git_parse_ulong` reads it.
fn parse_size(text: &str) -> Option<u64> {
    let (digits, unit) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&text[..text.len() - 1], 1 << 20),
        b'g' | b'G' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_unknown_ones_are_refused() {
        assert_eq!(
            ObjectFilter::parse(b"blob:none"),
            Ok(ObjectFilter::BlobNone)
        );
        assert_eq!(
            ObjectFilter::parse(b"blob:limit=1k"),
            Ok(ObjectFilter::BlobLimit(1024))
        );
        assert_eq!(
            ObjectFilter::parse(b"blob:limit=3"),
            Ok(ObjectFilter::BlobLimit(3))
        );
        assert_eq!(
            ObjectFilter::parse(b"blob:limit=2g"),
            Ok(ObjectFilter::BlobLimit(2 << 30))
        );
        assert_eq!(
            ObjectFilter::parse(b"tree:0"),
            Ok(ObjectFilter::TreeDepth(0))
        );
        assert_eq!(
            ObjectFilter::parse(b"tree:2"),
            Ok(ObjectFilter::TreeDepth(2))
        );
        for bad in [
            &b"blob:limit="[..],
            b"blob:limit=k",
            b"blob:limit=-1",
            b"blob:limit=99999999999999999999g",
            b"tree:",
            b"tree:+1",
            b"tree:x",
            b"\xff",
        ] {
            assert!(ObjectFilter::parse(bad).is_err(), "{bad:?}");
        }
        let e = ObjectFilter::parse(b"sparse:oid=main:x").expect_err("unsupported");
        assert!(e.contains("unsupported filter spec"), "{e}");
        assert!(ObjectFilter::parse(&[b'a'; MAX_FILTER_SPEC + 1]).is_err());
    }
}
