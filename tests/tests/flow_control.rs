//! A slow reader back-pressures the sender end to end: nothing is buffered without bound,
//! and nothing is lost once reading resumes.

use std::time::Duration;

use alknet_runtime::Limits;
use alknet_tests::*;

#[test]
fn a_reader_that_stops_reading_stops_the_writer() {
    let limits = Limits::default();
    let window = limits.stream_receive_window as usize;
    let server = start_server(ServerOptions::default());
    run_client(|| async {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("connect");
        let (mut send, mut recv) = conn.open_bi().await.expect("open").split();
        let data = payload(11, 64 << 20);
        let mut written = 0;
        // Write without reading the echo. It must stall once the server's echo is blocked
        // on our receive window and the server stops reading ours.
        while written < data.len() {
            let end = (written + 64 * 1024).min(data.len());
            match monoio::time::timeout(Duration::from_millis(500), send.write(&data[written..end]))
                .await
            {
                Ok(n) => written += n.expect("write"),
                Err(_) => break,
            }
        }
        assert!(
            written < data.len(),
            "wrote all 64 MiB without the peer reading: no back-pressure"
        );
        // our receive window + the server's receive window + one chunk in the echo task +
        // the one chunk its stream read ahead in the same pass (the runtime's stash, at most
        // one packet's STREAM frame: loopback packets reach loopback_max_udp_payload_size)
        let packet = usize::from(limits.loopback_max_udp_payload_size);
        let bound = 2 * window + 64 * 1024 + packet;
        assert!(written <= bound, "{written} bytes in flight, bound {bound}");
        // reading resumes: everything written so far comes back intact
        let sent = data[..written].to_vec();
        send.finish().expect("finish");
        let back = recv.read_to_end(64 << 20).await.expect("echo");
        assert_eq!(back.len(), sent.len());
        assert_eq!(sha256(&back), sha256(&sent));
    });
}
