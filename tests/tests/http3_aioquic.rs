//! HTTP/3 with a client nobody here wrote: Python aioquic's `H3Connection` (its own QUIC,
//! QPACK and HTTP/3) against the real `alknet serve` with the `h3` handler enabled.
//! `tests/run-all.sh` installs aioquic (tests/interop/requirements.txt).

use std::process::{Command, Stdio};
use std::time::Duration;

use alknet_tests::{interop_script, require_aioquic, wait_output, BinServer, ChildLines};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/aioquic_h3.py");

/// Runs the script against `server`, asserting it passed `expect_passed` checks.
fn run_checks(server: &BinServer, extra: &[&str], expect_passed: usize) {
    let fingerprint = server.fingerprint();
    let stdout = interop_script(
        "aioquic_h3.py",
        "127.0.0.1",
        server.port,
        &fingerprint,
        extra,
    );
    let want = format!("aioquic h3: {expect_passed} passed, 0 failed");
    assert!(stdout.contains(&want), "unexpected output:\n{stdout}");
}

#[test]
fn aioquic_h3_client_gets_every_route_and_the_limits() {
    require_aioquic();
    let server = BinServer::start_with_config(
        "[handlers]\nenabled = [\"h3\"]\n[http]\ndiagnostics = true\n",
    );
    // health, 1 MiB echo, 10 MB stream, 50 concurrent, 431, 413 (+ the ALPN/pin check)
    run_checks(
        &server,
        &[
            "--checks",
            "health,echo,bytes,concurrent,big-header,big-body",
        ],
        7,
    );
}

#[test]
fn the_embedded_default_serves_http3_and_advertises_it_over_tcp() {
    require_aioquic();
    // no config file at all: what `alknet serve` runs on a fresh machine
    let server = BinServer::start();
    run_checks(&server, &["--checks", "health"], 2);
    let out = wait_output(
        Command::new("curl")
            .args(["-sk", "--http1.1", "-o", "/dev/null", "-D", "-"])
            .arg(format!("https://127.0.0.1:{}/health", server.port))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl (tests/run-all.sh installs it)"),
        Duration::from_secs(30),
    );
    let headers = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        headers.starts_with("http/1.1 200")
            && headers.contains(&format!("alt-svc: h3=\":{}\"", server.port)),
        "{headers}"
    );
}

#[test]
fn aioquic_h3_limits_from_the_config_hold() {
    require_aioquic();
    // 4 requests at once: the 50 concurrent requests queue behind QUIC flow control and
    // all complete; a 512 KiB body limit, below axum's own default, so the 413s are ours;
    // a short header timeout for the slowloris check
    let server = BinServer::start_with_config(
        "[handlers]\nenabled = [\"h3\"]\n[http]\ndiagnostics = true\n\
         [http3]\nmax_concurrent_requests = 4\nmax_body_bytes = 524288\n\
         header_timeout_ms = 500\n",
    );
    run_checks(
        &server,
        &[
            "--max-body",
            "524288",
            "--checks",
            "concurrent,big-body,streamed-body,slow-headers,health",
        ],
        6,
    );
}

#[test]
fn aioquic_h3_client_reads_a_server_sent_event_stream() {
    require_aioquic();
    let server = BinServer::start_with_config("[handlers]\nenabled = [\"h3\", \"alknet/call\"]\n");
    run_checks(&server, &["--checks", "health,sse"], 3);
}

#[test]
fn aioquic_h3_client_subscribes_to_a_topic() {
    require_aioquic();
    let server = BinServer::start_with_config(
        r#"
[handlers]
enabled = ["h3", "alknet/call"]

# the check reads alknet_http_sse_streams_open to see the cancelled stream freed
[http]
public = ["/metrics"]

[[identities]]
name = "admin"
tokens = ["admin-token-h3"]
scopes = ["node:admin"]

[[identities]]
name = "watcher"
tokens = ["watcher-token-h3"]
scopes = ["subscribe:node.events"]
"#,
    );
    run_checks(
        &server,
        &[
            "--checks",
            "health,topic",
            "--watcher-token",
            "watcher-token-h3",
            "--admin-token",
            "admin-token-h3",
        ],
        3,
    );
}

#[test]
fn a_draining_node_sends_goaway_over_h3() {
    require_aioquic();
    let mut server = BinServer::start_with_config("[handlers]\nenabled = [\"h3\"]\n");
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.port.to_string())
        .arg("--fingerprint")
        .arg(server.fingerprint())
        .args(["--checks", "health,goaway"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    // the script says when its request was answered; then the node drains
    let lines = ChildLines::of(&mut child);
    let mut seen = lines.until(Duration::from_secs(60), |l| l == "drain-me");
    // SAFETY: plain kill(2) on our child process
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    let out = wait_output(child, Duration::from_secs(120));
    seen.extend(lines.to_end(Duration::from_secs(60)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{seen:?}\n{stderr}");
    assert!(
        seen.iter().any(|l| l == "aioquic h3: 3 passed, 0 failed"),
        "{seen:?}\n{stderr}"
    );
    server.wait_exit(Duration::from_secs(60));
}
