//! Object filters of partial clone (`filter <spec>` in a fetch, git's `--filter=<spec>`):
//! which objects a fetch leaves out. The client records the pack as a promisor's and
//! fetches what it lacks later, by id; objects a fetch wants by id are always sent,
//! whatever the filter.
//!
//! Supported, as git's `list-objects-filter` reads them:
//! - `blob:none`; `blob:limit=<n>[kmg]` (blobs of at least n bytes left out);
//! - `tree:<depth>` (trees and blobs at depth ≥ depth below the root tree left out;
//!   `tree:0` sends commits and tags only);
//! - `object:type=<blob|tree|commit|tag>`: only objects of that type, besides what the
//!   client asked for by id (git walks the history and the trees all the same: with
//!   `blob` the trees are left out but the blobs beneath them are sent);
//! - `combine:<f1>+<f2>+…`: an object is sent only if every sub-filter sends it (git
//!   sends this when given several `--filter` options). Each sub-filter is URL-encoded
//!   (`%XX`); git's reserved characters must be encoded, as git requires;
//! - `sparse:oid=<blob>`: blobs only where a sparse checkout of the patterns in that
//!   blob would put them (an object id or `<rev>:<path>` of the served repository, read
//!   by [`ObjectFilter::load_sparse`] once the spec is parsed; see [`super::sparse`]);
//!   trees, commits and tags are all sent.
//!
//! Anything else (git's dropped `sparse:path=`, a typo) is refused with an error the
//! client shows. The parser is written for a hostile peer: the spec's length, the number
//! of sub-filters and the nesting of `combine:` are bounded ([`MAX_FILTER_SPEC`],
//! [`MAX_COMBINED_FILTERS`], [`MAX_FILTER_DEPTH`]), so a parse allocates at most a few
//! times the spec's length.
//!
//! Where git differs: inside `combine:`, git's sub-filters each remember the objects
//! they passed, so with `sparse:oid` a blob first met where the patterns leave it out is
//! not sent where they put it in later (it depends on git's walk order); here a blob
//! goes when, somewhere it is met, every sub-filter sends it.

use std::sync::Arc;

use gix::hash::oid;
use gix::objs::Find;
use gix::objs::Kind;

use super::sparse::SparsePatterns;

/// Longest filter spec accepted, bytes (git's own specs are a few dozen; a `combine:` of
/// several stays well under this).
pub const MAX_FILTER_SPEC: usize = 512;

/// Most sub-filters in one `combine:` (all levels together).
pub const MAX_COMBINED_FILTERS: usize = 16;

/// Most levels of `combine:` in one spec, the outermost included (git flattens what it
/// sends: one level).
pub const MAX_FILTER_DEPTH: usize = 4;

/// Characters git requires a `combine:` sub-filter to encode (`%XX`), besides
/// whitespace and control characters (git's `RESERVED_NON_WS`).
const RESERVED: &[u8] = b"~`!@#$^&*()[]{}\\;'\",<>?";

/// A filter spec that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("filter spec longer than {MAX_FILTER_SPEC} bytes")]
    TooLong,
    #[error("invalid filter spec {0:?}: not UTF-8")]
    NotUtf8(String),
    #[error("invalid filter spec {spec:?}: {problem}")]
    Invalid { spec: String, problem: &'static str },
    #[error("invalid filter spec {0:?}: combine: more than {MAX_FILTER_DEPTH} levels")]
    TooDeep(String),
    #[error("invalid filter spec {0:?}: combine: more than {MAX_COMBINED_FILTERS} filters")]
    TooMany(String),
    #[error(
        "unsupported filter spec {0:?} (this server knows blob:none, blob:limit=<n>, tree:<depth>, object:type=<type>, sparse:oid=<blob>, combine:<filter>+<filter>)"
    )]
    Unsupported(String),
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectFilter {
    /// `blob:none`: no blobs.
    BlobNone,
    /// `blob:limit=<n>`: blobs smaller than n bytes only.
    BlobLimit(u64),
    /// `tree:<depth>`: trees and blobs less than depth below the root tree only.
    TreeDepth(u64),
    /// `object:type=<type>`: objects of that type only.
    ObjectType(Kind),
    /// `combine:`: what every one of these sends.
    Combine(Vec<ObjectFilter>),
    /// `sparse:oid=<name>` as the client sent it, its blob not read yet
    /// ([`ObjectFilter::load_sparse`]).
    SparseOid(String),
    /// `sparse:oid=` with its patterns read: blobs only where they put them. `bit`
    /// numbers it among the spec's sparse filters (its bit in [`SparseMarks`]).
    Sparse {
        patterns: Arc<SparsePatterns>,
        bit: u32,
    },
}

/// For each `sparse:oid=` filter of a spec (bit [`ObjectFilter::Sparse`]`::bit`), whether
/// a directory is in: the decision its paths take when no pattern matches them.
pub type SparseMarks = u32;

/// Where a tree or blob is met in the walk.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// Levels below the root tree (the root is at 0).
    pub depth: u64,
    /// Its path from the root tree (`""` for the root); filled only when the filter
    /// [`ObjectFilter::needs_paths`].
    pub path: &'a [u8],
    /// The marks of the directory it is in ([`ObjectFilter::marks_of_dir`]).
    pub marks: SparseMarks,
}

impl Place<'_> {
    /// The root tree.
    pub const ROOT: Place<'static> = Place {
        depth: 0,
        path: b"",
        marks: 0,
    };
}

/// What a filter does with a tree or blob met in the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Sent.
    Keep,
    /// Left out; for a tree, with everything beneath it (unless met again elsewhere).
    Omit,
    /// A tree left out whose entries are still walked (`object:type=blob`).
    OmitButWalk,
}

impl ObjectFilter {
    /// Parses a spec (the text after `filter `).
    pub fn parse(spec: &[u8]) -> Result<Self, FilterError> {
        if spec.len() > MAX_FILTER_SPEC {
            return Err(FilterError::TooLong);
        }
        let mut budget = MAX_COMBINED_FILTERS;
        Self::parse_at(spec, 0, &mut budget)
    }

    /// Parses `spec` nested `depth` deep in `combine:`; `budget` counts the sub-filters
    /// still allowed.
    fn parse_at(spec: &[u8], depth: usize, budget: &mut usize) -> Result<Self, FilterError> {
        let text = std::str::from_utf8(spec)
            .map_err(|_| FilterError::NotUtf8(String::from_utf8_lossy(spec).into_owned()))?;
        let invalid = |problem| FilterError::Invalid {
            spec: text.to_string(),
            problem,
        };
        if text == "blob:none" {
            return Ok(ObjectFilter::BlobNone);
        }
        if let Some(n) = text.strip_prefix("blob:limit=") {
            return parse_size(n)
                .map(ObjectFilter::BlobLimit)
                .ok_or_else(|| invalid("bad size"));
        }
        if let Some(d) = text.strip_prefix("tree:") {
            return parse_digits(d)
                .map(ObjectFilter::TreeDepth)
                .ok_or_else(|| invalid("bad depth"));
        }
        if let Some(t) = text.strip_prefix("object:type=") {
            return match t {
                "blob" => Ok(ObjectFilter::ObjectType(Kind::Blob)),
                "tree" => Ok(ObjectFilter::ObjectType(Kind::Tree)),
                "commit" => Ok(ObjectFilter::ObjectType(Kind::Commit)),
                "tag" => Ok(ObjectFilter::ObjectType(Kind::Tag)),
                _ => Err(invalid("unknown object type")),
            };
        }
        if let Some(name) = text.strip_prefix("sparse:oid=") {
            if name.is_empty() {
                return Err(invalid("sparse:oid= names no object"));
            }
            return Ok(ObjectFilter::SparseOid(name.to_string()));
        }
        if text.starts_with("sparse:path=") {
            return Err(invalid("sparse:path filters support has been dropped"));
        }
        if let Some(body) = text.strip_prefix("combine:") {
            if depth >= MAX_FILTER_DEPTH {
                return Err(FilterError::TooDeep(text.to_string()));
            }
            let mut subs = Vec::new();
            for part in body.split('+') {
                if part.is_empty() {
                    return Err(invalid("combine: an empty sub-filter"));
                }
                if part
                    .bytes()
                    .any(|b| RESERVED.contains(&b) || b.is_ascii_whitespace() || b < 0x20)
                {
                    return Err(invalid("combine: a sub-filter with an unencoded character"));
                }
                *budget = budget
                    .checked_sub(1)
                    .ok_or_else(|| FilterError::TooMany(text.to_string()))?;
                let decoded =
                    percent_decode(part).ok_or_else(|| invalid("combine: bad %-encoding"))?;
                subs.push(Self::parse_at(&decoded, depth + 1, budget)?);
            }
            if subs.len() == 1 {
                // git sends `combine:` only for two or more, but one is unambiguous
                return Ok(subs.remove(0));
            }
            return Ok(ObjectFilter::Combine(subs));
        }
        Err(FilterError::Unsupported(text.to_string()))
    }

    /// Reads the patterns of every `sparse:oid=` in the filter with `load` (given the
    /// object name the client sent), numbering them for [`SparseMarks`].
    pub fn load_sparse(
        &mut self,
        load: &mut dyn FnMut(&str) -> Result<SparsePatterns, String>,
    ) -> Result<(), String> {
        let mut next_bit = 0;
        self.load_sparse_from(load, &mut next_bit)
    }

    fn load_sparse_from(
        &mut self,
        load: &mut dyn FnMut(&str) -> Result<SparsePatterns, String>,
        next_bit: &mut u32,
    ) -> Result<(), String> {
        match self {
            ObjectFilter::SparseOid(name) => {
                // the parser's bound on sub-filters keeps this under 32
                if *next_bit >= SparseMarks::BITS {
                    return Err("too many sparse:oid filters".into());
                }
                let patterns = Arc::new(load(name)?);
                *self = ObjectFilter::Sparse {
                    patterns,
                    bit: *next_bit,
                };
                *next_bit += 1;
            }
            ObjectFilter::Combine(subs) => {
                for sub in subs {
                    sub.load_sparse_from(load, next_bit)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The marks the entries of the tree at `place` inherit: for each sparse filter, the
    /// decision of the last pattern matching the directory, else its parent's (git's
    /// `list-objects-filter` keeps the same frames; the root's parent is out).
    pub fn marks_of_dir(&self, place: &Place<'_>) -> SparseMarks {
        match self {
            ObjectFilter::Sparse { patterns, bit } => {
                let mask = 1 << bit;
                let in_ = patterns
                    .decide(place.path, true)
                    .unwrap_or(place.marks & mask != 0);
                (place.marks & !mask) | if in_ { mask } else { 0 }
            }
            ObjectFilter::Combine(subs) => subs.iter().fold(place.marks, |marks, sub| {
                let mask = sub.sparse_mask();
                (marks & !mask) | (sub.marks_of_dir(place) & mask)
            }),
            _ => place.marks,
        }
    }

    /// The bits of this filter's sparse filters.
    fn sparse_mask(&self) -> SparseMarks {
        match self {
            ObjectFilter::Sparse { bit, .. } => 1 << bit,
            ObjectFilter::Combine(subs) => subs.iter().fold(0, |m, s| m | s.sparse_mask()),
            _ => 0,
        }
    }

    /// Whether verdicts need the path of what is met (`sparse:oid`).
    pub fn needs_paths(&self) -> bool {
        match self {
            ObjectFilter::Sparse { .. } | ObjectFilter::SparseOid(_) => true,
            ObjectFilter::Combine(subs) => subs.iter().any(ObjectFilter::needs_paths),
            _ => false,
        }
    }

    /// What happens to a tree or blob (`is_tree`) met at `place`; a blob's size is read
    /// from `db` only for `blob:limit`.
    pub fn verdict(
        &self,
        db: &dyn Find,
        id: &oid,
        is_tree: bool,
        place: &Place<'_>,
    ) -> Result<Verdict, String> {
        let omit = |yes: bool| if yes { Verdict::Omit } else { Verdict::Keep };
        let depth = place.depth;
        Ok(match self {
            ObjectFilter::BlobNone => omit(!is_tree),
            ObjectFilter::BlobLimit(limit) => {
                omit(!is_tree && super::objects::need(db, id)?.1.len() as u64 >= *limit)
            }
            ObjectFilter::TreeDepth(max) => omit(depth >= *max),
            ObjectFilter::ObjectType(kind) => match (kind, is_tree) {
                (Kind::Tree, true) | (Kind::Blob, false) => Verdict::Keep,
                // the blobs are beneath the trees
                (Kind::Blob, true) => Verdict::OmitButWalk,
                _ => Verdict::Omit,
            },
            ObjectFilter::Combine(subs) => {
                let mut out = Verdict::Keep;
                for sub in subs {
                    match sub.verdict(db, id, is_tree, place)? {
                        Verdict::Omit => return Ok(Verdict::Omit),
                        Verdict::OmitButWalk => out = Verdict::OmitButWalk,
                        Verdict::Keep => {}
                    }
                }
                out
            }
            // trees all go (git's `filter_sparse` shows every tree)
            ObjectFilter::Sparse { patterns, bit } => omit(
                !is_tree
                    && !patterns
                        .decide(place.path, false)
                        .unwrap_or(place.marks & (1 << bit) != 0),
            ),
            ObjectFilter::SparseOid(name) => {
                return Err(format!("sparse:oid={name}: the patterns were not read"))
            }
        })
    }

    /// Whether a commit or tag object (`kind`) the client did not ask for by id is left
    /// out (`object:type=` of another type, as git's upload-pack does).
    pub fn omits_unwanted(&self, kind: Kind) -> bool {
        match self {
            ObjectFilter::ObjectType(k) => *k != kind,
            ObjectFilter::Combine(subs) => subs.iter().any(|s| s.omits_unwanted(kind)),
            _ => false,
        }
    }

    /// Whether a blob's verdict depends on where it is found (`tree:<depth>`,
    /// `sparse:oid`), so that a blob left out once may still be sent when met again
    /// elsewhere.
    pub fn depends_on_place(&self) -> bool {
        match self {
            ObjectFilter::TreeDepth(_) => true,
            _ if self.needs_paths() => true,
            ObjectFilter::Combine(subs) => subs.iter().any(ObjectFilter::depends_on_place),
            _ => false,
        }
    }
}

/// Decimal digits only (no sign, no blank), as a u64.
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok()
}

/// `<n>[kmg]`, as git's `git_parse_ulong` reads it.
fn parse_size(text: &str) -> Option<u64> {
    let (digits, unit) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&text[..text.len() - 1], 1 << 20),
        b'g' | b'G' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    parse_digits(digits)?.checked_mul(unit)
}

/// `%XX` decoding (two hex digits each); `None` on a stray or short `%`.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(f: &ObjectFilter, is_tree: bool, depth: u64) -> Verdict {
        verdict_at(
            f,
            is_tree,
            Place {
                depth,
                ..Place::ROOT
            },
        )
    }

    #[test]
    fn specs_parse_and_unknown_ones_are_refused() {
        use ObjectFilter::*;
        for (spec, want) in [
            (&b"blob:none"[..], BlobNone),
            (b"blob:limit=1k", BlobLimit(1024)),
            (b"blob:limit=3", BlobLimit(3)),
            (b"blob:limit=2g", BlobLimit(2 << 30)),
            (b"tree:0", TreeDepth(0)),
            (b"tree:2", TreeDepth(2)),
            (b"object:type=blob", ObjectType(Kind::Blob)),
            (b"object:type=tree", ObjectType(Kind::Tree)),
            (b"object:type=commit", ObjectType(Kind::Commit)),
            (b"object:type=tag", ObjectType(Kind::Tag)),
            (
                b"combine:blob:none+tree:1",
                Combine(vec![BlobNone, TreeDepth(1)]),
            ),
            // git encodes what it must, and may encode more
            (
                b"combine:blob%3Alimit%3D1k+object:type=commit",
                Combine(vec![BlobLimit(1024), ObjectType(Kind::Commit)]),
            ),
            (
                b"combine:tree:3+combine%3Ablob%3Anone%2Bobject%3Atype%3Dtree",
                Combine(vec![
                    TreeDepth(3),
                    Combine(vec![BlobNone, ObjectType(Kind::Tree)]),
                ]),
            ),
            (b"combine:blob:none", BlobNone),
            (
                b"sparse:oid=main:dir/sparse",
                SparseOid("main:dir/sparse".into()),
            ),
            (
                b"sparse:oid=0123456789012345678901234567890123456789",
                SparseOid("0123456789012345678901234567890123456789".into()),
            ),
            (
                b"combine:sparse%3Aoid%3Dmain%3Aspec+blob:limit=1k",
                Combine(vec![SparseOid("main:spec".into()), BlobLimit(1024)]),
            ),
        ] {
            assert_eq!(ObjectFilter::parse(spec), Ok(want), "{spec:?}");
        }
        for bad in [
            &b"blob:limit="[..],
            b"blob:limit=k",
            b"blob:limit=-1",
            b"blob:limit=99999999999999999999g",
            b"tree:",
            b"tree:+1",
            b"tree:x",
            b"\xff",
            b"object:type=",
            b"object:type=Blob",
            b"object:type=blob ",
            b"combine:",
            b"combine:blob:none+",
            b"combine:+tree:1",
            b"combine:blob:none++tree:1",
            b"combine:blob:none+tree:1%",
            b"combine:blob:none+tree:1%4",
            b"combine:blob:none+tree%zz1",
            b"combine:blob:none+tree:1 ",
            b"combine:blob:none+sparse:oid=main~1",
            b"combine:blob:none+tree:x",
            b"combine:blob:none+%ff",
            b"sparse:oid=",
            b"sparse:path=/etc/passwd",
            b"combine:blob:none+sparse:oid=",
        ] {
            let e = ObjectFilter::parse(bad).expect_err(&format!("{bad:?}"));
            assert!(
                matches!(e, FilterError::Invalid { .. } | FilterError::NotUtf8(_)),
                "{bad:?}: {e}"
            );
        }
        for unsupported in [&b"sparse:od=main:x"[..], b"combine:blob:none+bloob:none"] {
            let e = ObjectFilter::parse(unsupported).expect_err("unsupported");
            assert!(e.to_string().contains("unsupported filter spec"), "{e}");
        }
        assert_eq!(
            ObjectFilter::parse(&[b'a'; MAX_FILTER_SPEC + 1]),
            Err(FilterError::TooLong)
        );
    }

    #[test]
    fn combine_nesting_and_width_are_bounded() {
        // each level encodes the one inside it once more (`%` → `%25`)
        let mut spec = "blob:none".to_string();
        for _ in 0..MAX_FILTER_DEPTH {
            let inner: String = spec
                .bytes()
                .map(|b| match b {
                    b'%' | b'+' | b':' | b'=' => format!("%{b:02X}"),
                    _ => (b as char).to_string(),
                })
                .collect();
            spec = format!("combine:tree:1+{inner}");
        }
        assert!(ObjectFilter::parse(spec.as_bytes()).is_ok(), "{spec}");
        let inner: String = spec.bytes().map(|b| format!("%{b:02X}")).collect();
        let deeper = format!("combine:tree:1+{inner}");
        assert!(
            deeper.len() <= MAX_FILTER_SPEC,
            "the test needs a spec in bounds"
        );
        assert!(matches!(
            ObjectFilter::parse(deeper.as_bytes()),
            Err(FilterError::TooDeep(_))
        ));
        let wide = |n: usize| format!("combine:{}", vec!["blob:none"; n].join("+"));
        assert!(ObjectFilter::parse(wide(MAX_COMBINED_FILTERS).as_bytes()).is_ok());
        assert!(matches!(
            ObjectFilter::parse(wide(MAX_COMBINED_FILTERS + 1).as_bytes()),
            Err(FilterError::TooMany(_))
        ));
    }

    #[test]
    fn verdicts_follow_git() {
        use ObjectFilter::*;
        let blob_type = ObjectType(Kind::Blob);
        assert_eq!(verdict(&blob_type, true, 0), Verdict::OmitButWalk);
        assert_eq!(verdict(&blob_type, false, 3), Verdict::Keep);
        let tree_type = ObjectType(Kind::Tree);
        assert_eq!(verdict(&tree_type, true, 2), Verdict::Keep);
        assert_eq!(verdict(&tree_type, false, 1), Verdict::Omit);
        let commit_type = ObjectType(Kind::Commit);
        assert_eq!(verdict(&commit_type, true, 0), Verdict::Omit);
        assert_eq!(verdict(&commit_type, false, 1), Verdict::Omit);
        // commits and tags not asked for by id
        assert!(blob_type.omits_unwanted(Kind::Commit));
        assert!(blob_type.omits_unwanted(Kind::Tag));
        assert!(!commit_type.omits_unwanted(Kind::Commit));
        assert!(commit_type.omits_unwanted(Kind::Tag));
        assert!(!BlobNone.omits_unwanted(Kind::Commit));
        // combine: sent only if every sub-filter sends it
        let both = Combine(vec![BlobNone, TreeDepth(2)]);
        assert_eq!(verdict(&both, true, 1), Verdict::Keep);
        assert_eq!(verdict(&both, true, 2), Verdict::Omit);
        assert_eq!(verdict(&both, false, 1), Verdict::Omit);
        let walk = Combine(vec![TreeDepth(3), blob_type.clone()]);
        assert_eq!(verdict(&walk, true, 1), Verdict::OmitButWalk);
        assert_eq!(verdict(&walk, true, 3), Verdict::Omit);
        assert_eq!(verdict(&walk, false, 2), Verdict::Keep);
        assert!(both.depends_on_place() && !blob_type.depends_on_place());
        assert!(!Combine(vec![BlobNone, commit_type]).omits_unwanted(Kind::Commit));
    }

    fn sparse(text: &str) -> SparsePatterns {
        SparsePatterns::parse(text.as_bytes(), 1 << 10, 16).expect("parses")
    }

    #[test]
    fn sparse_verdicts_take_the_directory_decision() {
        let mut f = ObjectFilter::parse(b"sparse:oid=main:spec").expect("parses");
        let mut asked = Vec::new();
        f.load_sparse(&mut |name| {
            asked.push(name.to_string());
            Ok(sparse("/docs/\n!/docs/private/\n/top.txt\n"))
        })
        .expect("loads");
        assert_eq!(asked, ["main:spec"]);
        let at = |path: &'static str, marks| Place {
            depth: 1,
            path: path.as_bytes(),
            marks,
        };
        let root = f.marks_of_dir(&Place::ROOT);
        assert_eq!(root, 0);
        let docs = f.marks_of_dir(&at("docs", root));
        assert_eq!(docs, 1);
        let private = f.marks_of_dir(&at("docs/private", docs));
        assert_eq!(private, 0);
        let docs_sub = f.marks_of_dir(&at("docs/sub", docs));
        let v = |is_tree, place: Place<'_>| verdict_at(&f, is_tree, place);
        assert_eq!(v(false, at("top.txt", root)), Verdict::Keep);
        assert_eq!(v(false, at("other.txt", root)), Verdict::Omit);
        assert_eq!(v(false, at("docs/a.md", docs)), Verdict::Keep);
        assert_eq!(v(false, at("docs/sub/b.md", docs_sub)), Verdict::Keep);
        assert_eq!(v(false, at("docs/private/c.md", private)), Verdict::Omit);
        // trees always go
        assert_eq!(v(true, at("src", root)), Verdict::Keep);
        assert_eq!(v(true, at("docs/private", docs)), Verdict::Keep);
        assert!(f.needs_paths() && f.depends_on_place());
    }

    #[test]
    fn sparse_inside_combine_keeps_its_own_marks() {
        let mut f =
            ObjectFilter::parse(b"combine:sparse%3Aoid%3Da+sparse%3Aoid%3Db+blob%3Alimit%3D1g")
                .expect("parses");
        f.load_sparse(&mut |name| Ok(sparse(if name == "a" { "/x/\n" } else { "/x/\n/y/\n" })))
            .expect("loads");
        let at = |path: &'static str, marks| Place {
            depth: 1,
            path: path.as_bytes(),
            marks,
        };
        assert_eq!(f.marks_of_dir(&at("x", 0)), 0b11);
        assert_eq!(f.marks_of_dir(&at("y", 0)), 0b10);
        // a blob goes only if every sub-filter sends it (its size is not read here: the
        // sparse verdicts come first and omit it)
        let y = f.marks_of_dir(&at("y", 0));
        let only_sparse = ObjectFilter::Combine(match &f {
            ObjectFilter::Combine(subs) => subs[..2].to_vec(),
            _ => unreachable!(),
        });
        assert_eq!(verdict_at(&only_sparse, false, at("y/f", y)), Verdict::Omit);
        let x = only_sparse.marks_of_dir(&at("x", 0));
        assert_eq!(verdict_at(&only_sparse, false, at("x/f", x)), Verdict::Keep);
        // an unread spec is an error, not a verdict
        let unread = ObjectFilter::parse(b"sparse:oid=a").expect("parses");
        let id = gix::ObjectId::null(gix::hash::Kind::Sha1);
        assert!(unread
            .verdict(
                &gix::objs::find::Never::panic_on_access(),
                &id,
                false,
                &Place::ROOT
            )
            .is_err());
    }

    fn verdict_at(f: &ObjectFilter, is_tree: bool, place: Place<'_>) -> Verdict {
        let id = gix::ObjectId::null(gix::hash::Kind::Sha1);
        // the verdicts tested here read no object
        f.verdict(
            &gix::objs::find::Never::panic_on_access(),
            &id,
            is_tree,
            &place,
        )
        .expect("no object read")
    }
}
