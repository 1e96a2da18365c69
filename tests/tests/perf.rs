//! `perf`: quinn's perf protocol, spoken by a client written from that tool's source.

use std::sync::Arc;

use alknet_tests::*;

/// One perf request: 8-byte BE download size, `upload` bytes, FIN; returns bytes received.
async fn bi_request(conn: &alknet_runtime::Connection, download: u64, upload: usize) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
    let body = [download.to_be_bytes().to_vec(), payload(1, upload)].concat();
    let writer = async move {
        send.write_all(&body).await.expect("request");
        send.finish().expect("finish");
    };
    let reader = async move { recv.read_to_end(64 << 20).await.expect("response") };
    join(writer, reader).await.1
}

#[test]
fn perf_answers_bi_and_uni_requests_like_quinn_perf() {
    let server = start_server(ServerOptions {
        workers: 2,
        handlers: vec![Arc::new(alknet_perf::PerfHandler)],
        ..Default::default()
    });
    run_client(|| async {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_perf::ALPN)
            .await
            .expect("connect");
        for (download, upload) in [
            (0u64, 0usize),
            (1, 0),
            (5 << 20, 0),
            (64, 3 << 20),
            (1_000_001, 1),
        ] {
            let got = bi_request(&conn, download, upload).await;
            assert_eq!(
                got.len() as u64,
                download,
                "download {download} upload {upload}"
            );
            assert!(got.iter().all(|b| *b == 42), "quinn-perf sends 42s");
        }
        // uni: request on a client uni stream, response on a new server uni stream
        let mut send = conn.open_uni().await.expect("open uni");
        send.write_all(&[(300_000u64).to_be_bytes().as_slice(), b"upload"].concat())
            .await
            .expect("uni request");
        send.finish().expect("finish");
        let mut recv = conn.accept_uni().await.expect("uni response");
        assert_eq!(
            recv.read_to_end(1 << 20).await.expect("read").len(),
            300_000
        );

        // a truncated request (fewer than 8 bytes) ends that request only
        let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
        send.write_all(&[1, 2, 3]).await.expect("write");
        send.finish().expect("finish");
        assert!(recv.read_to_end(1024).await.map_or(true, |b| b.is_empty()));
        assert_eq!(bi_request(&conn, 10, 0).await.len(), 10);
    });
}
