//! The `pkarr` crate's own relay client against the node's pkarr relay API (`PUT`/`GET
//! /pkarr/{z32}` on the HTTPS listener of the QUIC port), on the real binary: a
//! `pkarr::Client` configured with the node as its only relay (`https://localhost:PORT/pkarr`)
//! publishes a packet, a second `pkarr::Client` (empty cache) resolves it, and the same
//! name is answered over DoQ (dnspython) and classic UDP (`dig`). An older packet is
//! refused as the relay spec says (409 Conflict: pkarr's `NotMostRecent`) and a forged one
//! with 400 Bad Request (pkarr's `BadRequest`), both changing nothing; a newer one
//! replaces the first. Both over HTTP/1.1 (pkarr's own reqwest build) and over HTTP/2.
//!
//! The clients are pkarr's, unchanged: the only setting beyond the relay URL is the
//! `reqwest::Client` handed to pkarr's builder (`ClientBuilder::reqwest_client`, pkarr's
//! way to configure its HTTP), which trusts the test server's self-signed certificate
//! (`cert.pem` in its data directory) instead of the system's roots.

use std::time::Duration;

use alknet_tests::dns::{dig_short, doq_first_answer};
use alknet_tests::*;
use pkarr::errors::PublishError;
use pkarr::relay_client::{RelayClient, RelayError};
use pkarr::{Keypair, ResolvePolicy, SignedPacket, Timestamp};

/// Bound on every relay request of the test.
const RELAY_TIMEOUT: Duration = Duration::from_secs(20);

/// A packet of `kp` at `ts` (µs since the epoch): `_foo` A `addr`.
fn packet(kp: &Keypair, ts: u64, addr: [u8; 4]) -> SignedPacket {
    SignedPacket::builder()
        .a("_foo".try_into().expect("name"), addr.into(), 300)
        .txt(
            ".".try_into().expect("name"),
            "pkarr client".try_into().expect("txt"),
            300,
        )
        .timestamp(Timestamp::from(ts))
        .sign(kp)
        .expect("sign")
}

/// An HTTP client trusting only the server's certificate, HTTP/1.1 only or offering h2.
fn http(server: &BinServer, http1_only: bool) -> reqwest::Client {
    let pem = std::fs::read(server.data_dir.path().join("cert.pem")).expect("server cert");
    let cert = reqwest::Certificate::from_pem(&pem).expect("PEM");
    let builder = reqwest::Client::builder().tls_certs_only([cert]);
    let builder = if http1_only {
        builder.http1_only()
    } else {
        builder
    };
    builder.build().expect("reqwest client")
}

fn relay_url(server: &BinServer) -> String {
    format!("https://localhost:{}/pkarr", server.port)
}

/// A `pkarr::Client` whose only network is the node as a relay; a fresh (empty) cache.
fn pkarr_client(server: &BinServer, http: reqwest::Client) -> pkarr::Client {
    let mut builder = pkarr::Client::builder();
    builder
        .no_default_network()
        .relays(&[relay_url(server)])
        .expect("relay URL")
        .reqwest_client(http)
        .relay_request_timeout(RELAY_TIMEOUT);
    builder.build().expect("pkarr client")
}

fn relay_client(server: &BinServer, http: reqwest::Client) -> RelayClient {
    let url = relay_url(server).parse().expect("URL");
    RelayClient::new(url, http, RELAY_TIMEOUT).expect("relay client")
}

/// `packet` with one bit of its DNS message flipped and its signature kept: still a
/// well-formed packet to pkarr (`deserialize` does not verify), no longer signed by its key.
fn forged(packet: &SignedPacket) -> SignedPacket {
    let mut bytes = packet.serialize();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    SignedPacket::deserialize(&bytes).expect("still a DNS message")
}

#[test]
fn pkarr_crate_client_publishes_and_resolves_through_the_relay_api() {
    let (server, udp) = BinServer::start_with_port_config(|port| {
        format!(
            "[handlers]\nenabled = [\"doq\"]\n\
             [dns]\npkarr = true\npkarr_publish_self = false\nudp_listen = \"127.0.0.1:{port}\"\n"
        )
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let kp = Keypair::random();
    let key = kp.public_key();
    let name = format!("_foo.{}", key.to_z32());
    let now = Timestamp::now().as_u64();

    for (round, http1_only) in [(0u8, true), (1, false)] {
        // each round publishes newer packets than the last
        let base = now + u64::from(round) * 10_000_000;
        let first = packet(&kp, base, [192, 0, 2, 10 + round]);
        let addr = format!("192.0.2.{}", 10 + round);

        // pkarr's client publishes; another pkarr client, with nothing cached, resolves
        let publisher = pkarr_client(&server, http(&server, http1_only));
        rt.block_on(publisher.publish(&first))
            .unwrap_or_else(|e| panic!("publish (HTTP/1.1 only: {http1_only}): {e}"));
        let resolver = pkarr_client(&server, http(&server, http1_only));
        let got = rt
            .block_on(resolver.resolve(&key, ResolvePolicy::NetworkOnly))
            .unwrap_or_else(|e| panic!("resolve (HTTP/1.1 only: {http1_only}): {e}"));
        assert_eq!(got.as_bytes(), first.as_bytes(), "the packet as published");

        // the same name over DoQ and classic UDP
        assert_eq!(doq_first_answer(server.port, &name, "A"), addr);
        assert_eq!(dig_short(udp, &[&name, "A"]), std::slice::from_ref(&addr));

        // an older packet: 409, which pkarr reads as "the relay has a newer one"
        let older = packet(&kp, base - 1, [192, 0, 2, 99]);
        let relay = relay_client(&server, http(&server, http1_only));
        match rt.block_on(relay.publish(&older)) {
            Err(RelayError::NotMostRecent) => {}
            other => panic!("older packet: {other:?}"),
        }
        // and through the full client (a fresh one: nothing cached to refuse it locally)
        let fresh = pkarr_client(&server, http(&server, http1_only));
        match rt.block_on(fresh.publish(&older)) {
            Err(PublishError::NotMostRecent) => {}
            other => panic!("older packet through pkarr::Client: {other:?}"),
        }
        // a forged one: 400
        let fake = forged(&packet(&kp, base + 1, [192, 0, 2, 98]));
        match rt.block_on(relay.publish(&fake)) {
            Err(RelayError::BadRequest) => {}
            other => panic!("forged packet: {other:?}"),
        }
        // neither changed anything
        let again = rt
            .block_on(relay.resolve(&key, ResolvePolicy::NetworkOnly, None))
            .expect("resolve after the refusals");
        assert_eq!(again.as_bytes(), first.as_bytes());
        assert_eq!(dig_short(udp, &[&name, "A"]), [addr]);

        // a newer one replaces it, for pkarr's resolver and for DNS clients alike
        let newer = packet(&kp, base + 2, [192, 0, 2, 50 + round]);
        rt.block_on(publisher.publish(&newer))
            .expect("newer packet");
        let newest = rt
            .block_on(
                pkarr_client(&server, http(&server, http1_only))
                    .resolve(&key, ResolvePolicy::NetworkOnly),
            )
            .expect("resolve the newer packet");
        assert_eq!(newest.as_bytes(), newer.as_bytes());
        let addr = format!("192.0.2.{}", 50 + round);
        assert_eq!(doq_first_answer(server.port, &name, "A"), addr);
        assert_eq!(dig_short(udp, &[&name, "A"]), [addr]);
    }

    // the HTTP/2 round did speak HTTP/2 (reqwest offers h2 and http/1.1 by ALPN)
    let response = rt
        .block_on(
            http(&server, false)
                .get(format!("{}/{}", relay_url(&server), key.to_z32()))
                .send(),
        )
        .expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
}
