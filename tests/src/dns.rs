//! Helpers of the DNS tests: a port free for UDP and TCP alike, BIND's `dig` (Debian
//! `bind9-dnsutils`), Knot's `kdig` (`knot-dnsutils`) and a dnspython DoQ query
//! (`dnspython[doq]`), bounded in time, all installed by tests/run-all.sh; and a fake
//! upstream resolver for the forwarding tests.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::wait_output;

/// A query for `name` `qtype` with message ID `id`, framed with its two-byte length as on
/// TCP, DoT, `alknet/dns` and DoQ (RFC 1035 §4.2.2, RFC 9250 §4.2).
pub fn framed_query(name: &str, qtype: hickory_proto::rr::RecordType, id: u16) -> Vec<u8> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use std::str::FromStr;
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    let name = hickory_proto::rr::Name::from_str(name).expect("a valid name");
    m.add_query(Query::query(name, qtype));
    let wire = m.to_vec().expect("encode");
    let mut out = (wire.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&wire);
    out
}

/// A loopback port free for both UDP and TCP, so a classic DNS listener can take both
/// (and dig's retry over TCP after a truncated UDP answer finds it).
pub fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// `dig @127.0.0.1 -p PORT ARGS…` (5 s, one try); its whole output.
pub fn dig(port: u16, args: &[&str]) -> String {
    let child = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=5", "+tries=1"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dig (apt-get install bind9-dnsutils)");
    let out = wait_output(child, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dig {args:?}:\n{text}");
    text
}

/// `dig +short …`: the answer lines.
pub fn dig_short(port: u16, args: &[&str]) -> Vec<String> {
    let mut a = vec!["+short"];
    a.extend_from_slice(args);
    dig(port, &a).lines().map(str::to_string).collect()
}

/// How long a DNS client run by [`run_client`] may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs a client to completion (at most [`CLIENT_TIMEOUT`]): whether it succeeded, its
/// stdout and its stderr.
pub fn run_client(cmd: &mut Command) -> (bool, String, String) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (tests/run-all.sh installs it)"));
    let out = wait_output(child, CLIENT_TIMEOUT);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Knot's `kdig @127.0.0.1 -p PORT ARGS…` (Debian `knot-dnsutils`; 10 s, no retry); its
/// output, after asserting it succeeded.
pub fn kdig(port: u16, args: &[&str]) -> String {
    let (ok, out, err) = run_client(
        Command::new("kdig")
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+time=10",
                "+retry=0",
            ])
            .args(args),
    );
    assert!(ok, "kdig {args:?}:\n{out}\n{err}");
    out
}

/// The first answer record's data (e.g. `192.0.2.1`) of a `qtype` query for `name`, asked
/// by dnspython over DoQ (`dns.query.quic`, certificate not verified) of the server on
/// QUIC port `port`.
pub fn doq_first_answer(port: u16, name: &str, qtype: &str) -> String {
    let child = Command::new("python3")
        .args([
            "-c",
            "import sys, dns.message, dns.query\n\
             r = dns.query.quic(dns.message.make_query(sys.argv[2], sys.argv[3]), '127.0.0.1',\n\
                 port=int(sys.argv[1]), verify=False, timeout=10)\n\
             print(r.answer[0][0].to_text())",
            &port.to_string(),
            name,
            qtype,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (tests/run-all.sh installs dnspython[doq])");
    let out = wait_output(child, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "dnspython DoQ {name} {qtype}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A stand-in upstream resolver on a loopback UDP port, for the forwarding tests: every A
/// question gets [`FAKE_UPSTREAM_A`] (TTL 60, RA), other types an empty NOERROR, and each
/// answer carries an EDNS Padding option of its own odd length
/// ([`FAKE_UPSTREAM_PADDING`]), so one relayed as it came would show. A name whose first
/// label begins with `slow` is answered after `delay`, the rest at once. Stops when dropped.
pub struct FakeUpstream {
    pub addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The address every A answer of a [`FakeUpstream`] holds.
pub const FAKE_UPSTREAM_A: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 77);

/// Bytes of the Padding option in a [`FakeUpstream`]'s answers (no block size would make it).
pub const FAKE_UPSTREAM_PADDING: usize = 33;

/// How long a [`FakeUpstream`] serves at most, whatever the test does.
const FAKE_UPSTREAM_LIFETIME: Duration = Duration::from_secs(300);

/// Delayed answers a [`FakeUpstream`] holds at once; past it queries are dropped.
const FAKE_UPSTREAM_PENDING: usize = 1024;

impl FakeUpstream {
    pub fn start(delay: Duration) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Instant;

        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind fake upstream");
        let addr = socket.local_addr().expect("addr");
        // the granularity of the delays and of noticing the stop
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut pending: Vec<(Instant, Vec<u8>, std::net::SocketAddr)> = Vec::new();
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) && started.elapsed() < FAKE_UPSTREAM_LIFETIME {
                let now = Instant::now();
                pending.retain(|(due, answer, peer)| {
                    if *due > now {
                        return true;
                    }
                    let _ = socket.send_to(answer, peer);
                    false
                });
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Some((answer, slow)) = fake_answer(&buf[..n]) else {
                    continue;
                };
                if !slow {
                    let _ = socket.send_to(&answer, peer);
                } else if pending.len() < FAKE_UPSTREAM_PENDING {
                    pending.push((Instant::now() + delay, answer, peer));
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A [`FakeUpstream`]'s answer to `query`, and whether it is one to delay.
fn fake_answer(query: &[u8]) -> Option<(Vec<u8>, bool)> {
    use hickory_proto::op::{Edns, Message, Metadata};
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record, RecordType};

    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let slow = question
        .name
        .iter()
        .next()
        .is_some_and(|label| label.starts_with(b"slow"));
    let mut resp = Message::response(q.id, q.op_code);
    resp.metadata = Metadata::response_from_request(&q.metadata);
    resp.metadata.recursion_available = true;
    if question.query_type == RecordType::A {
        resp.add_answer(Record::from_rdata(
            question.name.clone(),
            60,
            RData::A(A(FAKE_UPSTREAM_A)),
        ));
    }
    resp.add_query(question);
    let mut edns = Edns::new();
    edns.options_mut().insert(EdnsOption::Unknown(
        u16::from(EdnsCode::Padding),
        vec![0; FAKE_UPSTREAM_PADDING],
    ));
    resp.set_edns(edns);
    Some((resp.to_vec().ok()?, slow))
}
