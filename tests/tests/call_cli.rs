//! `alknet/call` on the real binary with its embedded default config: the `alknet call`
//! command (with a token added by `alknet peer add`), and a Python aioquic client that
//! speaks the framing by hand.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use alknet_tests::*;

fn call(fp: &str, args: &[&str]) -> Output {
    let child = Command::new(alknet_bin())
        .arg("call")
        .args(["--fingerprint", fp])
        .args(args)
        .env_remove("ALKNET_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn alknet call");
    wait_output(child, Duration::from_secs(30))
}

#[test]
fn alknet_call_prints_results_and_error_codes() {
    let server = BinServer::start();
    let fp = server.fingerprint();
    let addr = server.addr();

    let out = call(&fp, &[&addr, "node.info"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(info["workers"], 2);
    assert!(info["alpns"]
        .as_array()
        .expect("alpns")
        .contains(&serde_json::json!("alknet/call")));

    let out = call(&fp, &[&addr, "echo", r#"{"a":[1,"two"]}"#]);
    assert_eq!(text(&out.stdout).trim(), r#"{"a":[1,"two"]}"#);

    let out = call(
        &fp,
        &["--stream", &addr, "echo.stream", r#"{"count":3,"item":7}"#],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "7\n7\n7\n");

    // errors: code on stderr, exit status 2, nothing on stdout
    let out = call(&fp, &[&addr, "node.stats"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("FORBIDDEN:"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let out = call(&fp, &[&addr, "no.such"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("NOT_FOUND:"),
        "{}",
        text(&out.stderr)
    );
    // a local mistake: exit status 1
    let out = call(&fp, &[&addr, "echo", "{not json"]);
    assert_eq!(out.status.code(), Some(1));

    // a token added with `alknet peer add` while the server runs grants node:admin
    let add = Command::new(alknet_bin())
        .args([
            "peer",
            "add",
            "ops",
            "--generate-token",
            "--scope",
            "node:admin",
        ])
        .env("ALKNET_DATA_DIR", server.data_dir.path())
        .output()
        .expect("alknet peer add");
    assert!(add.status.success(), "{}", text(&add.stderr));
    let token = text(&add.stdout)
        .lines()
        .map(str::trim)
        .find(|l| l.len() >= 32 && !l.contains(' '))
        .expect("generated token on stdout")
        .to_string();
    let out = call(&fp, &["--token", &token, &addr, "node.stats"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    assert!(stats["errors"]["FORBIDDEN"].as_u64().expect("count") >= 1);
    let out = call(&fp, &["--token", "wrong", &addr, "node.stats"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown token falls back to anonymous"
    );
}

#[test]
fn aioquic_speaks_the_call_framing_by_hand() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/aioquic_call.py");
    require_aioquic();
    let server = BinServer::start();
    let child = Command::new("python3")
        .arg(script)
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let out = wait_output(child, Duration::from_secs(150));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "aioquic call interop failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("aioquic call interop: 5 passed, 0 failed"),
        "unexpected output:\n{stdout}"
    );
}
