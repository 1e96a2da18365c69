//! HTTP/1.1 and HTTP/2 over TLS/TCP on the QUIC port, driven by real clients against the
//! real `alknet serve`: curl (certificate pinned), h2load (nghttp2) and Python's ssl
//! module (slowloris, a refused ALPN), with `/metrics` checked by the `prometheus_client`
//! OpenMetrics parser after aioquic opened streams on `alknet/echo`, and scraped by the real
//! Prometheus. `tests/run-all.sh` installs curl, nghttp2-client, prometheus,
//! prometheus-client and aioquic.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use alknet_tests::*;

/// Every client run ends within this, or the test fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

const TOKEN_METRICS: &str = "metrics-token-0123";
const TOKEN_ADMIN: &str = "admin-token-4567";

fn config(extra: &str) -> String {
    format!(
        r#"
[handlers]
enabled = ["alknet/echo", "alknet/call", "h3"]

[[identities]]
name = "scraper"
tokens = ["{TOKEN_METRICS}"]
scopes = ["node:metrics"]

[[identities]]
name = "admin"
tokens = ["{TOKEN_ADMIN}"]
scopes = ["node:admin"]
{extra}
"#
    )
}

struct Reply {
    status: u16,
    version: String,
    headers: String,
    body: String,
}

/// The reply's headers in lower case, to look for a header line whatever its case.
fn lower(r: &Reply) -> String {
    r.headers.to_ascii_lowercase()
}

/// `curl` with the server's certificate as the only CA, plus `args`.
fn curl(server: &BinServer, args: &[&str]) -> Reply {
    let cert = server.data_dir.path().join("cert.pem");
    let headers = tempfile::NamedTempFile::new().expect("tempfile");
    let child = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(&cert)
        .arg("-D")
        .arg(headers.path())
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl (tests/run-all.sh installs it)");
    let out = wait_output(child, CLIENT_TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').expect("curl -w line");
    let mut tail = tail.split(' ');
    let status = tail.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Reply {
        status,
        version: tail.next().unwrap_or_default().to_string(),
        headers: std::fs::read_to_string(headers.path()).unwrap_or_default(),
        body: body.to_string(),
    }
}

fn url(server: &BinServer, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", server.port)
}

fn json(r: &Reply) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body))
}

/// The server's public-key pin, as `curl --pinnedpubkey` wants it.
fn pinned_pubkey(server: &BinServer) -> String {
    format!("sha256//{}", server.spki_sha256_base64())
}

#[test]
fn health_metrics_and_calls_over_http1_and_http2() {
    let server = BinServer::start_with_config(&config(""));
    for version in ["--http1.1", "--http2"] {
        let want = if version == "--http2" { "2" } else { "1.1" };
        let r = curl(&server, &[version, &url(&server, "/health")]);
        assert_eq!((r.status, r.version.as_str()), (200, want), "{}", r.body);
        assert_eq!(json(&r)["status"], "serving");
        assert!(
            lower(&r).contains(&format!("alt-svc: h3=\":{}\"", server.port)),
            "{}",
            r.headers
        );

        // a public operation, anonymous
        let r = curl(
            &server,
            &[
                version,
                "-X",
                "POST",
                "--data",
                r#"{"x":[1,2]}"#,
                &url(&server, "/api/call/echo"),
            ],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(json(&r), serde_json::json!({"x": [1, 2]}));

        // node.stats needs node:admin: anonymous 401, a token without it 403, with it 200
        let stats = url(&server, "/api/call/node.stats");
        let r = curl(&server, &[version, "-X", "POST", &stats]);
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(json(&r)["error"]["code"], "UNAUTHENTICATED");
        let bearer = format!("Authorization: Bearer {TOKEN_METRICS}");
        let r = curl(&server, &[version, "-X", "POST", "-H", &bearer, &stats]);
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(json(&r)["error"]["code"], "FORBIDDEN");
        let bearer = format!("Authorization: Bearer {TOKEN_ADMIN}");
        let r = curl(&server, &[version, "-X", "POST", "-H", &bearer, &stats]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(json(&r).is_object());
        let r = curl(
            &server,
            &[
                version,
                "-X",
                "POST",
                "-H",
                "Authorization: Bearer wrong",
                &stats,
            ],
        );
        assert_eq!(r.status, 401, "{}", r.body);

        // unknown operation, bad JSON
        let r = curl(
            &server,
            &[version, "-X", "POST", &url(&server, "/api/call/nope")],
        );
        assert_eq!(
            (r.status, json(&r)["error"]["code"].as_str()),
            (404, Some("NOT_FOUND"))
        );
        let r = curl(
            &server,
            &[
                version,
                "-X",
                "POST",
                "--data",
                "{oops",
                &url(&server, "/api/call/echo"),
            ],
        );
        assert_eq!(
            (r.status, json(&r)["error"]["code"].as_str()),
            (400, Some("INVALID_ARGUMENT"))
        );

        // metrics: scope node:metrics
        let r = curl(&server, &[version, &url(&server, "/metrics")]);
        assert_eq!(r.status, 401, "{}", r.body);
        let bearer = format!("Authorization: Bearer {TOKEN_METRICS}");
        let r = curl(
            &server,
            &[version, "-H", &bearer, &url(&server, "/metrics")],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r
            .body
            .contains("alknet_worker_tcp_accepted_total{worker=\"0\"}"));

        // OpenAPI lists the public operations for an anonymous caller, node.stats for admin
        let r = curl(&server, &[version, &url(&server, "/openapi.json")]);
        let doc = json(&r);
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"].get("/api/call/echo").is_some());
        assert!(doc["paths"].get("/api/call/node.stats").is_none());
        let bearer = format!("Authorization: Bearer {TOKEN_ADMIN}");
        let r = curl(
            &server,
            &[version, "-H", &bearer, &url(&server, "/openapi.json")],
        );
        assert!(json(&r)["paths"].get("/api/call/node.stats").is_some());
        // gzip for a client that takes it: curl inflates the same document
        let plain = curl(&server, &[version, &url(&server, "/openapi.json")]);
        assert!(
            !lower(&plain).contains("content-encoding"),
            "{}",
            plain.headers
        );
        let z = curl(
            &server,
            &[version, "--compressed", &url(&server, "/openapi.json")],
        );
        assert!(
            lower(&z).contains("content-encoding: gzip"),
            "{}",
            z.headers
        );
        assert!(lower(&z).contains("vary: accept-encoding"), "{}", z.headers);
        assert_eq!(json(&z), json(&plain));
    }

    // the certificate pinned by its public key instead of a CA file
    let pin = pinned_pubkey(&server);
    let r = curl(
        &server,
        &[
            "--http2",
            "--insecure",
            "--pinnedpubkey",
            &pin,
            &url(&server, "/health"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let wrong = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let r = curl(
        &server,
        &[
            "--http2",
            "--insecure",
            "--pinnedpubkey",
            wrong,
            &url(&server, "/health"),
        ],
    );
    assert_eq!(r.status, 0, "a wrong pin must fail the connection");
}

#[test]
fn oversized_bodies_and_headers_are_refused() {
    let server = BinServer::start_with_config(&config(
        "[http]\nmax_body_bytes = 1000\nmax_header_bytes = 8192\nmax_headers = 50\n",
    ));
    let big = server.data_dir.path().join("big.json");
    std::fs::write(&big, format!("\"{}\"", "a".repeat(5000))).expect("write");
    let small = format!("@{}", big.display());
    let huge_header = format!("X-Big: {}", "b".repeat(20_000));
    let many: Vec<String> = (0..60)
        .flat_map(|i| ["-H".into(), format!("X-H{i}: v")])
        .collect();
    for version in ["--http1.1", "--http2"] {
        let r = curl(
            &server,
            &[
                version,
                "-X",
                "POST",
                "--data-binary",
                &small,
                &url(&server, "/api/call/echo"),
            ],
        );
        assert_eq!(r.status, 413, "{version}: {}", r.body);
        let r = curl(
            &server,
            &[version, "-H", &huge_header, &url(&server, "/health")],
        );
        assert_eq!(r.status, 431, "{version}: {}", r.body);
        // the server still serves
        let r = curl(&server, &[version, &url(&server, "/health")]);
        assert_eq!(r.status, 200);
    }
    let mut args: Vec<&str> = vec!["--http1.1"];
    args.extend(many.iter().map(String::as_str));
    let health = url(&server, "/health");
    args.push(&health);
    let r = curl(&server, &args);
    assert_eq!(r.status, 431, "{}", r.body);
}

/// Runs a Python script with `args`; returns its stdout, failing on a non-zero exit.
fn python(script: &str, args: &[&str]) -> String {
    let mut child = Command::new("python3")
        .arg("-")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("script");
    let out = wait_output(child, CLIENT_TIMEOUT);
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const SLOWLORIS: &str = r#"
import socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["http/1.1"])
def connect():
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    s.settimeout(30)
    return s
# a whole request is answered on the same connection
s = connect()
s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
print("complete:", s.recv(4096).split(b"\r\n")[0].decode())
# a head that never ends: the server closes the connection (recv returns b"" or resets)
s = connect()
s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
try:
    while True:
        data = s.recv(4096)
        if not data:
            print("slow: closed")
            break
        if b"408" in data:
            # hyper may answer 408 before closing
            continue
except (ConnectionResetError, ssl.SSLError, ssl.SSLEOFError):
    print("slow: closed")
except socket.timeout:
    print("slow: still open")
"#;

#[test]
fn a_slowloris_client_is_cut_off() {
    let server = BinServer::start_with_config(&config("[http]\nheader_read_timeout_ms = 1000\n"));
    let cert = server.data_dir.path().join("cert.pem");
    let out = python(
        SLOWLORIS,
        &[&server.port.to_string(), &cert.display().to_string()],
    );
    assert!(out.contains("complete: HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("slow: closed"), "{out}");
}

const H2_IDLE: &str = r#"
import socket, ssl, struct, sys, time
port, cafile = int(sys.argv[1]), sys.argv[2]
# "ack": acknowledge the server's PINGs, as a client must; "ignore": never do
ack_server_pings = sys.argv[3] == "ack"
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["h2"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
buf = b""
def frames(until):
    """Frame types read until `until` (monotonic) or the connection closes (None last)."""
    global buf
    kinds = []
    while time.monotonic() < until:
        s.settimeout(max(0.01, until - time.monotonic()))
        try:
            data = s.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            kinds.append(None)
            return kinds
        buf += data
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n, kind, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
            # as a client must: acknowledge SETTINGS and PINGs (a graceful shutdown
            # waits for the PING it sends with its first GOAWAY)
            if kind == 4 and not flags & 1:
                s.sendall(frame(4, 1, 0))
            if kind == 6 and not flags & 1 and ack_server_pings:
                s.sendall(frame(6, 1, 0, buf[9:9 + n]))
            kinds.append(kind if kind != 6 or flags & 1 else "server-ping")
            buf = buf[9 + n:]
    return kinds
# busy: a PING every 0.4 s for 3 s, twice the idle timeout: no GOAWAY
seen = []
start = time.monotonic()
while time.monotonic() - start < 3.0:
    s.sendall(frame(6, 0, 0, b"12345678"))
    seen += frames(time.monotonic() + 0.4)
print("busy: pings acked", seen.count(6) >= 5, "goaway", 7 in seen, "closed", None in seen)
# idle: GOAWAY and close within the timeout plus the watch interval
last = time.monotonic()
seen = frames(last + 10)
print("idle: goaway", 7 in seen, "closed", None in seen, "after %.1f s" % (time.monotonic() - last))
"#;

/// How long after the client went quiet [`H2_IDLE`] saw the connection closed.
fn closed_after(out: &str) -> f64 {
    out.rsplit("after ")
        .next()
        .and_then(|t| t.trim().trim_end_matches(" s").parse().ok())
        .unwrap_or_else(|| panic!("{out}"))
}

#[test]
fn an_idle_http2_connection_is_closed_and_a_busy_one_is_not() {
    let server =
        BinServer::start_with_config(&config("[http]\nkeep_alive_idle_timeout_ms = 1500\n"));
    let cert = server.data_dir.path().join("cert.pem");
    let out = python(
        H2_IDLE,
        &[&server.port.to_string(), &cert.display().to_string(), "ack"],
    );
    assert!(
        out.contains("busy: pings acked True goaway False closed False"),
        "{out}"
    );
    assert!(out.contains("idle: goaway True closed True"), "{out}");
    // the watch runs once a second: closed between 1.5 s and 1.5 s + 1 s (+ slack)
    let after = closed_after(&out);
    assert!((1.4..5.0).contains(&after), "{out}");
}

/// hyper's graceful HTTP/2 shutdown waits for the client to acknowledge the PING it sends
/// with its GOAWAY; a client that never does is closed `graceful_close_timeout_ms` later.
#[test]
fn an_idle_http2_client_that_ignores_the_goaway_ping_is_closed_after_the_grace() {
    let server = BinServer::start_with_config(&config(
        "[http]\nkeep_alive_idle_timeout_ms = 1500\ngraceful_close_timeout_ms = 2000\n",
    ));
    let cert = server.data_dir.path().join("cert.pem");
    let out = python(
        H2_IDLE,
        &[
            &server.port.to_string(),
            &cert.display().to_string(),
            "ignore",
        ],
    );
    assert!(out.contains("idle: goaway True closed True"), "{out}");
    // GOAWAY 1.5-2.5 s after the last byte, the close 2-3 s after that (the watch runs once
    // a second), plus slack; without the grace the connection stays open past the 10 s
    let after = closed_after(&out);
    assert!((3.4..8.0).contains(&after), "{out}");
}

const H1_STALLED_READER: &str = r#"
import socket, ssl, sys, time
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["http/1.1"])
raw = socket.socket()
raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
raw.connect(("127.0.0.1", port))
s = ctx.wrap_socket(raw, server_hostname="localhost")
# ask for 1 GiB and take none of it: the server's writes stall once the buffers are full
s.sendall(b"GET /bytes/1073741824 HTTP/1.1\r\nHost: localhost\r\n\r\n")
time.sleep(7)
# then read: a closed connection gives what the buffers held and its end, at once
got, end = 0, "none"
deadline = time.monotonic() + 3
try:
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        data = s.recv(1 << 20)
        if not data:
            end = "eof"
            break
        got += len(data)
except (ConnectionResetError, ssl.SSLError, ssl.SSLEOFError):
    end = "reset"
except socket.timeout:
    end = "timeout"
print("stalled: end", end, "closed", end in ("eof", "reset") and got < (64 << 20), "bytes", got)
"#;

/// An HTTP/1.1 client that asks for a large body and never reads it: no byte moves, so
/// after `keep_alive_idle_timeout_ms` the connection is shut down gracefully, and as the
/// response in flight can never end, `graceful_close_timeout_ms` later it is closed.
#[test]
fn an_http1_client_that_stops_reading_is_closed() {
    let server = BinServer::start_with_config(&config(
        "[http]\ndiagnostics = true\nkeep_alive_idle_timeout_ms = 1500\ngraceful_close_timeout_ms = 2000\n",
    ));
    let cert = server.data_dir.path().join("cert.pem");
    let out = python(
        H1_STALLED_READER,
        &[&server.port.to_string(), &cert.display().to_string()],
    );
    assert!(
        out.contains("stalled: end eof closed True")
            || out.contains("stalled: end reset closed True"),
        "{out}"
    );
}

const ALPN_PROBE: &str = r#"
import socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
for offer in (["h2"], ["http/1.1"], None, ["alknet/echo"], ["perf"], ["h3"]):
    ctx = ssl.create_default_context(cafile=cafile)
    if offer:
        ctx.set_alpn_protocols(offer)
    try:
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
        print(offer, "->", s.selected_alpn_protocol())
        s.close()
    except ssl.SSLError as e:
        print(offer, "-> refused", str(e))
"#;

#[test]
fn tcp_alpn_routes_http_and_refuses_others() {
    let server = BinServer::start_with_config(&config(""));
    let cert = server.data_dir.path().join("cert.pem");
    let out = python(
        ALPN_PROBE,
        &[&server.port.to_string(), &cert.display().to_string()],
    );
    assert!(out.contains("['h2'] -> h2"), "{out}");
    assert!(out.contains("['http/1.1'] -> http/1.1"), "{out}");
    assert!(out.contains("None -> None"), "{out}");
    // `[tcp] stream_alpns` services are (alknet/echo by default); QUIC-only ALPNs are not
    assert!(out.contains("['alknet/echo'] -> alknet/echo"), "{out}");
    assert!(
        out.contains("['perf'] -> refused [SSL] tlsv1 alert no application protocol"),
        "{out}"
    );
    assert!(
        out.contains("['h3'] -> refused [SSL] tlsv1 alert no application protocol"),
        "{out}"
    );
}

/// `h2load`'s summary: (requests done, succeeded, 2xx).
fn h2load(server: &BinServer, args: &[&str]) -> String {
    let child = Command::new("h2load")
        .args(args)
        .arg(url(server, "/health"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("h2load (nghttp2-client; tests/run-all.sh installs it)");
    let out = wait_output(child, CLIENT_TIMEOUT);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn h2load_gets_every_request_answered_200() {
    let server = BinServer::start_with_config(&config(""));
    // HTTP/2: 4 connections, 10 streams each in flight
    let out = h2load(&server, &["-n", "2000", "-c", "4", "-m", "10"]);
    assert!(
        out.contains(
            "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"
        ),
        "{out}"
    );
    assert!(
        out.contains("status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx"),
        "{out}"
    );
    // HTTP/1.1 keep-alive
    let out = h2load(&server, &["--h1", "-n", "1000", "-c", "4"]);
    assert!(
        out.contains(
            "requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored"
        ),
        "{out}"
    );
    assert!(
        out.contains("status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx"),
        "{out}"
    );
}

/// Bidirectional streams the aioquic echo client opens before `/metrics` is scraped.
const ECHO_STREAMS: u64 = 5;

const PARSE_METRICS: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = sys.stdin.read() if False else open(sys.argv[1]).read()
families = {f.name: f for f in text_string_to_metric_families(text)}
for name in ("alknet_worker_tcp_accepted", "alknet_worker_datagrams_received",
             "alknet_http_requests", "alknet_worker_tcp_open", "alknet_draining",
             "alknet_call_requests", "alknet_call_errors"):
    fam = families[name]
    print(name, fam.type, len(fam.samples))
accepted = sum(s.value for s in families["alknet_worker_tcp_accepted"].samples
               if s.name.endswith("_total"))
print("tcp_accepted", int(accepted))
ok = [s for s in families["alknet_http_requests"].samples
      if s.labels.get("route") == "/health" and s.labels.get("status") == "200"]
print("health_200", int(sum(s.value for s in ok)))
nf = [s for s in families["alknet_call_errors"].samples if s.labels.get("code") == "NOT_FOUND"]
print("call_not_found", int(sum(s.value for s in nf)))
for name in ("alknet_alpn_connections_open", "alknet_alpn_connections_accepted",
             "alknet_http_sse_streams_open", "alknet_http_sse_lagged"):
    print(name, families[name].type)
for s in families["alknet_alpn_connections_accepted"].samples:
    if s.name.endswith("_total"):
        print("alpn_accepted", s.labels["alpn"], int(s.value))
for s in families["alknet_alpn_streams"].samples:
    if s.name.endswith("_total"):
        l = s.labels
        print("alpn_streams", l["alpn"], l["dir"], l["initiator"], int(s.value))
"#;

#[test]
fn metrics_parse_as_openmetrics() {
    let server = BinServer::start_with_config(&config("[http]\npublic = [\"/metrics\"]\n"));
    for _ in 0..3 {
        assert_eq!(
            curl(&server, &["--http2", &url(&server, "/health")]).status,
            200
        );
    }
    let r = curl(
        &server,
        &["--http2", "-X", "POST", &url(&server, "/api/call/nope")],
    );
    assert_eq!(r.status, 404);
    // one QUIC connection of ALPN alknet/call, by the alknet CLI
    let child = Command::new(alknet_bin())
        .args([
            "call",
            "--fingerprint",
            &server.fingerprint(),
            &server.addr(),
            "node.info",
        ])
        .env_remove("ALKNET_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("alknet call");
    let out = wait_output(child, CLIENT_TIMEOUT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // aioquic on alknet/echo: ECHO_STREAMS bidirectional streams and one unidirectional
    // stream, which the server echoes on one unidirectional stream of its own; every echo
    // is read back before the script ends, so the handler has accepted (and opened) them all
    require_aioquic();
    let child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/interop/aioquic_echo.py"
        ))
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.port.to_string())
        .arg("--fingerprint")
        .arg(server.fingerprint())
        .args(["--streams", &ECHO_STREAMS.to_string(), "--max-size", "4096"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    // the script bounds itself (160 s); this is the backstop
    let out = wait_output(child, Duration::from_secs(200));
    assert!(
        out.status.success(),
        "aioquic echo failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // public: no token needed
    let r = curl(&server, &["--http1.1", &url(&server, "/metrics")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.headers.contains("application/openmetrics-text"),
        "{}",
        r.headers
    );
    let file = server.data_dir.path().join("metrics.txt");
    std::fs::write(&file, format!("{}\n", r.body.trim_end())).expect("write");
    let out = python(PARSE_METRICS, &[&file.display().to_string()]);
    assert!(
        out.contains("alknet_worker_tcp_accepted counter 2"),
        "{out}"
    );
    assert!(out.contains("alknet_worker_tcp_open gauge 2"), "{out}");
    assert!(out.contains("alknet_draining gauge 1"), "{out}");
    // 3 health requests, the call and this scrape: 5 TCP connections at least
    let accepted: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("tcp_accepted "))
        .and_then(|v| v.parse().ok())
        .expect("tcp_accepted line");
    assert!(accepted >= 5, "{out}\n{}", r.body);
    assert!(out.contains("health_200 3"), "{out}");
    assert!(out.contains("call_not_found 1"), "{out}");
    assert!(
        out.contains("alknet_call_errors counter 7"),
        "one sample per code: {out}"
    );
    assert!(out.contains("alknet_alpn_connections_open gauge"), "{out}");
    assert!(out.contains("alknet_http_sse_streams_open gauge"), "{out}");
    assert!(out.contains("alknet_http_sse_lagged counter"), "{out}");
    assert!(out.contains("alpn_accepted alknet/call 1\n"), "{out}");
    assert!(out.contains("alpn_accepted h3 0\n"), "{out}");
    // `alknet call` asks one operation: one bidirectional stream it opened
    assert!(
        out.contains("alpn_streams alknet/call bidi peer 1\n"),
        "{out}"
    );
    assert!(
        out.contains("alpn_streams alknet/call uni peer 0\n"),
        "{out}"
    );
    assert!(
        out.contains("alpn_streams alknet/call bidi local 0\n"),
        "{out}"
    );
    assert!(out.contains("alpn_streams h3 bidi peer 0\n"), "{out}");
    // exactly what aioquic opened on alknet/echo, and the one stream the server opened
    assert!(out.contains("alpn_accepted alknet/echo 1\n"), "{out}");
    for (dir, initiator, n) in [
        ("bidi", "peer", ECHO_STREAMS),
        ("uni", "peer", 1),
        ("bidi", "local", 0),
        ("uni", "local", 1),
    ] {
        assert!(
            out.contains(&format!("alpn_streams alknet/echo {dir} {initiator} {n}\n")),
            "alknet/echo {dir} {initiator} should be {n}: {out}"
        );
    }
    // asked for gzip (as every Prometheus scrape asks), over both protocols: a gzip body
    // that curl inflates into the same families; a plain answer says it varies too
    assert!(lower(&r).contains("vary: accept-encoding"));
    assert!(!lower(&r).contains("content-encoding"));
    for proto in ["--http1.1", "--http2"] {
        let z = curl(&server, &[proto, "--compressed", &url(&server, "/metrics")]);
        assert_eq!(z.status, 200, "{}", z.body);
        let headers = lower(&z);
        assert!(headers.contains("content-encoding: gzip"), "{headers}");
        assert!(headers.contains("vary: accept-encoding"), "{headers}");
        std::fs::write(&file, format!("{}\n", z.body.trim_end())).expect("write");
        let inflated = python(PARSE_METRICS, &[&file.display().to_string()]);
        assert!(inflated.contains("alknet_draining gauge 1"), "{inflated}");
        assert!(
            inflated.contains("alpn_accepted alknet/echo 1\n"),
            "{inflated}"
        );
    }
    // the wire size, read by curl without inflating: well under the text's
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(server.data_dir.path().join("cert.pem"))
        .args([
            "-H",
            "Accept-Encoding: gzip",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
        ])
        .arg(url(&server, "/metrics"))
        .output()
        .expect("curl");
    let wire: usize = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("size_download");
    assert!(
        wire > 0 && wire * 3 < r.body.len(),
        "gzip body {wire} bytes against {} of text",
        r.body.len()
    );
}

#[test]
fn new_tcp_handshakes_get_a_reloaded_certificate() {
    let server = BinServer::start_with_config(&config(""));
    // "alknet serving" is logged just before the SIGHUP handler is installed (as in
    // reload_cli.rs): a round trip first, so the signal does not beat the handler
    let r = curl(&server, &["--http2", &url(&server, "/health")]);
    assert_eq!(r.status, 200);
    server.wait_for_log("certificate fingerprint");
    let dir = server.data_dir.path();
    let old_ca = dir.join("old-cert.pem");
    std::fs::copy(dir.join("cert.pem"), &old_ca).expect("keep the old certificate");
    let next = alknet_runtime::tls::TlsIdentity::generate_self_signed(&[]).expect("generate");
    std::fs::write(dir.join("cert.pem"), next.chain_pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), next.key_pem()).expect("key");
    // SAFETY: kill(2) on the child this test started
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    server.wait_for_log("reloaded: certificate");
    // curl() trusts data_dir/cert.pem: now the new certificate
    let r = curl(&server, &["--http2", &url(&server, "/health")]);
    assert_eq!(r.status, 200, "the new certificate is served over TCP");
    let old = old_ca.display().to_string();
    let r = curl(
        &server,
        &["--http2", "--cacert", &old, &url(&server, "/health")],
    );
    assert_eq!(r.status, 0, "the old certificate is no longer served");
}

/// One JSON-RPC request to `/mcp` over HTTP/2, as an MCP Streamable HTTP client sends it
/// (`method` POST, or DELETE to end a session).
fn mcp_request(
    server: &BinServer,
    method: &str,
    session: Option<&str>,
    body: &str,
    token: Option<&str>,
) -> Reply {
    let bearer = token.map(|t| format!("Authorization: Bearer {t}"));
    let session = session.map(|s| format!("Mcp-Session-Id: {s}"));
    let mut args = vec![
        "--http2",
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
        "-H",
        "Accept: application/json, text/event-stream",
    ];
    if method == "POST" {
        args.extend(["--data", body]);
    }
    for h in [&bearer, &session].into_iter().flatten() {
        args.extend(["-H", h.as_str()]);
    }
    let target = url(server, "/mcp");
    args.push(&target);
    curl(server, &args)
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}"#;

/// `initialize` as `token`'s identity; the session id the server issued.
fn mcp_session(server: &BinServer, token: Option<&str>) -> String {
    let r = mcp_request(server, "POST", None, INITIALIZE, token);
    assert_eq!(r.status, 200, "{}", r.body);
    r.headers
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("mcp-session-id")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Mcp-Session-Id in {}", r.headers))
}

#[test]
fn mcp_initialize_list_and_call_tools() {
    let server = BinServer::start_with_config(&config(""));
    let r = mcp_request(&server, "POST", None, INITIALIZE, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = json(&r);
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(v["result"]["serverInfo"]["name"], "alknet");
    let anon = mcp_session(&server, None);
    let admin = mcp_session(&server, Some(TOKEN_ADMIN));
    let scraper = mcp_session(&server, Some(TOKEN_METRICS));
    assert_ne!(anon, admin);
    let mcp = |body: &str, token: Option<&str>| {
        let session = match token {
            None => &anon,
            Some(TOKEN_ADMIN) => &admin,
            Some(_) => &scraper,
        };
        mcp_request(&server, "POST", Some(session), body, token)
    };
    let r = mcp(
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        None,
    );
    assert_eq!(r.status, 202);
    let r = mcp(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#, None);
    assert_eq!(json(&r)["result"], serde_json::json!({}));

    // sessions: required after initialize, bound to the identity that opened them
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let r = mcp_request(&server, "POST", None, ping, None);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = mcp_request(&server, "POST", Some("0123abcd"), ping, None);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = mcp_request(&server, "POST", Some(&admin), ping, None);
    assert_eq!(r.status, 404, "another identity's session: {}", r.body);
    let ended = mcp_session(&server, None);
    let r = mcp_request(&server, "DELETE", Some(&ended), "", None);
    assert_eq!(r.status, 204, "{}", r.body);
    let r = mcp_request(&server, "POST", Some(&ended), ping, None);
    assert_eq!(r.status, 404, "an ended session: {}", r.body);
    let r = mcp_request(&server, "DELETE", Some(&ended), "", None);
    assert_eq!(r.status, 404, "{}", r.body);

    // anonymous: public tools only; admin: node.stats too
    let list = r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#;
    let names = |r: &Reply| -> Vec<String> {
        json(r)["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let anonymous = names(&mcp(list, None));
    assert!(anonymous.contains(&"echo".to_string()), "{anonymous:?}");
    assert!(
        !anonymous.contains(&"node.stats".to_string()),
        "{anonymous:?}"
    );
    assert!(
        !anonymous.contains(&"echo.stream".to_string()),
        "streaming ops are not tools"
    );
    let admin_tools = names(&mcp(list, Some(TOKEN_ADMIN)));
    assert!(
        admin_tools.contains(&"node.stats".to_string()),
        "{admin_tools:?}"
    );

    let r = mcp(
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"say":"hi"}}}"#,
        None,
    );
    let v = json(&r);
    assert_eq!(v["result"]["isError"], false, "{v}");
    assert_eq!(
        v["result"]["structuredContent"],
        serde_json::json!({"say": "hi"})
    );
    // a denied tool: a tool error carrying the call error code
    let call_stats = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"node.stats","arguments":{}}}"#;
    let v = json(&mcp(call_stats, None));
    assert_eq!(v["result"]["isError"], true, "{v}");
    let text = v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.starts_with("UNAUTHENTICATED"), "{text}");
    let v = json(&mcp(call_stats, Some(TOKEN_METRICS)));
    let text = v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.starts_with("FORBIDDEN"), "{text}");
    let v = json(&mcp(call_stats, Some(TOKEN_ADMIN)));
    assert_eq!(v["result"]["isError"], false, "{v}");
    // unknown tool, unknown method, not JSON
    let v = json(&mcp(
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"nope"}}"#,
        None,
    ));
    assert_eq!(v["error"]["code"], -32602, "{v}");
    let v = json(&mcp(r#"{"jsonrpc":"2.0","id":7,"method":"nope"}"#, None));
    assert_eq!(v["error"]["code"], -32601, "{v}");
    let v = json(&mcp("{oops", None));
    assert_eq!(v["error"]["code"], -32700, "{v}");
}

#[test]
fn the_mcp_session_table_is_bounded_and_sessions_expire() {
    // two sessions at most; a session unused for 1.5 s is gone
    let server = BinServer::start_with_config(&config(
        "[http]\nmcp_max_sessions = 2\nmcp_session_idle_timeout_ms = 1500\n",
    ));
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let live = |s: &str| mcp_request(&server, "POST", Some(s), ping, None).status;
    let a = mcp_session(&server, None);
    let b = mcp_session(&server, None);
    assert_eq!((live(&a), live(&b)), (200, 200));
    // `a` was used last when `c` comes: `b` (least recently used) makes room
    assert_eq!(live(&a), 200);
    let c = mcp_session(&server, None);
    assert_eq!((live(&a), live(&b), live(&c)), (200, 404, 200));
    // idle past the timeout (waiting is the point here, not a measured duration)
    std::thread::sleep(std::time::Duration::from_millis(2000));
    assert_eq!((live(&a), live(&c)), (404, 404));
}

/// The official MCP Python SDK (`mcp` on PyPI, pinned in tests/interop/requirements.txt)
/// as the client: its Streamable HTTP transport over HTTPS with the server's certificate.
const MCP_SDK_CLIENT: &str = r#"
import asyncio, json, ssl, sys
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
async def main(url, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    seen = []
    async def on_response(response):
        req = response.request
        method = ""
        if req.method == "POST":
            await req.aread()
            method = json.loads(req.content).get("method", "")
        seen.append((req.method, method, req.headers.get("mcp-session-id"), response.status_code))
    async with httpx2.AsyncClient(verify=ctx, event_hooks={"response": [on_response]}) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                init = await s.initialize()
                print("server", init.server_info.name)
                names = [t.name for t in (await s.list_tools()).tools]
                print("tools", "echo" in names, "node.stats" in names)
                res = await s.call_tool("echo", {"say": "hi"})
                print("echo", res.is_error, res.structured_content)
                res = await s.call_tool("node.stats", {})
                print("denied", res.is_error, res.content[0].text.split(":")[0])
    # what went over the wire: every request after initialize carried the session id,
    # and closing the client ended the session (DELETE answered 204)
    after = [r for r in seen if r[1] != "initialize"]
    print("session", len(set(r[2] for r in after)) == 1 and all(r[2] for r in after))
    print("delete", [r[3] for r in seen if r[0] == "DELETE"])
asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

#[test]
fn the_official_mcp_sdk_initializes_lists_and_calls() {
    let server = BinServer::start_with_config(&config(""));
    let cert = server.data_dir.path().join("cert.pem");
    let out = python(
        MCP_SDK_CLIENT,
        &[&url(&server, "/mcp"), &cert.display().to_string()],
    );
    assert!(out.contains("server alknet"), "{out}");
    assert!(out.contains("tools True False"), "{out}");
    assert!(out.contains("echo False {'say': 'hi'}"), "{out}");
    assert!(out.contains("denied True UNAUTHENTICATED"), "{out}");
    assert!(out.contains("session True"), "{out}");
    assert!(out.contains("delete [204]"), "{out}");
}

/// `[http] static_root`: files over HTTP/1.1 and HTTP/2 (HTTP/3 is the interop runner's
/// `http3` case), byte for byte with the length announced, HEAD, and the refusals.
#[test]
fn static_files_are_served_from_the_root_only() {
    let www = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    // larger than static_chunk_bytes * static_channel_chunks: the body is streamed
    let data: Vec<u8> = (0..300_007u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(www.path().join("big.bin"), &data).expect("write");
    std::fs::write(outside.path().join("secret"), b"secret").expect("write");
    std::os::unix::fs::symlink(outside.path().join("secret"), www.path().join("out"))
        .expect("symlink");
    std::fs::create_dir(www.path().join("dir")).expect("mkdir");
    let server = BinServer::start_with_config(&config(&format!(
        "[http]\nstatic_root = \"{}\"\npublic = [\"/dashboard\"]\n",
        www.path().display()
    )));
    let got = tempfile::NamedTempFile::new().expect("tempfile");
    for version in ["--http1.1", "--http2"] {
        let out = got.path().to_str().expect("utf-8 path");
        let r = curl(&server, &[version, "-o", out, &url(&server, "/big.bin")]);
        assert_eq!(r.status, 200, "{version}: {}", r.headers);
        assert!(
            lower(&r).contains("content-length: 300007"),
            "{}",
            r.headers
        );
        assert!(
            std::fs::read(got.path()).expect("read") == data,
            "{version}: body differs"
        );
        let r = curl(&server, &[version, "-I", &url(&server, "/big.bin")]);
        assert_eq!(r.status, 200);
        assert!(lower(&r).contains("content-length: 300007"));
        for (path, status) in [
            ("/missing", 404),
            ("/out", 404),
            // a directory: redirected to its index page, which is missing here
            ("/dir", 301),
            ("/dir/", 404),
            ("/", 404),
            ("/a/../../etc/passwd", 400),
        ] {
            let r = curl(&server, &[version, "--path-as-is", &url(&server, path)]);
            assert_eq!(r.status, status, "{version} {path}: {}", r.body);
        }
        let r = curl(
            &server,
            &[version, "-X", "DELETE", &url(&server, "/big.bin")],
        );
        assert_eq!(r.status, 405);
        let r = curl(&server, &[version, &url(&server, "/dir")]);
        assert!(lower(&r).contains("location: /dir/"), "{}", r.headers);
        // routes of their own still win
        let r = curl(&server, &[version, &url(&server, "/health")]);
        assert_eq!(r.status, 200);
        // `/` is the files', the dashboard page stays at `/dashboard`
        let r = curl(&server, &[version, &url(&server, "/dashboard")]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("/api/dashboard/stream"), "{}", r.body);
        // the page gzipped for a client that takes it, inflated by curl to the same page
        let z = curl(
            &server,
            &[version, "--compressed", &url(&server, "/dashboard")],
        );
        assert!(
            lower(&z).contains("content-encoding: gzip"),
            "{}",
            z.headers
        );
        assert_eq!(z.body, r.body);
    }
    // index pages: the root's and a directory's, followed from the redirect by curl
    std::fs::write(www.path().join("index.html"), "<p>root</p>").expect("write");
    std::fs::write(www.path().join("dir/index.html"), "<p>dir</p>").expect("write");
    for version in ["--http1.1", "--http2"] {
        for (path, body) in [
            ("/", "<p>root</p>"),
            ("/dir/", "<p>dir</p>"),
            ("/dir", "<p>dir</p>"),
        ] {
            let r = curl(&server, &[version, "-L", &url(&server, path)]);
            assert_eq!((r.status, r.body.as_str()), (200, body), "{version} {path}");
            assert!(
                lower(&r).contains("content-type: text/html"),
                "{version} {path}: {}",
                r.headers
            );
        }
    }
}

/// `[http] static_index`: a directory's path serves the first of its index files that
/// exists (nginx's `index`), a directory named like one is passed over, a directory with
/// none is 404; and files carry their media types (`.jpg`: `image/jpeg`).
#[test]
fn static_index_files_are_tried_in_order() {
    let www = tempfile::tempdir().expect("tempdir");
    let root = www.path();
    std::fs::write(root.join("home.htm"), "root home").expect("write");
    std::fs::write(root.join("index.html"), "root index").expect("write");
    for dir in ["a", "b", "b/home.htm", "c"] {
        std::fs::create_dir(root.join(dir)).expect("mkdir");
    }
    std::fs::write(root.join("a/index.html"), "a index").expect("write");
    std::fs::write(root.join("b/index.html"), "b index").expect("write");
    std::fs::write(root.join("photo.jpg"), [0xff, 0xd8, 0xff]).expect("write");
    let server = BinServer::start_with_config(&config(&format!(
        "[http]\nstatic_root = \"{}\"\nstatic_index = [\"home.htm\", \"index.html\"]\n",
        root.display()
    )));
    for version in ["--http1.1", "--http2"] {
        for (path, status, body) in [
            ("/", 200, "root home"),
            ("/a/", 200, "a index"),
            ("/b/", 200, "b index"),
            ("/c/", 404, ""),
        ] {
            let r = curl(&server, &[version, &url(&server, path)]);
            assert_eq!(r.status, status, "{version} {path}: {}", r.body);
            if status == 200 {
                assert_eq!(r.body, body, "{version} {path}");
                assert_eq!(
                    header_value(&r, "content-type").as_deref(),
                    Some("text/html; charset=utf-8")
                );
            }
        }
        let r = curl(&server, &[version, "-I", &url(&server, "/photo.jpg")]);
        assert_eq!(
            header_value(&r, "content-type").as_deref(),
            Some("image/jpeg"),
            "{version}"
        );
    }
}

/// A server with `[http] static_root = www`.
fn static_server(www: &std::path::Path) -> BinServer {
    BinServer::start_with_config(&config(&format!(
        "[http]\nstatic_root = \"{}\"\n",
        www.display()
    )))
}

/// A response header's value (the first of that name).
fn header_value(r: &Reply, name: &str) -> Option<String> {
    r.headers.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// A precompressed copy beside a static file (`app.js.gz`, made here by `gzip -k`) goes to
/// a client that takes gzip, with `Content-Encoding: gzip` and its own tag, and ranges
/// over its own bytes; a client that does not (no `Accept-Encoding`, or `gzip;q=0`) gets
/// the file. curl's `--compressed` decodes it back to the file.
#[test]
fn static_files_send_a_precompressed_copy_to_clients_that_take_it() {
    let www = tempfile::tempdir().expect("tempdir");
    let js: String = (0..3000)
        .map(|i| format!("console.log('line {i}');\n"))
        .collect();
    std::fs::write(www.path().join("app.js"), &js).expect("write");
    let gzip = Command::new("gzip")
        .args(["-k", "-9"])
        .arg(www.path().join("app.js"))
        .status()
        .expect("gzip");
    assert!(gzip.success());
    let gz = std::fs::read(www.path().join("app.js.gz")).expect("app.js.gz");
    assert!(gz.len() < js.len() / 4, "{} bytes compressed", gz.len());
    let server = static_server(www.path());
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("out");
    let out_s = out.to_str().expect("utf-8 path");
    let app = url(&server, "/app.js");
    let etag = |r: &Reply| header_value(r, "etag").expect("an ETag");
    for version in ["--http1.1", "--http2"] {
        let r = curl(&server, &[version, "--compressed", "-o", out_s, &app]);
        assert_eq!(r.status, 200);
        assert!(
            lower(&r).contains("content-encoding: gzip"),
            "{}",
            r.headers
        );
        assert!(lower(&r).contains("vary: accept-encoding"), "{}", r.headers);
        assert!(
            lower(&r).contains("content-type: text/javascript"),
            "{}",
            r.headers
        );
        assert!(
            std::fs::read(&out).expect("read") == js.as_bytes(),
            "{version}: decoded"
        );
        let gz_tag = etag(&r);
        // the stored bytes themselves, and a range of them
        let r = curl(
            &server,
            &[version, "-H", "Accept-Encoding: gzip", "-o", out_s, &app],
        );
        assert_eq!(r.status, 200);
        assert!(
            std::fs::read(&out).expect("read") == gz,
            "{version}: the .gz bytes"
        );
        let r = curl(
            &server,
            &[
                version,
                "-H",
                "Accept-Encoding: gzip",
                "-r",
                "0-9",
                "-o",
                out_s,
                &app,
            ],
        );
        assert_eq!(r.status, 206);
        assert!(std::fs::read(&out).expect("read") == gz[..10]);
        // clients that do not take gzip get the file
        for accept in [
            None,
            Some("Accept-Encoding: gzip;q=0, br;q=0"),
            Some("Accept-Encoding: identity"),
        ] {
            let mut args = vec![version, "-o", out_s];
            if let Some(h) = accept {
                args.extend(["-H", h]);
            }
            args.push(&app);
            let r = curl(&server, &args);
            assert_eq!(r.status, 200);
            assert!(
                !lower(&r).contains("content-encoding"),
                "{accept:?}: {}",
                r.headers
            );
            assert!(
                std::fs::read(&out).expect("read") == js.as_bytes(),
                "{accept:?}"
            );
            assert_ne!(etag(&r), gz_tag, "the two representations share a tag");
        }
    }
}

/// The static files answer what a download manager, a video player seeking, `curl -C -`
/// and a browser's cache revalidation send, over HTTP/1.1 and HTTP/2, with curl's own
/// options where it has them: one byte range (206, `Content-Range`), a resumed download,
/// a range past the end (416), `ETag` revalidation (`--etag-save` / `--etag-compare`:
/// 304), `If-Modified-Since` (304), and `If-Range` with a stale tag (the whole file).
#[test]
fn static_files_answer_ranges_resumes_and_revalidation() {
    let www = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..300_007u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(www.path().join("big.bin"), &data).expect("write");
    let server = static_server(www.path());
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("out");
    let out_s = out.to_str().expect("utf-8 path");
    let big = url(&server, "/big.bin");
    let header = header_value;
    for version in ["--http1.1", "--http2"] {
        // one range, in the middle, and the last bytes
        for (range, from, to) in [("1000-1999", 1000, 2000), ("-7", 300_000, 300_007)] {
            let r = curl(&server, &[version, "-r", range, "-o", out_s, &big]);
            assert_eq!(r.status, 206, "{version} {range}: {}", r.headers);
            assert_eq!(
                header(&r, "content-range").as_deref(),
                Some(format!("bytes {from}-{}/300007", to - 1).as_str()),
                "{version} {range}"
            );
            assert_eq!(header(&r, "accept-ranges").as_deref(), Some("bytes"));
            assert!(
                std::fs::read(&out).expect("read") == data[from..to],
                "{version} {range}: body differs"
            );
        }
        // a download cut at 100 000 bytes, resumed by curl
        std::fs::write(&out, &data[..100_000]).expect("write");
        let r = curl(&server, &[version, "-C", "-", "-o", out_s, &big]);
        assert_eq!(r.status, 206, "{version} resume: {}", r.headers);
        assert!(
            std::fs::read(&out).expect("read") == data,
            "{version}: the resumed file differs"
        );
        // past the end
        let r = curl(&server, &[version, "-r", "400000-", &big]);
        assert_eq!(r.status, 416, "{version}: {}", r.headers);
        assert_eq!(
            header(&r, "content-range").as_deref(),
            Some("bytes */300007")
        );
        // revalidation by entity tag, as curl keeps it
        let etag_file = work.path().join("etag");
        let etag_s = etag_file.to_str().expect("utf-8 path");
        let first = curl(
            &server,
            &[version, "--etag-save", etag_s, "-o", out_s, &big],
        );
        assert_eq!(first.status, 200);
        let etag = header(&first, "etag").expect("an ETag");
        let r = curl(
            &server,
            &[version, "--etag-compare", etag_s, "-o", out_s, &big],
        );
        assert_eq!(r.status, 304, "{version} If-None-Match: {}", r.headers);
        // and by date
        let modified = header(&first, "last-modified").expect("Last-Modified");
        let since = format!("If-Modified-Since: {modified}");
        let r = curl(&server, &[version, "-H", &since, &big]);
        assert_eq!(r.status, 304, "{version} If-Modified-Since: {}", r.headers);
        // a range of a copy that is not this one: the whole file
        let r = curl(
            &server,
            &[
                version,
                "-r",
                "0-9",
                "-H",
                "If-Range: \"stale\"",
                "-o",
                out_s,
                &big,
            ],
        );
        assert_eq!(r.status, 200, "{version} If-Range stale");
        assert!(std::fs::read(&out).expect("read") == data);
        let if_range = format!("If-Range: {etag}");
        let r = curl(
            &server,
            &[version, "-r", "0-9", "-H", &if_range, "-o", out_s, &big],
        );
        assert_eq!(r.status, 206, "{version} If-Range current");
        assert!(std::fs::read(&out).expect("read") == data[..10]);
    }
    // the file rewritten: the old tag no longer matches
    let mut changed = data.clone();
    changed[0] ^= 1;
    std::fs::write(www.path().join("big.bin"), &changed).expect("rewrite");
    let etag_s = work.path().join("etag");
    let r = curl(
        &server,
        &[
            "--etag-compare",
            etag_s.to_str().expect("utf-8 path"),
            "-o",
            out_s,
            &big,
        ],
    );
    assert_eq!(r.status, 200, "{}", r.headers);
    assert!(std::fs::read(&out).expect("read") == changed);
}

/// Python's MIME parser (the standard library's `email`) splits a `multipart/byteranges`
/// body: one line per part, its `Content-Range`, media type and bytes.
const MULTIPART_PARTS_PY: &str = r#"
import sys, email
from email import policy
ctype, path = sys.argv[1], sys.argv[2]
raw = b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + open(path, "rb").read()
msg = email.message_from_bytes(raw, policy=policy.HTTP)
assert msg.is_multipart(), "not multipart"
assert not msg.defects, msg.defects
for part in msg.iter_parts():
    print(part["Content-Range"], part.get_content_type(), part.get_payload(decode=True).decode())
"#;

/// Several ranges in one request (RFC 9110, section 14.6): a `multipart/byteranges` body
/// whose parts are the ranges asked for, in that order, each with its `Content-Range`,
/// byte for byte as expected and as Python's MIME parser reads it; the part past the end
/// left out; `HEAD` announces the same length. Ranges adding up to more than the file, or
/// more of them than `static_max_ranges`, get the whole file.
#[test]
fn static_files_answer_several_ranges_with_a_multipart_body() {
    let www = tempfile::tempdir().expect("tempdir");
    // printable bytes with no line breaks, so that a MIME parser may read the parts
    let data: Vec<u8> = (0..200_003u32).map(|i| b'!' + (i * 7 % 90) as u8).collect();
    std::fs::write(www.path().join("page.txt"), &data).expect("write");
    let server = BinServer::start_with_config(&config(&format!(
        "[http]\nstatic_root = \"{}\"\nstatic_max_ranges = 5\n",
        www.path().display()
    )));
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("out");
    let out_s = out.to_str().expect("utf-8 path");
    let page = url(&server, "/page.txt");
    // the last part spans several `static_chunk_bytes` reads
    let asked = "150000-150099,-7,0-0,300000-,1000-140999";
    let spans = [
        (150_000usize, 150_100usize),
        (199_996, 200_003),
        (0, 1),
        (1000, 141_000),
    ];
    for version in ["--http1.1", "--http2"] {
        let r = curl(&server, &[version, "-r", asked, "-o", out_s, &page]);
        assert_eq!(r.status, 206, "{version}: {}", r.headers);
        assert!(header_value(&r, "content-range").is_none(), "{}", r.headers);
        let ctype = header_value(&r, "content-type").expect("content-type");
        let boundary = ctype
            .strip_prefix("multipart/byteranges; boundary=")
            .unwrap_or_else(|| panic!("{version}: {ctype}"));
        let mut expected = Vec::new();
        for (from, to) in spans {
            expected.extend_from_slice(
                format!(
                    "\r\n--{boundary}\r\ncontent-type: text/plain; charset=utf-8\r\n\
                     content-range: bytes {from}-{}/200003\r\n\r\n",
                    to - 1
                )
                .as_bytes(),
            );
            expected.extend_from_slice(&data[from..to]);
        }
        expected.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let body = std::fs::read(&out).expect("read");
        assert!(
            body == expected,
            "{version}: the multipart body differs ({} bytes, {} expected)",
            body.len(),
            expected.len()
        );
        assert_eq!(
            header_value(&r, "content-length"),
            Some(expected.len().to_string())
        );
        let parsed = Command::new("python3")
            .args(["-c", MULTIPART_PARTS_PY, &ctype, out_s])
            .output()
            .expect("python3");
        assert!(
            parsed.status.success(),
            "{}",
            String::from_utf8_lossy(&parsed.stderr)
        );
        let lines: Vec<String> = String::from_utf8_lossy(&parsed.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let want: Vec<String> = spans
            .iter()
            .map(|&(from, to)| {
                format!(
                    "bytes {from}-{}/200003 text/plain {}",
                    to - 1,
                    String::from_utf8_lossy(&data[from..to])
                )
            })
            .collect();
        assert!(lines == want, "{version}: Python read other parts");
        let head = curl(&server, &[version, "-I", "-r", asked, &page]);
        assert_eq!(head.status, 206);
        assert_eq!(
            header_value(&head, "content-length"),
            Some(expected.len().to_string())
        );
        // more than the file in all (overlapping), and more ranges than allowed: whole
        for whole in ["0-,0-", "0-0,2-2,4-4,6-6,8-8,10-10"] {
            let r = curl(&server, &[version, "-r", whole, "-o", out_s, &page]);
            assert_eq!(r.status, 200, "{version} {whole}: {}", r.headers);
            assert!(
                std::fs::read(&out).expect("read") == data,
                "{version} {whole}"
            );
        }
        // every range past the end
        let r = curl(&server, &[version, "-r", "300000-,400000-", &page]);
        assert_eq!(r.status, 416, "{version}: {}", r.headers);
    }
}

/// The real Prometheus (Debian's `prometheus`, installed by `tests/run-all.sh`) kills on drop.
struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One instant query against Prometheus' HTTP API: the first sample's value, if any.
fn prometheus_query(port: u16, query: &str) -> Option<f64> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-G", "--data-urlencode"])
        .arg(format!("query={query}"))
        .arg(format!("http://127.0.0.1:{port}/api/v1/query"))
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Prometheus itself scrapes `/metrics` as operators run it: HTTPS with the node's
/// certificate as its CA, the `node:metrics` token as `authorization`, every second, asking
/// for gzip as every scrape does. Its own view must then hold the node's series.
#[test]
fn prometheus_scrapes_the_node_over_https_with_a_token() {
    let bin = ["prometheus", "/usr/bin/prometheus"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("prometheus is not installed (tests/run-all.sh installs Debian's package)");
    let server = BinServer::start_with_config(&config(""));
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN_METRICS).expect("token file");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: alknet
    scheme: https
    tls_config:
      ca_file: {ca}
    authorization:
      credentials_file: {token}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"#,
            ca = server.data_dir.path().join("cert.pem").display(),
            token = token.display(),
            port = server.port,
        ),
    )
    .expect("prometheus.yml");
    let web = alknet_tests::ssh::free_tcp_port();
    let _prometheus = Prometheus(
        Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    // a scrape that parsed: up == 1, and the node's series in Prometheus' store
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut up = None;
    while std::time::Instant::now() < deadline {
        up = prometheus_query(web, r#"up{job="alknet"}"#);
        if up == Some(1.0) && prometheus_query(web, "alknet_draining").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(up, Some(1.0), "Prometheus never scraped the node");
    let samples = prometheus_query(web, r#"scrape_samples_scraped{job="alknet"}"#);
    assert!(samples.is_some_and(|n| n >= 50.0), "{samples:?}");
    assert_eq!(prometheus_query(web, "alknet_draining"), Some(0.0));
    // Prometheus' own connection (and any before it) accepted over TLS/TCP
    let accepted = prometheus_query(web, "sum(alknet_worker_tcp_accepted_total)");
    assert!(accepted.is_some_and(|n| n >= 1.0), "{accepted:?}");
    // its scrapes, counted by route (a scrape is counted once answered, so the second
    // scrape carries the first): the token was taken, a 401/403 would not be up
    let query = r#"sum(alknet_http_requests_total{route="/metrics",status="200"})"#;
    let mut scrapes = None;
    while std::time::Instant::now() < deadline {
        scrapes = prometheus_query(web, query);
        if scrapes.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(scrapes.is_some_and(|n| n >= 1.0), "{scrapes:?}");
    // the standard process metrics, unprefixed, as every client library exports them
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let started = prometheus_query(web, r#"process_start_time_seconds{job="alknet"}"#);
    assert!(
        started.is_some_and(|t| t <= now + 1.0 && t > now - 600.0),
        "{started:?} against {now}"
    );
    for (query, at_least) in [
        ("process_cpu_seconds_total", 0.0),
        ("process_resident_memory_bytes", 1e6),
        ("process_virtual_memory_bytes", 1e6),
        // the listening sockets, the peer database, Prometheus' TCP connection
        ("process_open_fds", 4.0),
        ("process_max_fds", 64.0),
    ] {
        let v = prometheus_query(web, &format!(r#"{query}{{job="alknet"}}"#));
        assert!(v.is_some_and(|v| v > at_least), "{query}: {v:?}");
    }
    let build = format!(
        r#"alknet_build_info{{job="alknet",version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(prometheus_query(web, &build), Some(1.0), "{build}");
}
