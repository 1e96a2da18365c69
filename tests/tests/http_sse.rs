//! Server-Sent Events over HTTP/1.1 and HTTP/2 with real `curl -N` against the real
//! `alknet serve`: a streaming call operation read to its end, a topic subscription that
//! gets what `node.publish` publishes and ends when the node drains, and the ACL of both.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alknet_tests::*;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN_ADMIN: &str = "admin-token-4567";
const TOKEN_WATCHER: &str = "watcher-token-89ab";
const TOKEN_OTHER: &str = "other-token-cdef";

fn config() -> String {
    format!(
        r#"
[handlers]
enabled = ["alknet/call"]

[[identities]]
name = "admin"
tokens = ["{TOKEN_ADMIN}"]
scopes = ["node:admin"]

[[identities]]
name = "watcher"
tokens = ["{TOKEN_WATCHER}"]
scopes = ["subscribe:node.events"]

[[identities]]
name = "other"
tokens = ["{TOKEN_OTHER}"]
scopes = ["node:metrics"]
"#
    )
}

fn url(server: &BinServer, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", server.port)
}

/// `curl -N` (no buffering) with the server's certificate pinned as the only CA; the
/// response head goes to stdout first (`-i`), then the body as it arrives.
fn curl_cmd(server: &BinServer, args: &[&str]) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "-N", "-i", "--max-time", "50", "--cacert"])
        .arg(server.data_dir.path().join("cert.pem"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn curl(server: &BinServer, args: &[&str]) -> (i32, String) {
    let child = curl_cmd(server, args).spawn().expect("curl");
    let out = wait_output(child, CLIENT_TIMEOUT);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n"),
    )
}

fn status_of(reply: &str) -> u16 {
    reply
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The SSE events of a body: (event type, id, data) per blank-line-separated block,
/// comments left out.
fn events(reply: &str) -> Vec<(String, Option<u64>, String)> {
    let body = reply.split_once("\n\n").map_or("", |(_, b)| b);
    body.split("\n\n")
        .filter_map(|block| {
            let mut kind = "message".to_string();
            let (mut id, mut data) = (None, None::<String>);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    kind = v.to_string();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(v.to_string());
                }
            }
            data.map(|d| (kind, id, d))
        })
        .collect()
}

#[test]
fn a_streaming_call_is_read_to_its_end_over_http1_and_http2() {
    let server = BinServer::start_with_config(&config());
    for version in ["--http1.1", "--http2"] {
        let (code, reply) = curl(
            &server,
            &[
                version,
                "--data",
                r#"{"count":5,"item":{"n":"x"}}"#,
                &url(&server, "/api/call/echo.stream"),
            ],
        );
        assert_eq!(code, 0, "{reply}");
        assert_eq!(status_of(&reply), 200, "{reply}");
        assert!(
            reply
                .to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{reply}"
        );
        let ev = events(&reply);
        assert_eq!(ev.len(), 6, "{reply}");
        for (i, (kind, id, data)) in ev[..5].iter().enumerate() {
            assert_eq!((kind.as_str(), *id), ("item", Some(i as u64)));
            assert_eq!(data, r#"{"n":"x"}"#);
        }
        assert_eq!(ev[5], ("end".to_string(), None, "{}".to_string()));

        // a failure before the first item is a plain JSON error with its status
        let (_, reply) = curl(
            &server,
            &[
                version,
                "--data",
                r#"{"count":-1}"#,
                &url(&server, "/api/call/echo.stream"),
            ],
        );
        assert_eq!(status_of(&reply), 400, "{reply}");
        assert!(reply.contains("INVALID_ARGUMENT"), "{reply}");

        // zero items: the stream is just its end
        let (_, reply) = curl(
            &server,
            &[
                version,
                "--data",
                r#"{"count":0}"#,
                &url(&server, "/api/call/echo.stream"),
            ],
        );
        assert_eq!(status_of(&reply), 200, "{reply}");
        assert_eq!(
            events(&reply),
            vec![("end".to_string(), None, "{}".to_string())]
        );
    }
}

#[test]
fn topic_subscriptions_need_the_subscribe_scope() {
    let server = BinServer::start_with_config(&config());
    let topic = url(&server, "/api/events/node.events");
    let (_, reply) = curl(&server, &["--http2", &topic]);
    assert_eq!(status_of(&reply), 401, "{reply}");
    let bearer = format!("Authorization: Bearer {TOKEN_OTHER}");
    let (_, reply) = curl(&server, &["--http2", "-H", &bearer, &topic]);
    assert_eq!(status_of(&reply), 403, "{reply}");
    assert!(reply.contains("FORBIDDEN"), "{reply}");
    let bearer = format!("Authorization: Bearer {TOKEN_WATCHER}");
    let (_, reply) = curl(
        &server,
        &[
            "--http1.1",
            "-H",
            &bearer,
            &url(&server, "/api/events/nope"),
        ],
    );
    assert_eq!(status_of(&reply), 404, "{reply}");
}

/// Lines of a running child's stdout, as they come.
/// Reads lines until one equals `want`; returns the lines read.
fn read_until(lines: &ChildLines, want: &str) -> Vec<String> {
    lines.until(CLIENT_TIMEOUT, |l| l == want)
}

#[test]
fn published_events_reach_subscribers_until_the_node_drains() {
    let mut server = BinServer::start_with_config(&config());
    let topic = url(&server, "/api/events/node.events");
    let bearer = format!("Authorization: Bearer {TOKEN_WATCHER}");
    let mut subscribers: Vec<(Child, ChildLines)> = ["--http2", "--http1.1"]
        .iter()
        .map(|version| {
            let mut child = curl_cmd(&server, &[version, "-H", &bearer, &topic])
                .spawn()
                .expect("curl");
            let lines = ChildLines::of(&mut child);
            read_until(&lines, ": subscribed");
            (child, lines)
        })
        .collect();

    let admin = format!("Authorization: Bearer {TOKEN_ADMIN}");
    for n in 0..3 {
        let (_, reply) = curl(
            &server,
            &[
                "--http2",
                "-H",
                &admin,
                "--data",
                &format!(r#"{{"data":{{"n":{n}}}}}"#),
                &url(&server, "/api/call/node.publish"),
            ],
        );
        assert_eq!(status_of(&reply), 200, "{reply}");
        assert!(reply.contains(r#""delivered":2"#), "{reply}");
    }
    for (_, lines) in &subscribers {
        for n in 0..3 {
            let seen = read_until(lines, &format!(r#"data: {{"n":{n}}}"#));
            assert_eq!(seen[seen.len() - 2], format!("id: {n}"), "{seen:?}");
        }
    }

    // draining ends the streams (curl sees a clean end) and does not wait for them
    // SAFETY: plain kill(2) on our child process
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    for (child, _) in subscribers.drain(..) {
        let out = wait_output(child, CLIENT_TIMEOUT);
        assert_eq!(
            out.status.code(),
            Some(0),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    server.wait_exit(CLIENT_TIMEOUT);
}

/// A subscriber that stops reading (a small receive buffer, nothing read) while events of
/// 60 KB are published until none is delivered to it any more; then it reads what it has:
/// the events up to where its queue overflowed, `event: lagged`, and the end of the body.
const SLOW_SUBSCRIBER: &str = r#"
import http.client, json, socket, ssl, sys
port, cafile, watcher, admin = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["http/1.1"])
raw = socket.socket()
raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
raw.settimeout(30)
raw.connect(("127.0.0.1", port))
sub = ctx.wrap_socket(raw, server_hostname="localhost")
sub.sendall(("GET /api/events/node.events HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer %s\r\n\r\n" % watcher).encode())
got = b""
while b": subscribed" not in got:
    got += sub.recv(4096)
pub = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(cafile=cafile), timeout=30)
body = json.dumps({"data": {"pad": "x" * 60000}})
published = 0
for i in range(1000):
    pub.request("POST", "/api/call/node.publish", body=body,
                headers={"Authorization": "Bearer " + admin, "Content-Type": "application/json"})
    delivered = json.loads(pub.getresponse().read())["delivered"]
    published += 1
    if delivered == 0:
        break
print("published", published, "last_delivered", delivered)
while not got.endswith(b"0\r\n\r\n"):
    chunk = sub.recv(65536)
    if not chunk:
        break
    got += chunk
text = got.decode("latin-1")
print("events", text.count("data: {\"pad\""))
print("lagged", text.count("event: lagged"))
print("ended", got.endswith(b"0\r\n\r\n"))
"#;

#[test]
fn a_subscriber_that_stops_reading_is_closed_with_lagged() {
    let server = BinServer::start_with_config(&format!(
        "{}\n[http]\nsse_queue_events = 4\nsse_buffer_frames = 1\npublic = [\"/metrics\"]\n",
        config()
    ));
    let cert = server.data_dir.path().join("cert.pem");
    let mut child = Command::new("python3")
        .arg("-")
        .args([
            &server.port.to_string(),
            &cert.display().to_string(),
            TOKEN_WATCHER,
            TOKEN_ADMIN,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(
        &mut child.stdin.take().expect("stdin"),
        SLOW_SUBSCRIBER.as_bytes(),
    )
    .expect("script");
    let out = wait_output(child, CLIENT_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("last_delivered 0"), "{stdout}");
    assert!(stdout.contains("lagged 1"), "{stdout}");
    assert!(stdout.contains("ended True"), "{stdout}");
    let published: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("published "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("published line");
    let events: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("events "))
        .and_then(|n| n.parse().ok())
        .expect("events line");
    // the last publish found it gone; every event before the overflow arrived
    assert!(events < published, "{stdout}");
    let (_, metrics) = curl(&server, &["--http2", &url(&server, "/metrics")]);
    assert!(
        metrics.contains("alknet_http_sse_lagged_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("alknet_http_sse_streams_open 0"),
        "{metrics}"
    );
}

#[test]
fn a_draining_node_sends_goaway_over_http2() {
    let mut server = BinServer::start_with_config(&config());
    // nghttp (nghttp2-client) prints every frame; an open subscription keeps the
    // connection busy until the drain
    let mut child = Command::new("nghttp")
        .args(["-v", "-H"])
        .arg(format!("authorization: Bearer {TOKEN_WATCHER}"))
        .arg(url(&server, "/api/events/node.events"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nghttp (tests/run-all.sh installs nghttp2-client)");
    let lines = ChildLines::of(&mut child);
    let mut seen = lines.until(CLIENT_TIMEOUT, |l| l.contains(": subscribed"));
    // SAFETY: plain kill(2) on our child process
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    let out = wait_output(child, CLIENT_TIMEOUT);
    seen.extend(lines.to_end(CLIENT_TIMEOUT));
    let text = seen.join("\n");
    assert!(text.contains("recv GOAWAY frame"), "{text}");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.wait_exit(CLIENT_TIMEOUT);
}
