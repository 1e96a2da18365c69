//! OpenSSH over WebTransport: `ssh -o ProxyCommand='alknet connect --transport
//! webtransport --alpn alknet/ssh …'` against the real `alknet serve` with `h3` on. The
//! ProxyCommand opens an HTTP/3 connection, a WebTransport session at `/alknet/ssh`, and
//! pipes one bidirectional stream of it; on the network it is HTTPS-shaped (QUIC with ALPN
//! `h3`). SSH's own key authentication still applies on top of the session. Also: a
//! server that does not allow `alknet/ssh` over WebTransport refuses the session.

use std::process::{Child, Stdio};

use alknet_tests::ssh::*;
use alknet_tests::*;

/// Kills (and reaps) a long-running child such as `ssh -N -L …` when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(allow: &str) -> BinServer {
    BinServer::start_with_config(&format!(
        "[handlers]\nenabled = [\"alknet/ssh\", \"alknet/echo\", \"h3\"]\n{allow}"
    ))
}

#[test]
fn over_webtransport_a_command_ten_mebibytes_and_a_forward() {
    assert!(
        openssh_available(),
        "the OpenSSH client is required: apt-get install openssh-client (tests/run-all.sh does)"
    );
    let server = start("");
    let keys = tempfile::tempdir().expect("tempdir");
    let key = ssh_keygen(keys.path(), "wt-user");
    peer_add(
        server.data_dir.path(),
        "wt-user",
        &key.fingerprint_hex,
        &["ssh:exec", "ssh:forward-local"],
    );
    let t = SshTarget::new(server.addr(), server.fingerprint()).over("webtransport");

    let out = t.run(&key, "echo $ALKNET_IDENTITY; exit 5", b"");
    assert_eq!(out.status.code(), Some(5), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "wt-user\n");

    let data = payload(23, 10 << 20);
    let out = t.run(&key, "sha256sum", &data);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{}  -\n", alknet_proto::hex::encode(&sha256(&data)))
    );
    let out = t.run(&key, "cat", &data);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(sha256(&out.stdout), sha256(&data));

    let echo = tcp_echo_server();
    let local = free_tcp_port();
    let mut cmd = t.ssh(&key);
    cmd.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        &format!("127.0.0.1:{local}:127.0.0.1:{echo}"),
        "user@alknet",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _forward = Proc(cmd.spawn().expect("ssh forwarding"));
    let data = payload(29, 1 << 20);
    for round in 0..3 {
        let got = echo_through(connect_retry(local, SSH_TIMEOUT), &data);
        assert_eq!(sha256(&got), sha256(&data), "round {round}");
    }

    // the session must have been the WebTransport one: a node that does not allow
    // alknet/ssh over WebTransport refuses the same command (404 to the CONNECT)
    let closed = start("[webtransport]\nallow = [\"alknet/echo\"]\n");
    peer_add(
        closed.data_dir.path(),
        "wt-user",
        &key.fingerprint_hex,
        &["ssh:exec"],
    );
    let t = SshTarget::new(closed.addr(), closed.fingerprint()).over("webtransport");
    let refused = t.run(&key, "echo hi", b"");
    assert!(!refused.status.success(), "{}", text(&refused.stdout));
    assert!(
        text(&refused.stderr).contains("404"),
        "{}",
        text(&refused.stderr)
    );
}
