//! `alknet socks`: a local SOCKS5 proxy over one `alknet/ssh` session, driven by `curl
//! --socks5-hostname` to a loopback HTTP server (Python's http.server), with keys added
//! as peers through `alknet peer add` and the server's ACL deciding.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use alknet_tests::ssh::{free_tcp_port, peer_add, ssh_keygen};
use alknet_tests::*;

/// Kills the child when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `alknet socks` and waits until it listens; `Err(stderr)` if it exits first.
fn socks(server: &BinServer, fp: &str, key: &std::path::Path, port: u16) -> Result<Proc, String> {
    socks_over(server, fp, key, port, "quic")
}

/// [`socks`] with `--transport TRANSPORT`.
fn socks_over(
    server: &BinServer,
    fp: &str,
    key: &std::path::Path,
    port: u16,
    transport: &str,
) -> Result<Proc, String> {
    let mut proc = Proc(
        Command::new(alknet_bin())
            .args(["socks", "--transport", transport, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-i")
            .arg(key)
            .args(["--fingerprint", fp, &server.addr()])
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn alknet socks"),
    );
    let stderr = proc.0.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("listening on") => return Ok(proc),
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // stderr closed: the proxy exited (dropping `proc` reaps it)
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(seen.join("\n")),
        }
    }
    panic!("alknet socks did not start: {}", seen.join("\n"));
}

fn curl(socks_port: u16, url: &str) -> std::process::Output {
    let child = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--socks5-hostname"])
        .arg(format!("127.0.0.1:{socks_port}"))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    wait_output(child, Duration::from_secs(30))
}

#[test]
fn curl_through_alknet_socks_reaches_a_loopback_http_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = dir.path().join("www");
    std::fs::create_dir(&web).expect("mkdir");
    std::fs::write(web.join("hello.txt"), b"hello through socks\n").expect("write");
    let big = payload(9, 3 << 20);
    std::fs::write(web.join("big.bin"), &big).expect("write");
    let http_port = free_tcp_port();
    let _http = Proc(
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(&web)
            .arg(http_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server"),
    );
    let allowed = ssh_keygen(dir.path(), "allowed");
    let denied = ssh_keygen(dir.path(), "denied");
    let stranger = ssh_keygen(dir.path(), "stranger");

    let server = BinServer::start_with_config("[http]\npublic = [\"/metrics\"]\n");
    let fp = server.fingerprint();
    let data = server.data_dir.path();
    peer_add(data, "proxy-user", &allowed.fingerprint_hex, &["ssh:socks"]);
    peer_add(data, "exec-only", &denied.fingerprint_hex, &["ssh:exec"]);

    // wait for the HTTP server
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", http_port)).is_err() {
        assert!(Instant::now() < deadline, "http.server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let port = free_tcp_port();
    let mut proxy = socks(&server, &fp, &allowed.path, port).expect("alknet socks starts");
    let out = curl(port, &format!("http://127.0.0.1:{http_port}/hello.txt"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello through socks\n");
    // the name is resolved at the far end (socks5-hostname)
    let out = curl(port, &format!("http://localhost:{http_port}/big.bin"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256(&out.stdout), sha256(&big));
    // several at once over the one session
    let children: Vec<_> = (0..6)
        .map(|_| {
            Command::new("curl")
                .args(["-sS", "--max-time", "20", "--socks5-hostname"])
                .arg(format!("127.0.0.1:{port}"))
                .arg(format!("http://127.0.0.1:{http_port}/big.bin"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("curl")
        })
        .collect();
    for c in children {
        let out = wait_output(c, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sha256(&out.stdout), sha256(&big));
    }
    // the same session over TLS/TCP (`--transport tcp`, for networks that block UDP)
    let tcp_port = free_tcp_port();
    let _tcp_proxy = socks_over(&server, &fp, &allowed.path, tcp_port, "tcp")
        .expect("alknet socks over TLS/TCP starts");
    let out = curl(tcp_port, &format!("http://localhost:{http_port}/big.bin"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256(&out.stdout), sha256(&big));

    // a closed port: the proxy answers with a SOCKS failure, curl reports it
    let out = curl(port, &format!("http://127.0.0.1:{}/", free_tcp_port()));
    assert!(!out.status.success());

    // a key whose identity lacks ssh:socks / ssh:forward-local: its channels are refused
    let port2 = free_tcp_port();
    let _denied = socks(&server, &fp, &denied.path, port2).expect("authenticates");
    let out = curl(port2, &format!("http://127.0.0.1:{http_port}/hello.txt"));
    assert!(!out.status.success(), "denied identity got through");
    assert!(out.stdout.is_empty());

    // an unknown key does not get a session at all
    let err = socks(&server, &fp, &stranger.path, free_tcp_port())
        .err()
        .expect("stranger refused");
    assert!(err.contains("refused"), "{err}");

    // Ctrl-C: the proxy closes its QUIC connection and exits, and the server ends the
    // session at once (killed outright, it would hold it until the idle timeout)
    let open = || sample_value(&server.metrics_samples(), "alknet_ssh_sessions_open{}");
    let before = open();
    let status = Command::new("kill")
        .args(["-INT", &proxy.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = proxy.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "alknet socks ignored SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exited.success(), "{exited:?}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while open() >= before {
        assert!(
            Instant::now() < deadline,
            "the server still holds the proxy's session"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
