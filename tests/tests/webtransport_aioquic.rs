//! WebTransport with a client nobody here wrote: Python aioquic's
//! `H3Connection(enable_webtransport=True)` against the real `alknet serve` (`h3` on,
//! `tls.webtransport_cert = "auto"`): sessions to `alknet/echo` and `alknet/call`,
//! streams both ways, datagrams, refusals (`tests/interop/aioquic_webtransport.py`). The
//! certificate it sees must be the one `GET /api/webtransport` publishes (read with curl
//! over HTTP/2). `tests/run-all.sh` installs aioquic and curl.

use std::process::{Command, Stdio};
use std::time::Duration;

use alknet_tests::{require_aioquic, wait_output, BinServer};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/interop/aioquic_webtransport.py"
);

const CONFIG: &str = r#"
[handlers]
enabled = ["alknet/echo", "alknet/call", "perf", "h3"]

[tls]
webtransport_cert = "auto"

[[identities]]
name = "someone"
tokens = ["a-real-token"]
scopes = []
"#;

#[test]
fn aioquic_opens_sessions_streams_and_datagrams_and_is_refused() {
    require_aioquic();
    let server = BinServer::start_with_config(CONFIG);
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "10", "--cacert"])
        .arg(server.data_dir.path().join("cert.pem"))
        .arg(format!(
            "https://127.0.0.1:{}/api/webtransport",
            server.port
        ))
        .output()
        .expect("curl (tests/run-all.sh installs it)");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("GET /api/webtransport: {e}: {out:?}"));
    let hex = info["hashes"][0]["hex"]
        .as_str()
        .unwrap_or_else(|| panic!("no hash published: {info}"));
    assert_ne!(
        hex,
        server.fingerprint().to_lowercase().replace(':', ""),
        "h3 gets its own certificate, not the main one"
    );

    let child = Command::new("python3")
        .arg(SCRIPT)
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.port.to_string())
        .args(["--sha256", hex])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    // the script bounds itself (120 s); this is the backstop
    let out = wait_output(child, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "aioquic WebTransport checks failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("aioquic webtransport: 9 passed, 0 failed"),
        "unexpected output:\n{stdout}\n{stderr}"
    );
}
