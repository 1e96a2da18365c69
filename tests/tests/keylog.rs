//! `SSLKEYLOGFILE`: the server writes the secrets of every connection, QUIC and TLS over
//! TCP, in the NSS key log format Wireshark reads, and they are the secrets that were
//! really negotiated: clients nobody here wrote (aioquic over QUIC, Python's `ssl`, i.e.
//! OpenSSL, over TLS/TCP) log their own, and every line of theirs must be in the
//! server's file. `alknet connect` (rustls, the client side of the same code) is checked
//! the same way over both transports.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use alknet_tests::ssh::run_with_input;
use alknet_tests::*;

/// The labels a TLS 1.3 handshake must leave in a key log, for each client random.
const TLS13_LABELS: [&str; 4] = [
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
];

/// A key log's lines as (label, client random, secret), checked for the format's shape.
fn key_log(path: &Path) -> BTreeSet<(String, String, String)> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "not a key log line: {l:?}");
            let hex =
                |s: &str| s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit());
            assert!(
                f[1].len() == 64 && hex(f[1]) && hex(f[2]) && f[2].len() >= 64,
                "not a key log line: {l:?}"
            );
            (f[0].to_string(), f[1].to_lowercase(), f[2].to_lowercase())
        })
        .collect()
}

/// Asserts that every line of `client` is in `server` and that each client random of
/// `client` has all four TLS 1.3 secrets in `server`; returns how many connections.
fn agrees(
    what: &str,
    client: &BTreeSet<(String, String, String)>,
    server: &BTreeSet<(String, String, String)>,
) -> usize {
    assert!(!client.is_empty(), "{what}: the client logged nothing");
    for line in client {
        assert!(
            server.contains(line),
            "{what}: the server's key log lacks the client's {} for {}",
            line.0,
            line.1
        );
    }
    let mut by_random: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (label, random, _) in server {
        by_random.entry(random).or_default().insert(label);
    }
    let randoms: BTreeSet<&str> = client.iter().map(|l| l.1.as_str()).collect();
    for random in &randoms {
        let labels = by_random.get(random).cloned().unwrap_or_default();
        for want in TLS13_LABELS {
            assert!(
                labels.contains(want),
                "{what}: no {want} for {random}: {labels:?}"
            );
        }
    }
    randoms.len()
}

#[test]
fn key_log_holds_the_secrets_each_client_negotiated() {
    require_aioquic();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str| dir.path().join(name).to_str().expect("utf8").to_string();
    let server_log = file("server.keys");
    let server = BinServer::start_with_env(&[("SSLKEYLOGFILE", &server_log)]);
    server.wait_for_log("SSLKEYLOGFILE is set");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/keylog_clients.py");
    let (quic_log, tcp_log) = (file("aioquic.keys"), file("openssl.keys"));
    let child = Command::new("python3")
        .arg(script)
        .args(["--port", &server.port.to_string()])
        .args(["--quic-log", &quic_log, "--tcp-log", &tcp_log])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let out = wait_output(child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "key log clients failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // alknet connect, over QUIC and over TLS/TCP, with a key log of its own
    let fingerprint = server.fingerprint();
    let mut connect_logs = Vec::new();
    for transport in ["quic", "tcp"] {
        let log = file(&format!("connect-{transport}.keys"));
        let mut cmd = echo_connect(&server.addr(), &fingerprint, transport);
        cmd.env("SSLKEYLOGFILE", &log);
        let out = run_with_input(cmd, b"logged\n");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "logged\n",
            "alknet connect over {transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        connect_logs.push((transport, log));
    }

    let server_lines = key_log(Path::new(&server_log));
    let mode = std::fs::metadata(&server_log)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the key log is readable by others: {mode:o}"
    );
    let mut connections = agrees("aioquic", &key_log(Path::new(&quic_log)), &server_lines);
    connections += agrees("OpenSSL", &key_log(Path::new(&tcp_log)), &server_lines);
    for (transport, log) in &connect_logs {
        connections += agrees(
            &format!("alknet connect over {transport}"),
            &key_log(Path::new(log)),
            &server_lines,
        );
    }
    // the four connections above, and no other client random in the server's log
    let server_randoms: BTreeSet<&str> = server_lines.iter().map(|l| l.1.as_str()).collect();
    assert_eq!(connections, 4);
    assert_eq!(server_randoms.len(), 4, "{server_randoms:?}");
}
