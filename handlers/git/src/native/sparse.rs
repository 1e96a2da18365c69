//! The patterns of partial clone's `sparse:oid=<blob>` filter: a blob of the served
//! repository read as a sparse-checkout file in git's non-cone syntax (gitignore's:
//! `!` negates, a trailing `/` matches directories only, a pattern with a `/` other
//! than a trailing one is anchored at the root, `*`, `?`, `[…]` and `**` as git's
//! wildmatch reads them). A path is in when the last pattern matching it is not
//! negated; a path no pattern matches takes the decision of its nearest directory that
//! one matched, and without one it is out.
//!
//! This is a port of the parts of git's `dir.c` that `list-objects-filter.c` uses
//! (`add_patterns_from_buffer`, `parse_path_pattern`, `match_basename`,
//! `match_pathname`, `last_matching_pattern_from_list`), globbing with gix's port of
//! git's wildmatch. gix-ignore is not used: its parser differs from git's on edge
//! cases that change what a clone receives (empty patterns, `//`), and gitignore's
//! "a file in an excluded directory stays excluded" is not what the filter does.
//!
//! The blob comes from the repository, but a peer names it and may have pushed it: its
//! size and number of patterns are bounded (`[git] max_sparse_file_bytes` and
//! `max_sparse_patterns`, by default [`MAX_SPARSE_FILE_BYTES`] and
//! [`MAX_SPARSE_PATTERNS`]), and wildmatch bounds its own recursion.

use gix::bstr::ByteSlice;
use gix::glob::wildmatch;
use gix::hash::ObjectId;
use gix::objs::{Find, Kind};

/// Largest pattern blob read by default (`[git] max_sparse_file_bytes`), bytes (git reads
/// up to 100 MiB; a sparse-checkout file of a few thousand lines is a few dozen KiB).
pub const MAX_SPARSE_FILE_BYTES: usize = 256 * 1024;

/// Most patterns in one pattern blob by default (`[git] max_sparse_patterns`): every blob
/// a filtered fetch meets is matched against each of them.
pub const MAX_SPARSE_PATTERNS: usize = 4096;

/// Characters that end the literal prefix of a pattern (git's `is_glob_special`).
const GLOB_SPECIAL: &[u8] = b"*?[\\";

/// One line of the pattern file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// Without the leading `!` and the trailing `/`.
    text: Vec<u8>,
    negative: bool,
    /// A trailing `/`: directories only.
    must_be_dir: bool,
    /// No `/` (besides a trailing one): matched against the basename.
    basename_only: bool,
    /// `*literal`: a suffix match.
    ends_with: bool,
    /// Length of the literal prefix (before the first glob character).
    literal_len: usize,
}

impl Pattern {
    /// git's `parse_path_pattern`.
    fn parse(line: &[u8]) -> Self {
        let (negative, p) = match line.strip_prefix(b"!") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let (must_be_dir, p) = match p.strip_suffix(b"/") {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        Pattern {
            text: p.to_vec(),
            negative,
            must_be_dir,
            basename_only: !p.contains(&b'/'),
            ends_with: p.first() == Some(&b'*') && literal_len(&p[1..]) == p.len() - 1,
            literal_len: literal_len(p),
        }
    }

    /// Whether the pattern matches `path` (repository-relative, `""` for the root tree),
    /// whose last component starts at `basename_start`.
    fn matches(&self, path: &[u8], basename_start: usize, is_dir: bool) -> bool {
        if self.must_be_dir && !is_dir {
            return false;
        }
        if self.basename_only {
            self.matches_basename(&path[basename_start..])
        } else {
            self.matches_pathname(path)
        }
    }

    /// git's `match_basename`.
    fn matches_basename(&self, basename: &[u8]) -> bool {
        let text = &self.text[..];
        if self.literal_len == text.len() {
            text == basename
        } else if self.ends_with {
            basename.ends_with(&text[1..])
        } else {
            wildmatch(text.as_bstr(), basename.as_bstr(), wildmatch::Mode::empty())
        }
    }

    /// git's `match_pathname` for patterns read from the root (no base directory).
    fn matches_pathname(&self, path: &[u8]) -> bool {
        let (mut pattern, mut prefix) = (&self.text[..], self.literal_len);
        if let Some(rest) = pattern.strip_prefix(b"/") {
            pattern = rest;
            prefix -= 1; // the `/` is literal: counted in the prefix
        }
        // the root tree's empty path matches no anchored pattern
        if path.is_empty() {
            return false;
        }
        let mut name = path;
        if prefix > 0 {
            if prefix > name.len() || pattern[..prefix] != name[..prefix] {
                return false;
            }
            pattern = &pattern[prefix..];
            name = &name[prefix..];
            if pattern.is_empty() && name.is_empty() {
                return true;
            }
        }
        wildmatch(
            pattern.as_bstr(),
            name.as_bstr(),
            wildmatch::Mode::NO_MATCH_SLASH_LITERAL,
        )
    }
}

/// Bytes before the first glob character (git's `simple_length`).
fn literal_len(text: &[u8]) -> usize {
    text.iter()
        .position(|b| GLOB_SPECIAL.contains(b))
        .unwrap_or(text.len())
}

/// Why a pattern blob cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SparseError {
    #[error("the pattern blob is {size} bytes, more than this server reads ({limit})")]
    TooLarge { size: usize, limit: usize },
    #[error("the pattern blob has more patterns than this server reads ({0})")]
    TooManyPatterns(usize),
}

/// A parsed pattern file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparsePatterns {
    patterns: Vec<Pattern>,
}

impl SparsePatterns {
    /// Reads a pattern file as git's `add_patterns_from_buffer` does: a UTF-8 byte order
    /// mark skipped, lines split at `\n` (one `\r` before it dropped), empty lines and
    /// lines starting with `#` skipped, trailing blanks trimmed unless escaped with `\`,
    /// a line ending at a NUL byte.
    pub fn parse(data: &[u8], max_bytes: usize, max_patterns: usize) -> Result<Self, SparseError> {
        if data.len() > max_bytes {
            return Err(SparseError::TooLarge {
                size: data.len(),
                limit: max_bytes,
            });
        }
        let data = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
        let mut patterns = Vec::new();
        // the last line counts without its `\n` (git appends one)
        let body = data.strip_suffix(b"\n").unwrap_or(data);
        if data.is_empty() {
            return Ok(SparsePatterns { patterns });
        }
        for line in body.split(|b| *b == b'\n') {
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = match line.iter().position(|b| *b == 0) {
                Some(nul) => &line[..nul],
                None => line,
            };
            if patterns.len() == max_patterns {
                return Err(SparseError::TooManyPatterns(max_patterns));
            }
            patterns.push(Pattern::parse(trim_trailing_blanks(line)));
        }
        Ok(SparsePatterns { patterns })
    }

    /// How many patterns were read.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether there are none (no blob is then sent).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The decision of the last pattern matching `path` (a directory if `is_dir`; `""`
    /// is the root tree): `Some(true)` in, `Some(false)` out (a negated pattern), `None`
    /// if none matches (the path takes its directory's decision).
    pub fn decide(&self, path: &[u8], is_dir: bool) -> Option<bool> {
        let basename_start = path.iter().rposition(|b| *b == b'/').map_or(0, |p| p + 1);
        self.patterns
            .iter()
            .rev()
            .find(|p| p.matches(path, basename_start, is_dir))
            .map(|p| !p.negative)
    }
}

/// git's `trim_trailing_spaces`: trailing spaces dropped, except one escaped with `\`.
fn trim_trailing_blanks(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    let mut last_space = None;
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b' ' => {
                last_space.get_or_insert(i);
            }
            b'\\' => {
                i += 1;
                if i == line.len() {
                    return line;
                }
                last_space = None;
            }
            _ => last_space = None,
        }
        i += 1;
    }
    if let Some(s) = last_space {
        end = s;
    }
    &line[..end]
}

/// The blob a `sparse:oid=` spec names in `repo`: a full object id, or
/// `<rev>:<path>` where `<rev>` is a full object id or a reference name (`HEAD`,
/// `main`, `refs/heads/main`, `v1.0`: git's lookup order) and `<path>` is followed from
/// the root tree of what `<rev>` peels to. Revision expressions (`main~1`, `@{…}`,
/// `:/text`) are not read.
pub fn resolve_blob(repo: &gix::Repository, db: &dyn Find, name: &str) -> Result<ObjectId, String> {
    let missing = || format!("unable to access sparse blob in '{name}'");
    let id = match name.split_once(':') {
        None => resolve_rev(repo, name).ok_or_else(missing)?,
        Some((rev, path)) => {
            let start = resolve_rev(repo, rev).ok_or_else(missing)?;
            let (id, kind) = super::objects::peel(db, start).map_err(|_| missing())?;
            let mut tree = match kind {
                Kind::Commit => {
                    let (_, data) = super::objects::need(db, &id)?;
                    super::objects::commit_links(&data)?.0
                }
                Kind::Tree => id,
                _ => return Err(format!("'{rev}' does not name a tree-ish")),
            };
            let mut found = tree;
            let mut is_tree = true;
            let mut buf = Vec::new();
            for part in path.split('/').filter(|p| !p.is_empty()) {
                if !is_tree {
                    return Err(missing());
                }
                let mut entry = None;
                super::objects::for_each_tree_entry(db, &tree, &mut buf, |e| {
                    if e.filename == part.as_bytes() {
                        entry = Some((e.oid.to_owned(), e.mode.is_tree()));
                    }
                })?;
                (found, is_tree) = entry.ok_or_else(missing)?;
                tree = found;
            }
            found
        }
    };
    match super::objects::lookup(db, &id)? {
        None => Err(missing()),
        Some((Kind::Blob, _)) => Ok(id),
        Some((kind, _)) => Err(format!(
            "unable to parse sparse filter data in {id}: a {kind}, not a blob"
        )),
    }
}

/// A full object id, or what a reference (git's lookup order for a short name) points
/// at.
fn resolve_rev(repo: &gix::Repository, rev: &str) -> Option<ObjectId> {
    if let Some(id) = super::parse_oid(rev.as_bytes()) {
        return Some(id);
    }
    let reference = repo.try_find_reference(rev).ok()??;
    reference.into_fully_peeled_id().ok().map(|id| id.detach())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(patterns: &str, path: &str, is_dir: bool) -> Option<bool> {
        SparsePatterns::parse(
            patterns.as_bytes(),
            MAX_SPARSE_FILE_BYTES,
            MAX_SPARSE_PATTERNS,
        )
        .expect("parses")
        .decide(path.as_bytes(), is_dir)
    }

    #[test]
    fn include_and_negated_exclude_last_match_wins() {
        let p = "*.rs\n!secret.rs\n";
        assert_eq!(decide(p, "src/main.rs", false), Some(true));
        assert_eq!(decide(p, "src/secret.rs", false), Some(false));
        assert_eq!(decide(p, "README", false), None);
        // order matters: the later include wins
        assert_eq!(decide("!secret.rs\n*.rs\n", "secret.rs", false), Some(true));
    }

    #[test]
    fn directory_patterns_match_directories_only() {
        let p = "docs/\n";
        assert_eq!(decide(p, "docs", true), Some(true));
        assert_eq!(decide(p, "a/docs", true), Some(true));
        assert_eq!(decide(p, "docs", false), None);
        // the files beneath take the directory's decision (the walk carries it)
        assert_eq!(decide(p, "docs/x.md", false), None);
        assert_eq!(decide("/*\n!/*/\n", "dir", true), Some(false));
        assert_eq!(decide("/*\n!/*/\n", "file", false), Some(true));
    }

    #[test]
    fn anchored_patterns_match_from_the_root() {
        let p = "/top.txt\nsrc/lib.rs\n";
        assert_eq!(decide(p, "top.txt", false), Some(true));
        assert_eq!(decide(p, "a/top.txt", false), None);
        assert_eq!(decide(p, "src/lib.rs", false), Some(true));
        assert_eq!(decide(p, "x/src/lib.rs", false), None);
        // the root tree matches no anchored pattern, only a basename one
        assert_eq!(decide(p, "", true), None);
        assert_eq!(decide("*\n", "", true), Some(true));
    }

    #[test]
    fn stars_stop_at_slashes_and_double_stars_do_not() {
        assert_eq!(decide("/src/*.c\n", "src/a.c", false), Some(true));
        assert_eq!(decide("/src/*.c\n", "src/x/a.c", false), None);
        assert_eq!(decide("/src/**/*.c\n", "src/x/y/a.c", false), Some(true));
        assert_eq!(decide("/src/**/*.c\n", "src/a.c", false), Some(true));
        assert_eq!(decide("**/gen\n", "a/b/gen", true), Some(true));
        assert_eq!(decide("a/**\n", "a/b/c", false), Some(true));
        assert_eq!(decide("a/**\n", "a", true), None);
        // a basename pattern's `*` sees the last component only
        assert_eq!(decide("*.c\n", "deep/dir/a.c", false), Some(true));
        assert_eq!(decide("a?c\n", "abc", false), Some(true));
        assert_eq!(decide("[ab].md\n", "b.md", false), Some(true));
        assert_eq!(decide("[ab].md\n", "c.md", false), None);
    }

    #[test]
    fn lines_read_as_git_reads_them() {
        // comments, blank lines, CRLF, escaped `#` and `!`, trailing blanks
        let p = "\u{feff}# comment\n\nkeep.txt  \r\n\\#hash\n\\!bang\nsp\\ \n";
        assert_eq!(decide(p, "keep.txt", false), Some(true));
        assert_eq!(decide(p, "#hash", false), Some(true));
        assert_eq!(decide(p, "!bang", false), Some(true));
        assert_eq!(decide(p, "sp ", false), Some(true));
        assert_eq!(decide(p, "# comment", false), None);
        // no final newline
        assert_eq!(decide("a\nb", "b", false), Some(true));
        // a line of blanks is an empty pattern: git matches it against the root alone
        assert_eq!(decide("  \n", "", true), Some(true));
        assert_eq!(decide("  \n", "x", false), None);
        assert_eq!(decide("", "x", false), None);
        // `//` is anchored and matches nothing, `/` the root
        assert_eq!(decide("//\n", "", true), None);
        assert_eq!(decide("/\n", "", true), Some(true));
    }

    #[test]
    fn pattern_files_are_bounded() {
        let parse =
            |data: &[u8]| SparsePatterns::parse(data, MAX_SPARSE_FILE_BYTES, MAX_SPARSE_PATTERNS);
        let many = "a\n".repeat(MAX_SPARSE_PATTERNS);
        assert!(parse(many.as_bytes()).is_ok());
        let more = format!("{many}b\n");
        assert_eq!(
            parse(more.as_bytes()),
            Err(SparseError::TooManyPatterns(MAX_SPARSE_PATTERNS))
        );
        // comments and blank lines do not count
        let padded = format!("{many}# note\n\n");
        assert!(parse(padded.as_bytes()).is_ok());
        let huge = vec![b'#'; MAX_SPARSE_FILE_BYTES + 1];
        assert_eq!(
            parse(&huge),
            Err(SparseError::TooLarge {
                size: MAX_SPARSE_FILE_BYTES + 1,
                limit: MAX_SPARSE_FILE_BYTES
            })
        );
        // configured lower
        assert_eq!(
            SparsePatterns::parse(b"a\nb\n", 64, 1),
            Err(SparseError::TooManyPatterns(1))
        );
        // a hostile pattern is bounded by wildmatch's recursion limit
        let nasty = format!("{}\n", "*a".repeat(100));
        let path = "a".repeat(200);
        let _ = decide(&nasty, &path, false);
    }
}
