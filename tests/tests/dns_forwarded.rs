//! Forwarded answers on the real `alknet serve` binary, against a fake upstream on loopback
//! that answers names beginning with "slow" only after [`SLOW_UPSTREAM`]
//! ([`FakeUpstream`]), asked by clients nobody here wrote:
//! - dnspython pipelining queries on one classic TCP connection: the local answers come
//!   back before the slow forwarded one (RFC 7766 §6.2.1.1), each ID once, and with
//!   `max_pipelined_queries = 1` the connection is not read past the bound
//!   (tests/interop/dnspython_forwarded.py);
//! - dnspython over DoQ and Knot's `kdig +tls`: a padded query for a forwarded name gets
//!   an answer padded to a multiple of 468 bytes (RFC 8467), the upstream's own padding
//!   not relayed.
//!
//! `tests/run-all.sh` installs dnspython[doq] and knot-dnsutils.

use std::process::{Command, Stdio};
use std::time::Duration;

use alknet_tests::dns::{FakeUpstream, FAKE_UPSTREAM_A};
use alknet_tests::*;

const ZONE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/example.com.zone");
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/interop/dnspython_forwarded.py"
);
/// How long the fake upstream sits on a "slow" name; `forward_timeout_ms` is well above it.
const SLOW_UPSTREAM: Duration = Duration::from_millis(1000);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// `alknet serve` with example.com, classic DNS on a port of its own (returned), and
/// `upstream` for everything else, recursion allowed from loopback.
fn front(upstream: &FakeUpstream, extra: &str) -> (BinServer, u16) {
    let up = upstream.addr;
    BinServer::start_with_port_config(|port| {
        format!(
            "[handlers]\nenabled = [\"doq\"]\n\
             [dns]\nudp_listen = \"127.0.0.1:{port}\"\ntcp_listen = \"127.0.0.1:{port}\"\n\
             upstreams = [\"{up}\"]\nrecursion_allow = [\"127.0.0.0/8\"]\n\
             forward_timeout_ms = 5000\n{extra}\n\
             [[dns.zones]]\norigin = \"example.com\"\nfile = {ZONE:?}\n"
        )
    })
}

/// Runs a client to completion (bounded); its stdout, after asserting it succeeded.
fn run(cmd: &mut Command) -> String {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (tests/run-all.sh installs it)"));
    let out = wait_output(child, CLIENT_TIMEOUT);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{cmd:?}:\n{stdout}\n{stderr}");
    stdout
}

fn dnspython(port: u16, mode: &str) -> String {
    let out = run(Command::new("python3").arg(SCRIPT).args([
        "--port",
        &port.to_string(),
        "--mode",
        mode,
    ]));
    assert!(out.contains("forwarded checks passed"), "{out}");
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
    let dot = run(Command::new("kdig").args([
        "@127.0.0.1",
        "-p",
        &server.port.to_string(),
        "+time=10",
        "+retry=0",
        "+tls",
        "kdig.example.org",
        "A",
    ]));
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
