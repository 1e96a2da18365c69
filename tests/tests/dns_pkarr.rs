//! pkarr names on the real binary: a signed packet made with the `pkarr` crate is published
//! with `alknet call … dns.publish` and resolved through DoQ (dnspython) and classic UDP
//! (`dig`); a stale or forged packet is refused and changes nothing; a newer one replaces it.
//! The node publishes its own address, port and certificate fingerprint under its own key.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use alknet_tests::dns::{dig, dig_short, doq_first_answer};
use alknet_tests::*;

fn signed(kp: &pkarr::Keypair, ts: u64, addr: [u8; 4]) -> Vec<u8> {
    pkarr::SignedPacket::builder()
        .a("_foo".try_into().expect("name"), addr.into(), 300)
        .txt(
            ".".try_into().expect("name"),
            "alknet".try_into().expect("txt"),
            300,
        )
        .timestamp(ts.into())
        .sign(kp)
        .expect("sign")
        .to_relay_payload()
        .to_vec()
}

fn publish(server: &BinServer, fp: &str, key: &str, payload: &[u8]) -> Output {
    let input = serde_json::json!({
        "key": key,
        "payload": data_encoding::BASE64.encode(payload),
    });
    let child = Command::new(alknet_bin())
        .args(["call", "--fingerprint", fp, &server.addr(), "dns.publish"])
        .arg(input.to_string())
        .env_remove("ALKNET_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("alknet call");
    wait_output(child, Duration::from_secs(30))
}

fn dig_one(port: u16, name: &str, qtype: &str) -> String {
    dig_short(port, &[name, qtype]).join("\n")
}

#[test]
fn pkarr_packets_publish_and_resolve() {
    let (server, port) = BinServer::start_with_port_config(|port| {
        format!(
            "[handlers]\nenabled = [\"alknet/call\", \"doq\"]\n\
             [dns]\npkarr = true\nudp_listen = \"127.0.0.1:{port}\"\n"
        )
    });
    let fp = server.fingerprint();
    // the node published itself under its own key at start
    let log = server.wait_for_log("pkarr node name: ");
    let node = log
        .last()
        .and_then(|l| l.rsplit("pkarr node name: ").next())
        .expect("node name")
        .trim()
        .to_string();
    assert_eq!(dig_one(port, &node, "A"), "127.0.0.1");
    let txt = dig_one(port, &format!("_alknet.{node}"), "TXT");
    assert_eq!(txt, format!("\"port={} fp={fp}\"", server.port));

    let kp = pkarr::Keypair::random();
    let key = kp.public_key().to_z32();
    let name = format!("_foo.{key}");

    let out = publish(&server, &fp, &key, &signed(&kp, 1_000_000, [192, 0, 2, 44]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["timestamp"], 1_000_000);

    assert_eq!(dig_one(port, &name, "A"), "192.0.2.44");
    assert_eq!(dig_one(port, &key, "TXT"), "\"alknet\"");
    assert_eq!(doq_first_answer(server.port, &name, "A"), "192.0.2.44");

    // stale and forged packets are refused and change nothing
    let out = publish(&server, &fp, &key, &signed(&kp, 999_999, [192, 0, 2, 1]));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("INVALID_ARGUMENT") && err.contains("stale"),
        "{err}"
    );
    let mut forged = signed(&kp, 2_000_000, [192, 0, 2, 2]);
    forged[10] ^= 0x40;
    let out = publish(&server, &fp, &key, &forged);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid signed packet"), "{err}");
    assert_eq!(dig_one(port, &name, "A"), "192.0.2.44");

    // a newer packet replaces it
    let out = publish(&server, &fp, &key, &signed(&kp, 3_000_000, [192, 0, 2, 3]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dig_one(port, &name, "A"), "192.0.2.3");

    // a key nobody published here is not ours
    let other = pkarr::Keypair::random().public_key().to_z32();
    let out = dig(port, &[&format!("_foo.{other}"), "A"]);
    assert!(out.contains("status: REFUSED"), "{out}");
}
