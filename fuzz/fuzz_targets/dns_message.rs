//! DNS messages as a peer sends them on `doq` / `alknet/dns` streams: arbitrary bytes in
//! arbitrary chunks through the length-prefix decoder, every message through the
//! responder against a zone with wildcards, CNAME chains and a delegation.
//!
//! Input layout: byte 0 picks the answer size limit and the chunk size; the rest is the
//! stream. Checked: the decoder never holds more than one message plus a chunk; every
//! answer fits its limit, decodes, is a response, and carries the query's ID; a message
//! with a readable header is always answered (FORMERR at worst), and a too-short one never;
//! an answer the answer cache keeps is what answering the same bytes under another ID gives.
#![no_main]

use std::cell::RefCell;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use alknet_dns::answer_cache::AnswerCache;
use alknet_dns::framing::{FrameDecoder, LENGTH_PREFIX};
use alknet_dns::responder::{Channel, Parsed};
use alknet_dns::{responder, Catalog, Zone, MAX_MESSAGE_SIZE};
use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

const ZONE: &str = include_str!("../../tests/interop/example.com.zone");
const LIMITS: [usize; 4] = [512, 1232, 4096, MAX_MESSAGE_SIZE];

fn catalog() -> &'static Arc<Catalog> {
    static CATALOG: OnceLock<Arc<Catalog>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let zone = Zone::parse("example.com.", ZONE, Path::new("example.com.zone"))
            .expect("the test zone parses");
        Arc::new(Catalog::new([Arc::new(zone)]))
    })
}

thread_local! {
    /// One answer cache per size limit, as each transport has its own.
    static ANSWERS: [RefCell<AnswerCache>; LIMITS.len()] = std::array::from_fn(|_| {
        RefCell::new(AnswerCache::new(1 << 20).expect("a cache"))
    });
}

/// What the cache gives back for `message` under another ID is what answering it gives.
fn check_cache(message: &[u8], reply: &[u8], slot: usize) {
    let Parsed::Query(q) = responder::parse(message) else {
        return;
    };
    if !responder::cacheable(catalog(), &q) {
        return;
    }
    let mut again = message.to_vec();
    again[0] ^= 0xa5;
    let fresh = responder::respond(catalog(), &again, LIMITS[slot], Channel::Encrypted);
    ANSWERS.with(|caches| {
        let mut cache = caches[slot].borrow_mut();
        cache.insert(catalog(), message, reply);
        if let Some(hit) = cache.get(catalog(), &again) {
            assert_eq!(Some(hit), fresh, "a cached answer differs from a fresh one");
        }
    });
}

fn check(message: &[u8], slot: usize) {
    let limit = LIMITS[slot];
    let reply = responder::respond(catalog(), message, limit, Channel::Encrypted);
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
    check_cache(message, &reply, slot);
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let slot = usize::from(control & 3);
    let chunk = 1 + usize::from(control >> 2) * 37;
    // the whole input as one message, too
    check(stream, slot);
    let mut decoder = FrameDecoder::new();
    for piece in stream.chunks(chunk) {
        decoder.push(piece);
        while let Some(message) = decoder.next_message() {
            check(&message, slot);
        }
        assert!(decoder.pending() < LENGTH_PREFIX + MAX_MESSAGE_SIZE + chunk);
    }
});
