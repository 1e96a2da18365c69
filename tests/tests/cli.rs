//! The `alknet` binary as a user runs it: `serve` on the embedded default, `connect` as a
//! pipe, `fingerprint`, configuration errors, and SIGTERM.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use alknet_tests::*;

fn connect_pipe(server: &BinServer, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(alknet_bin())
        .arg("connect")
        .args(args)
        .arg(format!("127.0.0.1:{}", server.port))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn alknet connect");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = wait_output(child, Duration::from_secs(30));
    writer.join().expect("writer thread");
    out
}

#[test]
fn default_server_echoes_through_connect_and_stops_on_sigterm() {
    let server = BinServer::start();
    let fp = server.fingerprint();
    assert_eq!(fp.len(), 64, "{fp}");

    let data = payload(42, 5 << 20);
    let out = connect_pipe(
        &server,
        &["--alpn", "alknet/echo", "--fingerprint", &fp],
        &data,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(sha256(&out.stdout), sha256(&data));

    // a wrong pin is refused with a clear message
    let wrong = "00".repeat(32);
    let out = connect_pipe(
        &server,
        &["--alpn", "alknet/echo", "--fingerprint", &wrong],
        b"x",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match"), "{err}");

    // an ALPN the server does not serve fails the handshake
    let out = connect_pipe(&server, &["--alpn", "alknet/nope", "--insecure"], b"x");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("protocol"), "{err}");

    // SIGTERM: graceful stop, exit 0
    let mut server = server;
    // SAFETY: plain kill(2) on a child we spawned
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    server.wait_for_log("alknet stopped");
}

/// `alknet connect --quic-version v2`: a connection that starts in QUIC v2 (RFC 9369)
/// carries the echo and is counted as a v2 handshake; a server serving v1 only answers
/// with Version Negotiation, which ends the attempt with a clear message.
#[test]
fn connect_in_quic_v2_and_a_v1_only_server_refuses_it() {
    let echo = |server: &BinServer, version: &str, input: &[u8]| {
        let fp = server.fingerprint();
        let args = ["--alpn", "alknet/echo", "--fingerprint", &fp];
        connect_pipe(
            server,
            &[&args[..], &["--quic-version", version]].concat(),
            input,
        )
    };
    let server = BinServer::start_with_config("[http]\npublic = [\"/metrics\"]\n");
    let data = payload(7, 1 << 20);
    for version in ["v2", "v1"] {
        let out = echo(&server, version, &data);
        assert!(
            out.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sha256(&out.stdout), sha256(&data), "{version}");
    }
    let samples = server.metrics_samples();
    let v2: u64 = samples
        .iter()
        .filter(|l| l.starts_with("alknet_worker_handshakes_v2_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(v2, 1, "one v2 handshake of two");
    drop(server);

    let server = BinServer::start_with_config("[quic]\nversions = [\"v1\"]\n");
    let out = echo(&server, "v2", b"x");
    assert!(!out.status.success(), "v2 accepted by a v1-only server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("supported version"), "{err}");
}

#[test]
fn certificate_is_generated_once_and_reused() {
    let server = BinServer::start();
    let fp = server.fingerprint();
    assert!(server.data_dir.path().join("cert.pem").exists());
    assert_eq!(server.fingerprint(), fp);
}

#[test]
fn bad_config_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &str); 4] = [
        ("listen = \"not an address\"", "listen"),
        ("workers = 2\nworkrs = 3", "workrs"),
        ("[limits]\nidle_timeout_ms = -5", "idle_timeout_ms"),
        ("[handlers]\nenabled = [\"alknet/nope\"]", "alknet/nope"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).expect("write config");
        let out = Command::new(alknet_bin())
            .args(["serve", "--config"])
            .arg(&path)
            .env("ALKNET_DATA_DIR", dir.path())
            .output()
            .expect("run alknet");
        assert_eq!(out.status.code(), Some(78), "case {i}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "case {i}: {err}");
    }
    // and the printed default config is itself valid
    let out = Command::new(alknet_bin())
        .arg("config")
        .output()
        .expect("alknet config");
    let path = dir.path().join("default.toml");
    std::fs::write(&path, &out.stdout).expect("write");
    let out = Command::new(alknet_bin())
        .args(["fingerprint", "--config"])
        .arg(&path)
        .env("ALKNET_DATA_DIR", dir.path())
        .output()
        .expect("run alknet");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_check_reports_what_serve_would_refuse_and_binds_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zone = dir.path().join("broken.zone");
    std::fs::write(&zone, "not a zone file\n").expect("write zone");
    let cases = [
        // refused by the parser
        ("workers = 2\nworkrs = 3".to_string(), "workrs"),
        (
            "[handlers]\nenabled = [\"alknet/nope\"]".to_string(),
            "alknet/nope",
        ),
        // refused only when serving is prepared
        (
            "[tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"".to_string(),
            "/nonexistent/c.pem",
        ),
        (
            format!(
                "[handlers]\nenabled = [\"doq\"]\n[[dns.zones]]\norigin = \"example.com.\"\n\
                 file = \"{}\"",
                zone.display()
            ),
            "broken.zone",
        ),
    ];
    let check = |config: &std::path::Path, extra: &[&str]| {
        Command::new(alknet_bin())
            .args(["serve", "--check", "--config"])
            .arg(config)
            .args(extra)
            .env("ALKNET_DATA_DIR", dir.path())
            .output()
            .expect("run alknet")
    };
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).expect("write config");
        let out = check(&path, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "case {i}: {err}");
        assert!(err.contains(needle), "case {i}: {err}");
    }

    // a good config passes even where serving could not bind: the port is held, UDP and TCP
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let port = udp.local_addr().expect("addr").port();
    let _tcp = std::net::TcpListener::bind(("127.0.0.1", port));
    let path = dir.path().join("good.toml");
    std::fs::write(&path, "workers = 1\n").expect("write config");
    let listen = format!("127.0.0.1:{port}");
    let out = check(&path, &["--listen", &listen]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fingerprint = Command::new(alknet_bin())
        .arg("fingerprint")
        .env("ALKNET_DATA_DIR", dir.path())
        .output()
        .expect("alknet fingerprint");
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout)
        .trim()
        .to_string();
    assert!(
        said.contains("config OK") && said.contains(&listen) && said.contains(&fingerprint),
        "{said}"
    );
}
