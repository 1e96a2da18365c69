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
