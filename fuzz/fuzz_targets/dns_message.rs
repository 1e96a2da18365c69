//! DNS messages as a peer sends them on `doq` / `alknet/dns` streams: arbitrary bytes in
//! arbitrary chunks through the length-prefix decoder, every message through the
//! responder against a zone with wildcards, CNAME chains and a delegation.
//!
//! Input layout: byte 0 picks the answer size limit and the chunk size; the rest is the
//! stream. Checked: the decoder never holds more than one message plus a chunk; every
//! answer fits its limit, decodes, is a response, and carries the query's ID; a message
//! with a readable header is always answered (FORMERR at worst), and a too-short one never.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use alknet_dns::framing::{FrameDecoder, LENGTH_PREFIX};
use alknet_dns::{responder, Catalog, Zone, MAX_MESSAGE_SIZE};
use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

const ZONE: &str = include_str!("../../tests/interop/example.com.zone");
const LIMITS: [usize; 4] = [512, 1232, 4096, MAX_MESSAGE_SIZE];

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let zone = Zone::parse("example.com.", ZONE, Path::new("example.com.zone"))
            .expect("the test zone parses");
        Catalog::new([Arc::new(zone)])
    })
}

fn check(message: &[u8], limit: usize) {
    let reply = responder::respond(catalog(), message, limit);
    let Some(reply) = reply else {
        // dropped: too short for a header, or a response (QR set)
        assert!(message.len() < 12 || message[2] & 0x80 != 0);
        return;
    };
    assert!(message.len() >= 12 && message[2] & 0x80 == 0);
    assert!(reply.len() <= limit.max(512), "{} > {limit}", reply.len());
    let answer = Message::from_vec(&reply).expect("our answers decode");
    assert_eq!(answer.message_type, MessageType::Response);
    assert_eq!(answer.id.to_be_bytes(), [message[0], message[1]]);
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let limit = LIMITS[usize::from(control & 3)];
    let chunk = 1 + usize::from(control >> 2) * 37;
    // the whole input as one message, too
    check(stream, limit);
    let mut decoder = FrameDecoder::new();
    for piece in stream.chunks(chunk) {
        decoder.push(piece);
        while let Some(message) = decoder.next_message() {
            check(&message, limit);
        }
        assert!(decoder.pending() < LENGTH_PREFIX + MAX_MESSAGE_SIZE + chunk);
    }
});
