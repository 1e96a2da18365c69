//! pkarr relay payloads as a peer PUTs them to `/pkarr/{key}` (and `dns.pkarr.publish` takes
//! them): the signature is checked first, so any peer that owns a key controls every byte of
//! the DNS packet inside. Byte 0 picks the mode: odd, the rest goes as the payload unchanged
//! (the length, signature and timestamp checks); even, the rest is an 8-byte timestamp and a
//! DNS packet that the target signs with a key of its own, so the packet reaches pkarr's DNS
//! parser and hickory's. A payload that verifies keeps its bytes and timestamp, and lookups
//! under the key (the apex, a name from the input, `_alknet`; every common type and ANY)
//! answer only records at the asked name.
#![no_main]

use std::sync::OnceLock;

use alknet_dns::pkarr_packet::SignedRecords;
use alknet_dns::Outcome;
use hickory_proto::rr::{LowerName, Name, RecordType};
use libfuzzer_sys::fuzz_target;

fn keypair() -> &'static (pkarr::Keypair, String) {
    static K: OnceLock<(pkarr::Keypair, String)> = OnceLock::new();
    K.get_or_init(|| {
        let keypair = pkarr::Keypair::from_secret_key(&[7; 32]);
        let key = keypair.public_key().to_z32();
        (keypair, key)
    })
}

const TYPES: [RecordType; 7] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::TXT,
    RecordType::CNAME,
    RecordType::HTTPS,
    RecordType::SVCB,
    RecordType::ANY,
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (keypair, key) = keypair();
    let signed_ts = (mode & 1 == 0 && rest.len() >= 8)
        .then(|| u64::from_be_bytes(rest[..8].try_into().expect("8 bytes")));
    let payload = match signed_ts {
        None => rest.to_vec(),
        Some(timestamp) => {
            let (ts, packet) = rest.split_at(8);
            // BEP44's signable form, as pkarr signs and verifies it
            let mut signable = format!("3:seqi{timestamp}e1:v{}:", packet.len()).into_bytes();
            signable.extend_from_slice(packet);
            let signature = keypair.sign(&signable).to_bytes();
            [&signature[..], ts, packet].concat()
        }
    };
    let Ok(records) = SignedRecords::verify(key, &payload) else {
        return;
    };
    assert_eq!(&records.payload()[..], &payload[..]);
    if let Some(ts) = signed_ts {
        assert_eq!(records.timestamp(), ts);
    }
    let mut names = vec![
        Name::from_utf8(format!("{key}.")).expect("apex"),
        Name::from_utf8(format!("_alknet.{key}.")).expect("name"),
    ];
    let label: String = rest
        .iter()
        .rev()
        .take(12)
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    if let Ok(n) = Name::from_utf8(format!("{label}.{key}.")) {
        names.push(n);
    }
    for name in &names {
        let lower = LowerName::new(name);
        for qtype in TYPES {
            let answer = records.lookup(name, qtype);
            assert!(answer.authorities.is_empty() && answer.additionals.is_empty());
            if answer.outcome != Outcome::Answer {
                assert!(answer.answers.is_empty());
            }
            for record in &answer.answers {
                assert!(
                    LowerName::new(&record.name) == lower,
                    "{} answered at {name}",
                    record.name
                );
                assert!(
                    qtype == RecordType::ANY
                        || record.record_type() == qtype
                        || record.record_type() == RecordType::CNAME
                );
            }
        }
    }
});
