//! DNS over QUIC (`doq`, RFC 9250) and pipelined `alknet/dns`:
//! - the real `alknet serve` binary with a `[dns]` zone, asked by dnspython's DoQ client
//!   and by aioquic breaking RFC 9250 on purpose (tests/interop/dnspython_doq.py), then a
//!   zone file edit that the running server picks up;
//! - the handlers on an in-process engine with our own client, for what a stock client
//!   cannot be made to do: too many queries at once, a query that never completes, a
//!   cancelled query, thousands of pipelined queries, recursion only with the
//!   `dns:recursion` scope.
//!
//! `.ci/run` installs dnspython and aioquic (tests/interop/requirements.txt).

use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alknet_dns::{
    shared, Catalog, DnsConfig, DnsState, DoqHandler, PipelineHandler, SharedCatalog, Zone,
    DOQ_ALPN, PIPELINE_ALPN,
};
use alknet_runtime::{Connection, ReadError, VarInt};
use alknet_tests::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

const ZONE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/example.com.zone");
const DOQ_REQUEST_CANCELLED: u32 = 0x3;
const DOQ_EXCESSIVE_LOAD: u32 = 0x4;

fn query(name: &str, qtype: RecordType, id: u16) -> Vec<u8> {
    alknet_tests::dns::framed_query(name, qtype, id)
}

/// The messages of a whole stream of length-prefixed answers.
fn split_answers(mut wire: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while wire.len() >= 2 {
        let n = u16::from_be_bytes([wire[0], wire[1]]) as usize;
        out.push(Message::from_vec(&wire[2..2 + n]).expect("decode answer"));
        wire = &wire[2 + n..];
    }
    assert!(wire.is_empty(), "trailing bytes");
    out
}

async fn doq_ask(conn: &Connection, name: &str, qtype: RecordType) -> Message {
    let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
    send.write_all(&query(name, qtype, 0)).await.expect("write");
    send.finish().expect("finish");
    let wire = recv.read_to_end(70_000).await.expect("read answer");
    let mut answers = split_answers(&wire);
    assert_eq!(answers.len(), 1, "one answer per DoQ stream");
    answers.remove(0)
}

fn a_records(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

fn example_catalog() -> SharedCatalog {
    let zone = Zone::load("example.com.", ZONE.as_ref()).expect("zone");
    shared(Catalog::new([Arc::new(zone)]))
}

fn dns_server(config: DnsConfig) -> alknet_runtime::ServerHandle {
    let dns = DnsState::new(example_catalog(), config);
    start_server(ServerOptions {
        handlers: vec![
            Arc::new(DoqHandler::new(dns.clone())),
            Arc::new(PipelineHandler::new(dns)),
        ],
        ..Default::default()
    })
}

#[test]
fn dnspython_and_aioquic_against_the_binary() {
    require_aioquic();
    let probe = Command::new("python3")
        .args(["-c", "import dns.quic"])
        .output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "python3 with dnspython[doq] is required: pip install -r tests/interop/requirements.txt"
    );
    let zones = tempfile::tempdir().expect("tempdir");
    let zone_file = zones.path().join("example.com.zone");
    let zone_text = std::fs::read_to_string(ZONE).expect("zone");
    std::fs::write(&zone_file, &zone_text).expect("write zone");
    let server = BinServer::start_with_config(&format!(
        "[handlers]\nenabled = [\"doq\", \"alknet/dns\"]\n\
         [dns]\nreload_interval_ms = 100\n\
         [[dns.zones]]\norigin = \"example.com\"\nfile = {zone_file:?}\n"
    ));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/dnspython_doq.py");
    let child = Command::new("python3")
        .arg(script)
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let out = wait_output(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dnspython interop failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("dnspython doq: 20 passed, 0 failed"),
        "unexpected output:\n{stdout}"
    );

    // the running server picks up an edited zone file; a broken edit keeps the last good one
    let fp = alknet_proto::Fingerprint::from_str(&server.fingerprint()).expect("fingerprint");
    let addr = server.addr().parse().expect("addr");
    let ask = |name: &'static str| {
        run_client(|| async move {
            let ep = client_endpoint();
            let conn = connect_addr(&ep, addr, fp, DOQ_ALPN)
                .await
                .expect("connect");
            a_records(&doq_ask(&conn, name, RecordType::A).await)
        })
    };
    assert!(ask("new.example.com.").is_empty());
    std::fs::write(&zone_file, format!("{zone_text}new IN A 192.0.2.7\n")).expect("edit zone");
    server.wait_for_log("dns zone reloaded");
    assert_eq!(ask("new.example.com."), vec!["192.0.2.7"]);
    std::fs::write(&zone_file, format!("{zone_text}broken IN A 300.1.2.3\n")).expect("break");
    let log = server.wait_for_log("dns zone not reloaded");
    let line = format!("line {}", zone_text.lines().count() + 1);
    assert!(
        log.last().is_some_and(|l| l.contains(&line)),
        "the failing line is logged: {log:?}"
    );
    assert_eq!(ask("new.example.com."), vec!["192.0.2.7"], "old zone kept");
}

#[test]
fn doq_refuses_excess_queries_and_abandons_slow_ones() {
    let server = dns_server(DnsConfig {
        max_queries_per_connection: 1,
        query_timeout: Duration::from_millis(300),
        ..DnsConfig::default()
    });
    run_client(|| async {
        let ep = client_endpoint();
        let conn = connect(&ep, &server, DOQ_ALPN).await.expect("connect");
        let started = Instant::now();
        // a query that never completes holds the one slot...
        let (mut slow_send, mut slow_recv) = conn.open_bi().await.expect("open").split();
        slow_send.write_all(&[0, 40, 0]).await.expect("write");
        // ...so the next stream is refused with DOQ_EXCESSIVE_LOAD
        let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
        send.write_all(&query("host.example.com.", RecordType::A, 0))
            .await
            .expect("write");
        send.finish().expect("finish");
        match recv.read_to_end(70_000).await {
            Err(alknet_runtime::ReadToEndError::Read(ReadError::Reset(code))) => {
                assert_eq!(code, VarInt::from_u32(DOQ_EXCESSIVE_LOAD))
            }
            other => panic!("expected EXCESSIVE_LOAD, got {other:?}"),
        }
        // the slow one is abandoned after query_timeout with DOQ_REQUEST_CANCELLED
        match slow_recv.read_to_end(70_000).await {
            Err(alknet_runtime::ReadToEndError::Read(ReadError::Reset(code))) => {
                assert_eq!(code, VarInt::from_u32(DOQ_REQUEST_CANCELLED))
            }
            other => panic!("expected REQUEST_CANCELLED, got {other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(300));
        // the slot is free again, and the connection still serves
        let answer = doq_ask(&conn, "host.example.com.", RecordType::A).await;
        assert_eq!(a_records(&answer), vec!["192.0.2.80"]);
        assert!(conn.close_reason().is_none());
    });
    let stats = server.total_stats();
    assert_eq!(stats.handler_panics + stats.handler_errors, 0);
}

#[test]
fn doq_answers_a_cancelled_query_with_a_reset() {
    let server = dns_server(DnsConfig::default());
    run_client(|| async {
        let ep = client_endpoint();
        let conn = connect(&ep, &server, DOQ_ALPN).await.expect("connect");
        let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
        send.write_all(&[0, 40, 0, 0]).await.expect("write");
        send.reset(VarInt::from_u32(DOQ_REQUEST_CANCELLED))
            .expect("reset");
        match recv.read_to_end(70_000).await {
            Err(alknet_runtime::ReadToEndError::Read(ReadError::Reset(code))) => {
                assert_eq!(code, VarInt::from_u32(DOQ_REQUEST_CANCELLED))
            }
            other => panic!("expected REQUEST_CANCELLED, got {other:?}"),
        }
        let answer = doq_ask(&conn, "www.example.com.", RecordType::A).await;
        assert_eq!(a_records(&answer), vec!["192.0.2.80"]);
    });
}

#[test]
fn alknet_dns_pipelines_thousands_of_queries_on_one_stream() {
    const N: u16 = 5000;
    let server = dns_server(DnsConfig::default());
    run_client(|| async {
        let ep = client_endpoint();
        let conn = connect(&ep, &server, PIPELINE_ALPN).await.expect("connect");
        let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
        let names = [
            "host.example.com.",
            "nope.example.com.",
            "x.wild.example.com.",
        ];
        let mut batch = Vec::new();
        for id in 0..N {
            batch.extend(query(
                names[usize::from(id) % 3],
                RecordType::A,
                id.wrapping_mul(7),
            ));
        }
        let writer = async move {
            send.write_all(&batch).await.expect("write");
            send.finish().expect("finish");
        };
        let reader = async move { recv.read_to_end(N as usize * 200).await.expect("read") };
        let ((), wire) = join(writer, reader).await;
        let answers = split_answers(&wire);
        assert_eq!(answers.len(), usize::from(N));
        let mut ids: Vec<u16> = answers.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        let mut want: Vec<u16> = (0..N).map(|i| i.wrapping_mul(7)).collect();
        want.sort_unstable();
        assert_eq!(ids, want, "every ID answered once");
        let nx = answers
            .iter()
            .filter(|m| m.response_code == ResponseCode::NXDomain)
            .count();
        assert_eq!(nx, (0..N).filter(|i| i % 3 == 1).count());
        // a bad message ends only its stream
        let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
        send.write_all(&[0, 3, 1, 2, 3]).await.expect("write");
        send.finish().expect("finish");
        assert!(matches!(
            recv.read_to_end(1000).await,
            Err(alknet_runtime::ReadToEndError::Read(ReadError::Reset(_)))
        ));
        assert!(conn.close_reason().is_none());
    });
}

#[test]
fn doq_recursion_needs_the_dns_recursion_scope() {
    use alknet_runtime::tls::{client_crypto, ServerTrust, TlsIdentity};
    use alknet_runtime::{ConfigIdentityProvider, IdentityEntry};

    // the upstream: this crate's classic UDP listener holding the zone as example.org
    let zone = Zone::load("example.org.", ZONE.as_ref()).expect("zone");
    let upstream_config = DnsConfig {
        udp_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..DnsConfig::default()
    };
    let upstream_dns = DnsState::new(shared(Catalog::new([Arc::new(zone)])), upstream_config);
    let upstream = alknet_dns::start_classic(&upstream_dns, 1)
        .expect("upstream")
        .udp
        .expect("udp address");

    let alice = TlsIdentity::generate_self_signed(&[]).expect("alice cert");
    let provider = ConfigIdentityProvider::new(&[IdentityEntry {
        name: "alice".into(),
        fingerprints: vec![alice.fingerprint().to_string()],
        tokens: vec![],
        scopes: vec![alknet_dns::doq::RECURSION_SCOPE.into()],
    }])
    .expect("identities");
    let config = DnsConfig {
        upstreams: vec![upstream],
        ..DnsConfig::default()
    };
    let handler = DoqHandler::new(DnsState::new(example_catalog(), config));
    let server = start_server(ServerOptions {
        handlers: vec![Arc::new(handler)],
        provider: Arc::new(provider),
        ..Default::default()
    });
    run_client(|| async {
        let ep = client_endpoint();
        let as_alice = client_crypto(
            &ServerTrust::Fingerprint(server.fingerprint()),
            vec![DOQ_ALPN.to_vec()],
            Some(&alice),
        )
        .expect("crypto");
        let conn = ep
            .connect(server.local_addr(), "localhost", as_alice)
            .await
            .expect("alice connects");
        let mut q = Message::new(0, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(
            Name::from_str("host.example.org.").expect("name"),
            RecordType::A,
        ));
        let ask = |conn: Connection, q: Message| async move {
            let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
            let wire = q.to_vec().expect("encode");
            let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&wire);
            send.write_all(&framed).await.expect("write");
            send.finish().expect("finish");
            let mut answers = split_answers(&recv.read_to_end(70_000).await.expect("read"));
            answers.remove(0)
        };
        let forwarded = ask(conn.clone(), q.clone()).await;
        assert_eq!(a_records(&forwarded), vec!["192.0.2.80"]);
        assert!(forwarded.recursion_available && !forwarded.authoritative);
        // the same question without the scope: no open resolver
        let anonymous = connect(&ep, &server, DOQ_ALPN).await.expect("connect");
        let refused = ask(anonymous, q).await;
        assert_eq!(refused.response_code, ResponseCode::Refused);
        assert!(refused.answers.is_empty());
    });
}
