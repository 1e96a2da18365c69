//! A client whose address changes mid-connection (NAT rebinding, migration) keeps its
//! connection even when the kernel's SO_REUSEPORT hash now delivers its packets to
//! another worker: the datagrams are forwarded to the worker named in the CID.

use alknet_tests::*;

fn rebind_and_echo(workers: usize) -> u64 {
    let server = start_server(ServerOptions {
        workers,
        ..Default::default()
    });
    run_client(|| async {
        let endpoint = client_endpoint();
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
            endpoint
                .rebind("127.0.0.1:0".parse().expect("addr"))
                .expect("rebind");
            assert_ne!(before, endpoint.local_addr());
            rebinds += 1;
            let data = payload(100 + i, 100_000);
            assert_eq!(
                echo_roundtrip(&conn, data.clone()).await,
                sha256(&data),
                "echo after rebind {rebinds}"
            );
            let forwarded = server.total_stats().forwarded_out;
            if workers == 1 || (forwarded > 0 && rebinds >= 3) {
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
fn rebinding_client_survives_with_two_workers() {
    let forwarded = rebind_and_echo(2);
    assert!(forwarded > 0, "no rebinding crossed workers");
}

#[test]
fn rebinding_client_survives_with_one_worker() {
    assert_eq!(rebind_and_echo(1), 0);
}
