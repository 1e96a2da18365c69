//! Helpers for the real-git tests of `alknet/git`: a generated repository (built with
//! `git fast-import`), `git` runs with a time limit, and an `alknet serve` with
//! `git-remote-alknet` on git's `PATH`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::{alknet_bin, payload, wait_output, BinServer};

/// Every git command of the tests ends within this, or the test fails.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Skips (returns `None`) when `git` is not installed; `tests/run-all.sh` installs it.
pub fn require_git() -> Option<()> {
    match Command::new("git").arg("--version").output() {
        Ok(o) if o.status.success() => Some(()),
        _ => {
            eprintln!("git is not installed: skipping (tests/run-all.sh installs it)");
            None
        }
    }
}

/// A `git` command in `dir` with a clean environment: no user or system config, a fixed
/// identity, `git-remote-alknet` (beside `alknet`) first on `PATH`.
pub fn git_cmd(dir: &Path) -> Command {
    let bin_dir = alknet_bin().parent().expect("target dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("PATH", path)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.org")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.org")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("ALKNET_TOKEN")
        .env_remove("ALKNET_FINGERPRINT")
        .env_remove("ALKNET_TRANSPORT")
        .env_remove("GIT_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` within [`GIT_TIMEOUT`].
pub fn run(mut cmd: Command) -> Output {
    let child = cmd.spawn().expect("spawn git");
    wait_output(child, GIT_TIMEOUT)
}

/// Runs `cmd` and fails the test unless it succeeds; returns its stdout.
pub fn run_ok(cmd: Command) -> String {
    let what = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `git ARGS` in `dir`, which must succeed; its stdout.
pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    let mut cmd = git_cmd(dir);
    cmd.args(args);
    run_ok(cmd)
}

/// Builds a repository at `dir` (non-bare, branch `main`) with `commits` commits over
/// `files` text files, a binary blob every 40 commits and tag `v1` on the last commit,
/// with `git fast-import`. Deterministic for a given `seed`.
pub fn generate_repo(dir: &Path, commits: usize, files: usize, seed: u64) {
    std::fs::create_dir_all(dir).expect("mkdir");
    git_ok(dir, &["init", "-q", "-b", "main"]);
    let mut stream = Vec::new();
    let data = |out: &mut Vec<u8>, bytes: &[u8]| {
        writeln!(out, "data {}", bytes.len()).expect("write");
        out.extend_from_slice(bytes);
        out.push(b'\n');
    };
    let rand = payload(seed, commits * 4);
    for i in 0..commits {
        writeln!(stream, "commit refs/heads/main").expect("write");
        writeln!(stream, "mark :{}", i + 1).expect("write");
        writeln!(
            stream,
            "committer Test <test@example.org> {} +0000",
            1_700_000_000 + i * 60
        )
        .expect("write");
        data(&mut stream, format!("commit {i}\n").as_bytes());
        if i > 0 {
            writeln!(stream, "from :{i}").expect("write");
        }
        // one to three files change per commit; each keeps most of its lines (deltas)
        let changes = 1 + (rand[i * 4] as usize % 3);
        for c in 0..changes {
            let f = (rand[i * 4 + 1 + c] as usize) % files;
            let mut text = String::new();
            for line in 0..40 {
                text.push_str(&format!("file {f} line {line}\n"));
            }
            text.push_str(&format!("changed in commit {i}\n"));
            writeln!(stream, "M 100644 inline src/f{f}.txt").expect("write");
            data(&mut stream, text.as_bytes());
        }
        if i % 40 == 0 {
            writeln!(stream, "M 100644 inline bin/blob{i}.bin").expect("write");
            data(&mut stream, &payload(seed ^ i as u64, 32 * 1024));
        }
    }
    writeln!(stream, "reset refs/tags/v1\nfrom :{commits}\n").expect("write");
    let mut cmd = git_cmd(dir);
    cmd.args(["fast-import", "--quiet"]).stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("fast-import");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&stream)
        .expect("feed fast-import");
    let out = wait_output(child, GIT_TIMEOUT);
    assert!(
        out.status.success(),
        "fast-import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    git_ok(dir, &["reset", "-q", "--hard", "main"]);
}

/// Tokens of the identities [`git_server_config`] defines.
pub const WRITER_TOKEN: &str = "tok-writer";
pub const READER_TOKEN: &str = "tok-reader";
pub const ONE_REPO_TOKEN: &str = "tok-one";

/// A config serving only `alknet/git`, with a writer (`git:write`, `git:create`), a
/// reader (`git:read`), a reader of `one.git` only, `pub/*` public, and `extra` appended
/// to the `[git]` section.
pub fn git_server_config(extra: &str) -> String {
    format!(
        r#"[handlers]
enabled = ["alknet/git"]
[identity]
sqlite = false
[git]
public_read = ["pub/*"]
{extra}
[[identities]]
name = "writer"
tokens = ["{WRITER_TOKEN}"]
scopes = ["git:write", "git:create"]
[[identities]]
name = "reader"
tokens = ["{READER_TOKEN}"]
scopes = ["git:read"]
[[identities]]
name = "one"
tokens = ["{ONE_REPO_TOKEN}"]
scopes = ["git:read:one"]
"#
    )
}

/// An `alknet serve` for git tests and how to reach it.
pub struct GitServer {
    pub server: BinServer,
    pub fingerprint: String,
}

impl GitServer {
    pub fn start(extra: &str) -> Self {
        Self::start_env(extra, &[])
    }

    /// As [`Self::start`], with `env` set for the server process.
    pub fn start_env(extra: &str, env: &[(&str, &str)]) -> Self {
        let server = BinServer::start_with_config_env(&git_server_config(extra), env);
        let fingerprint = server.fingerprint();
        Self {
            server,
            fingerprint,
        }
    }

    /// The repository root (`git/` in the data directory).
    pub fn root(&self) -> PathBuf {
        self.server.data_dir.path().join("git")
    }

    pub fn url(&self, repo: &str) -> String {
        format!("alknet://{}/{repo}", self.server.addr())
    }

    /// A git command trusting the server by fingerprint, with `token` (if any).
    pub fn git(&self, dir: &Path, token: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = git_cmd(dir);
        cmd.env("ALKNET_FINGERPRINT", &self.fingerprint);
        if let Some(t) = token {
            cmd.env("ALKNET_TOKEN", t);
        }
        cmd.args(args);
        cmd
    }

    pub fn git_ok(&self, dir: &Path, token: Option<&str>, args: &[&str]) -> String {
        run_ok(self.git(dir, token, args))
    }

    /// Runs a git command that must succeed with its packets traced
    /// (`GIT_TRACE_PACKET`); returns the trace.
    pub fn git_traced(&self, dir: &Path, token: Option<&str>, args: &[&str]) -> String {
        let trace = tempfile::NamedTempFile::new().expect("trace file");
        let mut cmd = self.git(dir, token, args);
        cmd.env("GIT_TRACE_PACKET", trace.path());
        let out = run(cmd);
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(trace.path()).expect("trace")
    }

    /// Runs a git command that must fail; returns its stderr.
    pub fn git_err(&self, dir: &Path, token: Option<&str>, args: &[&str]) -> String {
        let out = run(self.git(dir, token, args));
        assert!(
            !out.status.success(),
            "git {args:?} succeeded but should not have"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// `refs → object id` of a repository (`git show-ref`, with `HEAD` left out).
pub fn refs(dir: &Path) -> Vec<String> {
    let out = run({
        let mut c = git_cmd(dir);
        c.args(["show-ref"]);
        c
    });
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// A value of `git count-objects -v` (`count`, `packs`, …).
pub fn count_objects(dir: &Path, key: &str) -> u64 {
    git_ok(dir, &["count-objects", "-v"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("count-objects has no {key}"))
}
