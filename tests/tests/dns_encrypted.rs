//! DNS over TLS (`dot`, RFC 7858) on the TLS-over-TCP listener, DNS over HTTPS (RFC 8484,
//! `/dns-query`) on the HTTP router, and the pkarr relay API (`/pkarr/{key}`), on the real
//! `alknet serve` binary, driven by clients nobody here wrote:
//! - dnspython over DoT and over DoH with HTTP/1.1, HTTP/2 (httpx) and HTTP/3 (aioquic),
//!   Python's ssl module pipelining and breaking DoT (tests/interop/dnspython_encrypted.py);
//! - Knot's `kdig +tls` and `kdig +https` (Debian `knot-dnsutils`);
//! - curl resolving a name through the node's DoH (`--doh-url`) and fetching by it;
//! - curl as the relay client with packets signed by the `pkarr` crate, resolved back with
//!   `dig` over classic UDP.
//!
//! `tests/run-all.sh` installs knot-dnsutils, curl, dig, dnspython, httpx and aioquic.

use std::process::Command;

use alknet_tests::dns::{dig_short, kdig, run_client as run};
use alknet_tests::*;

const ZONE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/example.com.zone");
#[test]
fn dot_and_doh_with_real_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local_zone = dir.path().join("alknet.test.zone");
    std::fs::write(
        &local_zone,
        "$TTL 60\n@ IN SOA ns hm 1 2 3 4 30\n@ IN NS ns\nns IN A 127.0.0.1\nnode IN A 127.0.0.1\n",
    )
    .expect("write zone");
    let server = BinServer::start_with_config(&format!(
        "[handlers]\nenabled = [\"doq\", \"h3\"]\n\
         [dns]\ndot_idle_timeout_ms = 1000\nquery_timeout_ms = 1000\n\
         [[dns.zones]]\norigin = \"example.com\"\nfile = {ZONE:?}\n\
         [[dns.zones]]\norigin = \"alknet.test\"\nfile = {local_zone:?}\n"
    ));
    let port = server.port;

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/interop/dnspython_encrypted.py"
    );
    let (ok, out, err) = run(Command::new("python3").arg(script).args([
        "--port",
        &port.to_string(),
        "--idle-port",
        &port.to_string(),
        "--idle-seconds",
        "1",
    ]));
    assert!(ok, "dnspython DoT/DoH interop failed:\n{out}\n{err}");
    assert!(out.contains("all encrypted DNS checks passed"), "{out}");

    // HTTP/1.1 without ALPN is still HTTP (DoT without ALPN is told apart by its first byte)
    let (ok, out, err) = run(Command::new("curl").args([
        "-sS",
        "-k",
        "--max-time",
        "30",
        "--no-alpn",
        "-w",
        "\n%{http_code} %{http_version}",
        &format!("https://127.0.0.1:{port}/health"),
    ]));
    assert!(ok && out.ends_with("200 1.1"), "{out}\n{err}");

    // Knot's kdig: DoT (with its default EDNS padding), DoH POST and GET (HTTP/2)
    let dot = kdig(port, &["+tls", "host.example.com", "A"]);
    assert!(dot.contains("TLS session"), "{dot}");
    assert!(
        dot.contains("status: NOERROR") && dot.contains("192.0.2.80"),
        "{dot}"
    );
    assert!(
        dot.contains("PADDING"),
        "a padded query gets a padded answer:\n{dot}"
    );
    let many = kdig(
        port,
        &[
            "+tls",
            "+keepopen",
            "host.example.com",
            "AAAA",
            "example.com",
            "MX",
            "nope.example.com",
            "A",
        ],
    );
    assert!(
        many.contains("2001:db8::80")
            && many.contains("10 mail.example.com.")
            && many.contains("status: NXDOMAIN"),
        "three queries on one DoT connection:\n{many}"
    );
    for method in ["+https", "+https-get"] {
        let doh = kdig(port, &[method, "+short", "www.example.com", "A"]);
        assert_eq!(
            doh.lines().collect::<Vec<_>>(),
            ["web.example.com.", "host.example.com.", "192.0.2.80"],
            "kdig {method}:\n{doh}"
        );
    }

    // curl resolves the host name through the node's DoH, then fetches from it by that name
    let (ok, out, err) = run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "30",
        "--doh-url",
        &format!("https://127.0.0.1:{port}/dns-query"),
        "--doh-insecure",
        "-k",
        "-w",
        "\n%{http_code} %{remote_ip}",
        &format!("https://node.alknet.test:{port}/health"),
    ]));
    assert!(ok, "curl --doh-url:\n{out}\n{err}");
    assert!(out.ends_with("200 127.0.0.1"), "{out}");
    // and a name that does not exist is not resolved
    let (ok, out, err) = run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "30",
        "--doh-url",
        &format!("https://127.0.0.1:{port}/dns-query"),
        "--doh-insecure",
        "-k",
        &format!("https://nope.alknet.test:{port}/health"),
    ]));
    assert!(!ok && err.contains("resolve"), "{out}\n{err}");
}

struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

/// curl against the node (its self-signed certificate accepted), body to a file so binary
/// payloads come back whole.
fn curl(port: u16, args: &[&str], path: &str) -> Reply {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (headers, body) = (tmp.path().join("h"), tmp.path().join("b"));
    let (ok, out, err) = run(Command::new("curl")
        .args(["-sS", "-k", "--max-time", "30", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(format!("https://127.0.0.1:{port}{path}")));
    assert!(ok, "curl {args:?} {path}:\n{out}\n{err}");
    Reply {
        status: out.trim().parse().unwrap_or(0),
        headers: std::fs::read_to_string(&headers)
            .unwrap_or_default()
            .to_ascii_lowercase(),
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

fn put(port: u16, key: &str, payload: &[u8], extra: &[&str]) -> Reply {
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(file.path(), payload).expect("write payload");
    let data = format!("@{}", file.path().display());
    let mut args = vec!["-X", "PUT", "--data-binary", &data];
    args.extend_from_slice(extra);
    curl(port, &args, &format!("/pkarr/{key}"))
}

fn signed(kp: &pkarr::Keypair, ts: u64, addr: [u8; 4], ttl: u32) -> Vec<u8> {
    pkarr::SignedPacket::builder()
        .a("_foo".try_into().expect("name"), addr.into(), ttl)
        .txt(
            ".".try_into().expect("name"),
            "relay".try_into().expect("txt"),
            600,
        )
        .timestamp(ts.into())
        .sign(kp)
        .expect("sign")
        .to_relay_payload()
        .to_vec()
}

#[test]
fn pkarr_relay_api_with_curl() {
    let (server, udp) = BinServer::start_with_port_config(|port| {
        format!(
            "[handlers]\nenabled = [\"doq\"]\n\
             [dns]\npkarr = true\npkarr_publish_self = false\nudp_listen = \"127.0.0.1:{port}\"\n"
        )
    });
    let port = server.port;
    let kp = pkarr::Keypair::random();
    let key = kp.public_key().to_z32();
    let name = format!("_foo.{key}");

    assert_eq!(curl(port, &[], &format!("/pkarr/{key}")).status, 404);
    let first = signed(&kp, 1_000_000_000, [192, 0, 2, 10], 120);
    let r = put(port, &key, &first, &[]);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.headers.contains("access-control-allow-origin: *"),
        "{}",
        r.headers
    );
    assert_eq!(dig_short(udp, &[&name, "A"]), ["192.0.2.10"]);

    // GET gives the payload back as stored, which a pkarr client verifies
    let got = curl(port, &[], &format!("/pkarr/{key}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.body, first);
    let back = pkarr::SignedPacket::from_relay_payload(&kp.public_key(), &got.body.into())
        .expect("the relay's answer verifies");
    assert_eq!(back.timestamp().as_u64(), 1_000_000_000);
    assert!(
        got.headers
            .contains("content-type: application/pkarr.org/relays#payload"),
        "{}",
        got.headers
    );
    assert!(
        got.headers.contains("cache-control: public, max-age=120"),
        "{}",
        got.headers
    );
    // 1 000 000 000 µs after the epoch
    assert!(
        got.headers
            .contains("last-modified: thu, 01 jan 1970 00:16:40 gmt"),
        "{}",
        got.headers
    );
    let since = curl(
        port,
        &["-H", "If-Modified-Since: Thu, 01 Jan 1970 00:16:40 GMT"],
        &format!("/pkarr/{key}"),
    );
    assert_eq!(since.status, 304);
    let older = curl(
        port,
        &["-H", "If-Modified-Since: Thu, 01 Jan 1970 00:16:39 GMT"],
        &format!("/pkarr/{key}"),
    );
    assert_eq!(older.status, 200);

    // refused: older (409), forged (400), another key's (400), too large (413), a bad key
    let stale = put(
        port,
        &key,
        &signed(&kp, 999_000_000, [192, 0, 2, 11], 120),
        &[],
    );
    assert_eq!(
        stale.status,
        409,
        "{}",
        String::from_utf8_lossy(&stale.body)
    );
    let mut forged = signed(&kp, 2_000_000_000, [192, 0, 2, 12], 120);
    forged[10] ^= 1;
    assert_eq!(put(port, &key, &forged, &[]).status, 400);
    let other = pkarr::Keypair::random();
    let theirs = signed(&other, 2_000_000_000, [192, 0, 2, 13], 120);
    assert_eq!(put(port, &key, &theirs, &[]).status, 400);
    assert_eq!(put(port, &key, &vec![0u8; 2000], &[]).status, 413);
    assert_eq!(put(port, "not-a-key", &first, &[]).status, 400);
    assert_eq!(curl(port, &[], "/pkarr/not-a-key").status, 400);
    assert_eq!(
        dig_short(udp, &[&name, "A"]),
        ["192.0.2.10"],
        "nothing changed"
    );

    // compare-and-swap: If-Match names the stored timestamp, or 412
    let newer = signed(&kp, 3_000_000_000, [192, 0, 2, 14], 120);
    assert_eq!(put(port, &key, &newer, &["-H", "If-Match: 5"]).status, 412);
    assert_eq!(dig_short(udp, &[&name, "A"]), ["192.0.2.10"]);
    let r = put(port, &key, &newer, &["-H", "If-Match: 1000000000"]);
    assert_eq!(r.status, 204);
    assert_eq!(dig_short(udp, &[&name, "A"]), ["192.0.2.14"]);
    assert_eq!(curl(port, &[], &format!("/pkarr/{key}")).body, newer);

    // the CORS preflight public relays answer
    let pre = curl(port, &["-X", "OPTIONS"], &format!("/pkarr/{key}"));
    assert_eq!(pre.status, 204);
    assert!(
        pre.headers
            .contains("access-control-allow-methods: get, put, options"),
        "{}",
        pre.headers
    );
}

/// The ALPN a TLS handshake offering only `alpn` gets (Python's ssl module), or "refused".
fn alpn_offered(port: u16, alpn: &str) -> String {
    let code = format!(
        "import socket, ssl\n\
         c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n\
         c.set_alpn_protocols([{alpn:?}])\n\
         try:\n    s = c.wrap_socket(socket.create_connection(('127.0.0.1', {port}), timeout=10))\n    print(s.selected_alpn_protocol())\n\
         except ssl.SSLError:\n    print('refused')\n"
    );
    let (ok, out, err) = run(Command::new("python3").args(["-c", &code]));
    assert!(ok, "{out}\n{err}");
    out.trim().to_string()
}

#[test]
fn dot_and_doh_are_off_when_configured_so() {
    let server = BinServer::start_with_config(&format!(
        "[handlers]\nenabled = [\"doq\", \"h3\"]\n[dns]\ndot = false\ndoh = false\n\
         [[dns.zones]]\norigin = \"example.com\"\nfile = {ZONE:?}\n"
    ));
    assert_eq!(alpn_offered(server.port, "dot"), "refused", "no dot ALPN");
    assert_eq!(alpn_offered(server.port, "h2"), "h2");
    let q = "AAABAAABAAAAAAAABGhvc3QHZXhhbXBsZQNjb20AAAEAAQ";
    let r = curl(server.port, &[], &format!("/dns-query?dns={q}"));
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    // and with DoH on (the default) the same request is answered
    let on = BinServer::start_with_config(&format!(
        "[handlers]\nenabled = [\"doq\"]\n[[dns.zones]]\norigin = \"example.com\"\nfile = {ZONE:?}\n"
    ));
    let r = curl(on.port, &[], &format!("/dns-query?dns={q}"));
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("content-type: application/dns-message"));
}
