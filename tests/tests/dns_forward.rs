//! The forwarding cache on the real binary: a front `alknet serve` (zone example.com,
//! upstream = a second `alknet serve` holding example.org on classic UDP/TCP) asked by
//! `dig` and by dnspython's DoQ client. Forwarded answers carry RA and not AA; answers
//! (negative ones too, RFC 2308) are served from the cache once the upstream is gone; a
//! name never seen then gets SERVFAIL; a truncated upstream answer is fetched again over
//! TCP; a source outside `recursion_allow` is REFUSED.
//!
//! Against a fake upstream on loopback that answers names beginning with "slow" only after
//! [`SLOW_UPSTREAM`] ([`FakeUpstream`]):
//! - dnspython pipelining queries on one classic TCP connection: the local answers come
//!   back before the slow forwarded one (RFC 7766 §6.2.1.1), each ID once, and with
//!   `max_pipelined_queries = 1` the connection is not read past the bound
//!   (tests/interop/dnspython_forwarded.py);
//! - dnspython over DoQ and Knot's `kdig +tls`: a padded query for a forwarded name gets
//!   an answer padded to a multiple of 468 bytes (RFC 8467), the upstream's own padding
//!   not relayed.

use std::process::Command;
use std::time::Duration;

use alknet_tests::dns::{dig, kdig, run_client, FakeUpstream, FAKE_UPSTREAM_A};
use alknet_tests::*;

const ZONE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/example.com.zone");

/// `alknet serve` with `origin`'s zone and classic DNS on a port of its own (returned).
fn serve_zone(origin: &str, extra: &str) -> (BinServer, u16) {
    BinServer::start_with_port_config(|port| {
        format!(
            "[handlers]\nenabled = [\"doq\", \"alknet/dns\"]\n\
             [dns]\nudp_listen = \"127.0.0.1:{port}\"\ntcp_listen = \"127.0.0.1:{port}\"\n{extra}\n\
             [[dns.zones]]\norigin = \"{origin}\"\nfile = {ZONE:?}\n"
        )
    })
}

#[test]
fn forwarding_cache_through_the_binary() {
    let (upstream, up_port) = serve_zone("example.org", "");
    let (front, port) = serve_zone(
        "example.com",
        &format!(
            "upstreams = [\"127.0.0.1:{up_port}\"]\nrecursion_allow = [\"127.0.0.0/8\"]\n\
             forward_timeout_ms = 300"
        ),
    );

    // forwarded: recursion available, not authoritative
    let a = dig(port, &["host.example.org", "A"]);
    assert!(
        a.contains("status: NOERROR") && a.contains("192.0.2.80"),
        "{a}"
    );
    assert!(a.contains(" ra") && !a.contains(" aa"), "{a}");
    // local zone: authoritative as before
    let local = dig(port, &["host.example.com", "A"]);
    assert!(
        local.contains(" aa") && local.contains("192.0.2.80"),
        "{local}"
    );
    // negative answers come back with the upstream's SOA
    let nx = dig(port, &["+tcp", "nope.example.org", "A"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("SOA"),
        "{nx}"
    );
    // the upstream truncates this over UDP: the forwarder asks again over TCP
    let big = dig(port, &["+tcp", "big.example.org", "TXT"]);
    assert!(big.contains("ANSWER: 8"), "{big}");
    // dnspython over DoQ, forwarded too
    let py = Command::new("python3")
        .args([
            "-c",
            "import sys, dns.message, dns.query\n\
             r = dns.query.quic(dns.message.make_query('mail.example.org', 'A'), '127.0.0.1',\n\
                 port=int(sys.argv[1]), verify=False, timeout=10)\n\
             print(r.answer[0][0].to_text())",
            &front.port.to_string(),
        ])
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        "192.0.2.25",
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );

    // the upstream goes away: what was cached still answers, the rest is SERVFAIL
    drop(upstream); // killed and reaped
    let cached = dig(port, &["host.example.org", "A"]);
    assert!(cached.contains("192.0.2.80"), "{cached}");
    let cached_nx = dig(port, &["nope.example.org", "A"]);
    assert!(cached_nx.contains("status: NXDOMAIN"), "{cached_nx}");
    let gone = dig(port, &["web.example.org", "A"]);
    assert!(gone.contains("status: SERVFAIL"), "{gone}");

    // a source outside recursion_allow is refused
    let (_closed, closed_port) = serve_zone(
        "example.com",
        &format!("upstreams = [\"127.0.0.1:{up_port}\"]\nrecursion_allow = [\"10.0.0.0/8\"]"),
    );
    let refused = dig(closed_port, &["host.example.org", "A"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");
}

/// How long the fake upstream sits on a "slow" name; `forward_timeout_ms` is well above it.
const SLOW_UPSTREAM: Duration = Duration::from_millis(1000);

/// [`serve_zone`] for example.com forwarding everything else to `upstream`, recursion
/// allowed from loopback.
fn front(upstream: &FakeUpstream, extra: &str) -> (BinServer, u16) {
    serve_zone(
        "example.com",
        &format!(
            "upstreams = [\"{}\"]\nrecursion_allow = [\"127.0.0.0/8\"]\n\
             forward_timeout_ms = 5000\n{extra}",
            upstream.addr
        ),
    )
}

/// tests/interop/dnspython_forwarded.py in `mode` against `port`; its output.
fn dnspython(port: u16, mode: &str) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/interop/dnspython_forwarded.py"
    );
    let (ok, out, err) = run_client(Command::new("python3").arg(script).args([
        "--port",
        &port.to_string(),
        "--mode",
        mode,
    ]));
    assert!(
        ok && out.contains("forwarded checks passed"),
        "{mode}:\n{out}\n{err}"
    );
    out
}

#[test]
fn tcp_answers_pipelined_queries_as_they_are_ready() {
    let upstream = FakeUpstream::start(SLOW_UPSTREAM);
    let (_server, port) = front(&upstream, "");
    dnspython(port, "out-of-order");
    // one query in flight at most: the one behind the second slow query waits for the first
    let (_bounded, port) = front(&upstream, "max_pipelined_queries = 1");
    dnspython(port, "bound");
}

#[test]
fn forwarded_answers_are_padded() {
    let upstream = FakeUpstream::start(SLOW_UPSTREAM);
    let (server, _) = front(&upstream, "");
    dnspython(server.port, "doq-padding");

    // kdig pads its DoT queries by default; it prints the answer's size on the wire
    let dot = kdig(server.port, &["+tls", "kdig.example.org", "A"]);
    assert!(
        dot.contains("status: NOERROR") && dot.contains(&FAKE_UPSTREAM_A.to_string()),
        "{dot}"
    );
    assert!(dot.contains("PADDING"), "a padded forwarded answer:\n{dot}");
    let received: usize = dot
        .lines()
        .find_map(|l| {
            l.strip_prefix(";; Received ")?
                .strip_suffix(" B")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no answer size in:\n{dot}"));
    assert_eq!(received % 468, 0, "{received} bytes:\n{dot}");
}
