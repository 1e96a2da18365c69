//! SFTP with the real OpenSSH `sftp` client, both ways: through `alknet/ssh`'s `sftp`
//! subsystem (`sftp -o ProxyCommand='alknet connect --alpn alknet/ssh …'`) and straight
//! onto `alknet/sftp` (`sftp -D 'alknet connect --alpn alknet/sftp --cert … …'`, the
//! connection's client certificate naming the identity). Every escape attempt is checked
//! by what exists on disk afterwards. `tests/run-all.sh` installs openssh-client.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use alknet_runtime::tls::TlsIdentity;
use alknet_tests::ssh::*;
use alknet_tests::*;

/// Every `sftp` run ends within this, or the test fails.
const SFTP_TIMEOUT: Duration = Duration::from_secs(120);

/// Size of the file sent both ways, as the issue's batches ask (100 MiB: well past
/// OpenSSH's 64 requests × 255 KiB in flight and the QUIC windows, so flow control and
/// request pipelining are exercised, not one burst).
const BIG: usize = 100 << 20;

/// Files in the tree sent recursively both ways (OpenSSH handles them one by one, each
/// costing a few round trips).
const TREE_FILES: usize = 1_000;

fn require_openssh() {
    assert!(
        openssh_available(),
        "the OpenSSH client is required: apt-get install openssh-client (tests/run-all.sh does)"
    );
}

/// Runs `cmd -b BATCH [destination]` in `local` (the client's working directory).
fn batch(mut cmd: Command, destination: Option<&str>, local: &Path, script: &str) -> Output {
    let file = local.join(".batch");
    std::fs::write(&file, script).expect("write batch");
    cmd.arg("-b").arg(&file).current_dir(local);
    cmd.args(destination);
    let started = std::time::Instant::now();
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sftp");
    let out = wait_output(child, SFTP_TIMEOUT);
    eprintln!(
        "sftp batch took {:?}: {:?}",
        started.elapsed(),
        script.lines().next()
    );
    out
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "sftp failed: {}\nstdout: {}",
        text(&out.stderr),
        text(&out.stdout)
    );
    text(&out.stdout)
}

/// A client certificate made for `name` in `dir`, added as a peer with `scopes`.
struct ClientCert {
    cert: PathBuf,
    key: PathBuf,
}

fn client_cert(server: &BinServer, dir: &Path, name: &str, scopes: &[&str]) -> ClientCert {
    let home = dir.join(format!("cert-{name}"));
    std::fs::create_dir_all(&home).expect("mkdir");
    let (id, _) = TlsIdentity::load_or_generate(&home).expect("client certificate");
    if !scopes.is_empty() {
        peer_add(
            server.data_dir.path(),
            name,
            &id.fingerprint().to_string(),
            scopes,
        );
    }
    ClientCert {
        cert: home.join(alknet_runtime::tls::GENERATED_CERT_FILE),
        key: home.join(alknet_runtime::tls::GENERATED_KEY_FILE),
    }
}

/// `sftp -D "alknet connect --alpn alknet/sftp …"` (OpenSSH ≥ 9.1 splits the command).
fn sftp_direct(server: &BinServer, cert: &ClientCert) -> Command {
    sftp_direct_over(server, cert, "quic")
}

/// [`sftp_direct`] through `alknet connect --transport TRANSPORT`.
fn sftp_direct_over(server: &BinServer, cert: &ClientCert, transport: &str) -> Command {
    let mut cmd = Command::new("sftp");
    cmd.arg("-D").arg(format!(
        "{} connect --transport {transport} --alpn alknet/sftp --cert {} --key {} --fingerprint {} {}",
        alknet_bin().display(),
        cert.cert.display(),
        cert.key.display(),
        server.fingerprint(),
        server.addr()
    ));
    cmd
}

fn sftp_root(server: &BinServer) -> PathBuf {
    server.data_dir.path().join("sftp")
}

/// put/get of [`BIG`] bytes with equal SHA-256 both ways, then the everyday commands;
/// checked on disk in `home` (the identity's directory on the server).
fn transfers_and_commands(run: &dyn Fn(&str) -> Output, local: &Path, home: &Path) {
    let data = payload(12, BIG);
    std::fs::write(local.join("big"), &data).expect("write");
    ok(run("put big /big\nget /big big.back\n"));
    assert_eq!(
        sha256(&std::fs::read(home.join("big")).expect("uploaded")),
        sha256(&data)
    );
    assert_eq!(
        sha256(&std::fs::read(local.join("big.back")).expect("downloaded")),
        sha256(&data)
    );

    // resume: transfers cut short (as a killed one leaves them), then reput / reget
    let cut = |path: &Path, len: usize| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open");
        f.set_len(len as u64).expect("truncate");
    };
    cut(&home.join("big"), BIG / 2);
    cut(&local.join("big.back"), BIG / 3);
    ok(run("reput big /big\nreget /big big.back\n"));
    assert_eq!(
        sha256(&std::fs::read(home.join("big")).expect("resumed up")),
        sha256(&data)
    );
    assert_eq!(
        sha256(&std::fs::read(local.join("big.back")).expect("resumed down")),
        sha256(&data)
    );

    // a tree of TREE_FILES small files, recursively both ways
    let tree = local.join("tree");
    for i in 0..TREE_FILES {
        let dir = tree.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("f{i}")), payload(i as u64, 1024 + i)).expect("write");
    }
    ok(run("put -R tree /tree\nget -R /tree tree.back\n"));
    for i in 0..TREE_FILES {
        let rel = format!("d{}/f{i}", i % 10);
        let want = payload(i as u64, 1024 + i);
        assert_eq!(
            std::fs::read(home.join("tree").join(&rel)).expect("uploaded"),
            want,
            "{rel}"
        );
        assert_eq!(
            std::fs::read(local.join("tree.back").join(&rel)).expect("downloaded"),
            want,
            "{rel}"
        );
    }
    let mut cleanup = String::from("rm /tree/d*/*\n");
    for i in 0..10 {
        cleanup.push_str(&format!("rmdir /tree/d{i}\n"));
    }
    cleanup.push_str("rmdir /tree\n");
    ok(run(&cleanup));
    assert!(!home.join("tree").exists());

    let listing = ok(run(
        "mkdir /d\nrename /big /d/moved\nln -s /d/moved /d/link\nchmod 640 /d/moved\nls -l /d\ndf /\nrmdir /d-none\n"
            .replace("rmdir /d-none", "-rmdir /d-none")
            .as_str(),
    ));
    assert!(listing.contains("moved"), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('l') && l.contains("link")),
        "ls -l shows the symlink: {listing}"
    );
    assert!(
        listing.contains("Avail") || listing.contains("Size"),
        "df: {listing}"
    );
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(home.join("d/moved")).expect("renamed");
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(meta.len(), BIG as u64);
    assert_eq!(
        std::fs::read_link(home.join("d/link")).expect("symlink"),
        Path::new("/d/moved")
    );
    ok(run("rm /d/link\nrm /d/moved\nrmdir /d\n"));
    assert!(!home.join("d").exists());
}

/// Every way out of the root, each refused or contained, proven on disk.
fn escapes(run: &dyn Fn(&str) -> Output, local: &Path, home: &Path, outside: &Path) {
    std::fs::write(outside.join("secret"), b"outside").expect("write");
    std::fs::write(local.join("small"), b"small").expect("write");
    let out = run(concat!(
        "-get ../../etc/passwd e1\n",
        "-get /../../../etc/passwd e2\n",
        "-get ../secret e3\n",
        "ln -s / /up\n",
        "-get /up/etc/passwd e4\n",
        "-get /up/../secret e5\n",
        "-ln /../secret /hard\n",
        "put small /small\n",
        "rename /small ../../out-of-root\n",
        "-put small /../../../escaped-put\n",
        "ln -s ../../.. /rel\n",
        "-put small /rel/escaped-via-link\n",
        "ls -l /\n",
    ));
    let shown = ok(out);
    for f in ["e1", "e2", "e3", "e4", "e5"] {
        assert!(
            !local.join(f).exists(),
            "{f} was fetched from outside the root"
        );
    }
    // nothing new outside the identity's directory
    let mut names: Vec<_> = std::fs::read_dir(outside)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = vec![
        "secret".into(),
        home.file_name().unwrap().to_string_lossy().into_owned(),
    ];
    expected.sort();
    for n in &names {
        assert!(
            expected.contains(n) || n.starts_with("ident"),
            "{n} appeared outside: {names:?}"
        );
    }
    assert_eq!(
        std::fs::read(outside.join("secret")).expect("secret"),
        b"outside"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(outside.join("secret"))
            .expect("secret")
            .nlink(),
        1
    );
    // what was aimed outside landed inside
    assert!(home.join("out-of-root").exists(), "{shown}");
    assert!(home.join("escaped-put").exists());
    assert!(home.join("escaped-via-link").exists());
    assert!(!home.join("hard").exists());
    assert!(std::fs::symlink_metadata(home.join("up"))
        .expect("link")
        .is_symlink());
}

/// An identity with only `sftp:read` lists and reads but changes nothing.
fn read_only(run: &dyn Fn(&str) -> Output, local: &Path, home: &Path) {
    std::fs::create_dir_all(home).expect("mkdir");
    std::fs::write(home.join("given"), b"given").expect("write");
    std::fs::write(local.join("small"), b"small").expect("write");
    let shown = ok(run(concat!(
        "ls -l /\n",
        "get /given got\n",
        "-put small /small\n",
        "-mkdir /m\n",
        "-rm /given\n",
        "-rename /given /renamed\n",
        "-chmod 600 /given\n",
        "-ln -s /given /link\n",
    )));
    assert!(shown.contains("given"), "{shown}");
    assert_eq!(std::fs::read(local.join("got")).expect("got"), b"given");
    let mut names: Vec<_> = std::fs::read_dir(home)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["given"]);
}

/// The real server on its embedded default, reached through `alknet/ssh`, and the key of
/// "alice", a peer with the subsystem's scopes (`ssh:sftp`, `sftp:read`, `sftp:write`).
struct Subsystem {
    server: BinServer,
    /// Holds the keys (more can be made here).
    keys: tempfile::TempDir,
    /// The client's working directory.
    local: tempfile::TempDir,
    t: SshTarget,
    alice: SshKey,
}

fn subsystem_with_alice() -> Subsystem {
    require_openssh();
    let server = BinServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let t = SshTarget::new(server.addr(), server.fingerprint());
    let alice = ssh_keygen(keys.path(), "alice");
    peer_add(
        server.data_dir.path(),
        "alice",
        &alice.fingerprint_hex,
        &["ssh:sftp", "sftp:read", "sftp:write"],
    );
    Subsystem {
        server,
        keys,
        local,
        t,
        alice,
    }
}

#[test]
fn sftp_subsystem_of_alknet_ssh() {
    let Subsystem {
        server,
        keys,
        local,
        t,
        alice,
    } = subsystem_with_alice();
    let root = sftp_root(&server);
    let run = |script: &str| batch(t.sftp(&alice), Some("user@alknet"), local.path(), script);
    transfers_and_commands(&run, local.path(), &root.join("alice"));
    escapes(&run, local.path(), &root.join("alice"), &root);

    let reader = ssh_keygen(keys.path(), "reader");
    peer_add(
        server.data_dir.path(),
        "reader",
        &reader.fingerprint_hex,
        &["ssh:sftp", "sftp:read"],
    );
    let run_reader =
        |script: &str| batch(t.sftp(&reader), Some("user@alknet"), local.path(), script);
    read_only(&run_reader, local.path(), &root.join("reader"));

    // ssh:sftp is the gate: sftp scopes without it, or it without them, get no session
    for (name, scopes) in [
        ("nogate", &["sftp:read", "sftp:write"][..]),
        ("noscope", &["ssh:sftp", "ssh:exec"][..]),
    ] {
        let key = ssh_keygen(keys.path(), name);
        peer_add(server.data_dir.path(), name, &key.fingerprint_hex, scopes);
        let out = batch(t.sftp(&key), Some("user@alknet"), local.path(), "ls /\n");
        assert!(!out.status.success(), "{name} got a session");
        assert!(!root.join(name).exists(), "{name} got a directory");
    }
    // a stranger's key is not even authenticated
    let stranger = ssh_keygen(keys.path(), "stranger");
    let out = batch(
        t.sftp(&stranger),
        Some("user@alknet"),
        local.path(),
        "ls /\n",
    );
    assert!(!out.status.success());
    assert!(!root.join("stranger").exists());
}

#[test]
fn sftp_straight_onto_alknet_sftp() {
    require_openssh();
    let server = BinServer::start();
    let certs = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let carol = client_cert(&server, certs.path(), "carol", &["sftp:read", "sftp:write"]);
    let root = sftp_root(&server);
    let run = |script: &str| batch(sftp_direct(&server, &carol), None, local.path(), script);
    transfers_and_commands(&run, local.path(), &root.join("carol"));
    escapes(&run, local.path(), &root.join("carol"), &root);

    let dave = client_cert(&server, certs.path(), "dave", &["sftp:read"]);
    let run_dave = |script: &str| batch(sftp_direct(&server, &dave), None, local.path(), script);
    read_only(&run_dave, local.path(), &root.join("dave"));

    // known but without an sftp scope, and unknown: no session, no directory
    let erin = client_cert(&server, certs.path(), "erin", &["ssh:exec"]);
    let stranger = client_cert(&server, certs.path(), "stranger", &[]);
    for (name, cert, why) in [
        (
            "erin",
            &erin,
            "identity \"erin\" has neither sftp:read nor sftp:write",
        ),
        (
            "stranger",
            &stranger,
            "needs a known client certificate, or a token",
        ),
    ] {
        let out = batch(sftp_direct(&server, cert), None, local.path(), "ls /\n");
        assert!(
            !out.status.success(),
            "{name} got a session: {}",
            text(&out.stdout)
        );
        // the reason travels in the QUIC close
        assert!(
            text(&out.stderr).contains(why),
            "{name}: {}",
            text(&out.stderr)
        );
        assert!(!root.join(name).exists());
    }
}

/// The same straight `alknet/sftp` sessions over TLS/TCP (`--transport tcp`): transfers
/// with equal SHA-256 both ways and the everyday commands; the client certificate is the
/// identity, as over QUIC.
#[test]
fn sftp_straight_onto_alknet_sftp_over_tls_tcp() {
    require_openssh();
    let server = BinServer::start();
    let certs = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let carol = client_cert(&server, certs.path(), "carol", &["sftp:read", "sftp:write"]);
    let root = sftp_root(&server);
    let run = |script: &str| {
        batch(
            sftp_direct_over(&server, &carol, "tcp"),
            None,
            local.path(),
            script,
        )
    };
    transfers_and_commands(&run, local.path(), &root.join("carol"));

    let stranger = client_cert(&server, certs.path(), "stranger", &[]);
    let out = batch(
        sftp_direct_over(&server, &stranger, "tcp"),
        None,
        local.path(),
        "ls /\n",
    );
    assert!(!out.status.success(), "stranger: {}", text(&out.stdout));
    assert!(!root.join("stranger").exists());
}

/// Straight `alknet/sftp` in a WebTransport session (`--transport webtransport`) with no
/// client certificate: `--token` names the identity (sent as `?token=` in the session's
/// URL), whose directory the files land in; without a token or with an unknown one there
/// is no session.
#[test]
fn sftp_over_webtransport_runs_as_the_token_identity() {
    require_openssh();
    let server = BinServer::start_with_config(
        r#"
[handlers]
enabled = ["h3", "alknet/sftp"]

[[identities]]
name = "tina"
tokens = ["tina-token-wt"]
scopes = ["sftp:read", "sftp:write"]
"#,
    );
    let local = tempfile::tempdir().expect("tempdir");
    let root = sftp_root(&server);
    let sftp_wt = |token: Option<&str>| {
        let mut cmd = Command::new("sftp");
        let token = token.map(|t| format!("--token {t} ")).unwrap_or_default();
        cmd.arg("-D").arg(format!(
            "{} connect --transport webtransport --alpn alknet/sftp {token}--fingerprint {} {}",
            alknet_bin().display(),
            server.fingerprint(),
            server.addr()
        ));
        cmd.env_remove("ALKNET_TOKEN");
        cmd
    };
    let data = payload(21, 256 * 1024);
    std::fs::write(local.path().join("up"), &data).expect("write");
    ok(batch(
        sftp_wt(Some("tina-token-wt")),
        None,
        local.path(),
        "put up /up
get /up up.back
",
    ));
    assert_eq!(
        std::fs::read(root.join("tina").join("up")).expect("uploaded to tina's directory"),
        data
    );
    assert_eq!(
        std::fs::read(local.path().join("up.back")).expect("downloaded"),
        data
    );
    for token in [None, Some("not-a-token")] {
        let out = batch(
            sftp_wt(token),
            None,
            local.path(),
            "ls /
",
        );
        assert!(
            !out.status.success(),
            "{token:?} got a session: {}",
            text(&out.stdout)
        );
    }
    let dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("sftp root")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(dirs, vec![std::ffi::OsString::from("tina")]);
}

/// Straight `alknet/sftp` over QUIC and over TLS/TCP with no client certificate:
/// `alknet connect --token` puts the token in the session's `SSH_FXP_INIT` (the
/// `token@alknet` extension), and the session runs as its identity. An unknown token, a
/// token whose identity has no SFTP scope, or none at all gets no session (over QUIC,
/// with the reason in the close); a client certificate with an SFTP scope takes
/// precedence.
#[test]
fn sftp_straight_onto_alknet_sftp_runs_as_the_token_identity() {
    require_openssh();
    let server = BinServer::start_with_config(
        r#"
[[identities]]
name = "tina"
tokens = ["tina-token"]
scopes = ["sftp:read", "sftp:write"]

[[identities]]
name = "ursula"
tokens = ["ursula-token"]
scopes = ["ssh:exec"]
"#,
    );
    let certs = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let root = sftp_root(&server);
    let carol = client_cert(&server, certs.path(), "carol", &["sftp:read", "sftp:write"]);
    let sftp_token = |transport: &str, token: Option<&str>, cert: Option<&ClientCert>| {
        let token = token.map(|t| format!("--token {t} ")).unwrap_or_default();
        let cert = cert
            .map(|c| format!("--cert {} --key {} ", c.cert.display(), c.key.display()))
            .unwrap_or_default();
        let mut cmd = Command::new("sftp");
        cmd.arg("-D").arg(format!(
            "{} connect --transport {transport} --alpn alknet/sftp {token}{cert}--fingerprint {} {}",
            alknet_bin().display(),
            server.fingerprint(),
            server.addr()
        ));
        cmd.env_remove("ALKNET_TOKEN");
        cmd
    };
    for (i, transport) in ["quic", "tcp"].into_iter().enumerate() {
        let data = payload(31 + i as u64, 3 << 20);
        std::fs::write(local.path().join("up"), &data).expect("write");
        let name = format!("up-{transport}");
        ok(batch(
            sftp_token(transport, Some("tina-token"), None),
            None,
            local.path(),
            &format!("put up /{name}\nget /{name} back\n"),
        ));
        assert_eq!(
            std::fs::read(root.join("tina").join(&name)).expect("uploaded to tina's directory"),
            data,
            "{transport}"
        );
        assert_eq!(
            std::fs::read(local.path().join("back")).expect("downloaded"),
            data,
            "{transport}"
        );
        for (token, why) in [
            (Some("not-a-token"), "the token is not known"),
            (Some("ursula-token"), "neither sftp:read nor sftp:write"),
            (None, "needs a known client certificate, or a token"),
        ] {
            let out = batch(
                sftp_token(transport, token, None),
                None,
                local.path(),
                "ls /\n",
            );
            assert!(
                !out.status.success(),
                "{transport} {token:?} got a session: {}",
                text(&out.stdout)
            );
            // QUIC's CONNECTION_CLOSE carries the reason; a TLS/TCP connection just ends
            // (the server logs why)
            assert!(
                transport == "tcp" || text(&out.stderr).contains(why),
                "{transport} {token:?}: {}",
                text(&out.stderr)
            );
        }
        // the certificate's identity wins over the token's
        let name = format!("cert-{transport}");
        ok(batch(
            sftp_token(transport, Some("tina-token"), Some(&carol)),
            None,
            local.path(),
            &format!("put up /{name}\n"),
        ));
        assert!(root.join("carol").join(&name).exists(), "{transport}");
        assert!(!root.join("tina").join(&name).exists(), "{transport}");
    }
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("sftp root")
        .map(|e| e.expect("entry").file_name())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        vec![std::ffi::OsString::from("carol"), "tina".into()],
        "no directory for refused sessions"
    );
}

/// A session that opens its stream and never finishes its `SSH_FXP_INIT` holds its place
/// for `sftp.init_timeout_ms`, then its stream is reset (`SESSION_ABORT_CODE`); the
/// connection stays, and a session that sends its `INIT` with a token still runs on it.
#[test]
fn sftp_session_without_init_is_reset_after_init_timeout() {
    let server = BinServer::start_with_config(
        r#"
[sftp]
init_timeout_ms = 300

[[identities]]
name = "tina"
tokens = ["tina-token"]
scopes = ["sftp:read"]
"#,
    );
    let addr = server.addr().parse().expect("addr");
    let fingerprint = server.fingerprint().parse().expect("fingerprint");
    run_client(|| async move {
        let endpoint = client_endpoint();
        let conn = connect_addr(&endpoint, addr, fingerprint, alknet_sftp::ALPN)
            .await
            .expect("connect");
        // half a length prefix: the stream exists on the server, its INIT never comes
        let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
        send.write_chunk(bytes::Bytes::from_static(&[0, 0]))
            .await
            .expect("write");
        let started = std::time::Instant::now();
        let got = recv.read_chunk(usize::MAX).await;
        assert_eq!(
            got.err(),
            Some(alknet_runtime::ReadError::Reset(
                alknet_runtime::VarInt::from_u32(alknet_sftp::worker::SESSION_ABORT_CODE)
            ))
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(10),
            "reset after {waited:?}"
        );
        // the connection is still there: a session with its INIT and a token runs
        let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
        let init = alknet_sftp::init::with_token(&[0, 0, 0, 5, 1, 0, 0, 0, 3], "tina-token")
            .expect("init");
        send.write_chunk(bytes::Bytes::from(init))
            .await
            .expect("write");
        let version = recv
            .read_chunk(usize::MAX)
            .await
            .expect("read")
            .expect("SSH_FXP_VERSION");
        assert_eq!(version.get(4), Some(&2u8), "SSH_FXP_VERSION: {version:?}");
        conn.close(alknet_runtime::VarInt::from_u32(0), b"done");
        endpoint.wait_idle().await;
    });
}

/// paramiko's `SFTPClient`, a second independent client, through the subsystem
/// (`tests/interop/paramiko_sftp.py` does the calls; the disk is checked here).
#[test]
fn paramiko_through_the_sftp_subsystem() {
    require_openssh();
    let have = Command::new("python3")
        .args(["-c", "import paramiko"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        have,
        "paramiko is required: pip install -r tests/interop/requirements.txt (tests/run-all.sh does)"
    );
    let server = BinServer::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let key = ssh_keygen(keys.path(), "pat");
    peer_add(
        server.data_dir.path(),
        "pat",
        &key.fingerprint_hex,
        &["ssh:sftp", "sftp:read", "sftp:write"],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/paramiko_sftp.py");
    let child = Command::new("python3")
        .arg(script)
        .arg(alknet_bin())
        .arg(server.fingerprint())
        .arg(server.addr())
        .arg(&key.path)
        .arg(local.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let out = wait_output(child, SFTP_TIMEOUT);
    assert!(
        out.status.success() && text(&out.stdout).trim() == "ok",
        "paramiko: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let root = sftp_root(&server);
    let home = root.join("pat");
    assert_eq!(
        std::fs::read(home.join("pm-out")).expect("renamed inside"),
        b"hello world"
    );
    assert!(!root.join("pm-out").exists() && !server.data_dir.path().join("pm-out").exists());
    assert!(!home.join("pm-dir").exists());
    assert!(std::fs::symlink_metadata(home.join("pm-up"))
        .expect("link")
        .is_symlink());
}

/// Runs `scp ARGS…` in `local`, bounded by [`SFTP_TIMEOUT`].
fn scp(t: &SshTarget, key: &SshKey, local: &Path, args: &[&str]) -> Output {
    let mut cmd = t.scp(key);
    cmd.args(args).current_dir(local);
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn scp");
    wait_output(child, SFTP_TIMEOUT)
}

#[test]
fn scp_both_ways_over_the_sftp_subsystem_and_the_legacy_protocol() {
    let Subsystem {
        server,
        keys,
        local,
        t,
        alice,
    } = subsystem_with_alice();
    let home = sftp_root(&server).join("alice");
    let data = payload(31, 3 << 20);
    std::fs::write(local.path().join("up.bin"), &data).expect("write");
    std::fs::create_dir_all(local.path().join("tree/sub")).expect("mkdir");
    for (name, n) in [("tree/a.txt", 1u64), ("tree/sub/b.txt", 2)] {
        std::fs::write(local.path().join(name), payload(n, 5_000)).expect("write");
    }

    // scp's default since OpenSSH 9.0: SFTP underneath, confined to alice's directory
    ok(scp(
        &t,
        &alice,
        local.path(),
        &["up.bin", "user@alknet:/copy.bin"],
    ));
    assert_eq!(
        sha256(&std::fs::read(home.join("copy.bin")).expect("on disk")),
        sha256(&data)
    );
    ok(scp(
        &t,
        &alice,
        local.path(),
        &["user@alknet:copy.bin", "down.bin"],
    ));
    let down = std::fs::read(local.path().join("down.bin")).expect("downloaded");
    assert_eq!(sha256(&down), sha256(&data));
    ok(scp(
        &t,
        &alice,
        local.path(),
        &["-r", "tree", "user@alknet:tree"],
    ));
    ok(scp(
        &t,
        &alice,
        local.path(),
        &["-r", "user@alknet:tree", "back"],
    ));
    for name in ["a.txt", "sub/b.txt"] {
        let sent = std::fs::read(local.path().join("tree").join(name)).expect("sent");
        assert_eq!(
            std::fs::read(home.join("tree").join(name)).expect("there"),
            sent
        );
        assert_eq!(
            std::fs::read(local.path().join("back").join(name)).expect("back"),
            sent
        );
    }
    // `..` from the top stays at the top (the kernel resolves in the root, as in a
    // chroot): contained, nothing written outside
    ok(scp(
        &t,
        &alice,
        local.path(),
        &["up.bin", "user@alknet:../escaped.bin"],
    ));
    assert!(!sftp_root(&server).join("escaped.bin").exists());
    assert!(home.join("escaped.bin").exists());

    // the legacy protocol (`scp -O`) is a command on the server: it needs ssh:exec,
    // and works on the server's filesystem as the server's user
    let remote = tempfile::tempdir().expect("tempdir");
    let target = format!("user@alknet:{}/legacy.bin", remote.path().display());
    let out = scp(&t, &alice, local.path(), &["-O", "up.bin", &target]);
    assert!(!out.status.success(), "scp -O without ssh:exec");
    assert!(!remote.path().join("legacy.bin").exists());
    let bob = ssh_keygen(keys.path(), "bob");
    peer_add(
        server.data_dir.path(),
        "bob",
        &bob.fingerprint_hex,
        &["ssh:exec"],
    );
    ok(scp(&t, &bob, local.path(), &["-O", "up.bin", &target]));
    let there = std::fs::read(remote.path().join("legacy.bin")).expect("on disk");
    assert_eq!(sha256(&there), sha256(&data));
    ok(scp(
        &t,
        &bob,
        local.path(),
        &["-O", &target, "legacy-down.bin"],
    ));
    let back = std::fs::read(local.path().join("legacy-down.bin")).expect("downloaded");
    assert_eq!(sha256(&back), sha256(&data));
}
