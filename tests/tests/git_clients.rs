//! `alknet/git` with the stock `git` client: clone, fetch and push through
//! `git-remote-alknet` (`alknet://` URLs) and through `ext::alknet connect …`, against
//! the real `alknet serve` with each backend (`gix`, `git`), protocol v2 and v0, and the
//! access rules.

use std::path::Path;

use alknet_tests::git::{
    count_objects, generate_repo, git_ok, refs, require_git, run, GitServer, ONE_REPO_TOKEN,
    READER_TOKEN, WRITER_TOKEN,
};

/// Commits of the generated repository: enough history for real packs and deltas, small
/// enough that the git tests stay well under a minute.
const COMMITS: usize = 300;
const FILES: usize = 60;

/// Every test runs against both backends: `gix` (the default, no `git` process) and
/// `git` (the installed upload-pack / receive-pack).
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod gix_backend {
            $(#[test]
            fn $name() {
                super::$name("gix");
            })*
        }
        mod git_backend {
            $(#[test]
            fn $name() {
                super::$name("git");
            })*
        }
    };
}

both_backends!(
    clone_and_fetch_over_v2_and_v0,
    push_branches_tags_deletions_and_force,
    access_rules_unknown_repositories_and_escapes,
    ext_transport_with_alknet_connect,
    large_repository_and_small_incremental_fetch,
    partial_clone,
    object_type_and_combined_filters,
    sparse_oid_filter,
    v2_want_ref,
);

/// A push killed mid-pack, gix backend. (With the `git` backend, git's receive-pack was
/// seen leaving its `tmp_objdir-incoming-*` behind in one run of two: not yet run there.)
#[test]
fn gix_backend_killed_push_changes_nothing() {
    killed_push_changes_nothing("gix");
}

/// A push onto a full disk, gix backend: the repositories live on a 16 MiB tmpfs (mounted
/// for the test: needs root, as CI runs), and a 24 MiB incompressible blob does not fit.
/// git prints the cause (`No space left on device`, the path inside the repository, not
/// the server's), the quarantine is gone, no ref moved, `fsck` is clean; once there is
/// room again the same push lands.
#[test]
fn gix_backend_push_onto_a_full_disk() {
    if require_git().is_none() {
        return;
    }
    let disk = TmpfsMount::new("16m");
    let srv = start("gix", &format!("root = \"{}\"", disk.dir.path().display()));
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = seeded(&srv, tmp.path(), "full.git");
    let server_repo = disk.dir.path().join("full.git");
    let before = refs(&server_repo);
    let listing = |dir: &Path| {
        let mut names = walk(dir);
        names.sort();
        names
    };
    let objects_before = listing(&server_repo.join("objects"));
    std::fs::write(src.join("big.bin"), alknet_tests::payload(12, 24 << 20)).expect("write");
    git_ok(&src, &["add", "."]);
    git_ok(&src, &["commit", "--quiet", "-m", "big"]);
    let err = srv.git_err(
        &src,
        Some(WRITER_TOKEN),
        &["push", &srv.url("full.git"), "main"],
    );
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("\"objects/tmp_objdir-incoming"), "{err}");
    assert!(
        !err.contains(&disk.dir.path().display().to_string()),
        "{err}"
    );
    assert_eq!(listing(&server_repo.join("objects")), objects_before);
    assert_eq!(refs(&server_repo), before);
    git_ok(&server_repo, &["fsck", "--full", "--strict"]);
    // room again: the same push lands
    disk.resize("64m");
    srv.git_ok(
        &src,
        Some(WRITER_TOKEN),
        &["push", "--quiet", &srv.url("full.git"), "main"],
    );
    assert_ne!(refs(&server_repo), before);
    git_ok(&server_repo, &["fsck", "--full", "--strict"]);
}

/// A tmpfs of a given size on a temporary directory, unmounted when dropped.
struct TmpfsMount {
    dir: tempfile::TempDir,
}

impl TmpfsMount {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir.path(),
        );
        Self { dir }
    }

    fn resize(&self, size: &str) {
        mount(&["-o", &format!("remount,size={size}")], self.dir.path());
    }
}

/// `mount ARGS… DIR`, which must succeed.
fn mount(args: &[&str], dir: &Path) {
    let out = std::process::Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .expect("mount");
    assert!(
        out.status.success(),
        "mount {args:?} (needs root, as CI runs): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(self.dir.path())
            .status();
    }
}

/// `git clone` and `git push` with `alknet.transport = tcp`: git-remote-alknet over
/// TLS/TCP (`[tcp] stream_alpns` serves `alknet/git` there), gix backend, same tokens and
/// access rules as over QUIC. An unknown transport is a clear error.
#[test]
fn clone_and_push_over_tls_tcp() {
    if require_git().is_none() {
        return;
    }
    let srv = start("gix", "");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = seeded(&srv, tmp.path(), "team/tcp.git");
    let url = srv.url("team/tcp.git");
    let dst = tmp.path().join("dst");
    fn with<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["-c", "alknet.transport=tcp"][..], args].concat()
    }
    srv.git_ok(
        tmp.path(),
        Some(READER_TOKEN),
        &with(&["clone", "--quiet", &url, s(&dst)]),
    );
    assert_eq!(
        git_ok(&dst, &["rev-parse", "HEAD"]),
        git_ok(&src, &["rev-parse", "main"])
    );
    assert_eq!(
        git_ok(&dst, &["rev-list", "--count", "HEAD"]).trim(),
        COMMITS.to_string()
    );

    std::fs::write(dst.join("over-tcp.txt"), "pushed over TLS/TCP\n").expect("write");
    git_ok(&dst, &["add", "."]);
    git_ok(&dst, &["commit", "--quiet", "-m", "over tcp"]);
    srv.git_ok(
        &dst,
        Some(WRITER_TOKEN),
        &with(&["push", "--quiet", &url, "main"]),
    );
    let server_repo = srv.root().join("team/tcp.git");
    assert_eq!(
        git_ok(&server_repo, &["rev-parse", "refs/heads/main"]),
        git_ok(&dst, &["rev-parse", "HEAD"])
    );
    // the reader may not push, over TCP as over QUIC
    let err = srv.git_err(
        &dst,
        Some(READER_TOKEN),
        &with(&["push", &url, "main:other"]),
    );
    assert!(!err.is_empty());

    let err = srv.git_err(
        tmp.path(),
        Some(READER_TOKEN),
        &["-c", "alknet.transport=carrier-pigeon", "clone", &url, "x"],
    );
    assert!(err.contains("alknet.transport"), "{err}");
}

/// A server with `backend` and `extra` in its `[git]` section.
fn start(backend: &str, extra: &str) -> GitServer {
    GitServer::start(&format!("backend = \"{backend}\"\n{extra}"))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The generated repository, pushed to `repo` on `srv` by the writer (which creates it).
fn seeded(srv: &GitServer, tmp: &Path, repo: &str) -> std::path::PathBuf {
    let src = tmp.join("src");
    generate_repo(&src, COMMITS, FILES, 7);
    srv.git_ok(
        &src,
        Some(WRITER_TOKEN),
        &["push", "--quiet", &srv.url(repo), "main", "v1"],
    );
    src
}

fn clone_and_fetch_over_v2_and_v0(backend: &str) {
    if require_git().is_none() {
        return;
    }
    let srv = start(backend, "");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = seeded(&srv, tmp.path(), "app.git");
    // the server's repository got exactly what was pushed
    let server_repo = srv.root().join("app.git");
    assert_eq!(refs(&server_repo), refs(&src));

    for (name, version) in [("v2", "2"), ("v0", "0")] {
        let dst = tmp.path().join(name);
        let out = run(srv.git(
            tmp.path(),
            Some(READER_TOKEN),
            &[
                "-c",
                &format!("protocol.version={version}"),
                "clone",
                "--quiet",
                &srv.url("app.git"),
                s(&dst),
            ],
        ));
        assert!(
            out.status.success(),
            "clone {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        git_ok(&dst, &["fsck", "--full", "--strict"]);
        assert_eq!(
            git_ok(&dst, &["rev-parse", "HEAD"]),
            git_ok(&src, &["rev-parse", "main"]),
            "{name}"
        );
        assert_eq!(
            git_ok(&dst, &["rev-list", "--count", "HEAD"]).trim(),
            COMMITS.to_string()
        );
        assert_eq!(
            git_ok(&dst, &["rev-parse", "v1"]),
            git_ok(&src, &["rev-parse", "v1"])
        );
    }
    // shallow clone (v2 and v0), then deepened by one commit
    for version in ["2", "0"] {
        let shallow = tmp.path().join(format!("shallow-v{version}"));
        srv.git_ok(
            tmp.path(),
            Some(READER_TOKEN),
            &[
                "-c",
                &format!("protocol.version={version}"),
                "clone",
                "--quiet",
                "--depth",
                "1",
                &srv.url("app.git"),
                s(&shallow),
            ],
        );
        assert_eq!(
            git_ok(&shallow, &["rev-list", "--count", "HEAD"]).trim(),
            "1"
        );
        assert_eq!(
            std::fs::read_to_string(shallow.join(".git/shallow")).expect("shallow file"),
            git_ok(&src, &["rev-parse", "main"])
        );
        git_ok(&shallow, &["fsck", "--full"]);
        srv.git_ok(
            &shallow,
            Some(READER_TOKEN),
            &[
                "-c",
                &format!("protocol.version={version}"),
                "fetch",
                "--quiet",
                "--deepen",
                "1",
            ],
        );
        assert_eq!(
            git_ok(&shallow, &["rev-list", "--count", "HEAD"]).trim(),
            "2",
            "v{version}"
        );
        assert_eq!(
            std::fs::read_to_string(shallow.join(".git/shallow")).expect("shallow file"),
            git_ok(&src, &["rev-parse", "main~1"])
        );
        git_ok(&shallow, &["fsck", "--full"]);
    }

    // the version really differs on the wire
    let traced = run({
        let mut c = srv.git(
            tmp.path(),
            Some(READER_TOKEN),
            &["ls-remote", &srv.url("app.git")],
        );
        c.env("GIT_TRACE_PACKET", "1");
        c
    });
    assert!(String::from_utf8_lossy(&traced.stderr).contains("< version 2"));
    let traced = run({
        let mut c = srv.git(
            tmp.path(),
            Some(READER_TOKEN),
            &["-c", "protocol.version=0", "ls-remote", &srv.url("app.git")],
        );
        c.env("GIT_TRACE_PACKET", "1");
        c
    });
    let trace = String::from_utf8_lossy(&traced.stderr);
    assert!(
        !trace.contains("version 2") && trace.contains("ofs-delta"),
        "{trace}"
    );
    assert!(trace.contains("multi_ack_detailed"), "{trace}");

    // new commits on the server side: a fetch transfers only those
    let clone = tmp.path().join("v2");
    git_ok(&clone, &["gc", "--quiet"]);
    assert_eq!(count_objects(&clone, "count"), 0);
    let packs = count_objects(&clone, "packs");
    for i in 0..3 {
        std::fs::write(src.join(format!("new{i}.txt")), format!("new {i}\n")).expect("write");
        git_ok(&src, &["add", "."]);
        git_ok(&src, &["commit", "--quiet", "-m", &format!("new {i}")]);
    }
    srv.git_ok(
        &src,
        Some(WRITER_TOKEN),
        &["push", "--quiet", &srv.url("app.git"), "main"],
    );
    srv.git_ok(&clone, Some(READER_TOKEN), &["fetch", "--quiet", "origin"]);
    assert_eq!(
        git_ok(&clone, &["rev-parse", "origin/main"]),
        git_ok(&src, &["rev-parse", "main"])
    );
    // 3 commits, 3 trees, 3 blobs: unpacked loose (below transfer.unpackLimit)
    assert_eq!(count_objects(&clone, "count"), 9, "only the new objects");
    assert_eq!(count_objects(&clone, "packs"), packs);
    git_ok(&clone, &["fsck", "--full"]);
    // a fetch with nothing new transfers nothing
    srv.git_ok(&clone, Some(READER_TOKEN), &["fetch", "--quiet", "origin"]);
    assert_eq!(count_objects(&clone, "count"), 9);

    // trust and token from git config instead of the environment
    let mut cmd = alknet_tests::git::git_cmd(tmp.path());
    cmd.args([
        "-c",
        &format!("alknet.fingerprint={}", srv.fingerprint),
        "-c",
        &format!("alknet.token={READER_TOKEN}"),
        "ls-remote",
        &srv.url("app.git"),
    ]);
    let listed = alknet_tests::git::run_ok(cmd);
    assert!(listed.contains("refs/tags/v1"), "{listed}");
    // a wrong fingerprint fails the handshake
    let mut cmd = alknet_tests::git::git_cmd(tmp.path());
    cmd.env("ALKNET_FINGERPRINT", "00".repeat(32))
        .env("ALKNET_TOKEN", READER_TOKEN)
        .args(["ls-remote", &srv.url("app.git")]);
    assert!(!run(cmd).status.success());
}

fn push_branches_tags_deletions_and_force(backend: &str) {
    if require_git().is_none() {
        return;
    }
    let srv = start(backend, "");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = seeded(&srv, tmp.path(), "team/app.git");
    let url = srv.url("team/app.git");
    let server_repo = srv.root().join("team/app.git");
    let push = |args: &[&str]| {
        let mut a = vec!["push", "--quiet", url.as_str()];
        a.extend_from_slice(args);
        srv.git_ok(&src, Some(WRITER_TOKEN), &a);
    };
    // a new branch, a lightweight and an annotated tag
    git_ok(&src, &["branch", "feature", "main~5"]);
    git_ok(&src, &["tag", "light", "main~1"]);
    git_ok(&src, &["tag", "-a", "-m", "release", "v2", "main"]);
    push(&["feature", "light", "v2"]);
    assert_eq!(refs(&server_repo), refs(&src));
    // deletion
    push(&[":refs/heads/feature", ":refs/tags/light"]);
    let on_server = refs(&server_repo);
    assert!(!on_server.iter().any(|r| r.ends_with("refs/heads/feature")));
    assert!(!on_server.iter().any(|r| r.ends_with("refs/tags/light")));
    assert!(on_server.iter().any(|r| r.ends_with("refs/tags/v2")));

    // --atomic: one stale ref fails the whole push, nothing changes
    git_ok(&src, &["branch", "side", "main"]);
    push(&["side"]);
    let before = refs(&server_repo);
    git_ok(&src, &["branch", "-f", "side", "main~3"]);
    std::fs::write(src.join("atomic.txt"), "a\n").expect("write");
    git_ok(&src, &["add", "."]);
    git_ok(&src, &["commit", "--quiet", "-m", "atomic"]);
    let err = srv.git_err(
        &src,
        Some(WRITER_TOKEN),
        &["push", "--atomic", &url, "main", "side"],
    );
    assert!(err.contains("atomic") || err.contains("rejected"), "{err}");
    assert_eq!(
        refs(&server_repo),
        before,
        "the fast-forward of main went nowhere"
    );
    push(&["main"]);

    // two concurrent pushes to the same branch: exactly one wins
    let racers: Vec<_> = (0..2)
        .map(|i| {
            let dir = tmp.path().join(format!("racer{i}"));
            srv.git_ok(
                tmp.path(),
                Some(READER_TOKEN),
                &["clone", "--quiet", &url, s(&dir)],
            );
            std::fs::write(dir.join(format!("race{i}.txt")), "r\n").expect("write");
            git_ok(&dir, &["add", "."]);
            git_ok(&dir, &["commit", "--quiet", "-m", &format!("racer {i}")]);
            dir
        })
        .collect();
    let children: Vec<_> = racers
        .iter()
        .map(|dir| {
            srv.git(dir, Some(WRITER_TOKEN), &["push", "origin", "main"])
                .spawn()
                .expect("spawn push")
        })
        .collect();
    let outcomes: Vec<_> = children
        .into_iter()
        .map(|c| alknet_tests::wait_output(c, alknet_tests::git::GIT_TIMEOUT))
        .collect();
    let won: Vec<bool> = outcomes.iter().map(|o| o.status.success()).collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{outcomes:?}");
    let loser = outcomes
        .iter()
        .find(|o| !o.status.success())
        .expect("a loser");
    let why = String::from_utf8_lossy(&loser.stderr);
    assert!(why.contains("rejected") || why.contains("lock"), "{why}");
    let winner = &racers[won.iter().position(|w| *w).expect("a winner")];
    assert_eq!(
        git_ok(&server_repo, &["rev-parse", "main"]),
        git_ok(winner, &["rev-parse", "main"])
    );
    srv.git_ok(
        &src,
        Some(READER_TOKEN),
        &["pull", "--quiet", "--ff-only", &url, "main"],
    );

    // a non-fast-forward update is refused, even forced, and nothing changes
    let before = refs(&server_repo);
    git_ok(&src, &["reset", "--quiet", "--hard", "main~2"]);
    std::fs::write(src.join("diverge.txt"), "x\n").expect("write");
    git_ok(&src, &["add", "."]);
    git_ok(&src, &["commit", "--quiet", "-m", "diverge"]);
    let err = srv.git_err(&src, Some(WRITER_TOKEN), &["push", &url, "main"]);
    assert!(
        err.contains("non-fast-forward") || err.contains("rejected"),
        "{err}"
    );
    let err = srv.git_err(&src, Some(WRITER_TOKEN), &["push", "--force", &url, "main"]);
    assert!(err.contains("non-fast-forward"), "{err}");
    assert_eq!(refs(&server_repo), before);
    git_ok(&server_repo, &["fsck", "--full"]);

    // with [git] allow_force_push a forced push goes through
    drop(srv);
    let srv = start(backend, "allow_force_push = true");
    let url = srv.url("forced.git");
    srv.git_ok(&src, Some(WRITER_TOKEN), &["push", "--quiet", &url, "main"]);
    git_ok(&src, &["reset", "--quiet", "--hard", "main~1"]);
    std::fs::write(src.join("diverge2.txt"), "y\n").expect("write");
    git_ok(&src, &["add", "."]);
    git_ok(&src, &["commit", "--quiet", "-m", "diverge again"]);
    srv.git_err(&src, Some(WRITER_TOKEN), &["push", &url, "main"]);
    srv.git_ok(
        &src,
        Some(WRITER_TOKEN),
        &["push", "--quiet", "--force", &url, "main"],
    );
    assert_eq!(
        git_ok(&srv.root().join("forced.git"), &["rev-parse", "main"]),
        git_ok(&src, &["rev-parse", "main"])
    );
}

fn access_rules_unknown_repositories_and_escapes(backend: &str) {
    if require_git().is_none() {
        return;
    }
    let srv = start(backend, "");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = seeded(&srv, tmp.path(), "one.git");
    srv.git_ok(
        &src,
        Some(WRITER_TOKEN),
        &["push", "--quiet", &srv.url("two.git"), "main"],
    );
    srv.git_ok(
        &src,
        Some(WRITER_TOKEN),
        &["push", "--quiet", &srv.url("pub/open.git"), "main"],
    );
    let clone = |token: Option<&str>, repo: &str, dst: &str| {
        srv.git(
            tmp.path(),
            token,
            &["clone", "--quiet", &srv.url(repo), s(&tmp.path().join(dst))],
        )
    };
    // anonymous: only pub/*
    assert!(run(clone(None, "pub/open.git", "anon-pub"))
        .status
        .success());
    let out = run(clone(None, "one.git", "anon-one"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("authentication required"),
        "{err}"
    );
    // a per-path scope covers its repository only
    assert!(run(clone(Some(ONE_REPO_TOKEN), "one.git", "one-one"))
        .status
        .success());
    let out = run(clone(Some(ONE_REPO_TOKEN), "two.git", "one-two"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("lacks scope"),
        "{err}"
    );
    // an unknown token is refused, not taken for anonymous
    let out = run(clone(Some("tok-nobody"), "pub/open.git", "bad-token"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not recognized"),
        "{err}"
    );
    // a read-only identity cannot push, nor create
    let reader_clone = tmp.path().join("reader");
    srv.git_ok(
        tmp.path(),
        Some(READER_TOKEN),
        &["clone", "--quiet", &srv.url("two.git"), s(&reader_clone)],
    );
    std::fs::write(reader_clone.join("r.txt"), "r\n").expect("write");
    git_ok(&reader_clone, &["add", "."]);
    git_ok(&reader_clone, &["commit", "--quiet", "-m", "r"]);
    let before = refs(&srv.root().join("two.git"));
    let err = srv.git_err(
        &reader_clone,
        Some(READER_TOKEN),
        &["push", "origin", "main"],
    );
    assert!(err.contains("lacks scope \"git:write:two.git\""), "{err}");
    assert_eq!(refs(&srv.root().join("two.git")), before);
    let err = srv.git_err(
        &reader_clone,
        Some(READER_TOKEN),
        &["push", &srv.url("made-by-reader.git"), "main"],
    );
    assert!(err.contains("lacks scope"), "{err}");
    assert!(!srv.root().join("made-by-reader.git").exists());
    // unknown repository
    let out = run(clone(Some(READER_TOKEN), "nope.git", "nope"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("repository not found"),
        "{err}"
    );
    // escapes: .., absolute paths, a symlink leading out of the root
    let outside = tmp.path().join("outside.git");
    git_ok(tmp.path(), &["init", "--quiet", "--bare", s(&outside)]);
    std::os::unix::fs::symlink(&outside, srv.root().join("link.git")).expect("symlink");
    for (repo, expect) in [
        ("../outside.git", "'..' is not allowed"),
        ("pub/../../outside.git", "'..' is not allowed"),
        ("/etc", "absolute paths"),
        ("link.git", "outside the repository root"),
    ] {
        let out = run(clone(Some(READER_TOKEN), repo, "escape"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expect),
            "{repo}: {err}"
        );
    }
    // pushes cannot create through an escape either
    let err = srv.git_err(
        &src,
        Some(WRITER_TOKEN),
        &["push", &srv.url("../evil.git"), "main"],
    );
    assert!(err.contains("'..' is not allowed"), "{err}");
    assert!(!srv
        .root()
        .parent()
        .expect("parent")
        .join("evil.git")
        .exists());
}

fn ext_transport_with_alknet_connect(backend: &str) {
    if require_git().is_none() {
        return;
    }
    let srv = start(backend, "");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = seeded(&srv, tmp.path(), "pub/ext.git");
    let alknet = alknet_tests::alknet_bin();
    let ext = |extra: &str, repo: &str| {
        format!(
            "ext::{} connect --alpn alknet/git --fingerprint {} {extra}{} %G/{repo}",
            alknet.display(),
            srv.fingerprint,
            srv.server.addr()
        )
    };
    // anonymous clone of a public repository
    let dst = tmp.path().join("ext-clone");
    srv.git_ok(
        tmp.path(),
        None,
        &[
            "-c",
            "protocol.ext.allow=always",
            "clone",
            "--quiet",
            &ext("", "pub/ext.git"),
            s(&dst),
        ],
    );
    git_ok(&dst, &["fsck", "--full"]);
    assert_eq!(
        git_ok(&dst, &["rev-parse", "HEAD"]),
        git_ok(&src, &["rev-parse", "main"])
    );
    // a push with a client certificate whose fingerprint is a writer identity
    let cert = tmp.path().join("cert.pem");
    let key = tmp.path().join("key.pem");
    let out = run({
        let mut c = std::process::Command::new(&alknet);
        c.args(["keygen", "--tls-cert", s(&cert), "--tls-key", s(&key)])
            .stdout(std::process::Stdio::piped());
        c
    });
    assert!(out.status.success());
    let printed = [out.stdout, out.stderr].concat();
    let fp = String::from_utf8_lossy(&printed)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string();
    drop(srv);
    let srv = start(backend, &format!(
        "[[identities]]\nname = \"cert-writer\"\nfingerprints = [\"{fp}\"]\nscopes = [\"git:write\", \"git:create\"]\n"
    ));
    let ext = |extra: &str, repo: &str| {
        format!(
            "ext::{} connect --alpn alknet/git --fingerprint {} {extra}{} %G/{repo}",
            alknet.display(),
            srv.fingerprint,
            srv.server.addr()
        )
    };
    let with_cert = format!("--cert {} --key {} ", s(&cert), s(&key));
    srv.git_ok(
        &src,
        None,
        &[
            "-c",
            "protocol.ext.allow=always",
            "push",
            "--quiet",
            &ext(&with_cert, "by-cert.git"),
            "main",
        ],
    );
    assert_eq!(
        git_ok(&srv.root().join("by-cert.git"), &["rev-parse", "main"]),
        git_ok(&src, &["rev-parse", "main"])
    );
    // and the same certificate through git-remote-alknet's git config
    let dst = tmp.path().join("cfg-clone");
    srv.git_ok(
        tmp.path(),
        None,
        &[
            "-c",
            &format!("alknet.cert={}", s(&cert)),
            "-c",
            &format!("alknet.key={}", s(&key)),
            "clone",
            "--quiet",
            &srv.url("by-cert.git"),
            s(&dst),
        ],
    );
    // without it the same clone is anonymous, and refused
    let err = srv.git_err(
        tmp.path(),
        None,
        &[
            "clone",
            &srv.url("by-cert.git"),
            s(&tmp.path().join("anon")),
        ],
    );
    assert!(err.contains("authentication required"), "{err}");
}

/// The gix backend needs no `git`: the server runs with a `PATH` holding none (and a
/// `git_program` that does not exist) while the client clones, pushes and fetches. The
/// `git` backend in the same environment fails, which shows the environment bites.
#[test]
fn gix_backend_serves_without_git_on_the_server() {
    if require_git().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = tmp.path().join("empty-bin");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let no_git = [("PATH", s(&empty))];
    let srv = GitServer::start_env(
        "backend = \"gix\"\ngit_program = \"/nonexistent/git\"",
        &no_git,
    );
    let src = seeded(&srv, tmp.path(), "nogit.git");
    let dst = tmp.path().join("clone");
    srv.git_ok(
        tmp.path(),
        Some(READER_TOKEN),
        &["clone", "--quiet", &srv.url("nogit.git"), s(&dst)],
    );
    git_ok(&dst, &["fsck", "--full", "--strict"]);
    assert_eq!(
        git_ok(&dst, &["rev-parse", "HEAD"]),
        git_ok(&src, &["rev-parse", "main"])
    );
    std::fs::write(dst.join("more.txt"), "more\n").expect("write");
    git_ok(&dst, &["add", "."]);
    git_ok(&dst, &["commit", "--quiet", "-m", "more"]);
    srv.git_ok(
        &dst,
        Some(WRITER_TOKEN),
        &["push", "--quiet", "origin", "main"],
    );
    srv.git_ok(
        &src,
        Some(READER_TOKEN),
        &[
            "pull",
            "--quiet",
            "--ff-only",
            &srv.url("nogit.git"),
            "main",
        ],
    );
    assert_eq!(
        git_ok(&src, &["rev-parse", "main"]),
        git_ok(&dst, &["rev-parse", "main"])
    );
    git_ok(
        &srv.root().join("nogit.git"),
        &["fsck", "--full", "--strict"],
    );
    drop(srv);

    let srv = GitServer::start_env("backend = \"git\"", &no_git);
    let err = srv.git_err(
        &src,
        Some(WRITER_TOKEN),
        &["push", &srv.url("needs-git.git"), "main"],
    );
    assert!(err.contains("cannot run git"), "{err}");
}

/// A push killed in the middle of its pack leaves the repository as it was: refs
/// unchanged, no objects outside the (removed) quarantine, `fsck` clean.
fn killed_push_changes_nothing(backend: &str) {
    if require_git().is_none() {
        return;
    }
    // a killed client says nothing: its connection ends by the idle timeout, kept short
    let srv = start(backend, "[limits]\nidle_timeout_ms = 2000");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = seeded(&srv, tmp.path(), "killed.git");
    let server_repo = srv.root().join("killed.git");
    let before = refs(&server_repo);
    let listing = |dir: &Path| {
        let mut names: Vec<String> = walk(dir);
        names.sort();
        names
    };
    let objects_before = listing(&server_repo.join("objects"));
    // a big incompressible blob makes the pack take a while to send
    std::fs::write(
        src.join("big.bin"),
        alknet_tests::payload(11, 24 * 1024 * 1024),
    )
    .expect("write");
    git_ok(&src, &["add", "."]);
    git_ok(&src, &["commit", "--quiet", "-m", "big"]);
    // its own process group, so the kill reaches git, pack-objects and the helper
    let mut child = {
        use std::os::unix::process::CommandExt;
        let mut c = srv.git(
            &src,
            Some(WRITER_TOKEN),
            &["push", &srv.url("killed.git"), "main"],
        );
        c.process_group(0);
        c.spawn().expect("spawn push")
    };
    // kill it once the server has started receiving (its quarantine exists), or after
    // at most a few seconds
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen_receiving = false;
    while std::time::Instant::now() < deadline {
        let receiving = std::fs::read_dir(server_repo.join("objects"))
            .expect("objects")
            .filter_map(Result::ok)
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("tmp_objdir-incoming")
            });
        if receiving {
            seen_receiving = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        seen_receiving,
        "the push never reached the server's quarantine"
    );
    let group = format!("-{}", child.id());
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &group])
        .status()
        .expect("kill");
    assert!(killed.success());
    let _ = child.wait();
    // the server notices and cleans up; wait (bounded) until the quarantine is gone
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline
        && listing(&server_repo.join("objects")) != objects_before
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(listing(&server_repo.join("objects")), objects_before);
    assert_eq!(refs(&server_repo), before);
    git_ok(&server_repo, &["fsck", "--full", "--strict"]);
}

/// Every file below `dir`, relative.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.display().to_string());
            }
        }
    }
    out
}

/// A larger repository (2 000 commits touching ~1 500 files, 50 binary blobs): a full
/// clone is `fsck`-clean; after two new commits on the server, the pack a fetch gets
/// (kept as a pack: `fetch.unpackLimit=1`) is small: only what the clone lacks.
fn large_repository_and_small_incremental_fetch(backend: &str) {
    if require_git().is_none() {
        return;
    }
    let srv = start(backend, "");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("big-src");
    generate_repo(&src, 2000, 1500, 3);
    let url = srv.url("big.git");
    srv.git_ok(
        &src,
        Some(WRITER_TOKEN),
        &["push", "--quiet", &url, "main", "v1"],
    );
    let dst = tmp.path().join("big-clone");
    srv.git_ok(
        tmp.path(),
        Some(READER_TOKEN),
        &["clone", "--quiet", &url, s(&dst)],
    );
    git_ok(&dst, &["fsck", "--full", "--strict"]);
    assert_eq!(
        git_ok(&dst, &["rev-list", "--count", "HEAD"]).trim(),
        "2000"
    );
    let pack_sizes = |dir: &Path| -> Vec<(String, u64)> {
        std::fs::read_dir(dir.join(".git/objects/pack"))
            .expect("packs")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
            .map(|e| {
                let len = e.metadata().expect("metadata").len();
                (e.file_name().to_string_lossy().to_string(), len)
            })
            .collect()
    };
    let before = pack_sizes(&dst);
    let clone_bytes: u64 = before.iter().map(|(_, n)| n).sum();
    assert!(
        clone_bytes > 1 << 20,
        "the clone's pack: {clone_bytes} bytes"
    );
    for i in 0..2 {
        std::fs::write(src.join(format!("src/f{i}.txt")), format!("edited {i}\n")).expect("write");
        git_ok(&src, &["add", "."]);
        git_ok(&src, &["commit", "--quiet", "-m", &format!("edit {i}")]);
    }
    srv.git_ok(&src, Some(WRITER_TOKEN), &["push", "--quiet", &url, "main"]);
    srv.git_ok(
        &dst,
        Some(READER_TOKEN),
        &[
            "-c",
            "fetch.unpackLimit=1",
            "-c",
            "transfer.unpackLimit=1",
            "fetch",
            "--quiet",
            "origin",
        ],
    );
    assert_eq!(
        git_ok(&dst, &["rev-parse", "origin/main"]),
        git_ok(&src, &["rev-parse", "main"])
    );
    let new: Vec<_> = pack_sizes(&dst)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    // 2 commits, 2 root trees, 2 src/ trees (1 500 entries each), 2 blobs: a few KiB
    // (git sends the trees as deltas against the client's, about 7 KiB in all; the gix
    // backend sends them whole, about 13 KiB), against more than 1 MiB for the clone
    assert!(
        new[0].1 < 32 * 1024,
        "incremental pack of {} bytes",
        new[0].1
    );
    git_ok(&dst, &["fsck", "--full", "--strict"]);
}

/// The objects a repository reaches from all its refs, sorted (`rev-list --objects`).
fn reachable_objects(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = git_ok(dir, &["rev-list", "--objects", "--all"])
        .lines()
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Every object a repository holds (packed and loose), sorted.
fn all_objects(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = git_ok(
        dir,
        &[
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname)",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect();
    v.sort();
    v
}

/// Full clones answered from git's reachability bitmap (gix backend): after `git repack
/// -adb` on the server and one more push (loose objects outside the pack), a clone gets
/// the stored pack as it is plus the new objects (`pack-reused` in the progress), over v2
/// and v0, `fsck`-clean, holding exactly what the refs reach. Then, with a branch deleted
/// after the repack (its objects are in the pack but no longer reachable), a clone gets
/// neither them nor the stored pack whole; a damaged bitmap is not used; with
/// `use_bitmaps = false` every clone walks.
#[test]
fn gix_backend_full_clone_from_the_bitmap() {
    if require_git().is_none() {
        return;
    }
    let srv = start("gix", "");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = seeded(&srv, tmp.path(), "bm.git");
    let url = srv.url("bm.git");
    let server_repo = srv.root().join("bm.git");
    // a branch that will be deleted after the repack
    git_ok(&src, &["checkout", "--quiet", "-b", "doomed"]);
    std::fs::write(src.join("doomed.txt"), "only on the doomed branch\n").expect("write");
    git_ok(&src, &["add", "."]);
    git_ok(&src, &["commit", "--quiet", "-m", "doomed"]);
    let doomed = git_ok(&src, &["rev-parse", "HEAD"]).trim().to_string();
    git_ok(&src, &["checkout", "--quiet", "main"]);
    srv.git_ok(
        &src,
        Some(WRITER_TOKEN),
        &["push", "--quiet", &url, "doomed"],
    );
    git_ok(&server_repo, &["repack", "-q", "-a", "-d", "-b"]);
    assert!(std::fs::read_dir(server_repo.join("objects/pack"))
        .expect("packs")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().ends_with(".bitmap")));
    // one more commit after the repack: outside the bitmapped pack on the server (the gix
    // backend keeps a pushed pack as a pack)
    std::fs::write(src.join("after-repack.txt"), "pushed after the repack\n").expect("write");
    git_ok(&src, &["add", "."]);
    git_ok(&src, &["commit", "--quiet", "-m", "after the repack"]);
    srv.git_ok(&src, Some(WRITER_TOKEN), &["push", "--quiet", &url, "main"]);
    assert!(
        count_objects(&server_repo, "packs") > 1 || count_objects(&server_repo, "count") > 0,
        "objects outside the bitmapped pack"
    );

    let clone = |name: &str, version: &str| -> (std::path::PathBuf, String) {
        let dst = tmp.path().join(name);
        let out = run(srv.git(
            tmp.path(),
            Some(READER_TOKEN),
            &[
                "-c",
                &format!("protocol.version={version}"),
                "clone",
                "--bare",
                "--progress",
                &url,
                s(&dst),
            ],
        ));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "clone {name}: {stderr}");
        git_ok(&dst, &["fsck", "--full", "--strict"]);
        assert_eq!(refs(&dst), refs(&server_repo), "{name}");
        assert_eq!(all_objects(&dst), reachable_objects(&server_repo), "{name}");
        (dst, stderr)
    };
    for version in ["2", "0"] {
        let (_, progress) = clone(&format!("whole-v{version}"), version);
        assert!(progress.contains("pack-reused"), "v{version}: {progress}");
    }

    // the doomed branch's commit stays in the pack, unreachable: not sent
    srv.git_ok(
        &src,
        Some(WRITER_TOKEN),
        &["push", "--quiet", &url, ":doomed"],
    );
    for version in ["2", "0"] {
        let (dst, progress) = clone(&format!("subset-v{version}"), version);
        assert!(!progress.contains("pack-reused"), "v{version}: {progress}");
        let out = run({
            let mut c = alknet_tests::git::git_cmd(&dst);
            c.args(["cat-file", "-e", &doomed]);
            c
        });
        assert!(!out.status.success(), "the unreachable commit was sent");
    }

    // a damaged bitmap (its entries cut off) is not used: the walk, same result
    let bitmap = std::fs::read_dir(server_repo.join("objects/pack"))
        .expect("packs")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "bitmap"))
        .expect("the bitmap");
    let bytes = std::fs::read(&bitmap).expect("read the bitmap");
    std::fs::remove_file(&bitmap).expect("remove the bitmap");
    std::fs::write(&bitmap, &bytes[..bytes.len() / 2]).expect("write the bitmap");
    let (_, progress) = clone("damaged-bitmap", "2");
    assert!(!progress.contains("pack-reused"), "{progress}");

    // with the bitmaps turned off: the walk, same result
    let walking = start("gix", "use_bitmaps = false");
    let src2 = seeded(&walking, tmp.path().join("w").as_path(), "bm.git");
    let repo2 = walking.root().join("bm.git");
    git_ok(&repo2, &["repack", "-q", "-a", "-d", "-b"]);
    let dst = tmp.path().join("walked");
    let out = run(walking.git(
        tmp.path(),
        Some(READER_TOKEN),
        &[
            "clone",
            "--bare",
            "--progress",
            &walking.url("bm.git"),
            s(&dst),
        ],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("pack-reused"), "{stderr}");
    assert_eq!(all_objects(&dst), reachable_objects(&src2));
}

/// Object ids in the packs of repository `dir` (a work tree's `.git`), sorted.
fn pack_objects(git_dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(git_dir.join("objects/pack"))
        .expect("packs")
        .filter_map(Result::ok)
    {
        if e.file_name().to_string_lossy().ends_with(".idx") {
            let idx = s(&e.path()).to_string();
            v.extend(
                git_ok(git_dir, &["verify-pack", "-v", &idx])
                    .lines()
                    .filter(|l| l.len() > 41 && l.as_bytes()[40] == b' ')
                    .map(|l| l[..40].to_string()),
            );
        }
    }
    v.sort();
    v
}

/// Protocol v0 negotiation over several rounds (gix backend): the clone has 200 commits
/// the server lacks, newer than anything common, so git sends its haves in growing
/// batches (16, 32, 64, …) that the server answers with `NAK` until the commit both have
/// comes; then `ACK <id> common`, `ACK <id> ready` (for that batch's haves), the
/// client's `done`, the final `ACK` and the pack. The fetch gets what it lacks and nothing else (a thin pack's
/// bases, which the client's index-pack appends from its own objects, are not new).
#[test]
fn gix_backend_v0_multi_ack_detailed_negotiation() {
    if require_git().is_none() {
        return;
    }
    let srv = start("gix", "");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = seeded(&srv, tmp.path(), "nego.git");
    let url = srv.url("nego.git");
    let dst = tmp.path().join("nego-clone");
    srv.git_ok(
        tmp.path(),
        Some(READER_TOKEN),
        &["clone", "--quiet", &url, s(&dst)],
    );
    let old_tip = git_ok(&dst, &["rev-parse", "origin/main"])
        .trim()
        .to_string();
    // 200 local commits the server never sees, newer than the common history, and 100
    // older ones on unrelated history (so haves still follow the common one: the server
    // ends the negotiation, not the client running out of haves); fast-import, one process
    let mut stream = String::new();
    for i in 0..100 {
        stream.push_str(&format!(
            "commit refs/heads/old\ncommitter T <t@e> {} +0000\ndata 7\nold {i:03}\nM 100644 inline old.txt\ndata 4\n{i:03}\n\n",
            1_500_000_000 + i * 60,
        ));
    }
    for i in 0..200 {
        stream.push_str(&format!(
            "commit refs/heads/local\ncommitter T <t@e> {} +0000\ndata 9\nlocal {i:03}\n{}M 100644 inline local.txt\ndata 4\n{i:03}\n\n",
            2_000_000_000 + i * 60,
            if i == 0 { format!("from {old_tip}\n") } else { String::new() },
        ));
    }
    let mut cmd = alknet_tests::git::git_cmd(&dst);
    cmd.args(["fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("fast-import");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stream.as_bytes())
            .expect("feed fast-import");
    }
    let out = alknet_tests::wait_output(child, alknet_tests::git::GIT_TIMEOUT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // three new commits on the server
    for i in 0..3 {
        std::fs::write(src.join(format!("n{i}.txt")), format!("new {i}\n")).expect("write");
        git_ok(&src, &["add", "."]);
        git_ok(&src, &["commit", "--quiet", "-m", &format!("new {i}")]);
    }
    srv.git_ok(&src, Some(WRITER_TOKEN), &["push", "--quiet", &url, "main"]);
    let new_tip = git_ok(&src, &["rev-parse", "main"]).trim().to_string();
    let before = pack_objects(&dst.join(".git"));
    let trace = srv.git_traced(
        &dst,
        Some(READER_TOKEN),
        &[
            "-c",
            "protocol.version=0",
            "-c",
            "fetch.unpackLimit=1",
            "-c",
            "transfer.unpackLimit=1",
            "fetch",
            "origin",
        ],
    );
    assert_eq!(
        git_ok(&dst, &["rev-parse", "origin/main"]).trim(),
        new_tip.as_str()
    );
    git_ok(&dst, &["fsck", "--full", "--strict"]);
    let lines: Vec<&str> = trace.lines().filter(|l| l.contains("fetch")).collect();
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    let answers: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("fetch< ") || l.contains("fetch> 0000") || l.contains("done"))
        .collect();
    assert!(count("fetch> have ") >= 200, "all local commits offered");
    assert!(
        count("fetch< NAK") >= 3,
        "several rounds: {}",
        count("fetch< NAK")
    );
    let common = format!("fetch< ACK {old_tip} common");
    let ready = " ready";
    assert!(count(&common) >= 1, "{common} missing: {answers:#?}");
    assert!(count(ready) >= 1, "{ready} missing: {answers:#?}");
    // the final ACK: a plain one, after the ready
    let last_ack = answers
        .iter()
        .rev()
        .find(|l| l.contains("fetch< ACK "))
        .expect("an ACK");
    assert!(
        last_ack.len() >= 40
            && last_ack.trim_end().split(' ').count() > 2
            && !last_ack.ends_with("common")
            && !last_ack.ends_with("ready"),
        "the final ACK: {answers:#?}"
    );
    // git uses no-done only over stateless transports (HTTP): here the client stops
    // sending haves at the ready and says done (git_wire tests no-done itself)
    assert!(
        count("multi_ack_detailed") >= 1,
        "the client chose multi_ack_detailed"
    );
    let at = |needle: &str| answers.iter().position(|l| l.contains(needle));
    assert!(
        at(ready) < at("fetch> done"),
        "ready before the client's done: {answers:#?}"
    );
    // exactly what the clone lacked (and thin-pack bases it already had)
    let missing: Vec<String> = {
        let mut v: Vec<String> = git_ok(
            &src,
            &["rev-list", "--objects", &new_tip, &format!("^{old_tip}")],
        )
        .lines()
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
        v.sort();
        v
    };
    assert_eq!(missing.len(), 9, "3 commits, 3 trees, 3 blobs: {missing:?}");
    let got: Vec<String> = pack_objects(&dst.join(".git"))
        .into_iter()
        .filter(|o| !before.contains(o))
        .collect();
    assert_eq!(
        got, missing,
        "the fetch's new objects are exactly the missing ones"
    );
}

/// `(id, type)` of every object in the packs of `git_dir`.
fn pack_types(git_dir: &Path) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(git_dir.join("objects/pack"))
        .expect("packs")
        .filter_map(Result::ok)
    {
        if e.file_name().to_string_lossy().ends_with(".idx") {
            let idx = s(&e.path()).to_string();
            for l in git_ok(git_dir, &["verify-pack", "-v", &idx]).lines() {
                let mut words = l.split_whitespace();
                if let (Some(id), Some(kind)) = (words.next(), words.next()) {
                    if id.len() == 40 {
                        v.push((id.to_string(), kind.to_string()));
                    }
                }
            }
        }
    }
    v
}

/// Partial clone, both backends: `--filter=blob:none` over `alknet://` (v2 and v0) and
/// `ext::` gets a pack without blobs; checking out and `git log -p` then fetch the blobs
/// lazily through the same transport; `fsck` is clean. `tree:0` sends commits (and
/// tags) only, `blob:limit=1k` leaves out the 32 KiB binary blobs. A `sparse:oid` spec
/// naming no object is refused with a clear error; with `allow_filter = false` git is told nothing and clones
/// whole, even when the served repository's own config allows filters (the `git`
/// backend's switches are per invocation and win).
fn partial_clone(backend: &str) {
    if require_git().is_none() {
        return;
    }
    let srv = start(backend, "");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = seeded(&srv, tmp.path(), "pub/part.git");
    let url = srv.url("pub/part.git");
    let kinds = |dir: &Path| -> Vec<String> {
        let mut k: Vec<String> = pack_types(&dir.join(".git"))
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        k.sort();
        k.dedup();
        k
    };
    // blob:none, no checkout: the pack holds commits and trees only
    let dst = tmp.path().join("blobless");
    srv.git_ok(
        tmp.path(),
        Some(READER_TOKEN),
        &[
            "clone",
            "--quiet",
            "--no-checkout",
            "--filter=blob:none",
            &url,
            s(&dst),
        ],
    );
    assert_eq!(kinds(&dst), ["commit", "tree"].map(String::from).to_vec());
    git_ok(&dst, &["fsck"]);
    // the checkout fetches the blobs it needs through git-remote-alknet
    srv.git_ok(&dst, Some(READER_TOKEN), &["checkout", "--quiet", "main"]);
    assert_eq!(
        std::fs::read(dst.join("src/f0.txt")).ok(),
        std::fs::read(src.join("src/f0.txt")).ok()
    );
    let log = srv.git_ok(
        &dst,
        Some(READER_TOKEN),
        &["log", "-p", "-5", "--format=%H"],
    );
    assert_eq!(log, git_ok(&src, &["log", "-p", "-5", "--format=%H"]));
    git_ok(&dst, &["fsck"]);
    assert_eq!(
        git_ok(&dst, &["rev-parse", "HEAD"]),
        git_ok(&src, &["rev-parse", "main"])
    );

    // protocol v0: the lazy fetches want blobs by id (allow-*-sha1-in-want advertised)
    let dst = tmp.path().join("blobless-v0");
    srv.git_ok(
        tmp.path(),
        Some(READER_TOKEN),
        &[
            "-c",
            "protocol.version=0",
            "clone",
            "--quiet",
            "--no-checkout",
            "--filter=blob:none",
            &url,
            s(&dst),
        ],
    );
    assert_eq!(kinds(&dst), ["commit", "tree"].map(String::from).to_vec());
    srv.git_ok(
        &dst,
        Some(READER_TOKEN),
        &["-c", "protocol.version=0", "checkout", "--quiet", "main"],
    );
    assert_eq!(
        std::fs::read(dst.join("src/f2.txt")).ok(),
        std::fs::read(src.join("src/f2.txt")).ok()
    );
    git_ok(&dst, &["fsck"]);
    // the served repository's config was not touched
    let served = srv.root().join("pub/part.git");
    assert!(!git_ok(&served, &["config", "--list", "--local"]).contains("uploadpack"));

    // through ext::, with the checkout in the clone itself (lazy fetch through ext:: too)
    let alknet = alknet_tests::alknet_bin();
    let ext = format!(
        "ext::{} connect --alpn alknet/git --fingerprint {} {} %G/pub/part.git",
        alknet.display(),
        srv.fingerprint,
        srv.server.addr()
    );
    let dst = tmp.path().join("blobless-ext");
    srv.git_ok(
        tmp.path(),
        None,
        &[
            "-c",
            "protocol.ext.allow=always",
            "clone",
            "--quiet",
            "--filter=blob:none",
            &ext,
            s(&dst),
        ],
    );
    assert_eq!(
        std::fs::read(dst.join("src/f1.txt")).ok(),
        std::fs::read(src.join("src/f1.txt")).ok()
    );
    git_ok(&dst, &["fsck"]);

    // tree:0: commits only (`v1` is a lightweight tag)
    let dst = tmp.path().join("treeless");
    srv.git_ok(
        tmp.path(),
        Some(READER_TOKEN),
        &[
            "clone",
            "--quiet",
            "--no-checkout",
            "--filter=tree:0",
            &url,
            s(&dst),
        ],
    );
    assert_eq!(kinds(&dst), ["commit"].map(String::from).to_vec());
    assert_eq!(
        git_ok(&dst, &["rev-list", "--count", "origin/main"]).trim(),
        COMMITS.to_string()
    );
    git_ok(&dst, &["fsck"]);

    // blob:limit=1k: the small text blobs, not the 32 KiB binary ones
    let dst = tmp.path().join("limited");
    srv.git_ok(
        tmp.path(),
        Some(READER_TOKEN),
        &[
            "clone",
            "--quiet",
            "--no-checkout",
            "--filter=blob:limit=1k",
            &url,
            s(&dst),
        ],
    );
    let blobs: Vec<String> = pack_types(&dst.join(".git"))
        .into_iter()
        .filter(|(_, k)| k == "blob")
        .map(|(id, _)| id)
        .collect();
    assert!(!blobs.is_empty());
    for id in &blobs {
        let size: usize = git_ok(&dst, &["cat-file", "-s", id])
            .trim()
            .parse()
            .expect("size");
        assert!(size < 1024, "{id}: {size} bytes");
    }
    git_ok(&dst, &["fsck"]);

    // a sparse spec naming nothing: refused, clearly (git's client checks the syntax of
    // what it sends, so a spec the server does not know is not sent; see git_wire)
    let err = srv.git_err(
        tmp.path(),
        Some(READER_TOKEN),
        &[
            "clone",
            "--filter=sparse:oid=main:x",
            &url,
            s(&tmp.path().join("sparse")),
        ],
    );
    assert!(
        err.contains("unable to access sparse blob in 'main:x'"),
        "{err}"
    );

    // filters off: not advertised, git clones everything
    let whole = start(backend, "allow_filter = false");
    seeded(&whole, &tmp.path().join("w"), "pub/part.git");
    // the repository's own config cannot turn on what the server turned off
    git_ok(
        &whole.root().join("pub/part.git"),
        &["config", "uploadpack.allowFilter", "true"],
    );
    let dst = tmp.path().join("unfiltered");
    let out = run(whole.git(
        tmp.path(),
        Some(READER_TOKEN),
        &[
            "clone",
            "--no-checkout",
            "--filter=blob:none",
            &whole.url("pub/part.git"),
            s(&dst),
        ],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("filtering not recognized by server"),
        "{stderr}"
    );
    assert!(kinds(&dst).contains(&"blob".to_string()));
}

/// Protocol v2 `want-ref`, both backends (`allow_want_ref = true`; the git backend's
/// default is off, see `GIT_BACKEND_ALLOW_WANT_REF`): the server advertises
/// `ref-in-want`, so git's fetch of branches by name asks with `want-ref refs/heads/…`
/// and takes the object ids from the `wanted-refs` section; the fetch gets the new
/// commits. Off (`allow_want_ref = false`, or unset with the git backend), `ref-in-want`
/// is not advertised and git wants by id.
fn v2_want_ref(backend: &str) {
    if require_git().is_none() {
        return;
    }
    let srv = start(backend, "allow_want_ref = true");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = seeded(&srv, tmp.path(), "wr.git");
    let url = srv.url("wr.git");
    let dst = tmp.path().join("wr-clone");
    srv.git_ok(
        tmp.path(),
        Some(READER_TOKEN),
        &["clone", "--quiet", &url, s(&dst)],
    );
    std::fs::write(src.join("wanted.txt"), "asked for by name\n").expect("write");
    git_ok(&src, &["add", "."]);
    git_ok(&src, &["commit", "--quiet", "-m", "wanted"]);
    srv.git_ok(&src, Some(WRITER_TOKEN), &["push", "--quiet", &url, "main"]);
    let trace = srv.git_traced(
        &dst,
        Some(READER_TOKEN),
        &["-c", "protocol.version=2", "fetch", "origin", "main"],
    );
    let tip = git_ok(&src, &["rev-parse", "main"]).trim().to_string();
    assert!(trace.contains("ref-in-want"), "advertised");
    assert!(
        trace.contains("fetch> want-ref refs/heads/main"),
        "git used want-ref: {trace}"
    );
    assert!(trace.contains("fetch< wanted-refs"), "{trace}");
    assert!(
        trace.contains(&format!("fetch< {tip} refs/heads/main")),
        "{trace}"
    );
    assert_eq!(
        git_ok(&dst, &["rev-parse", "FETCH_HEAD"]).trim(),
        tip.as_str()
    );
    git_ok(&dst, &["fsck", "--full"]);

    // off: git is not offered want-ref and fetches by id
    let off = start(
        backend,
        if backend == "git" {
            ""
        } else {
            "allow_want_ref = false"
        },
    );
    seeded(&off, &tmp.path().join("off"), "wr.git");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    git_ok(&empty, &["init", "--quiet"]);
    let trace = off.git_traced(
        &empty,
        Some(READER_TOKEN),
        &[
            "-c",
            "protocol.version=2",
            "fetch",
            &off.url("wr.git"),
            "main",
        ],
    );
    assert!(!trace.contains("ref-in-want"), "{trace}");
    assert!(!trace.contains("want-ref"), "{trace}");
    assert!(trace.contains("fetch> want "), "{trace}");
}

/// `object:type=` and `combine:` (several `--filter` options), both backends.
/// `object:type=commit` sends the history without trees or blobs: `git log` works
/// offline and `git cat-file -e` of a blob fetches it lazily through git-remote-alknet.
/// `--filter=blob:none --filter=tree:1` (git sends `combine:blob:none+tree:1`) sends the
/// commits and their root trees only; a checkout then fetches the rest. `fsck` is clean
/// after each (a promisor pack's missing objects are not errors).
fn object_type_and_combined_filters(backend: &str) {
    if require_git().is_none() {
        return;
    }
    let srv = start(backend, "");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = seeded(&srv, tmp.path(), "pub/types.git");
    let url = srv.url("pub/types.git");
    let kinds = |dir: &Path| -> Vec<(String, String)> { pack_types(&dir.join(".git")) };

    let dst = tmp.path().join("commits-only");
    srv.git_ok(
        tmp.path(),
        Some(READER_TOKEN),
        &[
            "clone",
            "--quiet",
            "--no-checkout",
            "--filter=object:type=commit",
            &url,
            s(&dst),
        ],
    );
    let got = kinds(&dst);
    assert!(got.iter().all(|(_, k)| k == "commit"), "not only commits");
    assert_eq!(got.len(), COMMITS);
    assert_eq!(
        git_ok(&dst, &["log", "--format=%H %s", "origin/main"]),
        git_ok(&src, &["log", "--format=%H %s", "main"])
    );
    git_ok(&dst, &["fsck", "--connectivity-only"]);
    git_ok(&dst, &["fsck"]);
    let blob = git_ok(&src, &["rev-parse", "main:src/f3.txt"])
        .trim()
        .to_string();
    let missing = run({
        let mut c = alknet_tests::git::git_cmd(&dst);
        c.args(["cat-file", "-e", &blob])
            .env("GIT_NO_LAZY_FETCH", "1");
        c
    });
    assert!(!missing.status.success(), "the blob was not in the pack");
    srv.git_ok(&dst, Some(READER_TOKEN), &["cat-file", "-e", &blob]);
    assert_eq!(
        git_ok(&dst, &["cat-file", "blob", &blob]),
        git_ok(&src, &["cat-file", "blob", &blob])
    );
    git_ok(&dst, &["fsck"]);

    let dst = tmp.path().join("combined");
    let trace = srv.git_traced(
        tmp.path(),
        Some(READER_TOKEN),
        &[
            "clone",
            "--quiet",
            "--no-checkout",
            "--filter=blob:none",
            "--filter=tree:1",
            &url,
            s(&dst),
        ],
    );
    assert!(
        trace.contains("filter combine:blob:none+tree:1"),
        "git sent a combine: spec"
    );
    let got = kinds(&dst);
    let mut trees: Vec<String> = got
        .iter()
        .filter(|(_, k)| k == "tree")
        .map(|(id, _)| id.clone())
        .collect();
    trees.sort();
    let mut root_trees: Vec<String> = git_ok(&src, &["log", "--format=%T", "main"])
        .lines()
        .map(String::from)
        .collect();
    root_trees.sort();
    root_trees.dedup();
    assert_eq!(trees, root_trees, "root trees only");
    assert_eq!(got.iter().filter(|(_, k)| k == "commit").count(), COMMITS);
    assert!(!got.iter().any(|(_, k)| k == "blob"), "no blobs");
    git_ok(&dst, &["fsck", "--connectivity-only"]);
    srv.git_ok(&dst, Some(READER_TOKEN), &["checkout", "--quiet", "main"]);
    assert_eq!(
        std::fs::read(dst.join("src/f4.txt")).ok(),
        std::fs::read(src.join("src/f4.txt")).ok()
    );
    git_ok(&dst, &["fsck"]);

    // each filter sends exactly the objects git's own upload-pack sends (file://, the
    // served repository); trivially so for the git backend, which is git's upload-pack
    let served = srv.root().join("pub/types.git");
    let reference_upload_pack = "git -c uploadpack.allowFilter=true upload-pack";
    for (i, spec) in [
        "object:type=blob",
        "object:type=tree",
        "object:type=commit",
        "object:type=tag",
        "combine:blob:none+tree:1",
        "combine:blob:limit=1k+object:type=blob",
        "tree:2",
    ]
    .into_iter()
    .enumerate()
    {
        let objects = |dir: &Path| {
            let mut v = kinds(dir);
            v.sort();
            v
        };
        let ours = tmp.path().join(format!("ours-{i}"));
        let filter = format!("--filter={spec}");
        srv.git_ok(
            tmp.path(),
            Some(READER_TOKEN),
            &["clone", "--quiet", "--no-checkout", &filter, &url, s(&ours)],
        );
        let theirs = tmp.path().join(format!("theirs-{i}"));
        git_ok(
            tmp.path(),
            &[
                "clone",
                "--quiet",
                "--no-checkout",
                "--upload-pack",
                reference_upload_pack,
                &filter,
                &format!("file://{}", s(&served)),
                s(&theirs),
            ],
        );
        let sent = objects(&ours);
        assert!(sent.iter().any(|(_, k)| k == "commit"), "{spec}: {sent:?}");
        let reference = objects(&theirs);
        let extra: Vec<_> = sent.iter().filter(|o| !reference.contains(o)).collect();
        let lacking: Vec<_> = reference.iter().filter(|o| !sent.contains(o)).collect();
        assert!(
            extra.is_empty() && lacking.is_empty(),
            "{spec}: {} objects git does not send (first {:?}), {} it sends missing (first {:?})",
            extra.len(),
            extra.first(),
            lacking.len(),
            lacking.first()
        );
    }
}

/// The sparse-checkout patterns the `sparse:oid` test serves (git's non-cone syntax):
/// a prefix glob with one exception, a directory with an excluded subdirectory, a
/// pattern that only a copy of `src/` under `copy/` matches, one binary blob.
const SPARSE_SPEC: &str = "# what a sparse clone gets\n\
/src/f1*\n\
!/src/f13.txt\n\
docs/\n\
!docs/private/\n\
copy/f2?.txt\n\
/bin/blob4*.bin\n";

/// `--filter=sparse:oid=…`, both backends: the blob named by `main:sparse/spec` (and by
/// its object id) is read as a sparse-checkout file, and a `--no-checkout` clone (v2 and
/// v0) receives exactly the objects git's own upload-pack sends for the same spec from
/// the served repository (`file://`). With `--filter=blob:limit=1k` besides (`combine:`)
/// the gix backend sends what both filters send, as git sends each alone: a superset of
/// git's combine, which depends on its walk's order (see the README). The last commit
/// copies `src/` to `copy/` (the same tree at a second path: blobs out under `src/` are
/// in under `copy/` and the other way round; a new `src/f12.txt` is reachable only
/// through that tree, met first as `copy/`). A spec naming no object, or a tree, is
/// refused with git's words, a pattern blob over `[git] max_sparse_patterns` with ours.
fn sparse_oid_filter(backend: &str) {
    if require_git().is_none() {
        return;
    }
    let srv = start(backend, "");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = seeded(&srv, tmp.path(), "pub/sparse.git");
    for (path, text) in [
        ("docs/a.md", "a\n"),
        ("docs/sub/b.md", "b\n"),
        ("docs/private/p.md", "p\n"),
        ("sparse/spec", SPARSE_SPEC),
    ] {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    git_ok(&src, &["add", "."]);
    git_ok(&src, &["commit", "--quiet", "-m", "docs and a sparse spec"]);
    // a new src/f12.txt, reachable only through the tree `src/` and `copy/` share
    std::fs::write(src.join("src/f12.txt"), "only in the copied tree\n").expect("write");
    git_ok(&src, &["add", "src/f12.txt"]);
    let src_tree = git_ok(&src, &["write-tree", "--prefix=src/"]);
    git_ok(&src, &["read-tree", "--prefix=copy/", src_tree.trim()]);
    git_ok(&src, &["commit", "--quiet", "-m", "copy of src"]);
    git_ok(&src, &["checkout", "--quiet", "--", "."]);
    let url = srv.url("pub/sparse.git");
    srv.git_ok(&src, Some(WRITER_TOKEN), &["push", "--quiet", &url, "main"]);
    let served = srv.root().join("pub/sparse.git");
    assert_eq!(
        git_ok(&src, &["rev-parse", "main:copy"]),
        git_ok(&src, &["rev-parse", "main:src"]),
        "one tree at two paths"
    );
    let spec_blob = git_ok(&src, &["rev-parse", "main:sparse/spec"]);
    let by_id = format!("--filter=sparse:oid={}", spec_blob.trim());
    let reference_upload_pack = "git -c uploadpack.allowFilter=true upload-pack";
    let cases: [(&str, &[&str]); 4] = [
        ("2", &["--filter=sparse:oid=main:sparse/spec"]),
        ("0", &["--filter=sparse:oid=main:sparse/spec"]),
        ("2", &[&by_id]),
        (
            "2",
            &[
                "--filter=sparse:oid=main:sparse/spec",
                "--filter=blob:limit=1k",
            ],
        ),
    ];
    // what git's own upload-pack sends for `filters` from the served repository
    let file_url = format!("file://{}", s(&served));
    let mut reference_clones = 0;
    let mut git_sends = |filters: &[&str]| {
        reference_clones += 1;
        let theirs = tmp.path().join(format!("theirs-{reference_clones}"));
        let mut args = vec![
            "clone",
            "--quiet",
            "--no-checkout",
            "--upload-pack",
            reference_upload_pack,
        ];
        args.extend_from_slice(filters);
        args.extend_from_slice(&[&file_url, s(&theirs)]);
        git_ok(tmp.path(), &args);
        all_objects(&theirs)
    };
    let paths = git_ok(&src, &["rev-list", "--objects", "--all"]);
    let named = |ids: &[&String]| -> Vec<String> {
        paths
            .lines()
            .filter(|l| ids.iter().any(|id| l.starts_with(id.as_str())))
            .map(String::from)
            .collect()
    };
    for (i, (version, filters)) in cases.into_iter().enumerate() {
        let protocol = format!("protocol.version={version}");
        let ours = tmp.path().join(format!("ours-{i}"));
        let mut args = vec!["-c", &protocol, "clone", "--quiet", "--no-checkout"];
        args.extend_from_slice(filters);
        args.extend_from_slice(&[&url, s(&ours)]);
        srv.git_ok(tmp.path(), Some(READER_TOKEN), &args);
        let sent = all_objects(&ours);
        let git_combined = git_sends(filters);
        let reference = if filters.len() > 1 && backend == "gix" {
            // combine: what every filter sends, each as git sends it alone. git's own
            // combine sends less (a sub-filter remembers the objects it passed, so a blob
            // first met where the patterns leave it out is not sent where they put it in
            // later: it depends on the walk's order); it must be within ours
            let lacking: Vec<_> = git_combined.iter().filter(|o| !sent.contains(o)).collect();
            assert!(lacking.is_empty(), "{filters:?}: {:?}", named(&lacking));
            let each: Vec<Vec<String>> = filters.iter().map(|f| git_sends(&[f])).collect();
            let mut all = each[0].clone();
            all.retain(|o| each[1..].iter().all(|e| e.contains(o)));
            all
        } else {
            git_combined
        };
        let extra: Vec<_> = sent.iter().filter(|o| !reference.contains(o)).collect();
        let lacking: Vec<_> = reference.iter().filter(|o| !sent.contains(o)).collect();
        assert!(
            extra.is_empty() && lacking.is_empty(),
            "{filters:?} v{version}: objects git does not send {:?}, objects it sends missing {:?}",
            named(&extra),
            named(&lacking)
        );
        // not vacuous: some blobs in, some out, the copy's own
        let has = |rev: &str| {
            let id = git_ok(&src, &["rev-parse", rev]).trim().to_string();
            sent.contains(&id)
        };
        assert!(has("main:docs/sub/b.md"), "{filters:?}");
        // (git's combine sends no blob first met under `copy/`)
        assert_eq!(
            has("main:src/f12.txt"),
            filters.len() == 1 || backend == "gix",
            "{filters:?}"
        );
        assert!(has("main:copy/f21.txt"), "{filters:?}: the copy's blob");
        assert!(
            !has("main:src/f13.txt") && !has("main:docs/private/p.md") && !has("main:sparse/spec"),
            "{filters:?}"
        );
        assert_eq!(
            has("main:bin/blob40.bin"),
            filters.len() == 1,
            "{filters:?}"
        );
        git_ok(&ours, &["fsck", "--connectivity-only"]);
    }

    // a spec naming no object, or a tree: refused with git's words
    for (spec, needle) in [
        ("main:nope", "unable to access sparse blob in 'main:nope'"),
        ("main:src", "unable to parse sparse filter data in"),
    ] {
        let filter = format!("--filter=sparse:oid={spec}");
        let dst = tmp.path().join("refused");
        let err = srv.git_err(
            tmp.path(),
            Some(READER_TOKEN),
            &["clone", "--no-checkout", &filter, &url, s(&dst)],
        );
        assert!(err.contains(needle), "{spec}: {err}");
    }

    // the pattern blob's bounds, configured lower: refused, clearly (gix)
    if backend == "gix" {
        let small = start(backend, "max_sparse_patterns = 5");
        let url = small.url("pub/sparse.git");
        small.git_ok(&src, Some(WRITER_TOKEN), &["push", "--quiet", &url, "main"]);
        let err = small.git_err(
            tmp.path(),
            Some(READER_TOKEN),
            &[
                "clone",
                "--no-checkout",
                "--filter=sparse:oid=main:sparse/spec",
                &url,
                s(&tmp.path().join("bounded")),
            ],
        );
        assert!(
            err.contains("sparse:oid=main:sparse/spec: the pattern blob has more patterns than this server reads (5)"),
            "{err}"
        );
    }
}
