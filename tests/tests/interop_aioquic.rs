//! Interop with a QUIC stack nobody here wrote: Python aioquic round-trips bi streams, a
//! uni stream and datagrams on `alknet/echo`, and is refused with an unknown ALPN.
//! `.ci/run` installs aioquic (tests/interop/requirements.txt).

use std::process::Command;
use std::time::Duration;

use alknet_tests::*;

#[test]
fn aioquic_client_interoperates_with_echo() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/aioquic_echo.py");
    require_aioquic();
    let server = start_server(ServerOptions {
        workers: 2,
        ..Default::default()
    });
    let mut child = Command::new("python3")
        .arg(script)
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.local_addr().port().to_string())
        .arg("--fingerprint")
        .arg(server.fingerprint().to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    // the script bounds itself (160 s); this is the backstop
    let deadline = std::time::Instant::now() + Duration::from_secs(200);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("aioquic script hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "aioquic interop failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("aioquic interop: 5 passed, 0 failed"),
        "unexpected output:\n{stdout}"
    );
    let stats: alknet_runtime::WorkerStatsSnapshot = server.total_stats();
    assert_eq!(stats.handler_panics + stats.handler_errors, 0);
}

/// QUIC v2 (RFC 9369) with aioquic, which implements both versions and compatible version
/// negotiation (RFC 9368) as a client: the server's `[quic] versions` decides.
#[test]
fn aioquic_client_gets_quic_v2_by_compatible_version_negotiation() {
    require_aioquic();
    // small transfers: the echo checks are the point elsewhere, here it is the version
    let run = |server: &alknet_runtime::ServerHandle, versions: Option<&str>, expect: &str| {
        let mut extra = vec!["--streams", "2", "--max-size", "65536"];
        extra.extend(["--expect-version", expect]);
        if let Some(v) = versions {
            extra.extend(["--versions", v]);
        }
        let port = server.local_addr().port();
        let fingerprint = server.fingerprint().to_string();
        let out = interop_script("aioquic_echo.py", "127.0.0.1", port, &fingerprint, &extra);
        assert!(out.contains("aioquic interop: 5 passed"), "{out}");
        out
    };

    // the default, v2 preferred: a client that starts in v1 and offers v2 is switched,
    // one that starts in v2 stays, one that offers only v1 stays in v1
    let server = start_server(ServerOptions {
        workers: 2,
        ..Default::default()
    });
    let out = run(&server, None, "v2");
    assert!(out.contains("version: v2 (started in v1)"), "{out}");
    let v2_before = server.total_stats().handshakes_v2;
    assert!(v2_before >= 1, "no v2 handshake counted");
    let out = run(&server, Some("v2,v1"), "v2");
    assert!(out.contains("version: v2 (started in v2)"), "{out}");
    let out = run(&server, Some("v1"), "v1");
    assert!(out.contains("version: v1 (started in v1)"), "{out}");
    // each run makes two connections (the echo one and the refused ALPN), both counted
    // only once their handshake completes: the refused one never does
    assert_eq!(server.total_stats().handshakes_v2, v2_before + 1);
    drop(server);

    // a server that prefers v1 keeps v1 clients where they are and switches v2 ones to v1
    use alknet_runtime::{HandshakePolicy, QuicVersion};
    let server = start_server(ServerOptions {
        handshake: HandshakePolicy {
            versions: vec![QuicVersion::V1, QuicVersion::V2],
            ..Default::default()
        },
        ..Default::default()
    });
    run(&server, None, "v1");
    let out = run(&server, Some("v2,v1"), "v1");
    assert!(out.contains("version: v1 (started in v2)"), "{out}");
    assert_eq!(server.total_stats().handshakes_v2, 0);
    drop(server);

    // a v1-only server answers a v2 Initial with Version Negotiation: aioquic retries in
    // v1 if it can, and gives up if it cannot
    let server = start_server(ServerOptions {
        handshake: HandshakePolicy {
            versions: vec![QuicVersion::V1],
            ..Default::default()
        },
        ..Default::default()
    });
    run(&server, None, "v1");
    let out = run(&server, Some("v2,v1"), "v1");
    assert!(out.contains("version: v1 (started in v2)"), "{out}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/aioquic_echo.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.local_addr().port().to_string())
        .args(["--versions", "v2", "--max-size", "1024"])
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a v2-only client connected to a v1-only server"
    );
    assert!(
        stderr.contains("Could not find a common protocol version"),
        "{stderr}"
    );
    assert_eq!(server.total_stats().handshakes_v2, 0);
}

/// A session ticket belongs to the QUIC version of the connection that issued it (RFC
/// 9369, "TLS Resumption and NEW_TOKEN Tokens"): aioquic's tickets resume in their own
/// version, a switched connection's in v2, and never in the other version; with
/// host-key tickets (the default) and with single-use ones (`zero_rtt`).
#[test]
fn session_tickets_resume_only_in_the_version_that_issued_them() {
    require_aioquic();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/version_tickets.py");
    let check = |server: &alknet_runtime::ServerHandle, want: &[(&str, &str)]| {
        let out = Command::new("python3")
            .arg(script)
            .arg("127.0.0.1")
            .arg(server.local_addr().port().to_string())
            .args(want.iter().map(|(pair, _)| *pair))
            .output()
            .expect("run python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (pair, result) in want {
            let line = format!("{pair} {result}\n");
            assert!(stdout.contains(&line), "want {line:?} in:\n{stdout}");
        }
    };
    let host_key = start_server(ServerOptions {
        handshake: alknet_runtime::HandshakePolicy {
            session_tickets: alknet_runtime::SessionTickets::HostKey,
            ..Default::default()
        },
        ..Default::default()
    });
    check(
        &host_key,
        &[
            // aioquic's default, switched to v2 each time: v2's ticket, resumed in v2
            ("v1+v2:v1+v2", "version=v2 resumed=True"),
            ("v1:v1", "version=v1 resumed=True"),
            ("v2:v2", "version=v2 resumed=True"),
            // across versions: refused, a full handshake
            ("v1+v2:v1", "version=v1 resumed=False"),
            ("v1:v2", "version=v2 resumed=False"),
        ],
    );
    drop(host_key);
    let single_use = start_server(ServerOptions {
        handshake: alknet_runtime::HandshakePolicy {
            zero_rtt: true,
            ..Default::default()
        },
        ..Default::default()
    });
    check(
        &single_use,
        &[
            ("v1:v1", "version=v1 resumed=True"),
            ("v2:v2", "version=v2 resumed=True"),
            ("v1+v2:v1", "version=v1 resumed=False"),
            ("v1:v2", "version=v2 resumed=False"),
        ],
    );
}
