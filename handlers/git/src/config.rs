//! The `[git]` section of the config file: every limit is a named constant here with a key
//! there.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The program run for the `git` backend (looked up on `PATH`).
pub const DEFAULT_GIT_PROGRAM: &str = "git";

/// Branch `HEAD` points at in repositories created by push or `alknet git init`.
pub const DEFAULT_BRANCH: &str = "main";

/// A stream must have sent its whole request line this long after it opened, or it gets
/// `ERR` and is closed (git-daemon has `--init-timeout` for the same purpose).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;

/// git commands (streams) running at once on one connection; more get `ERR`. The QUIC
/// stream limit (`limits.max_concurrent_bidi_streams`) applies too.
pub const DEFAULT_MAX_COMMANDS_PER_CONNECTION: usize = 8;

/// git commands running at once across the whole server (`git` processes, or the gix
/// backend's threads); more requests get `ERR` (git-daemon's `--max-connections`).
pub const DEFAULT_MAX_PROCESSES: usize = 64;

/// Bytes of a `git` process's stderr kept for the log when it fails.
pub const DEFAULT_STDERR_LOG_LIMIT: usize = 4096;

/// After the stream is done, how long a `git` process has to exit before it is killed.
pub const DEFAULT_EXIT_GRACE_MS: u64 = 5_000;

/// Whether the `git` backend offers protocol v2 `want-ref` when `[git] allow_want_ref` is
/// not set: no. git's own upload-pack (2.47 checked) answers a shallow fetch that used
/// `want-ref` with its `wanted-refs` section before `shallow-info`, the reverse of the
/// order in `gitprotocol-v2` that git's client insists on, so with `ref-in-want`
/// advertised every `git clone --depth`/`fetch --depth` over v2 fails ("expected
/// 'packfile', received 'shallow-info'"). Setting `allow_want_ref = true` turns it on
/// anyway, as git's `uploadpack.allowRefInWant` does. The gix backend sends the sections
/// in order and defaults to on ([`crate::native::ALLOW_WANT_REF`]).
pub const GIT_BACKEND_ALLOW_WANT_REF: bool = false;

/// What serves the git conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GitBackend {
    /// upload-pack and receive-pack written on gitoxide (`gix-pack`, `gix-ref`), run on a
    /// blocking thread per command; no `git` program needed.
    #[default]
    Gix,
    /// The installed `git upload-pack` / `git receive-pack`, one process per command, as
    /// git-daemon runs them.
    Git,
}

/// The `[git]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitConfig {
    /// Directory holding the bare repositories; default `git/` in the data directory.
    pub root: Option<PathBuf>,
    pub backend: GitBackend,
    /// The `git` executable of the `git` backend.
    pub git_program: PathBuf,
    /// Repositories anyone may clone and fetch, anonymous peers included: paths,
    /// `prefix/*` or `*` (see [`crate::access`]).
    pub public_read: Vec<String>,
    /// Allow pushes that are not fast-forwards (`git push --force`) to branches.
    pub allow_force_push: bool,
    /// Where `HEAD` of a new repository points.
    pub default_branch: String,
    pub request_timeout_ms: u64,
    /// Longest request pkt-line, bytes (prefix included).
    pub max_request_line: usize,
    pub max_commands_per_connection: usize,
    pub max_processes: usize,
    pub stderr_log_limit: usize,
    pub exit_grace_ms: u64,
    /// gix backend: want/have/argument/ref-update lines accepted in one request.
    pub max_negotiation_lines: usize,
    /// gix backend: largest object a pushed pack may inflate to, bytes.
    pub max_object_bytes: usize,
    /// gix backend: objects walked to check a push's connectivity and fast-forwards.
    pub max_check_objects: usize,
    /// gix backend: memory for decoded delta bases per command, bytes.
    pub delta_base_cache_bytes: usize,
    /// gix backend: largest object deltified anew for a thin pack, bytes.
    pub max_delta_bytes: usize,
    /// gix backend: answer full clones from git's reachability bitmaps (`pack-*.bitmap`)
    /// when a pack has one, instead of walking the history.
    pub use_bitmaps: bool,
    /// Serve partial clones (`git clone --filter=blob:none`, `blob:limit`, `tree:<depth>`,
    /// `object:type`, `sparse:oid`, `combine:`): `filter` advertised, the objects it names left out, and
    /// objects wanted by id (a partial clone's later fetches). Both backends: the `git`
    /// one runs upload-pack with `uploadpack.allowFilter` and
    /// `uploadpack.allowAnySHA1InWant` set to this.
    pub allow_filter: bool,
    /// Protocol v2 `want-ref` (`ref-in-want` advertised). Both backends: the `git` one
    /// runs upload-pack with `uploadpack.allowRefInWant` set to this. Unset, each
    /// backend's default: on for gix, off for git ([`GIT_BACKEND_ALLOW_WANT_REF`]).
    pub allow_want_ref: Option<bool>,
    /// gix backend: largest `sparse:oid=` pattern blob read, bytes.
    pub max_sparse_file_bytes: usize,
    /// gix backend: most patterns in a `sparse:oid=` pattern blob.
    pub max_sparse_patterns: usize,
}

impl Default for GitConfig {
    fn default() -> Self {
        Self {
            root: None,
            backend: GitBackend::Gix,
            git_program: PathBuf::from(DEFAULT_GIT_PROGRAM),
            public_read: Vec::new(),
            allow_force_push: false,
            default_branch: DEFAULT_BRANCH.to_string(),
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            max_request_line: crate::request::MAX_REQUEST_LINE,
            max_commands_per_connection: DEFAULT_MAX_COMMANDS_PER_CONNECTION,
            max_processes: DEFAULT_MAX_PROCESSES,
            stderr_log_limit: DEFAULT_STDERR_LOG_LIMIT,
            exit_grace_ms: DEFAULT_EXIT_GRACE_MS,
            max_negotiation_lines: crate::native::MAX_NEGOTIATION_LINES,
            max_object_bytes: crate::native::MAX_OBJECT_BYTES,
            max_check_objects: crate::native::MAX_CHECK_OBJECTS,
            delta_base_cache_bytes: crate::native::DELTA_BASE_CACHE_BYTES,
            max_delta_bytes: crate::native::MAX_DELTA_BYTES,
            use_bitmaps: crate::native::USE_BITMAPS,
            allow_filter: crate::native::ALLOW_FILTER,
            allow_want_ref: None,
            max_sparse_file_bytes: crate::native::sparse::MAX_SPARSE_FILE_BYTES,
            max_sparse_patterns: crate::native::sparse::MAX_SPARSE_PATTERNS,
        }
    }
}

/// A `[git]` value out of range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("git.{key}: {problem}")]
pub struct GitConfigError {
    pub key: &'static str,
    pub problem: String,
}

impl GitConfig {
    pub fn validate(&self) -> Result<(), GitConfigError> {
        let positive = [
            ("request_timeout_ms", self.request_timeout_ms as usize),
            (
                "max_commands_per_connection",
                self.max_commands_per_connection,
            ),
            ("max_processes", self.max_processes),
            ("max_negotiation_lines", self.max_negotiation_lines),
            ("max_object_bytes", self.max_object_bytes),
            ("max_check_objects", self.max_check_objects),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(GitConfigError {
                    key,
                    problem: "must be at least 1".into(),
                });
            }
        }
        if !(64..=crate::request::MAX_PKT_PAYLOAD + 4).contains(&self.max_request_line) {
            return Err(GitConfigError {
                key: "max_request_line",
                problem: format!("must be 64 to {}", crate::request::MAX_PKT_PAYLOAD + 4),
            });
        }
        if crate::repo::create_bare_branch_ok(&self.default_branch).is_err() {
            return Err(GitConfigError {
                key: "default_branch",
                problem: format!("{:?} is not a plain branch name", self.default_branch),
            });
        }
        for p in &self.public_read {
            if p.is_empty() {
                return Err(GitConfigError {
                    key: "public_read",
                    problem: "an empty pattern".into(),
                });
            }
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn native_limits(&self) -> crate::native::NativeLimits {
        crate::native::NativeLimits {
            max_negotiation_lines: self.max_negotiation_lines,
            max_object_bytes: self.max_object_bytes,
            max_check_objects: self.max_check_objects,
            delta_base_cache_bytes: self.delta_base_cache_bytes,
            max_delta_bytes: self.max_delta_bytes,
            use_bitmaps: self.use_bitmaps,
            allow_filter: self.allow_filter,
            allow_want_ref: self.allow_want_ref.unwrap_or(crate::native::ALLOW_WANT_REF),
            max_sparse_file_bytes: self.max_sparse_file_bytes,
            max_sparse_patterns: self.max_sparse_patterns,
        }
    }

    /// Whether the `git` backend's upload-pack gets `uploadpack.allowRefInWant`.
    pub fn git_backend_want_ref(&self) -> bool {
        self.allow_want_ref.unwrap_or(GIT_BACKEND_ALLOW_WANT_REF)
    }

    pub fn exit_grace(&self) -> Duration {
        Duration::from_millis(self.exit_grace_ms)
    }

    /// The repository root: `root`, else `git/` in `data_dir`.
    pub fn root_in(&self, data_dir: &std::path::Path) -> PathBuf {
        self.root.clone().unwrap_or_else(|| data_dir.join("git"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_typos_fail() {
        let c: GitConfig = toml::from_str("").expect("empty");
        assert_eq!(c, GitConfig::default());
        c.validate().expect("defaults valid");
        let c: GitConfig =
            toml::from_str("public_read = [\"pub/*\"]\nallow_force_push = true\nbackend = \"git\"")
                .expect("parses");
        assert!(c.allow_force_push);
        assert_eq!(c.backend, GitBackend::Git);
        let d = GitConfig::default().native_limits();
        assert!(d.allow_filter && d.allow_want_ref);
        assert!(!GitConfig::default().git_backend_want_ref());
        let c: GitConfig = toml::from_str("allow_want_ref = true").expect("parses");
        assert!(c.git_backend_want_ref() && c.native_limits().allow_want_ref);
        let c: GitConfig =
            toml::from_str("allow_filter = false\nallow_want_ref = false").expect("parses");
        let l = c.native_limits();
        assert!(!l.allow_filter && !l.allow_want_ref && !c.git_backend_want_ref());
        let c: GitConfig =
            toml::from_str("max_sparse_file_bytes = 100\nmax_sparse_patterns = 3").expect("parses");
        let l = c.native_limits();
        assert_eq!((l.max_sparse_file_bytes, l.max_sparse_patterns), (100, 3));
        assert_eq!(GitConfig::default().backend, GitBackend::Gix);
        assert!(toml::from_str::<GitConfig>("rot = \"/x\"").is_err());
        assert!(toml::from_str::<GitConfig>("backend = \"cgit\"").is_err());
        let c: GitConfig = toml::from_str("max_processes = 0").expect("parses");
        assert_eq!(c.validate().expect_err("zero").key, "max_processes");
        let c: GitConfig = toml::from_str("default_branch = \"a..b\"").expect("parses");
        assert_eq!(c.validate().expect_err("bad").key, "default_branch");
        assert_eq!(
            GitConfig::default().root_in(std::path::Path::new("/d")),
            PathBuf::from("/d/git")
        );
    }
}
