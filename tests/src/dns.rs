//! Helpers of the DNS tests: a port free for UDP and TCP alike, BIND's `dig` (Debian
//! `bind9-dnsutils`) and a dnspython DoQ query (`dnspython[doq]`), bounded in time; both
//! installed by tests/run-all.sh.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::wait_output;

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
