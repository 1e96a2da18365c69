//! Live reload of the per-handler sections on the real `alknet serve`: a changed `[call]`,
//! `[git]`, `[http]` or `[dns]` section is validated, its handler rebuilt, and new
//! connections get the new one while connections opened before keep the old one and go
//! on working; a section that fails to validate is refused with the reason and changes
//! nothing; keys that bind sockets at start are refused by name.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::time::Duration;

use alknet_call::CallClient;
use alknet_proto::call::ErrorCode;
use alknet_proto::Fingerprint;
use alknet_runtime::{Bytes, Connection};
use alknet_tests::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::json;

const ADMIN: &str = r#"
[[identities]]
name = "ops"
tokens = ["admin-token"]
scopes = ["node:admin", "subscribe:node.events"]
"#;

/// `alknet reload` against `server` as the admin identity of [`ADMIN`].
fn reload(server: &BinServer) -> Output {
    let child = Command::new(alknet_bin())
        .args(["reload", "--token", "admin-token", "--fingerprint"])
        .arg(server.fingerprint())
        .arg(server.addr())
        .env_remove("ALKNET_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn alknet reload");
    wait_output(child, Duration::from_secs(30))
}

/// Writes `config` as the server's config file and reloads it; returns what changed.
fn reload_ok(server: &BinServer, config: &str) -> String {
    write_config(server, config);
    let out = reload(server);
    assert!(out.status.success(), "reload: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Writes `config` and reloads it, which must be refused; returns the reason.
fn reload_refused(server: &BinServer, config: &str) -> String {
    write_config(server, config);
    let out = reload(server);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    text(&out.stderr)
}

fn write_config(server: &BinServer, config: &str) {
    std::fs::write(server.data_dir.path().join("config.toml"), config).expect("config");
}

fn target(server: &BinServer) -> (std::net::SocketAddr, Fingerprint) {
    (
        server.addr().parse().expect("addr"),
        Fingerprint::from_str(&server.fingerprint()).expect("fingerprint"),
    )
}

#[test]
fn a_reloaded_call_section_serves_new_connections_and_open_ones_keep_theirs() {
    let server = BinServer::start_with_config(ADMIN);
    let (addr, fp) = target(&server);
    let big = json!({ "blob": "x".repeat(40_000) });
    let small = json!({ "n": 1 });
    run_client(|| async move {
        let ep = client_endpoint();
        let open = connect_addr(&ep, addr, fp, alknet_call::ALPN)
            .await
            .expect("connect");
        let old = CallClient::new(&open).await.expect("call client");
        assert_eq!(
            old.call("echo", big.clone()).await.expect("1 MiB frames"),
            big
        );
        old.set_default_token(Some("admin-token".into()));
        let mut events = old.subscribe("node.events").await.expect("subscribe");

        let changed = reload_ok(
            &server,
            &format!("{ADMIN}\n[call]\nmax_frame_size = 16384\n"),
        );
        assert!(changed.contains("[call]"), "{changed}");

        // a new connection gets the new limit
        let fresh = connect_addr(&ep, addr, fp, alknet_call::ALPN)
            .await
            .expect("connect");
        let new = CallClient::new(&fresh).await.expect("call client");
        let refused = new.call("echo", big.clone()).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.code == ErrorCode::InvalidArgument),
            "a 40 kB frame past the reloaded 16 kB limit: {refused:?}"
        );
        assert_eq!(new.call("echo", small.clone()).await.expect("small"), small);
        // one topic bus across the reload: published through the new node, received by a
        // subscriber on a connection served by the old one
        let admin = alknet_call::CallOptions {
            auth_token: Some("admin-token".into()),
            ..Default::default()
        };
        let published = new
            .call_with(
                "node.publish",
                json!({ "data": { "after": "reload" } }),
                &admin,
            )
            .await
            .expect("publish");
        assert_eq!(published["delivered"], 1, "{published}");
        let event = events.next().await.expect("an event").expect("event");
        assert_eq!(event.data, json!({ "after": "reload" }));
        // the connection opened before the reload keeps the handler it was served by
        assert_eq!(
            old.call("echo", big.clone()).await.expect("old limit"),
            big,
            "the open connection still works, with its limits"
        );

        // a section that does not validate: refused with the reason, nothing changes
        let why = reload_refused(&server, &format!("{ADMIN}\n[call]\nmax_frame_size = 0\n"));
        assert!(why.contains("call.max_frame_size"), "{why}");
        let after = connect_addr(&ep, addr, fp, alknet_call::ALPN)
            .await
            .expect("connect");
        let after = CallClient::new(&after).await.expect("call client");
        assert!(
            after.call("echo", big.clone()).await.is_err(),
            "16 kB still"
        );
        assert_eq!(
            after.call("echo", small.clone()).await.expect("small"),
            small
        );
        assert_eq!(old.call("echo", small.clone()).await.expect("old"), small);
    });
}

/// Sends `bytes` on a new stream, finishes it, and returns all the server said.
async fn exchange(conn: &Connection, bytes: &[u8]) -> String {
    let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
    send.write_chunk(Bytes::copy_from_slice(bytes))
        .await
        .expect("write");
    send.finish().expect("finish");
    let mut got = Vec::new();
    while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024).await {
        got.extend_from_slice(&chunk);
    }
    text(&got)
}

#[test]
fn a_reloaded_git_section_serves_new_connections_and_open_ones_keep_theirs() {
    if git::require_git().is_none() {
        return;
    }
    let base =
        "[handlers]\nenabled = [\"alknet/git\", \"alknet/call\"]\n[identity]\nsqlite = false\n";
    let config = |public: &str| format!("{base}{ADMIN}\n[git]\npublic_read = {public}\n");
    let server = BinServer::start_with_config(&config(r#"["pub"]"#));
    let root = server.data_dir.path().join("git");
    for repo in ["pub.git", "open.git"] {
        alknet_git::repo::create_bare(&root, repo, "main").expect("repo");
    }
    let (addr, fp) = target(&server);
    let ls = |path: &str| {
        alknet_git::encode_request(alknet_git::Service::UploadPack, path, None, Some(2), None)
    };
    let url = format!("alknet://{}/open.git", server.addr());
    let clone = |dir: &std::path::Path| {
        let mut cmd = git::git_cmd(dir);
        cmd.env("ALKNET_FINGERPRINT", server.fingerprint())
            .env_remove("ALKNET_TOKEN")
            .args(["clone", "-q", &url, "c"]);
        git::run(cmd)
    };
    let work = tempfile::tempdir().expect("tempdir");
    assert!(
        !clone(work.path()).status.success(),
        "open is not public yet"
    );
    let (server, clone) = (&server, &clone);
    run_client(|| async move {
        let ep = client_endpoint();
        let open = connect_addr(&ep, addr, fp, alknet_git::ALPN)
            .await
            .expect("connect");
        assert!(exchange(&open, &ls("/pub.git")).await.contains("version 2"));
        assert!(exchange(&open, &ls("/open.git")).await.contains("ERR "));

        let changed = reload_ok(server, &config(r#"["pub", "open"]"#));
        assert!(changed.contains("[git]"), "{changed}");

        // a real git clone (a new connection) may read it now
        let work = tempfile::tempdir().expect("tempdir");
        let out = clone(work.path());
        assert!(out.status.success(), "{}", text(&out.stderr));
        let fresh = connect_addr(&ep, addr, fp, alknet_git::ALPN)
            .await
            .expect("connect");
        assert!(exchange(&fresh, &ls("/open.git"))
            .await
            .contains("version 2"));
        // the connection opened before keeps the handler it had: still served, as before
        assert!(exchange(&open, &ls("/pub.git")).await.contains("version 2"));
        assert!(exchange(&open, &ls("/open.git")).await.contains("ERR "));

        // a root that cannot be created: refused, the running handler stays
        let file = server.data_dir.path().join("not-a-dir");
        std::fs::write(&file, "x").expect("file");
        let why = reload_refused(
            server,
            &format!(
                "{}root = {:?}\n",
                config(r#"["pub", "open"]"#),
                file.join("git")
            ),
        );
        assert!(why.contains("nothing was changed"), "{why}");
        let after = connect_addr(&ep, addr, fp, alknet_git::ALPN)
            .await
            .expect("connect");
        assert!(exchange(&after, &ls("/open.git"))
            .await
            .contains("version 2"));
    });
}

/// A Python HTTP/1.1 keep-alive client: prints the status of `GET /metrics` without a
/// token, then again on the same connection for each line read from stdin.
const KEEP_ALIVE: &str = r#"
import socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
s.settimeout(30)
f = s.makefile("rb")
def get():
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
    status = f.readline().split()[1].decode()
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
    f.read(length)
    print(status, flush=True)
get()
for _ in sys.stdin:
    get()
"#;

#[test]
fn a_reloaded_http_section_serves_new_connections_and_open_ones_keep_theirs() {
    let config = |public: &str| format!("{ADMIN}\n[http]\npublic = {public}\n");
    let server = BinServer::start_with_config(&config("[]"));
    let cert = server.data_dir.path().join("cert.pem");
    let curl = |server: &BinServer| {
        let child = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "30",
            ])
            .arg("--cacert")
            .arg(&cert)
            .arg(format!("https://127.0.0.1:{}/metrics", server.port))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl (tests/run-all.sh installs it)");
        text(&wait_output(child, Duration::from_secs(30)).stdout)
    };
    assert_eq!(curl(&server), "401");
    let mut python = Command::new("python3")
        .args(["-c", KEEP_ALIVE, &server.port.to_string()])
        .arg(&cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut ask = python.stdin.take().expect("stdin");
    let mut answers = BufReader::new(python.stdout.take().expect("stdout")).lines();
    let mut status = move || {
        answers
            .next()
            .expect("an answer")
            .expect("read the python client")
    };
    assert_eq!(status(), "401", "before the reload");

    let changed = reload_ok(&server, &config(r#"["/metrics"]"#));
    assert!(changed.contains("[http]"), "{changed}");
    // a new connection gets the new routes' state; the keep-alive one keeps its own
    assert_eq!(curl(&server), "200");
    writeln!(ask, "again").expect("ask");
    assert_eq!(
        status(),
        "401",
        "the open connection keeps its handler and works"
    );

    // a static root that cannot be opened: refused with the reason, nothing changes
    let missing = server.data_dir.path().join("no-such-dir");
    let why = reload_refused(
        &server,
        &format!("{}static_root = {missing:?}\n", config("[]")),
    );
    assert!(why.contains("static_root"), "{why}");
    assert_eq!(curl(&server), "200", "still public");
    writeln!(ask, "again").expect("ask");
    assert_eq!(status(), "401");
    drop(ask);
    let out = wait_output(python, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_str(name).expect("name"),
        RecordType::A,
    ));
    let wire = m.to_vec().expect("encode");
    let mut out = (wire.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&wire);
    out
}

/// The A records a DoQ query for `name` gets on `conn`.
async fn doq_a(conn: &Connection, name: &str) -> Vec<String> {
    let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
    send.write_all(&query(name)).await.expect("write");
    send.finish().expect("finish");
    let wire = recv.read_to_end(70_000).await.expect("read answer");
    let answer = Message::from_vec(&wire[2..]).expect("decode answer");
    answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_reloaded_dns_section_serves_its_zones_everywhere_and_refuses_bad_ones() {
    let zones = tempfile::tempdir().expect("tempdir");
    let com = zones.path().join("example.com.zone");
    let org = zones.path().join("example.org.zone");
    let broken = zones.path().join("broken.zone");
    std::fs::write(
        &com,
        "$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 300\n@ IN NS ns\nns IN A 192.0.2.1\nwww IN A 192.0.2.10\n",
    )
    .expect("zone");
    std::fs::write(
        &org,
        "$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 300\n@ IN NS ns\nns IN A 198.51.100.1\nwww IN A 198.51.100.10\n",
    )
    .expect("zone");
    std::fs::write(
        &broken,
        "$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 300\nwww IN A 300.1.2.3\n",
    )
    .expect("zone");
    let zone = |origin: &str, file: &std::path::Path| {
        format!("[[dns.zones]]\norigin = \"{origin}\"\nfile = {file:?}\n")
    };
    let config = move |port: u16, zones: &str| {
        format!(
            "{ADMIN}\n[handlers]\nenabled = [\"doq\", \"alknet/call\"]\n\
             [dns]\nreload_interval_ms = 100\n\
             udp_listen = \"127.0.0.1:{port}\"\ntcp_listen = \"127.0.0.1:{port}\"\n{zones}"
        )
    };
    let one = zone("example.com.", &com);
    let two = format!("{one}{}", zone("example.org.", &org));
    let (server, port) = BinServer::start_with_port_config(|port| config(port, &one));
    let (addr, fp) = target(&server);
    run_client(|| async move {
        let ep = client_endpoint();
        let open = connect_addr(&ep, addr, fp, alknet_dns::DOQ_ALPN)
            .await
            .expect("connect");
        assert_eq!(doq_a(&open, "www.example.com.").await, ["192.0.2.10"]);
        assert!(doq_a(&open, "www.example.org.").await.is_empty());

        let changed = reload_ok(&server, &config(port, &two));
        assert!(changed.contains("[dns]"), "{changed}");
        // new connections, the classic listener and the open connection: one catalog
        let fresh = connect_addr(&ep, addr, fp, alknet_dns::DOQ_ALPN)
            .await
            .expect("connect");
        assert_eq!(doq_a(&fresh, "www.example.org.").await, ["198.51.100.10"]);
        assert_eq!(
            dns::dig_short(port, &["www.example.org.", "A"]),
            ["198.51.100.10"]
        );
        assert_eq!(doq_a(&open, "www.example.org.").await, ["198.51.100.10"]);
        assert_eq!(doq_a(&open, "www.example.com.").await, ["192.0.2.10"]);
        // the zone-file watcher follows the reloaded list: an edit of the new zone is served
        let mut edited = std::fs::read_to_string(&org).expect("zone");
        edited.push_str("new IN A 198.51.100.7\n");
        // replaced by rename, as editors do: the watcher never sees a half-written file
        let next = org.with_extension("next");
        std::fs::write(&next, edited).expect("edit zone");
        std::fs::rename(&next, &org).expect("replace zone");
        server.wait_for_log("dns zone reloaded");
        // bounded: the watcher polls every 100 ms
        let mut seen = Vec::new();
        for _ in 0..100 {
            seen = doq_a(&open, "new.example.org.").await;
            if !seen.is_empty() {
                break;
            }
            monoio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, ["198.51.100.7"], "the edited zone is served");

        // a zone that does not load: refused naming its line, the zones served stay
        let why = reload_refused(
            &server,
            &config(port, &format!("{two}{}", zone("example.net.", &broken))),
        );
        assert!(why.contains("broken.zone") && why.contains("line"), "{why}");
        let after = connect_addr(&ep, addr, fp, alknet_dns::DOQ_ALPN)
            .await
            .expect("connect");
        assert_eq!(doq_a(&after, "www.example.org.").await, ["198.51.100.10"]);
        assert_eq!(
            dns::dig_short(port, &["www.example.com.", "A"]),
            ["192.0.2.10"]
        );

        // the classic listener's socket is bound at start: refused by name
        let moved = config(port, &two).replace(
            &format!("udp_listen = \"127.0.0.1:{port}\""),
            "udp_listen = \"127.0.0.1:1\"",
        );
        let why = reload_refused(&server, &moved);
        assert!(
            why.contains("dns.udp_listen") && why.contains("restart"),
            "{why}"
        );
        assert_eq!(doq_a(&open, "www.example.org.").await, ["198.51.100.10"]);
    });
}
