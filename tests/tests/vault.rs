//! `alknet vault` and `alknet keygen` as a user runs them: a vault made on one data
//! directory and restored from its words on another gives the same keys and
//! fingerprints; bad input is refused clearly and changes nothing; a node served from a
//! restored vault keeps its pinned TLS fingerprint and SSH host key; keys exported from
//! the vault work with OpenSSH (`ssh -i`) and `alknet connect --cert/--key`.
//! `tests/run-all.sh` installs openssh-client when missing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use alknet_peers::SqlitePeerStore;
use alknet_tests::ssh::*;
use alknet_tests::*;

const PASSWORD: &str = "correct horse battery staple";
/// The cheapest Argon2id a vault file may have (8 MiB, one pass): these tests unlock
/// vaults dozens of times on a shared machine. The defaults are measured by the bench.
const CHEAP_KDF: [&str; 4] = ["--kdf-memory-mib", "8", "--kdf-iterations", "1"];

/// Runs `alknet ARGS` with `ALKNET_DATA_DIR=data_dir`, the vault password in the
/// environment, and `stdin` as input.
fn alknet_with(data_dir: &Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(alknet_bin());
    cmd.args(args)
        .env("ALKNET_DATA_DIR", data_dir)
        .env("ALKNET_VAULT_PASSWORD", PASSWORD)
        .env_remove("ALKNET_BIP39_PASSPHRASE")
        .env_remove("ALKNET_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_input(cmd, stdin)
}

fn vault(data_dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["vault"];
    all.extend_from_slice(args);
    alknet_with(data_dir, &all, b"", &[])
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{:?}: {}", o.status, text(&o.stderr));
    o
}

fn refused(o: Output, needle: &str) {
    assert!(!o.status.success(), "succeeded: {}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains(needle),
        "stderr lacks {needle:?}: {}",
        text(&o.stderr)
    );
}

/// `alknet vault init` in `data_dir`; returns the words it printed.
fn init(data_dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["init"];
    args.extend_from_slice(&CHEAP_KDF);
    args.extend_from_slice(extra);
    let out = ok(vault(data_dir, &args));
    text(&out.stdout).trim().to_string()
}

fn restore(data_dir: &Path, words: &str, env: &[(&str, &str)], extra: &[&str]) -> Output {
    let mut args = vec!["vault", "restore"];
    args.extend_from_slice(&CHEAP_KDF);
    args.extend_from_slice(extra);
    alknet_with(data_dir, &args, words.as_bytes(), env)
}

/// `alknet vault derive NAME` as `field -> value`.
fn derive(data_dir: &Path, name: &str) -> BTreeMap<String, String> {
    let out = ok(vault(data_dir, &["derive", name]));
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn vault_init_derive_restore_gives_the_same_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let words = init(&a, &["--words", "12"]);
    assert_eq!(words.split(' ').count(), 12, "{words}");
    let file = a.join("vault");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file)
        .expect("vault")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // the words are in the file only encrypted
    let bytes = std::fs::read(&file).expect("read");
    assert!(!bytes.windows(8).any(|w| w == &words.as_bytes()[..8]));

    let names = ["node-tls", "ssh-host", "pkarr", "alice", "bob@laptop"];
    let before: Vec<_> = names.iter().map(|n| derive(&a, n)).collect();
    let alice = &before[3];
    assert_eq!(alice["name"], "alice");
    assert!(alice["path"].starts_with("m/6384747'/3'/"), "{alice:?}");
    assert!(alice["ssh_public_key"].starts_with("ssh-ed25519 "));
    assert_eq!(alice["public_key"].len(), 64);
    assert_eq!(alice["tls_fingerprint"].len(), 64);
    let explicit = ok(vault(&a, &["derive", "--path", "m/44'/0'/0'"]));

    // another machine: the words on stdin, a fresh data directory
    let out = ok(restore(
        &b,
        &format!("  {}\n", words.to_uppercase()),
        &[],
        &[],
    ));
    assert!(text(&out.stderr).contains(&before[0]["tls_fingerprint"]));
    for (name, was) in names.iter().zip(&before) {
        assert_eq!(&derive(&b, name), was, "{name}");
    }
    let again = ok(vault(&b, &["derive", "--path", "m/44'/0'/0'"]));
    assert_eq!(again.stdout, explicit.stdout);
    assert_eq!(
        ok(vault(&a, &["list"])).stdout,
        ok(vault(&b, &["list"])).stdout,
        "same identities recorded, same fingerprints"
    );
    let shown = ok(vault(&b, &["show-mnemonic", "--yes"]));
    assert_eq!(text(&shown.stdout).trim(), words);
    refused(vault(&b, &["show-mnemonic"]), "--yes");

    // the OpenSSH and TLS exports carry the derived keys
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("mkdir");
    let ssh_file = keys.join("alice");
    ok(vault(
        &b,
        &[
            "export-ssh",
            "alice",
            "--out",
            ssh_file.to_str().expect("utf8"),
        ],
    ));
    let mode = std::fs::metadata(&ssh_file)
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    if openssh_available() {
        let key = SshKey::from_private_key_file(&ssh_file);
        assert_eq!(key.fingerprint_hex, alice["ssh_fingerprint_hex"]);
        assert_eq!(key.public, alice["ssh_public_key"]);
    }
    let (cert, key) = (keys.join("alice.crt"), keys.join("alice.key"));
    let out = ok(vault(
        &a,
        &[
            "export-tls",
            "alice",
            "--cert",
            cert.to_str().expect("utf8"),
            "--key",
            key.to_str().expect("utf8"),
        ],
    ));
    assert_eq!(text(&out.stdout).trim(), alice["tls_fingerprint"]);
    let id = alknet_runtime::tls::TlsIdentity::from_pem_files(&cert, &key).expect("pem");
    assert_eq!(id.fingerprint().to_string(), alice["tls_fingerprint"]);

    // sign on one machine, verify on the other and with the bare public key
    let signed = ok(alknet_with(
        &a,
        &["vault", "sign", "alice"],
        b"message",
        &[],
    ));
    let sig = text(&signed.stdout).trim().to_string();
    assert_eq!(sig.len(), 128);
    let verify = |dir: &Path, args: &[&str], msg: &[u8]| {
        let mut all = vec!["vault", "verify", "--signature", &sig];
        all.extend_from_slice(args);
        alknet_with(dir, &all, msg, &[])
    };
    assert_eq!(
        text(&ok(verify(&b, &["alice"], b"message")).stdout),
        "valid\n"
    );
    let pk = alice["public_key"].as_str();
    ok(verify(dir.path(), &["--public-key", pk], b"message"));
    let o = verify(&b, &["alice"], b"messagE");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stdout), "invalid\n");
    assert_eq!(
        verify(&b, &["bob@laptop"], b"message").status.code(),
        Some(1)
    );

    // 24 words by default
    let c = dir.path().join("c");
    assert_eq!(init(&c, &[]).split(' ').count(), 24);
}

#[test]
fn bip39_passphrase_is_needed_to_restore_the_same_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let phrase = [("ALKNET_BIP39_PASSPHRASE", "twenty-fifth word")];
    let mut args = vec!["vault", "init", "--bip39-passphrase"];
    args.extend_from_slice(&CHEAP_KDF);
    let out = ok(alknet_with(&a, &args, b"", &phrase));
    let words = text(&out.stdout).trim().to_string();
    assert!(text(&out.stderr).contains("BIP39 passphrase"));
    let original = derive(&a, "node-tls");

    ok(restore(&b, &words, &phrase, &["--bip39-passphrase"]));
    assert_eq!(derive(&b, "node-tls"), original);
    ok(restore(&c, &words, &[], &[]));
    assert_ne!(
        derive(&c, "node-tls")["tls_fingerprint"],
        original["tls_fingerprint"]
    );
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    let words = init(&a, &["--words", "12"]);
    let file = a.join("vault");
    let original = std::fs::read(&file).expect("read");
    let unchanged = || assert_eq!(std::fs::read(&file).expect("read"), original);

    // wrong password, from each source
    let wrong = [("ALKNET_VAULT_PASSWORD", "wrong")];
    refused(
        alknet_with(&a, &["vault", "list"], b"", &wrong),
        "wrong password",
    );
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, format!("{PASSWORD}\n")).expect("write");
    ok(alknet_with(
        &a,
        &[
            "vault",
            "list",
            "--password-file",
            pw_file.to_str().expect("utf8"),
        ],
        b"",
        &wrong,
    ));
    unchanged();

    // init or restore over an existing vault
    refused(vault(&a, &["init"]), "already exists");
    refused(restore(&a, &words, &[], &[]), "already exists");
    unchanged();

    // damaged copies: each a clear error, the file left as it was
    let check = |bytes: &[u8], needle: &str| {
        let p = dir.path().join("damaged");
        std::fs::write(&p, bytes).expect("write");
        refused(
            vault(&a, &["list", "--vault", p.to_str().expect("utf8")]),
            needle,
        );
        assert_eq!(std::fs::read(&p).expect("read"), bytes);
    };
    check(&original[..original.len() - 5], "truncated");
    check(&original[..20], "truncated");
    let mut flipped = original.clone();
    let last = flipped.len() - 40;
    flipped[last] ^= 0x01; // the ciphertext
    check(&flipped, "damaged");
    let mut flipped = original.clone();
    flipped[20] ^= 0x80; // the header (Argon2id lanes)
    check(&flipped, "damaged");
    let mut future = original.clone();
    future[9] = 2;
    check(&future, "version 2 is not supported");
    check(b"not a vault", "not a vault file");
    refused(
        vault(&a, &["list", "--vault", "/nonexistent/vault"]),
        "/nonexistent/vault",
    );

    // mnemonics: a wrong checksum, a word not in the list, a bad count; no file made
    let b = dir.path().join("b");
    // two words swapped; a swap keeps a valid checksum by chance (1 in 16 or 256), so
    // take the first swap whose checksum fails
    let list: Vec<&str> = words.split(' ').collect();
    let swapped = (1..list.len())
        .map(|j| {
            let mut l = list.clone();
            l.swap(0, j);
            l.join(" ")
        })
        .find(|m| {
            matches!(
                alknet_vault::parse_mnemonic(m),
                Err(e) if e.to_string().contains("checksum")
            )
        })
        .expect("a swap that breaks the checksum");
    refused(restore(&b, &swapped, &[], &[]), "checksum");
    let misspelled = words.replacen(' ', "x ", 1);
    refused(restore(&b, &misspelled, &[], &[]), "word 1");
    refused(restore(&b, "abandon about", &[], &[]), "not 2");
    assert!(!b.join("vault").exists());

    // other refusals
    refused(vault(&a, &["init", "--words", "13"]), "12 or 24");
    refused(vault(&b, &["init", "--kdf-memory-mib", "1"]), "outside");
    refused(
        vault(&a, &["derive", "not a name"]),
        "invalid identity name",
    );
    refused(vault(&a, &["derive", "--path", "m/44'/0"]), "only hardened");
    refused(
        alknet_with(
            &a,
            &["vault", "verify", "--public-key", "00", "--signature", "11"],
            b"",
            &[],
        ),
        "128 hex digits",
    );
    let empty = [("ALKNET_VAULT_PASSWORD", "")];
    refused(alknet_with(&a, &["vault", "list"], b"", &empty), "empty");
    unchanged();

    // keygen makes keys and never overwrites
    let k = dir.path().join("standalone");
    let out = ok(alknet_with(
        dir.path(),
        &["keygen", "--ssh", k.to_str().expect("utf8")],
        b"",
        &[],
    ));
    assert!(text(&out.stdout).starts_with("ssh SHA256:"));
    let before = std::fs::read(&k).expect("key");
    refused(
        alknet_with(
            dir.path(),
            &["keygen", "--ssh", k.to_str().expect("utf8")],
            b"",
            &[],
        ),
        "exists",
    );
    assert_eq!(std::fs::read(&k).expect("key"), before);
}

/// The config of a node serving from `vault_file` (password in a file).
fn vault_config(vault_file: &Path, password_file: &Path, extra: &str) -> String {
    format!("[vault]\nfile = {vault_file:?}\npassword_file = {password_file:?}\n{extra}")
}

fn require_openssh() {
    assert!(
        openssh_available(),
        "the OpenSSH client is required: apt-get install openssh-client (tests/run-all.sh does)"
    );
}

/// A node restored from its words on another machine is the same node: clients that
/// pinned its TLS fingerprint and know its SSH host key reach it, the old
/// `authorized_keys` line still admits the old key, and a key exported from the vault
/// logs in with `ssh -i` as the peer added by its derived fingerprint.
#[test]
fn node_served_from_a_restored_vault_keeps_its_identity() {
    require_openssh();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let words = init(&a, &[]);
    let tls_fp = derive(&a, "node-tls")["tls_fingerprint"].clone();
    let host_line = derive(&a, "ssh-host")["ssh_public_key"].clone();
    let alice = derive(&a, "alice");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("mkdir");
    let alice_file = keys.join("alice");
    ok(vault(
        &a,
        &[
            "export-ssh",
            "alice",
            "-o",
            alice_file.to_str().expect("utf8"),
        ],
    ));
    let alice_key = SshKey::from_private_key_file(&alice_file);
    // what an admin wrote into the first node's files
    let authorized = dir.path().join("authorized_keys");
    std::fs::write(
        &authorized,
        format!("scopes=\"ssh:exec\" {}\n", alice["ssh_public_key"]),
    )
    .expect("write");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("alknet {host_line}\n")).expect("write");

    // the disk is lost; the words restore the vault elsewhere
    ok(restore(&b, &words, &[], &[]));
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).expect("write");
    let server = BinServer::start_with_config(&vault_config(
        &b.join("vault"),
        &password_file,
        &format!("[ssh]\nauthorized_keys = {authorized:?}\n[dns]\npkarr = true\n"),
    ));
    let log = server.wait_for_log("certificate fingerprint");
    assert!(log.last().is_some_and(|l| l.contains(&tls_fp)), "{log:?}");
    // the node's pkarr name is the vault's pkarr key, the same on the restored machine
    let pkarr_hex = derive(&b, "pkarr")["public_key"].clone();
    let pkarr_key: [u8; 32] = data_encoding::HEXLOWER
        .decode(pkarr_hex.as_bytes())
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let z32 = pkarr::PublicKey::try_from(&pkarr_key)
        .expect("an Ed25519 key")
        .to_z32();
    let log = server.wait_for_log("pkarr node name: ");
    assert!(
        log.last().is_some_and(|l| l.ends_with(&z32)),
        "{z32}: {log:?}"
    );

    // the pinned fingerprint still works
    let mut cmd = Command::new(alknet_bin());
    cmd.args(["connect", "--alpn", "alknet/echo", "--fingerprint", &tls_fp])
        .arg(server.addr())
        .stderr(Stdio::piped());
    let out = run_with_input(cmd, b"same node\n");
    assert_eq!(text(&out.stdout), "same node\n", "{}", text(&out.stderr));

    // the old host key and the old authorized_keys line
    let target = SshTarget::new(server.addr(), tls_fp.clone());
    let mut cmd = target.ssh_with_known_hosts(&alice_key, &known_hosts);
    cmd.args(["user@alknet", "echo $ALKNET_IDENTITY"]);
    let out = run_with_input(cmd, b"");
    assert!(out.status.success(), "ssh: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "alice\n");

    // a client identity of the restored vault, added as a peer by its derived
    // fingerprint, logs in with the key export-ssh wrote
    let carol = derive(&b, "carol");
    peer_add(
        server.data_dir.path(),
        "carol",
        &carol["ssh_fingerprint_hex"],
        &["ssh:exec"],
    );
    let carol_file = keys.join("carol");
    ok(vault(
        &b,
        &[
            "export-ssh",
            "carol",
            "-o",
            carol_file.to_str().expect("utf8"),
        ],
    ));
    let carol_key = SshKey::from_private_key_file(&carol_file);
    assert_eq!(carol_key.fingerprint_hex, carol["ssh_fingerprint_hex"]);
    let out = target.run(&carol_key, "echo $ALKNET_IDENTITY", b"");
    assert!(out.status.success(), "ssh: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "carol\n");

    // the fingerprint command agrees, from the same config
    let cfg = server.data_dir.path().join("config.toml");
    let out = ok(alknet_with(
        server.data_dir.path(),
        &["fingerprint", "--config", cfg.to_str().expect("utf8")],
        b"",
        &[],
    ));
    assert_eq!(text(&out.stdout).trim(), tls_fp);
}

#[test]
fn vault_config_conflicts_and_a_wrong_password_stop_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    init(&a, &["--words", "12"]);
    let bad_password = dir.path().join("bad");
    std::fs::write(&bad_password, "nope\n").expect("write");
    let serve = |config: &str| {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).expect("write");
        alknet_with(
            dir.path(),
            &[
                "serve",
                "--config",
                path.to_str().expect("utf8"),
                "--listen",
                "127.0.0.1:0",
            ],
            b"",
            &[],
        )
    };
    let vault_file = a.join("vault");
    let o = serve(&vault_config(&vault_file, &bad_password, ""));
    assert_eq!(o.status.code(), Some(78), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("wrong password"),
        "{}",
        text(&o.stderr)
    );
    let o = serve(&vault_config(
        &vault_file,
        &bad_password,
        "[tls]\ncert = \"/c\"\nkey = \"/k\"\n",
    ));
    assert_eq!(o.status.code(), Some(78));
    assert!(
        text(&o.stderr).contains("remove tls.cert"),
        "{}",
        text(&o.stderr)
    );
    let o = serve(&vault_config(
        &vault_file,
        &bad_password,
        "[ssh]\nhost_key = \"/k\"\n",
    ));
    assert!(
        text(&o.stderr).contains("ssh.host_key"),
        "{}",
        text(&o.stderr)
    );
}

/// `export-tls` gives `alknet connect --cert/--key` the identity whose fingerprint
/// `derive` printed, and the server resolves it to the peer added with it.
#[test]
fn exported_tls_identity_resolves_to_its_peer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    init(&a, &["--words", "12"]);
    let dave = derive(&a, "dave");
    let (cert, key) = (dir.path().join("dave.crt"), dir.path().join("dave.key"));
    ok(vault(
        &a,
        &[
            "export-tls",
            "dave",
            "--cert",
            cert.to_str().expect("utf8"),
            "--key",
            key.to_str().expect("utf8"),
        ],
    ));
    let db = dir.path().join("peers.db");
    let store = SqlitePeerStore::open(&db).expect("open");
    store
        .add(&alknet_peers::NewPeer {
            name: "dave".into(),
            fingerprints: vec![dave["tls_fingerprint"].parse().expect("fingerprint")],
            scopes: vec!["whoami".into()],
            ..Default::default()
        })
        .expect("add dave");
    let server = start_server(ServerOptions {
        handlers: vec![Arc::new(WhoAmI)],
        provider: Arc::new(store),
        ..Default::default()
    });
    let mut cmd = Command::new(alknet_bin());
    cmd.args(["connect", "--alpn"])
        .arg(String::from_utf8_lossy(WHOAMI_ALPN).as_ref())
        .args(["--fingerprint", &server.fingerprint().to_string()])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg(server.local_addr().to_string())
        .stderr(Stdio::piped());
    let out = run_with_input(cmd, b"");
    assert_eq!(
        text(&out.stdout),
        format!("{} dave whoami", dave["tls_fingerprint"]),
        "{}",
        text(&out.stderr)
    );
}
