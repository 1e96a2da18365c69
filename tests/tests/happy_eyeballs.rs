//! A server name that resolves to an IPv6 and an IPv4 address, the IPv6 one broken, as
//! happens with a host whose AAAA record points where nothing serves: `alknet connect`
//! tries the addresses in turn (RFC 8305; `alknet/src/eyeballs.rs`) and connects over
//! the one that works, over QUIC and over TLS/TCP, instead of failing or waiting out
//! the broken one's timeout. The name is resolved by the system's resolver
//! (`getaddrinfo`) through nss_wrapper (`libnss-wrapper`), which reads a hosts file of
//! the test's own: nothing of the machine's is changed.

use std::net::UdpSocket;
use std::process::Output;
use std::time::{Duration, Instant};

use alknet_tests::ssh::run_with_input;
use alknet_tests::*;

/// `::1` first (as a resolver ranks IPv6 first by RFC 6724), then `127.0.0.1`.
const HOSTS: &str = "::1 dual.test\n127.0.0.1 dual.test\n";

/// `alknet connect` to `dual.test:PORT` through nss_wrapper, echoing `input`.
fn connect_dual(
    hosts: &std::path::Path,
    port: u16,
    fp: &str,
    transport: &str,
) -> (Output, Duration) {
    let mut cmd = alknet_connect("alknet/echo", &format!("dual.test:{port}"), fp, transport);
    cmd.env("LD_PRELOAD", "libnss_wrapper.so")
        .env("NSS_WRAPPER_HOSTS", hosts)
        .env("ALKNET_LOG", "alknet=debug,alknet_runtime=debug");
    let started = Instant::now();
    let out = run_with_input(cmd, b"which address?\n");
    (out, started.elapsed())
}

/// A TCP port bound on 127.0.0.1 and on ::1 and not listening: a connection to either is
/// refused, and no other process can bind it while the sockets are held.
fn refusing_tcp_port() -> ([socket2::Socket; 2], u16) {
    use socket2::{Domain, Socket, Type};
    for _ in 0..50 {
        let v4 = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        v4.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind 127.0.0.1");
        let port = v4
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("bound address")
            .port();
        let v6 = Socket::new(Domain::IPV6, Type::STREAM, None).expect("socket");
        if v6
            .bind(&std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)).into())
            .is_ok()
        {
            return ([v4, v6], port);
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

#[test]
fn a_name_whose_ipv6_address_is_broken_connects_over_ipv4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, HOSTS).expect("hosts");
    // the server listens on 127.0.0.1 only (the embedded default's address family)
    let server = BinServer::start();
    let fp = server.fingerprint();
    let port = server.port;

    // nothing on [::1]:PORT: the ICMP answer moves on to 127.0.0.1 at once
    for transport in ["quic", "tcp", "auto"] {
        let (out, took) = connect_dual(&hosts, port, &fp, transport);
        let err = text(&out.stderr);
        assert_eq!(text(&out.stdout), "which address?\n", "{transport}: {err}");
        assert!(out.status.success(), "{transport}: {err}");
        if transport == "quic" {
            assert!(
                err.contains("handshake given up: port unreachable") && err.contains("[::1]"),
                "{err}"
            );
        }
        if transport == "auto" {
            assert!(
                err.contains(&format!("connected over QUIC remote=127.0.0.1:{port}")),
                "{err}"
            );
        }
        // the broken address's timeout is 30 s (QUIC idle) and 10 s (TCP connect)
        assert!(took < Duration::from_secs(8), "{transport}: {took:?}");
    }

    // [::1]:PORT swallows datagrams (a path that drops UDP): the IPv4 attempt starts
    // after the attempt delay and wins
    let _sink = UdpSocket::bind(("::1", port)).expect("bind [::1] sink");
    let (out, took) = connect_dual(&hosts, port, &fp, "quic");
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout), "which address?\n", "{err}");
    assert!(took < Duration::from_secs(8), "{took:?}: {err}");

    // a name none of whose addresses serves: every error, at once. Not the server's old
    // port: a parallel test's server may take it once it is free (CI saw one answer
    // there); a port held bound, never listening, refuses every connection
    drop(server);
    let (_held, port) = refusing_tcp_port();
    let (out, took) = connect_dual(&hosts, port, &fp, "tcp");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("[::1]:{port}: TCP connect"))
            && err.contains(&format!("127.0.0.1:{port}: TCP connect")),
        "{err}"
    );
    assert!(took < Duration::from_secs(8), "{took:?}: {err}");
}
