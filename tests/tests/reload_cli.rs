//! Live reload of the real `alknet serve`: SIGHUP and `alknet reload` rotate the
//! certificate, add identities, and refuse what they cannot apply, changing nothing.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use alknet_runtime::tls::TlsIdentity;
use alknet_tests::*;

const CONFIG: &str = r#"
[[identities]]
name = "ops"
tokens = ["admin-token"]
scopes = ["node:admin"]
"#;

fn alknet(args: &[&str]) -> Output {
    let child = Command::new(alknet_bin())
        .args(args)
        .env_remove("ALKNET_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn alknet");
    wait_output(child, Duration::from_secs(30))
}

fn reload(server: &BinServer, fp: &str, token: &str) -> Output {
    alknet(&[
        "reload",
        "--token",
        token,
        "--fingerprint",
        fp,
        &server.addr(),
    ])
}

/// Writes `config` where the server reads it, then asks for a reload as the admin.
fn reload_with(server: &BinServer, config_path: &Path, fp: &str, config: &str) -> Output {
    std::fs::write(config_path, config).expect("config");
    reload(server, fp, "admin-token")
}

/// The reload was applied (exit code 0) and said `what`.
fn assert_applied(out: &Output, what: &str) {
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(what), "{}", text(&out.stdout));
}

/// The reload was refused (exit code 2) with a message that names `what`.
fn assert_refused(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains(what), "{}", text(&out.stderr));
}

/// Writes a new generated certificate where the server keeps its own; returns its
/// fingerprint.
fn replace_certificate(server: &BinServer) -> String {
    let next = TlsIdentity::generate_self_signed(&[]).expect("generate");
    let dir = server.data_dir.path();
    std::fs::write(dir.join("cert.pem"), next.chain_pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), next.key_pem()).expect("key");
    next.fingerprint().to_string()
}

#[test]
fn sighup_and_alknet_reload_apply_what_changed_and_refuse_the_rest() {
    let server = BinServer::start_with_config(CONFIG);
    let first = server.fingerprint();
    let addr = server.addr();
    let config_path = server.data_dir.path().join("config.toml");

    // SIGHUP: a new certificate for new handshakes
    let second = replace_certificate(&server);
    // SAFETY: kill(2) on the child this test started
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    let log = server.wait_for_log("reloaded: certificate");
    assert!(log.last().expect("line").contains(&second), "{log:?}");
    let out = alknet(&["call", "--fingerprint", &second, &addr, "node.health"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = alknet(&["call", "--fingerprint", &first, &addr, "node.health"]);
    assert!(
        !out.status.success(),
        "the old certificate is no longer served"
    );

    // alknet reload: nothing to do; a stranger's token is refused
    let out = reload(&server, &second, "admin-token");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "reloaded: nothing changed");
    let out = reload(&server, &second, "nobody");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // a broken certificate file: refused with the reason, the old certificate stays
    std::fs::write(server.data_dir.path().join("cert.pem"), "not a certificate").expect("w");
    let out = reload(&server, &second, "admin-token");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("TLS"), "{}", text(&out.stderr));
    let out = alknet(&["call", "--fingerprint", &second, &addr, "node.health"]);
    assert!(out.status.success(), "still served: {}", text(&out.stderr));

    // a certificate and a new identity in one reload
    let third = replace_certificate(&server);
    let out = reload_with(
        &server,
        &config_path,
        &second,
        &format!(
            "{CONFIG}\n[[identities]]\nname = \"ci\"\ntokens = [\"ci-token\"]\nscopes = [\"node:admin\"]\n"
        ),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!("certificate {second} -> {third}")),
        "{said}"
    );
    assert!(said.contains("identities (2 configured)"), "{said}");
    let out = alknet(&[
        "call",
        "--token",
        "ci-token",
        "--fingerprint",
        &third,
        &addr,
        "node.stats",
    ]);
    assert!(
        out.status.success(),
        "the new identity is known: {}",
        text(&out.stderr)
    );

    // admission limits reload live; invalid ones are refused naming the key
    let ci = "[[identities]]\nname = \"ci\"\ntokens = [\"ci-token\"]\nscopes = [\"node:admin\"]\n";
    let out = reload_with(
        &server,
        &config_path,
        &third,
        &format!("{CONFIG}\n{ci}\n[admission]\nmax_connections_per_address = 100\n"),
    );
    assert_applied(&out, "admission limits");
    let out = reload_with(
        &server,
        &config_path,
        &third,
        &format!("{CONFIG}\n{ci}\n[admission]\nipv4_prefix_len = 0\n"),
    );
    assert_refused(&out, "admission.ipv4_prefix_len");

    // handlers disabled and enabled by a reload: no longer offered, then offered again
    let server_addr: std::net::SocketAddr = addr.parse().expect("addr");
    let pinned: alknet_runtime::Fingerprint = third.parse().expect("fingerprint");
    let echo_connects = || {
        run_client(|| async {
            connect_addr(&client_endpoint(), server_addr, pinned, alknet_echo::ALPN)
                .await
                .is_ok()
        })
    };
    assert!(echo_connects(), "echo is enabled by default");
    let out = reload_with(
        &server,
        &config_path,
        &third,
        &format!("{CONFIG}\n{ci}\n[handlers]\nenabled = [\"alknet/call\", \"alknet/ssh\"]\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("handlers -alknet/echo -perf -alknet/sftp -alknet/git"),
        "{said}"
    );
    assert!(!echo_connects(), "echo is no longer offered");
    let out = reload_with(
        &server,
        &config_path,
        &third,
        &format!(
            "{CONFIG}\n{ci}\n[handlers]\nenabled = [\"alknet/call\", \"alknet/ssh\", \"alknet/echo\"]\n"
        ),
    );
    assert_applied(&out, "handlers +alknet/echo");
    assert!(echo_connects(), "echo is offered again");
    let out = reload_with(
        &server,
        &config_path,
        &third,
        &format!("{CONFIG}\n{ci}\n[handlers]\nenabled = [\"alknet/call\", \"gopher\"]\n"),
    );
    assert_refused(&out, "gopher");
    assert!(echo_connects(), "a refused reload changed nothing");

    // the log filter: the test server runs with ALKNET_LOG, which wins over the config;
    // an invalid filter is refused
    let handlers = "[handlers]\nenabled = [\"alknet/call\", \"alknet/ssh\", \"alknet/echo\"]\n";
    let out = reload_with(
        &server,
        &config_path,
        &third,
        &format!("{CONFIG}\n{ci}\n{handlers}\n[log]\nfilter = \"debug\"\n"),
    );
    assert_applied(&out, "log filter unchanged: ALKNET_LOG is set");
    let out = reload_with(
        &server,
        &config_path,
        &third,
        &format!("{CONFIG}\n{ci}\n{handlers}\n[log]\nfilter = \"alknet=loudest\"\n"),
    );
    assert_refused(&out, "log.filter");

    // [limits] reload for new connections: one opened before keeps its transport and works
    std::fs::write(
        &config_path,
        format!("{CONFIG}\n{ci}\n{handlers}\n[limits]\ndatagram_receive_buffer = 0\n"),
    )
    .expect("config");
    run_client(|| async {
        let endpoint = client_endpoint();
        let before = connect_addr(&endpoint, server_addr, pinned, alknet_echo::ALPN)
            .await
            .expect("connect");
        assert!(
            before.max_datagram_size().is_some(),
            "datagrams are on by default"
        );
        // blocks this client's loop for the reload's duration; the connection idles
        let out = reload(&server, &third, "admin-token");
        assert!(
            text(&out.stdout).contains("[limits] for new connections"),
            "{} {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let after = connect_addr(&endpoint, server_addr, pinned, alknet_echo::ALPN)
            .await
            .expect("connect");
        assert!(
            after.max_datagram_size().is_none(),
            "a new connection gets the reloaded limits"
        );
        let (mut send, mut recv) = before.open_bi().await.expect("open").split();
        send.write_all(b"still here").await.expect("write");
        send.finish().expect("finish");
        let echoed = recv.read_to_end(64).await.expect("read");
        assert_eq!(&echoed[..], b"still here");
    });
    // a key that sizes sockets at start: refused by name, nothing changes
    let out = reload_with(
        &server,
        &config_path,
        &third,
        &format!(
            "{CONFIG}\n{ci}\n{handlers}\n[limits]\ndatagram_receive_buffer = 0\nsocket_buffer_size = 65536\n"
        ),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("limits.socket_buffer_size") && err.contains("restart"),
        "{err}"
    );
    // the QUIC versions are the endpoints', set at start: the same
    let out = reload_with(
        &server,
        &config_path,
        &third,
        &format!("{CONFIG}\n{ci}\n{handlers}\n[limits]\ndatagram_receive_buffer = 0\n[quic]\nversions = [\"v1\"]\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("quic.versions") && err.contains("restart"),
        "{err}"
    );

    // what needs a restart is refused as a whole, and says so
    let out = reload_with(
        &server,
        &config_path,
        &third,
        &format!("workers = 1\n{CONFIG}"),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("workers") && err.contains("restart"), "{err}");
    let out = alknet(&[
        "call",
        "--token",
        "ci-token",
        "--fingerprint",
        &third,
        &addr,
        "node.stats",
    ]);
    assert!(
        out.status.success(),
        "the refused reload changed nothing: {}",
        text(&out.stderr)
    );

    // a config that does not parse: refused with the parser's message
    let out = reload_with(&server, &config_path, &third, "this is = = not toml");
    assert_refused(&out, "config.toml");
}

#[test]
fn watch_config_reloads_when_the_file_changes() {
    let server = BinServer::start_with_config_and_args(CONFIG, &["--watch-config"]);
    let config_path = server.data_dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        format!("{CONFIG}\n[[identities]]\nname = \"ci\"\ntokens = [\"ci-token\"]\nscopes = [\"node:admin\"]\n"),
    )
    .expect("config");
    let log = server.wait_for_log("reloaded: identities (2 configured)");
    assert!(
        log.iter().any(|l| l.contains("changed: reloading")),
        "{log:?}"
    );
    let out = alknet(&[
        "call",
        "--token",
        "ci-token",
        "--fingerprint",
        &server.fingerprint(),
        &server.addr(),
        "node.stats",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn twenty_sighup_rotations_under_load_lose_no_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let server = BinServer::start_with_config(CONFIG);
    let first: alknet_runtime::Fingerprint = server.fingerprint().parse().expect("fp");
    let addr: std::net::SocketAddr = server.addr().parse().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    // rr on two connections opened before the first rotation, until told to stop
    let (connected_tx, connected) = std::sync::mpsc::channel::<()>();
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            run_client(|| async move {
                let endpoint = client_endpoint();
                let a = connect_addr(&endpoint, addr, first, alknet_echo::ALPN)
                    .await
                    .expect("connect");
                let b = connect_addr(&endpoint, addr, first, alknet_echo::ALPN)
                    .await
                    .expect("connect");
                let _ = connected_tx.send(());
                let mut requests = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (x, y) = (payload(requests, 512), payload(requests + 1, 512));
                    let (dx, dy) =
                        join(echo_roundtrip(&a, x.clone()), echo_roundtrip(&b, y.clone())).await;
                    assert_eq!((dx, dy), (sha256(&x), sha256(&y)), "request {requests}");
                    requests += 2;
                }
                requests
            })
        })
    };
    connected
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the load connected before the first rotation");
    let mut newest = first.to_string();
    for round in 0..20 {
        newest = replace_certificate(&server);
        // SAFETY: kill(2) on the child this test started
        unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
        let log = server.wait_for_log("reloaded: certificate");
        assert!(
            log.last().expect("line").contains(&newest),
            "round {round}: {log:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let requests = load.join().expect("no request failed during the rotations");
    assert!(requests > 0, "the load ran");
    let newest: alknet_runtime::Fingerprint = newest.parse().expect("fp");
    run_client(|| async move {
        let endpoint = client_endpoint();
        let fresh = connect_addr(&endpoint, addr, newest, alknet_echo::ALPN)
            .await
            .expect("a new handshake sees the newest certificate");
        let data = payload(7, 1000);
        assert_eq!(echo_roundtrip(&fresh, data.clone()).await, sha256(&data));
        assert!(
            connect_addr(&endpoint, addr, first, alknet_echo::ALPN)
                .await
                .is_err(),
            "the first certificate is no longer served"
        );
    });
}

#[test]
fn a_sighup_during_start_up_is_held_not_fatal() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(alknet_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("ALKNET_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn alknet");
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // at its first log line the node is still starting (it logs the certificate it
    // generated before its workers and its reloader run): SIGHUP then
    let first = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("a first log line");
    // SAFETY: kill(2) on the child this test started
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = vec![first];
    while std::time::Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => {
                let done = l.contains("reload: nothing changed");
                seen.push(l);
                if done {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    let alive = child.try_wait().expect("wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(alive, "SIGHUP at start-up killed the node: {seen:?}");
    assert!(
        seen.iter().any(|l| l.contains("reload: nothing changed")),
        "the early SIGHUP was applied once the node ran: {seen:?}"
    );
}
