//! A path whose interface MTU is below the path-MTU probes: the kernel refuses the probes
//! (EMSGSIZE under `IP_PMTUDISC_PROBE`) and both ends must treat that as a lost probe.
//!
//! This is the everyday case of IPv6 over Ethernet (1500-byte MTU: at most 1452 bytes of
//! UDP payload, and the engine probes up to 1472), of PPPoE, VPN and tunnel links. Before
//! the fix a refused send was kept as "socket full" and retried forever, and the worker
//! stopped serving every connection it owned.
//!
//! The test runs on a thread that moves into a network namespace of its own (root, as CI
//! runs) whose loopback has a 1400-byte MTU; the server's workers and the client's runtime
//! start from that thread and stay in it.

use std::process::Command;
use std::time::{Duration, Instant};

use alknet_tests::*;

/// The loopback MTU inside the namespace: room for 1372 bytes of UDP payload over IPv4,
/// below the engine's 1472-byte probe ceiling and above QUIC's 1200-byte minimum.
const LOOPBACK_MTU: u32 = 1400;
/// How long the client keeps echoing while it waits for a refused probe on both ends.
const PROBE_WAIT: Duration = Duration::from_secs(20);

/// Moves this thread into a new network namespace and brings its loopback up with
/// `mtu`. Threads and processes started from this thread afterwards share it.
fn enter_namespace_with_loopback_mtu(mtu: u32) {
    // SAFETY: unshare takes no pointers; CLONE_NEWNET affects the calling thread only.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) refused ({}): this test needs root (CAP_SYS_ADMIN), as CI has",
        std::io::Error::last_os_error()
    );
    let status = Command::new("ip")
        .args(["link", "set", "lo", "mtu", &mtu.to_string(), "up"])
        .status()
        .expect("run `ip` (iproute2)");
    assert!(status.success(), "ip link set lo mtu {mtu} up: {status}");
    let show = Command::new("ip")
        .args(["-o", "link", "show", "lo"])
        .output()
        .expect("ip link show");
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains(&format!("mtu {mtu} ")),
        "loopback not at mtu {mtu}: {show}"
    );
}

fn echo_survives_refused_mtu_probes(workers: usize) {
    let worker = std::thread::spawn(move || {
        enter_namespace_with_loopback_mtu(LOOPBACK_MTU);
        let server = start_server(ServerOptions {
            workers,
            ..Default::default()
        });
        let (client_errors, rounds) = run_client(|| async {
            let endpoint = client_endpoint();
            let conn = connect(&endpoint, &server, alknet_echo::ALPN)
                .await
                .expect("connect");
            let start = Instant::now();
            let mut rounds = 0u64;
            // echo until both ends have had a probe refused (so the refusal path ran), then
            // more: every round must come back whole
            let mut after = 0;
            while after < 20 {
                let len = [0usize, 1, 1199, 1500, 64 * 1024, 300_000][(rounds % 6) as usize];
                let data = payload(rounds, len);
                let want = sha256(&data);
                let got =
                    monoio::time::timeout(Duration::from_secs(10), echo_roundtrip(&conn, data))
                        .await
                        .unwrap_or_else(|_| {
                            panic!(
                            "echo round {rounds} ({len} bytes) stalled: server {:?}, client {:?}",
                            server.total_stats(),
                            endpoint.stats()
                        )
                        });
                assert_eq!(got, want, "round {rounds}: {len} bytes echoed differently");
                rounds += 1;
                let refused_both =
                    server.total_stats().send_errors > 0 && endpoint.stats().send_errors > 0;
                if refused_both {
                    after += 1;
                } else {
                    assert!(
                        start.elapsed() < PROBE_WAIT,
                        "no refused probe on both ends after {rounds} rounds: server {:?}, \
                         client {:?}",
                        server.total_stats(),
                        endpoint.stats()
                    );
                    monoio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            assert!(
                conn.close_reason().is_none(),
                "connection closed: {:?}",
                conn.close_reason()
            );
            (endpoint.stats().send_errors, rounds)
        });
        let stats = server.total_stats();
        // only probes are refused: every other packet fits, so the count stays small
        // (quinn-proto sends each probe size at most three times before it settles lower)
        assert!(
            stats.send_errors > 0 && stats.send_errors <= 30,
            "server send errors {}",
            stats.send_errors
        );
        assert!(client_errors <= 30, "client send errors {client_errors}");
        assert_eq!(stats.connections_accepted, 1);
        assert_eq!(stats.handler_panics + stats.handler_errors, 0);
        rounds
    });
    let rounds = worker
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(rounds >= 20);
}

#[test]
fn echo_survives_refused_mtu_probes_one_worker() {
    echo_survives_refused_mtu_probes(1);
}

#[test]
fn echo_survives_refused_mtu_probes_two_workers() {
    echo_survives_refused_mtu_probes(2);
}
