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

    // a query asking for EDNS(0) padding gets none over plaintext UDP or TCP (RFC 7830 §4
    // forbids it there; padded, a 60-byte UDP query would draw a 468-byte answer)
    for transport in ["+notcp", "+tcp"] {
        let out = dig(port, &[transport, "+padding=128", "host.example.com", "A"]);
        assert!(out.contains("192.0.2.80"), "{out}");
        assert!(!out.contains("PAD:"), "padded over plaintext: {out}");
        let size = out
            .lines()
            .find_map(|l| l.split(";; MSG SIZE  rcvd: ").nth(1))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no MSG SIZE in {out}"));
        assert!(size < 468, "{size}-byte answer");
    }

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

/// Slow and abandoned TCP peers cost a connection slot only for `tcp_idle_timeout_ms`: a
/// client that sends nothing is closed, and so is one that sends queries but never reads
/// its answers (the server stops reading it once its answers back up, then gives up on
/// the write). With `max_tcp_connections = 1`, a new client is served only once the
/// non-reading one is gone.
#[test]
fn tcp_closes_idle_and_non_reading_clients() {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    use hickory_proto::op::Message;
    use hickory_proto::rr::RecordType;

    /// The configured idle (and write stall) timeout.
    const IDLE: Duration = Duration::from_millis(500);
    /// Bounds on the client's side: writing until the server stops reading, and waiting.
    const MAX_QUERIES: usize = 200_000;
    const WAIT: Duration = Duration::from_secs(20);

    let (_server, port) = BinServer::start_with_port_config(|port| {
        format!(
            "workers = 1\n[handlers]\nenabled = [\"doq\"]\n\
             [dns]\ntcp_listen = \"127.0.0.1:{port}\"\ntcp_idle_timeout_ms = {}\n\
             max_tcp_connections = 1\n\
             [[dns.zones]]\norigin = \"example.com\"\nfile = {ZONE:?}\n",
            IDLE.as_millis()
        )
    });
    let framed = |id: u16, name: &str, qtype| alknet_tests::dns::framed_query(name, qtype, id);

    // idle: closed after the timeout, not before
    let started = Instant::now();
    let mut idle = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    idle.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = [0u8; 64];
    assert_eq!(idle.read(&mut buf).expect("closed, not timed out"), 0);
    assert!(
        started.elapsed() >= IDLE,
        "closed after {:?}",
        started.elapsed()
    );
    drop(idle);

    // a new client gets the one slot once the last one's is given back: asks until served
    let host = framed(8, "host.example.com.", RecordType::A);
    let served = || {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no slot for a new client");
            let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            c.set_read_timeout(Some(IDLE * 4)).expect("timeout");
            let mut len = [0u8; 2];
            // closed at once while the slot is still taken
            if c.write_all(&host).is_err() || c.read_exact(&mut len).is_err() {
                std::thread::sleep(IDLE / 5);
                continue;
            }
            let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
            c.read_exact(&mut body).expect("an answer");
            break (c, Message::from_vec(&body).expect("decode"));
        }
    };

    // a client that stops reading: it writes until the server stops reading it, or gives
    // up on it (a reset: the server wrote nothing for the timeout and closed)
    let (mut deaf, _) = served();
    deaf.set_write_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let big = framed(7, "big.example.com.", RecordType::TXT);
    let mut sent = 0;
    while sent < MAX_QUERIES {
        match deaf.write_all(&big) {
            Ok(()) => sent += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                break
            }
            Err(e) => panic!("writing to the server: {e}"),
        }
    }
    assert!(sent < MAX_QUERIES, "the server never stopped reading");

    // it is dropped after the stall timeout: the one slot serves a new client
    let (_c, answered) = served();
    assert_eq!(answered.id, 8);
    assert_eq!(answered.answers.len(), 1);
    drop(deaf);
}
