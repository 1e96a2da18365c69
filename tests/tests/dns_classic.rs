//! Classic DNS (`[dns] udp_listen`, `tcp_listen`) on the real `alknet serve` binary, asked
//! by BIND's `dig` (Debian `bind9-dnsutils`, installed by tests/run-all.sh): answers over
//! UDP and TCP, truncation with TC and dig's retry over TCP, pipelined TCP queries on one
//! connection, and the REFUSED/NOTIMP rules; response rate limiting on UDP.

use std::time::Duration;

use alknet_tests::dns::{dig, dig_short};
use alknet_tests::*;

const ZONE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/example.com.zone");

#[test]
fn dig_over_udp_and_tcp() {
    // "alknet serving" is logged after the classic listeners are bound
    let (server, port) = BinServer::start_with_port_config(|port| {
        format!(
            "[handlers]\nenabled = [\"doq\"]\n\
             [dns]\nudp_listen = \"127.0.0.1:{port}\"\ntcp_listen = \"127.0.0.1:{port}\"\n\
             [[dns.zones]]\norigin = \"example.com\"\nfile = {ZONE:?}\n"
        )
    });

    assert_eq!(dig_short(port, &["host.example.com", "A"]), ["192.0.2.80"]);
    // served on the engine's workers (thread-per-core): no listener threads of their own
    let threads = thread_names(server.pid());
    assert!(
        threads.iter().any(|t| t.starts_with("alknet-w"))
            && !threads.iter().any(|t| t.starts_with("dns-classic")),
        "{threads:?}"
    );
    assert_eq!(
        dig_short(port, &["+tcp", "host.example.com", "AAAA"]),
        ["2001:db8::80"]
    );
    assert_eq!(
        dig_short(port, &["www.example.com", "A"]),
        ["web.example.com.", "host.example.com.", "192.0.2.80"]
    );
    assert_eq!(
        dig_short(port, &["_sip._tcp.example.com", "SRV"]),
        ["10 60 5060 host.example.com."]
    );
    assert_eq!(
        dig_short(port, &["a.b.wild.example.com", "A"]),
        ["192.0.2.99"]
    );

    // asked again in other letter cases (the second time from the answer cache, which is
    // keyed by the query's exact bytes): the question comes back as it was asked
    for _ in 0..2 {
        for name in ["HoSt.ExAmple.com", "HOST.EXAMPLE.COM"] {
            let mixed = dig(port, &["+noall", "+question", "+answer", name, "A"]);
            assert!(mixed.contains(&format!(";{name}.")), "{mixed}");
            assert!(mixed.contains("192.0.2.80"), "{mixed}");
        }
    }

    let nx = dig(port, &["nope.example.com", "A"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains(" aa"),
        "{nx}"
    );
    assert!(nx.contains("AUTHORITY: 1") && nx.contains("SOA"), "{nx}");
    let nodata = dig(port, &["+tcp", "host.example.com", "MX"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );

    // over 512 bytes without EDNS0: truncated, and dig (told to ignore TC) shows it
    let tc = dig(port, &["+ignore", "+noedns", "big.example.com", "TXT"]);
    assert!(tc.contains(" tc") && tc.contains("ANSWER: 0"), "{tc}");
    // past our 1232-byte EDNS0 limit even when the client takes 4096
    let tc = dig(
        port,
        &["+ignore", "+bufsize=4096", "big.example.com", "TXT"],
    );
    assert!(tc.contains(" tc"), "{tc}");
    // without +ignore, dig retries over TCP on the same port and gets all of it
    let retried = dig(port, &["big.example.com", "TXT"]);
    assert!(
        retried.contains("Truncated, retrying in TCP mode"),
        "{retried}"
    );
    assert!(retried.contains("ANSWER: 8"), "{retried}");
    assert_eq!(
        dig_short(port, &["+tcp", "big.example.com", "TXT"]).len(),
        8
    );

    // several queries pipelined on one TCP connection
    let many = dig(
        port,
        &[
            "+tcp",
            "+keepopen",
            "+short",
            "host.example.com",
            "A",
            "mail.example.com",
            "A",
            "ns1.example.com",
            "A",
        ],
    );
    let lines: Vec<&str> = many.lines().collect();
    assert_eq!(lines, ["192.0.2.80", "192.0.2.25", "192.0.2.53"], "{many}");

    let refused = dig(port, &["example.org", "A"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");
    let chaos = dig(port, &["version.bind", "CH", "TXT"]);
    assert!(chaos.contains("status: REFUSED"), "{chaos}");
    let axfr = dig(port, &["example.com", "AXFR"]);
    assert!(axfr.contains("Transfer failed"), "{axfr}");
    let notify = dig(port, &["+opcode=notify", "example.com", "SOA"]);
    assert!(notify.contains("status: NOTIMP"), "{notify}");
}

#[test]
fn udp_answers_are_rate_limited_per_source() {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::str::FromStr;

    let (_server, port) = BinServer::start_with_port_config(|port| {
        format!(
            "workers = 1\n[handlers]\nenabled = [\"doq\"]\n\
             [dns]\nudp_listen = \"127.0.0.1:{port}\"\nrrl_responses_per_second = 1\nrrl_slip = 2\n\
             [[dns.zones]]\norigin = \"example.com\"\nfile = {ZONE:?}\n"
        )
    });
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    for id in 0..20u16 {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_str("host.example.com.").expect("name"),
            RecordType::A,
        ));
        sock.send_to(&m.to_vec().expect("encode"), ("127.0.0.1", port))
            .expect("send");
    }
    let (mut full, mut truncated) = (0, 0);
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        let m = Message::from_vec(&buf[..n]).expect("decode");
        if m.truncation {
            assert!(m.answers.is_empty());
            truncated += 1;
        } else {
            full += 1;
        }
    }
    // a burst of 1 (2 if the server stalls a second mid-burst), then every 2nd slips as TC
    assert!((1..=2).contains(&full), "{full} full answers");
    assert!(
        (8..=10).contains(&truncated),
        "{truncated} truncated answers"
    );
    assert!(full + truncated < 20, "the rest were dropped");
}

/// The names of a process's threads, from /proc.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc task dir");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}
