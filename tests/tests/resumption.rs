//! Session resumption as clients nobody here wrote see it: aioquic over QUIC and Python's
//! `ssl` (OpenSSL) over TLS/TCP keep the tickets the server sent and offer them on their
//! next connection (`tests/interop/resumption_clients.py`). With host-key tickets (the
//! default) a ticket resumes on any worker, after a certificate reload and after a crash
//! and restart; a new host key ends that. With `session_tickets = "single-use"`, rustls'
//! cache in the process, a restart forgets every session.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use alknet_runtime::host_key::QUIC_HOST_KEY_FILE;
use alknet_runtime::tls::TlsIdentity;
use alknet_tests::*;

/// The resuming clients, one process for the whole test, so their tickets outlive the
/// server processes.
struct ResumingClients {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildLines,
}

impl ResumingClients {
    /// Starts the clients; their first round runs at once (see [`Self::round`]).
    fn start(server: &BinServer) -> Self {
        let mut child = Command::new("python3")
            .arg(format!(
                "{}/interop/resumption_clients.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .args(["--port", &server.port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = ChildLines::of(&mut child);
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// The lines of the round under way: `quic …` and `tcp …` (see the script).
    fn lines(&self) -> Vec<String> {
        self.stdout
            .until(Duration::from_secs(60), |l| l == "round done")
    }

    /// The outcome of the round under way: whether the QUIC and the TLS/TCP connection
    /// resumed their sessions (both must have connected).
    fn outcome(&self) -> (bool, bool) {
        let lines = self.lines();
        let resumed = |transport: &str| {
            let line = lines
                .iter()
                .find(|l| l.starts_with(transport))
                .unwrap_or_else(|| panic!("no {transport} line in {lines:?}"));
            assert!(line.contains(" resumed="), "{line}");
            line.ends_with("resumed=True")
        };
        (resumed("quic "), resumed("tcp "))
    }

    /// Asks for another round (both clients connect again, offering their newest tickets).
    fn again(&mut self) {
        writeln!(self.stdin, "again").expect("write to the clients");
        self.stdin.flush().expect("flush");
    }

    /// Runs another round; its [`Self::outcome`].
    fn round(&mut self) -> (bool, bool) {
        self.again();
        self.outcome()
    }
}

impl Drop for ResumingClients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rotates the server's certificate and reloads it with SIGHUP.
fn rotate_certificate(server: &BinServer) {
    let next = TlsIdentity::generate_self_signed(&[]).expect("generate");
    let dir = server.data_dir.path();
    std::fs::write(dir.join("cert.pem"), next.chain_pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), next.key_pem()).expect("key");
    // SAFETY: kill(2) on the child this test started
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    server.wait_for_log("reloaded: certificate");
}

/// `/metrics` open to anyone, to read the resumption counters.
const PUBLIC_METRICS: &str = "[http]\npublic = [\"/metrics\"]\n";

/// The resumed handshakes the server counted, summed over its workers: (QUIC, TLS/TCP).
fn resumed_counts(server: &BinServer) -> (u64, u64) {
    let out = Command::new("curl")
        .args(["-sSk", "--max-time", "10"])
        .arg(format!("https://{}/metrics", server.addr()))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let metrics = text(&out.stdout);
    let sum = |name: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .map(|l| {
                let v = l.rsplit(' ').next().expect("a value");
                v.parse::<u64>().unwrap_or_else(|_| panic!("{l}"))
            })
            .sum()
    };
    (
        sum("alknet_worker_handshakes_resumed_total"),
        sum("alknet_worker_tls_resumed_total"),
    )
}

#[test]
fn host_key_tickets_resume_after_a_reload_and_a_restart() {
    let mut server = BinServer::start_with_config(PUBLIC_METRICS);
    let mut clients = ResumingClients::start(&server);
    assert_eq!(
        clients.outcome(),
        (false, false),
        "first contact: full handshakes"
    );
    // a new connection, from a new port, on whichever worker the kernel picks
    for _ in 0..3 {
        assert_eq!(clients.round(), (true, true), "the same process");
    }
    rotate_certificate(&server);
    assert_eq!(clients.round(), (true, true), "after a certificate reload");
    assert_eq!(resumed_counts(&server), (4, 4), "counted per transport");
    server.crash_and_restart();
    assert_eq!(clients.round(), (true, true), "after a crash and restart");
    assert_eq!(
        resumed_counts(&server),
        (1, 1),
        "the new process counts from zero"
    );

    // the control: another host key makes every ticket unreadable
    std::fs::remove_file(server.data_dir.path().join(QUIC_HOST_KEY_FILE)).expect("remove");
    server.crash_and_restart();
    assert_eq!(clients.round(), (false, false), "a new host key");
    assert_eq!(clients.round(), (true, true), "its own tickets resume");

    // client certificates required from now on: a session that never showed one must not
    // slip past the new policy by resuming (these clients have no certificate)
    let config = server.data_dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("{PUBLIC_METRICS}[tls]\nclient_auth = \"required\"\n"),
    )
    .expect("config");
    // SAFETY: kill(2) on the child this test started
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    server.wait_for_log("reloaded: ");
    clients.again();
    let lines = clients.lines();
    assert!(
        lines.iter().any(|l| l.starts_with("quic failed="))
            && lines.iter().any(|l| l.starts_with("tcp failed=")),
        "both refused, neither resumed: {lines:?}"
    );
}

#[test]
fn single_use_tickets_live_and_die_with_the_process() {
    let mut server = BinServer::start_with_config("[quic]\nsession_tickets = \"single-use\"\n");
    let mut clients = ResumingClients::start(&server);
    assert_eq!(clients.outcome(), (false, false), "first contact");
    assert_eq!(clients.round(), (true, true), "the same process");
    server.crash_and_restart();
    assert_eq!(
        clients.round(),
        (false, false),
        "a restart empties the cache"
    );
}
