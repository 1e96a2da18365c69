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

#[test]
fn a_dual_stack_listener_serves_ipv6_and_ipv4_clients() {
    require_aioquic();
    let server = BinServer::start_dual_stack();
    let fingerprint = server.fingerprint();
    for host in HOSTS {
        let addr = format!("{}:{}", bracketed(host), server.port);

        // raw QUIC: streams both ways, datagrams, a refused ALPN
        let out = interop_script("aioquic_echo.py", host, server.port, &fingerprint, &[]);
        assert!(out.contains("aioquic interop: 5 passed, 0 failed"), "{out}");
        // HTTP/3 (on by default)
        let checks = ["--checks", "health"];
        let out = interop_script("aioquic_h3.py", host, server.port, &fingerprint, &checks);
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
            let cmd = echo_connect(&addr, &fingerprint, transport);
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
