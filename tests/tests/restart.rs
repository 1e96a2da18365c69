//! A node that crashed and was started again answers the old process's clients with
//! stateless resets they accept: the reset key comes from the QUIC host key kept in the
//! data directory, so the token in the new process's reset is the one the old process
//! gave the client. The client learns at once that its connection is gone, instead of
//! retransmitting into the void until its idle timeout (30 s by default). The second
//! half is the control: with the key file removed before the restart, the new process's
//! resets carry a token the client does not know, and it must keep waiting. A host key
//! left readable by every user is reported when the node starts.

use std::io::Write;
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

use alknet_runtime::host_key::QUIC_HOST_KEY_FILE;
use alknet_tests::*;

/// `alknet connect` to `alknet/echo`, one line echoed back to show the connection is up.
struct EchoClient {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildLines,
}

impl EchoClient {
    fn connect(server: &BinServer) -> Self {
        let mut child = echo_connect(&server.addr(), &server.fingerprint(), "quic")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn alknet connect");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = ChildLines::of(&mut child);
        let mut client = Self {
            child,
            stdin,
            stdout,
        };
        client.send("one");
        let echoed = client.stdout.until(Duration::from_secs(10), |l| l == "one");
        assert_eq!(echoed.last().map(String::as_str), Some("one"));
        client
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to alknet connect");
        self.stdin.flush().expect("flush");
    }

    /// The client's exit within `limit`, with its stderr; `None` if it still runs.
    fn exit_within(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, String)> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Some((status, err));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for EchoClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_restarted_node_resets_the_old_processs_connections_at_once() {
    let mut server = BinServer::start();
    let key_file = server.data_dir.path().join(QUIC_HOST_KEY_FILE);
    let kept = std::fs::read(&key_file).expect("the first start kept a QUIC host key");

    let mut client = EchoClient::connect(&server);
    server.crash_and_restart();
    assert_eq!(
        std::fs::read(&key_file).expect("key file"),
        kept,
        "the restart reads the kept key, it does not make another"
    );
    let sent = Instant::now();
    client.send("two");
    let (status, err) = client
        .exit_within(Duration::from_secs(10))
        .expect("the old connection is reset within 10 s, not left to its 30 s idle timeout");
    assert!(!status.success(), "{err}");
    assert!(err.contains("reset by peer"), "{err}");
    eprintln!(
        "reset {:?} after the first packet to the new process",
        sent.elapsed()
    );

    // the control: a new random key on restart, and the same client waits
    let mut client = EchoClient::connect(&server);
    std::fs::remove_file(&key_file).expect("remove the key");
    server.crash_and_restart();
    assert_ne!(std::fs::read(&key_file).expect("a new key"), kept);
    client.send("two");
    assert!(
        client.exit_within(Duration::from_secs(3)).is_none(),
        "a reset under another key must be ignored (RFC 9000, 10.3.1)"
    );
}

#[test]
fn a_secret_copied_with_an_open_mode_is_reported_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let mut server = BinServer::start();
    let dir = server.data_dir.path();
    let key_file = dir.join(QUIC_HOST_KEY_FILE);
    // as an administrator copying the key to another node might leave it
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let log = server.crash_and_restart();
    let line = log
        .iter()
        .find(|l| l.contains("open to every user"))
        .unwrap_or_else(|| panic!("no warning in {log:?}"));
    assert!(
        line.contains("QUIC host key") && line.contains("0644"),
        "{line}"
    );
}
