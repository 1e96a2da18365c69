//! `alknet connect --transport auto`: QUIC when it connects, TLS over TCP on the same port
//! when UDP is dropped on the way (here: a path whose TCP port forwards to the server and
//! whose UDP port swallows every datagram, as a firewall that drops UDP does), and a QUIC
//! refusal reported as it is, not retried over TCP; a host where nothing listens on the
//! UDP port (it answers ICMP "port unreachable") fails QUIC at once and `auto` goes to
//! TCP without waiting.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Output;
use std::time::{Duration, Instant};

use alknet_tests::ssh::run_with_input;
use alknet_tests::*;

/// A loopback port that forwards TCP to the server's port and silently drops UDP.
struct UdpBlockedPath {
    port: u16,
    udp: Option<UdpSocket>,
}

impl UdpBlockedPath {
    fn to(server_port: u16) -> Self {
        for _ in 0..20 {
            let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
            let port = tcp.local_addr().expect("addr").port();
            // the same port for UDP, bound and never read: datagrams vanish, no ICMP
            let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) else {
                continue;
            };
            std::thread::spawn(move || {
                for client in tcp.incoming().flatten() {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) {
                        splice(client, server);
                    }
                }
            });
            return Self {
                port,
                udp: Some(udp),
            };
        }
        panic!("no port free for both TCP and UDP");
    }

    /// The same path with nothing bound on its UDP port: the kernel answers datagrams
    /// with ICMP port unreachable, as a host with UDP off or a rejecting firewall does.
    fn without_udp(mut self) -> Self {
        self.udp = None;
        self
    }
}

/// Copies both ways between `a` and `b` until each side ends (threads, bounded by the
/// peers: the test's client exits, the server closes).
fn splice(a: TcpStream, b: TcpStream) {
    for (mut from, mut to) in [
        (a.try_clone().expect("clone"), b.try_clone().expect("clone")),
        (b, a),
    ] {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}

fn connect_auto(addr: &str, fingerprint: &str, alpn: &str, input: &[u8]) -> (Output, Duration) {
    let mut cmd = alknet_connect(alpn, addr, fingerprint, "auto");
    cmd.env("ALKNET_LOG", "alknet=debug");
    run_timed(cmd, input)
}

/// Runs `cmd` with `input` on its stdin; its output and how long it took.
fn run_timed(cmd: std::process::Command, input: &[u8]) -> (Output, Duration) {
    let started = Instant::now();
    let out = run_with_input(cmd, input);
    (out, started.elapsed())
}

#[test]
fn auto_uses_quic_and_falls_back_to_tls_over_tcp_when_udp_is_dropped() {
    let server = BinServer::start();
    let fp = server.fingerprint();

    // a clear path: QUIC, no TCP attempt
    let (out, _) = connect_auto(&server.addr(), &fp, "alknet/echo", b"direct\n");
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout), "direct\n", "{err}");
    assert!(
        err.contains("connected over QUIC") && !err.contains("racing"),
        "{err}"
    );

    // UDP dropped: TLS/TCP after the head start, the session as usual
    let path = UdpBlockedPath::to(server.port);
    let addr = format!("127.0.0.1:{}", path.port);
    let (out, took) = connect_auto(&addr, &fp, "alknet/echo", b"through tcp\n");
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout), "through tcp\n", "{err}");
    assert!(
        err.contains("racing TLS over TCP") && err.contains("connected over TLS/TCP"),
        "{err}"
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");

    // a QUIC refusal is the answer: an ALPN the server does not serve is not tried over TCP
    let (out, took) = connect_auto(&server.addr(), &fp, "alknet/no-such-service", b"");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("racing"), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn nothing_on_the_udp_port_fails_quic_at_once_and_auto_takes_tcp_at_once() {
    let server = BinServer::start();
    let fp = server.fingerprint();
    let path = UdpBlockedPath::to(server.port).without_udp();
    let addr = format!("127.0.0.1:{}", path.port);

    // QUIC alone: the ICMP answer ends the handshake (the idle timeout is 30 s)
    let (out, took) = run_timed(alknet_connect("alknet/echo", &addr, &fp, "quic"), b"");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("no QUIC server there") && err.contains("ICMP port unreachable"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}: {err}");

    // auto with a fallback delay longer than the test may take: TLS/TCP at once
    let mut cmd = alknet_connect("alknet/echo", &addr, &fp, "auto");
    cmd.args(["--fallback-delay-ms", "60000"])
        .env("ALKNET_LOG", "alknet=debug");
    let (out, took) = run_timed(cmd, b"no udp here\n");
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout), "no udp here\n", "{err}");
    assert!(
        err.contains("(ICMP port unreachable); trying TLS over TCP")
            && err.contains("connected over TLS/TCP")
            && !err.contains("racing"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");

    // neither: both errors, at once
    drop(path);
    drop(server);
    let (out, took) = run_timed(alknet_connect("alknet/echo", &addr, &fp, "auto"), b"");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("over QUIC:")
            && err.contains("ICMP port unreachable")
            && err.contains("over TLS/TCP:"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}: {err}");
}

#[test]
fn a_connect_timeout_bounds_a_path_that_drops_everything() {
    // UDP swallowed, TCP forwarded to a port where nothing listens: no server at all,
    // so the pin is never checked
    let path = UdpBlockedPath::to(alknet_tests::ssh::free_tcp_port());
    let addr = format!("127.0.0.1:{}", path.port);
    let mut cmd = alknet_connect("alknet/echo", &addr, &"00".repeat(32), "quic");
    cmd.args(["--connect-timeout-ms", "1500"]);
    let (out, took) = run_timed(cmd, b"");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no connection within 1.5s"), "{err}");
    // the bound, not QUIC's idle timeout (30 s)
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
