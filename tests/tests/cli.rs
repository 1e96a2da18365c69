//! The `alknet` binary as a user runs it: `serve` on the embedded default, `connect` as a
//! pipe, `fingerprint`, configuration errors, and SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use alknet_tests::*;

struct Server {
    child: Child,
    port: u16,
    data_dir: tempfile::TempDir,
    log: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// `alknet serve` with no config file: the embedded default, a fresh data directory.
fn serve() -> Server {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let mut child = Command::new(alknet_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "2",
        ])
        .env("ALKNET_DATA_DIR", data_dir.path())
        .env("ALKNET_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn alknet serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, log) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let server = Server {
        child,
        port,
        data_dir,
        log,
    };
    wait_for_log(&server, "alknet serving");
    server
}

fn wait_for_log(server: &Server, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match server.log.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!(
        "server never logged {needle:?}; log so far:\n{}",
        seen.join("\n")
    );
}

fn fingerprint(server: &Server) -> String {
    let out = Command::new(alknet_bin())
        .arg("fingerprint")
        .env("ALKNET_DATA_DIR", server.data_dir.path())
        .output()
        .expect("alknet fingerprint");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

fn connect_pipe(server: &Server, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(alknet_bin())
        .arg("connect")
        .args(args)
        .arg(format!("127.0.0.1:{}", server.port))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn alknet connect");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = wait_output(child, Duration::from_secs(30));
    writer.join().expect("writer thread");
    out
}

fn wait_output(child: Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // SAFETY: plain kill(2) on a child we spawned
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("process {pid} did not finish within {limit:?}");
        }
    }
}

#[test]
fn default_server_echoes_through_connect_and_stops_on_sigterm() {
    let server = serve();
    let fp = fingerprint(&server);
    assert_eq!(fp.len(), 64, "{fp}");

    let data = payload(42, 5 << 20);
    let out = connect_pipe(
        &server,
        &["--alpn", "alknet/echo", "--fingerprint", &fp],
        &data,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(sha256(&out.stdout), sha256(&data));

    // a wrong pin is refused with a clear message
    let wrong = "00".repeat(32);
    let out = connect_pipe(
        &server,
        &["--alpn", "alknet/echo", "--fingerprint", &wrong],
        b"x",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match"), "{err}");

    // an ALPN the server does not serve fails the handshake
    let out = connect_pipe(&server, &["--alpn", "alknet/nope", "--insecure"], b"x");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("protocol"), "{err}");

    // SIGTERM: graceful stop, exit 0
    let mut server = server;
    // SAFETY: plain kill(2) on a child we spawned
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_log(&server, "alknet stopped");
}

#[test]
fn certificate_is_generated_once_and_reused() {
    let server = serve();
    let fp = fingerprint(&server);
    assert!(server.data_dir.path().join("cert.pem").exists());
    assert_eq!(fingerprint(&server), fp);
}

#[test]
fn bad_config_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &str); 4] = [
        ("listen = \"not an address\"", "listen"),
        ("workers = 2\nworkrs = 3", "workrs"),
        ("[limits]\nidle_timeout_ms = -5", "idle_timeout_ms"),
        ("[handlers]\nenabled = [\"alknet/nope\"]", "alknet/nope"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).expect("write config");
        let out = Command::new(alknet_bin())
            .args(["serve", "--config"])
            .arg(&path)
            .env("ALKNET_DATA_DIR", dir.path())
            .output()
            .expect("run alknet");
        assert_eq!(out.status.code(), Some(78), "case {i}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "case {i}: {err}");
    }
    // and the printed default config is itself valid
    let out = Command::new(alknet_bin())
        .arg("config")
        .output()
        .expect("alknet config");
    let path = dir.path().join("default.toml");
    std::fs::write(&path, &out.stdout).expect("write");
    let out = Command::new(alknet_bin())
        .args(["fingerprint", "--config"])
        .arg(&path)
        .env("ALKNET_DATA_DIR", dir.path())
        .output()
        .expect("run alknet");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
