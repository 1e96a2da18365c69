//! A client whose address changes mid-connection (NAT rebinding, migration) keeps its
//! connection. With kernel CID steering the kernel delivers its packets to the owning
//! worker directly; without it the 4-tuple hash may pick another worker, which forwards
//! the datagrams to the worker named in the CID.

use alknet_tests::*;

/// The loopback address of each family: the server listens there and the client
/// rebinds to new ports on it.
const V4: &str = "127.0.0.1:0";
const V6: &str = "[::1]:0";

fn rebind_and_echo(workers: usize, kernel_steering: bool) -> u64 {
    rebind_and_echo_on(V4, workers, kernel_steering)
}

fn rebind_and_echo_on(family: &str, workers: usize, kernel_steering: bool) -> u64 {
    let local: std::net::SocketAddr = family.parse().expect("addr");
    let server = start_server(ServerOptions {
        workers,
        kernel_steering,
        listen: local,
        ..Default::default()
    });
    run_client(|| async {
        let endpoint = client_endpoint_on(local);
        let conn = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("connect");
        let data = payload(1, 200_000);
        assert_eq!(echo_roundtrip(&conn, data.clone()).await, sha256(&data));
        let mut rebinds = 0;
        // Each new port lands on the owner with probability 1/workers; keep going until a
        // rebinding was forwarded (bounded: 24 tries miss with probability 2^-24).
        for i in 0..24u64 {
            let before = endpoint.local_addr();
            endpoint.rebind(local).expect("rebind");
            assert_ne!(before, endpoint.local_addr());
            rebinds += 1;
            let data = payload(100 + i, 100_000);
            assert_eq!(
                echo_roundtrip(&conn, data.clone()).await,
                sha256(&data),
                "echo after rebind {rebinds}"
            );
            let forwarded = server.total_stats().forwarded_out;
            if workers == 1 || kernel_steering && rebinds >= 8 || (forwarded > 0 && rebinds >= 3) {
                break;
            }
        }
        assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
    });
    // Every forwarded datagram is taken by its owner (or counted as dropped); the owner may
    // still be draining its inbox, so allow it a moment.
    let total = || -> alknet_runtime::WorkerStatsSnapshot { server.total_stats() };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut stats = total();
    while stats.forwarded_out != stats.forwarded_in + stats.inbox_dropped
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
        stats = total();
    }
    assert_eq!(
        stats.forwarded_out,
        stats.forwarded_in + stats.inbox_dropped
    );
    stats.forwarded_out
}

#[test]
fn rebinding_client_survives_by_userspace_forwarding() {
    let forwarded = rebind_and_echo(2, false);
    assert!(forwarded > 0, "no rebinding crossed workers");
}

#[test]
fn rebinding_client_survives_by_kernel_steering_without_forwarding() {
    // 8 rebindings: with the 4-tuple hash, all 8 would stay on the owner with p = 2^-8
    assert_eq!(
        rebind_and_echo(2, true),
        0,
        "the kernel should deliver to the owner"
    );
}

#[test]
fn over_ipv6_rebinding_survives_by_forwarding_and_by_kernel_steering() {
    // the steering program reads the UDP payload, the same offset in both families
    assert!(
        rebind_and_echo_on(V6, 2, false) > 0,
        "no rebinding crossed workers"
    );
    assert_eq!(
        rebind_and_echo_on(V6, 2, true),
        0,
        "the kernel should deliver IPv6 datagrams to the owner too"
    );
}

#[test]
fn rebinding_client_survives_with_one_worker() {
    assert_eq!(rebind_and_echo(1, true), 0);
}

#[test]
fn kernel_steering_spreads_connections_from_one_client_socket() {
    let server = start_server(ServerOptions {
        workers: 2,
        ..Default::default()
    });
    run_client(|| async {
        let endpoint = client_endpoint();
        let mut conns = Vec::new();
        for _ in 0..16 {
            conns.push(
                connect(&endpoint, &server, alknet_echo::ALPN)
                    .await
                    .expect("connect"),
            );
        }
        // each connection lives on the worker its CIDs name, and all of them work
        let data = payload(2, 1000);
        for c in &conns {
            assert_eq!(echo_roundtrip(c, data.clone()).await, sha256(&data));
        }
    });
    let per_worker: Vec<u64> = server
        .stats()
        .iter()
        .map(|s| s.connections_accepted)
        .collect();
    assert_eq!(per_worker.iter().sum::<u64>(), 16);
    // all 16 on one worker: p = 2 * 2^-16 with the DCID hash; certain with the 4-tuple hash
    assert!(
        per_worker.iter().all(|n| *n > 0),
        "connections per worker: {per_worker:?}"
    );
    assert_eq!(server.total_stats().forwarded_out, 0);
}
