//! `listen = "[::]:PORT"` serves IPv6 and IPv4 (as mapped addresses) on one port, QUIC and
//! TLS/TCP alike, as the README says: the real binary, reached from `::1` and from
//! `127.0.0.1` by aioquic (raw QUIC and HTTP/3), curl (HTTP/1.1 and HTTP/2) and
//! `alknet connect` over both transports.

use std::process::{Command, Stdio};
use std::time::Duration;

use alknet_tests::ssh::run_with_input;
use alknet_tests::*;

const HOSTS: [&str; 2] = ["::1", "127.0.0.1"];

/// `host` as a URL or `HOST:PORT` wants it.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn python(script: &str, server: &BinServer, host: &str, extra: &[&str]) -> String {
    let path = format!("{}/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let child = Command::new("python3")
        .arg(path)
        .args(["--host", host, "--port", &server.port.to_string()])
        .args(["--fingerprint", &server.fingerprint()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let out = wait_output(child, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} to {host} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn a_dual_stack_listener_serves_ipv6_and_ipv4_clients() {
    require_aioquic();
    let server = BinServer::start_dual_stack();
    let fingerprint = server.fingerprint();
    for host in HOSTS {
        let addr = format!("{}:{}", bracketed(host), server.port);

        // raw QUIC: streams both ways, datagrams, a refused ALPN
        let out = python("aioquic_echo.py", &server, host, &[]);
        assert!(out.contains("aioquic interop: 5 passed, 0 failed"), "{out}");
        // HTTP/3 (on by default)
        let out = python("aioquic_h3.py", &server, host, &["--checks", "health"]);
        assert!(out.contains("aioquic h3: 2 passed, 0 failed"), "{out}");

        // HTTP/1.1 and HTTP/2 over TLS/TCP on the same port
        for version in ["--http1.1", "--http2"] {
            let child = Command::new("curl")
                .args([
                    "-sk",
                    version,
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{http_version}",
                ])
                .arg(format!("https://{addr}/health"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("curl (tests/run-all.sh installs it)");
            let out = wait_output(child, Duration::from_secs(30));
            let want = if version == "--http2" {
                "200 2"
            } else {
                "200 1.1"
            };
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                want,
                "{host} {version}"
            );
        }

        // alknet connect, QUIC and TLS/TCP
        for transport in ["quic", "tcp"] {
            let mut cmd = Command::new(alknet_bin());
            cmd.args([
                "connect",
                "--alpn",
                "alknet/echo",
                "--fingerprint",
                &fingerprint,
            ])
            .args(["--transport", transport])
            .arg(&addr);
            let line = format!("{host} over {transport}\n");
            let out = run_with_input(cmd, line.as_bytes());
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                line,
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
