//! `alknet peer add|list|remove` as a user runs it, and peers added that way resolved by a
//! running server: the SQLite identity store shared by the CLI and the server.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use alknet_peers::SqlitePeerStore;
use alknet_runtime::tls::TlsIdentity;
use alknet_runtime::{Fingerprint, IdentityProvider};
use alknet_tests::*;

/// Runs `alknet peer ARGS` with `ALKNET_DATA_DIR=data_dir`.
fn peer(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(alknet_bin())
        .arg("peer")
        .args(args)
        .env("ALKNET_DATA_DIR", data_dir)
        .env_remove("ALKNET_LOG")
        .output()
        .expect("run alknet peer")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    o
}

#[test]
fn peer_cli_add_list_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let fp = Fingerprint([0x5a; 32]).to_string();

    let out = ok(peer(
        data,
        &[
            "add",
            "alice",
            "--generate-token",
            "--fingerprint",
            &fp.to_uppercase(),
            "--scope",
            "echo",
            "--scope",
            "call",
        ],
    ));
    let token = stdout(&out).trim().to_string();
    assert_eq!(token.len(), 64, "{token:?}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token:?}");
    assert!(
        stderr(&out).contains("cannot be shown again"),
        "{}",
        stderr(&out)
    );
    ok(peer(
        data,
        &["add", "bob", "--token", "bobs-token", "--scope", "echo"],
    ));

    // The file is private; the token printed is the one stored, and only as its hash.
    let db = data.join("peers.db");
    let mode = std::fs::metadata(&db)
        .expect("peers.db")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let store = SqlitePeerStore::open(&db).expect("open");
    let alice = store.resolve_from_token(&token).expect("alice by token");
    assert_eq!(
        (alice.name.as_str(), alice.scopes.join(",")),
        ("alice", "echo,call".into())
    );
    let by_fp = store
        .resolve_from_fingerprint(&fp.parse().expect("fp"))
        .expect("alice by fingerprint");
    assert_eq!(by_fp.name, "alice");
    assert_eq!(
        store.resolve_from_token("bobs-token").map(|i| i.name),
        Some("bob".into())
    );
    for file in ["peers.db", "peers.db-wal"] {
        let bytes = std::fs::read(data.join(file)).unwrap_or_default();
        assert!(!bytes.windows(10).any(|w| w == b"bobs-token"), "{file}");
        assert!(!bytes.windows(64).any(|w| w == token.as_bytes()), "{file}");
    }

    // Refusals: same name, a fingerprint already bound, no credential, no scope, bad input.
    let o = peer(data, &["add", "alice", "--token", "x", "--scope", "echo"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("peer \"alice\" already exists"),
        "{}",
        stderr(&o)
    );
    let o = peer(
        data,
        &["add", "carol", "--fingerprint", &fp, "--scope", "echo"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!(
            "fingerprint {fp} already belongs to peer \"alice\""
        )),
        "{}",
        stderr(&o)
    );
    let o = peer(data, &["add", "carol", "--scope", "echo"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--generate-token"), "{}", stderr(&o));
    let o = peer(data, &["add", "carol", "--token", "c"]);
    assert!(!o.status.success(), "a scope is required");
    let o = peer(
        data,
        &["add", "carol", "--fingerprint", "zz", "--scope", "echo"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("64 hex digits"), "{}", stderr(&o));
    let o = peer(data, &["add", "car ol", "--token", "c", "--scope", "echo"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid peer name"), "{}", stderr(&o));

    // list: a table, abbreviated fingerprints, token counts; no token in sight.
    let table = stdout(&ok(peer(data, &["list"])));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("FINGERPRINTS"),
        "{table}"
    );
    let cols = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        cols(lines[1]),
        ["alice", "echo,call", &format!("{}...", &fp[..16]), "1"],
        "{table}"
    );
    assert_eq!(cols(lines[2]), ["bob", "echo", "-", "1"], "{table}");
    assert!(!table.contains(&token));

    let json = stdout(&ok(peer(data, &["list", "--json"])));
    let list: serde_json::Value = serde_json::from_str(&json).expect("json");
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "alice");
    assert_eq!(list[0]["scopes"], serde_json::json!(["echo", "call"]));
    assert_eq!(list[0]["fingerprints"], serde_json::json!([fp]));
    assert_eq!(list[0]["token_count"], 1);
    assert!(list[0]["created_at"].as_i64().expect("created_at") > 1_600_000_000);
    assert_eq!(list[1]["name"], "bob");
    assert_eq!(list[1]["fingerprints"], serde_json::json!([]));

    // remove, then remove again fails.
    let o = ok(peer(data, &["remove", "alice"]));
    assert!(stderr(&o).contains("removed peer"), "{}", stderr(&o));
    assert_eq!(
        store.resolve_from_token(&token),
        None,
        "seen by an open handle"
    );
    let o = peer(data, &["remove", "alice"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no peer \"alice\""), "{}", stderr(&o));
    let json = stdout(&ok(peer(data, &["list", "--json"])));
    let list: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(list.as_array().map(|a| a.len()), Some(1));
    assert_eq!(list[0]["name"], "bob");
}

#[test]
fn peer_cli_database_path_resolution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env_dir = dir.path().join("env");
    let add = |extra: &[&str], name: &str| {
        let mut args = vec!["add", name, "--token", name, "--scope", "s"];
        args.extend_from_slice(extra);
        ok(peer(&env_dir, &args));
    };
    let names = |db: &Path| -> Vec<String> {
        SqlitePeerStore::open(db)
            .expect("open")
            .list()
            .expect("list")
            .into_iter()
            .map(|p| p.name)
            .collect()
    };

    // --db beats everything.
    let explicit = dir.path().join("explicit/peers.sqlite");
    add(&["--db", explicit.to_str().expect("utf8")], "by-db");
    assert_eq!(names(&explicit), ["by-db"]);
    let created = dir.path().join("explicit");
    let mode = std::fs::metadata(&created)
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);

    // The config's identity.peers_db, then its data_dir.
    let from_config = dir.path().join("from-config.db");
    let cfg = dir.path().join("alknet.toml");
    std::fs::write(&cfg, format!("[identity]\npeers_db = {from_config:?}\n")).expect("write");
    add(&["--config", cfg.to_str().expect("utf8")], "by-config");
    assert_eq!(names(&from_config), ["by-config"]);
    let cfg_dir = dir.path().join("cfg-data");
    std::fs::write(&cfg, format!("data_dir = {cfg_dir:?}\n")).expect("write");
    add(&["--config", cfg.to_str().expect("utf8")], "by-config-dir");
    assert_eq!(names(&cfg_dir.join("peers.db")), ["by-config-dir"]);

    // --data-dir, then $ALKNET_DATA_DIR.
    let flag_dir = dir.path().join("flag");
    add(&["--data-dir", flag_dir.to_str().expect("utf8")], "by-flag");
    assert_eq!(names(&flag_dir.join("peers.db")), ["by-flag"]);
    add(&[], "by-env");
    assert_eq!(names(&env_dir.join("peers.db")), ["by-env"]);

    // A broken config is a configuration error (78), named.
    std::fs::write(&cfg, "[identity]\nsqlit = true\n").expect("write");
    let o = peer(&env_dir, &["list", "--config", cfg.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("alknet.toml"), "{}", stderr(&o));
}

async fn whoami(server: &alknet_runtime::ServerHandle, identity: &TlsIdentity) -> String {
    ask_whoami(server, Some(identity)).await.expect("connect")
}

/// A server resolving through the peer database sees `alknet peer add` and `remove` made
/// while it runs, at the next connection.
#[test]
fn peer_added_with_cli_is_resolved_by_a_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("peers.db");
    let alice = TlsIdentity::generate_self_signed(&[]).expect("alice cert");
    let fp = alice.fingerprint().to_string();
    let store = SqlitePeerStore::open(&db).expect("open");
    let server = start_server(ServerOptions {
        handlers: vec![Arc::new(WhoAmI)],
        provider: Arc::new(store),
        workers: 2,
        ..Default::default()
    });
    let db_arg = db.to_str().expect("utf8");

    run_client(|| async {
        assert_eq!(whoami(&server, &alice).await, format!("{fp} - "));
        ok(peer(
            dir.path(),
            &[
                "add",
                "alice",
                "--fingerprint",
                &fp,
                "--scope",
                "echo",
                "--scope",
                "whoami",
                "--db",
                db_arg,
            ],
        ));
        assert_eq!(
            whoami(&server, &alice).await,
            format!("{fp} alice echo,whoami")
        );
        ok(peer(dir.path(), &["remove", "alice", "--db", db_arg]));
        assert_eq!(whoami(&server, &alice).await, format!("{fp} - "));
    });
}
