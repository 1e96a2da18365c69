//! Sans-IO query handling: the bytes of one DNS message in, the bytes of the answer out.
//! Every transport (DoQ, `alknet/dns`, and later UDP/TCP) goes through [`parse`] and
//! [`answer`]; only the size an answer may take and the framing differ.
//!
//! Rules, after RFC 1035 §4.1.1 and what NSD does:
//! - a message whose header cannot be read (< 12 bytes) is dropped: there is no ID to
//!   answer; a response (QR=1) is dropped too, so two servers never answer each other;
//! - a header that decodes but a body that does not → FORMERR (header only);
//! - OPCODE other than QUERY → NOTIMP;
//! - QDCOUNT ≠ 1, answer or authority records in a query, TC set, or QTYPE OPT → FORMERR;
//! - EDNS version > 0 → BADVERS (RFC 6891 §6.1.3);
//! - class other than IN (or ANY), zone transfers (AXFR/IXFR), and names outside every
//!   local zone (or pkarr key this node has) → REFUSED, unless the forwarding cache takes
//!   the name (see [`crate::forward`]).

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::catalog::Catalog;
use crate::zone::Outcome;

/// What came in.
#[derive(Debug)]
pub enum Parsed {
    /// A query to answer.
    Query(Box<Message>),
    /// A header but an undecodable body: answer FORMERR with [`formerr`].
    Malformed(Header),
    /// Nothing to answer: too short for a header, or a response.
    Ignore,
}

/// Decodes one message.
pub fn parse(bytes: &[u8]) -> Parsed {
    let Ok(header) = Header::read(&mut BinDecoder::new(bytes)) else {
        return Parsed::Ignore;
    };
    if header.message_type == MessageType::Response {
        return Parsed::Ignore;
    }
    match Message::from_vec(bytes) {
        Ok(m) => Parsed::Query(Box::new(m)),
        Err(_) => Parsed::Malformed(header),
    }
}

/// The FORMERR answer to a message whose body could not be decoded.
pub fn formerr(header: &Header) -> Vec<u8> {
    let mut resp = Message::response(header.id, header.op_code);
    resp.metadata = Metadata::response_from_request(&header.metadata);
    resp.metadata.response_code = ResponseCode::FormErr;
    encode(&resp, usize::MAX)
}

/// The answer to `query`, at most `max_size` bytes (else truncated: TC set, question
/// only). Streams pass [`crate::MAX_MESSAGE_SIZE`].
pub fn answer(catalog: &Catalog, query: &Message, max_size: usize, channel: Channel) -> Vec<u8> {
    let mut resp = Message::response(query.id, query.op_code);
    resp.metadata = Metadata::response_from_request(&query.metadata);
    let rcode = fill(catalog, query, &mut resp);
    resp.metadata.response_code = rcode;
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(max_size.clamp(512, usize::from(u16::MAX)) as u16);
        resp.set_edns(edns);
    }
    finish(&mut resp, query, max_size, channel)
}

/// The bytes of `resp`, the response to `query`: at most `max_size` (else truncated, see
/// [`encode`]) and padded when the query asks for it on an encrypted `channel`. The one
/// place an answer is finished, whether it comes from a zone or from an upstream
/// ([`crate::forward`]).
pub(crate) fn finish(
    resp: &mut Message,
    query: &Message,
    max_size: usize,
    channel: Channel,
) -> Vec<u8> {
    let bytes = encode(resp, max_size);
    if channel == Channel::Encrypted && wants_padding(query) {
        if let Some(padded) = padded(resp, bytes.len(), max_size) {
            return padded;
        }
    }
    bytes
}

/// The transport an answer leaves by, as far as padding goes. RFC 7830 §4: the Padding
/// option MUST NOT be used over an unencrypted transport, where it hides nothing and only
/// makes answers bigger (a plaintext UDP answer padded to 468 bytes would amplify a
/// 60-byte query almost eightfold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// DoQ, `alknet/dns`, DoT, DoH: answers padded when the query asks.
    Encrypted,
    /// Classic DNS over UDP and TCP: never padded.
    Plaintext,
}

/// Responses are padded to a multiple of this many bytes (RFC 8467 §4.1's recommended
/// block length for responses), so their size says less about the name asked. A protocol
/// constant.
pub const PADDING_BLOCK: usize = 468;

/// Whether the query carries the EDNS(0) Padding option: then the response must be padded
/// too (RFC 7830 §4). Clients send it over encrypted transports (DoT, DoH, DoQ).
fn wants_padding(query: &Message) -> bool {
    query
        .edns
        .as_ref()
        .is_some_and(|e| e.option(EdnsCode::Padding).is_some())
}

/// `resp` (encoded in `len` bytes, an OPT record and no Padding option in it: the
/// responder makes its own OPT, an upstream's is never relayed) again with a Padding option bringing it to a multiple of
/// [`PADDING_BLOCK`], if that fits in `max_size` (else it goes unpadded, as RFC 7830 §4
/// allows past the size limit).
fn padded(resp: &mut Message, len: usize, max_size: usize) -> Option<Vec<u8>> {
    const OPTION_HEADER: usize = 4;
    let pad = (PADDING_BLOCK - (len + OPTION_HEADER) % PADDING_BLOCK) % PADDING_BLOCK;
    if len + OPTION_HEADER + pad > max_size {
        return None;
    }
    let edns = resp.edns.as_mut()?;
    edns.options_mut().insert(EdnsOption::Unknown(
        u16::from(EdnsCode::Padding),
        vec![0; pad],
    ));
    let bytes = resp.to_vec().ok()?;
    (bytes.len() <= max_size).then_some(bytes)
}

/// Checks the query and fills the response sections; returns the RCODE.
fn fill(catalog: &Catalog, query: &Message, resp: &mut Message) -> ResponseCode {
    if query.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return ResponseCode::BADVERS;
    }
    if query.op_code != OpCode::Query {
        return ResponseCode::NotImp;
    }
    if query.queries.len() != 1
        || !query.answers.is_empty()
        || !query.authorities.is_empty()
        || query.truncation
    {
        return ResponseCode::FormErr;
    }
    let q = &query.queries[0];
    resp.add_query(q.clone());
    match q.query_type {
        RecordType::OPT => return ResponseCode::FormErr,
        RecordType::AXFR | RecordType::IXFR => return ResponseCode::Refused,
        _ => {}
    }
    if !matches!(q.query_class, DNSClass::IN | DNSClass::ANY) {
        return ResponseCode::Refused;
    }
    let found = match catalog.find(&q.name) {
        Some(zone) => zone.lookup(&q.name, q.query_type),
        None => match catalog.pkarr_lookup(&q.name, q.query_type) {
            Some(found) => found,
            None => return ResponseCode::Refused,
        },
    };
    // AA covers the owner of the question (RFC 1035 §4.1.1): a bare referral is not ours
    resp.metadata.authoritative = found.outcome != Outcome::Referral || !found.answers.is_empty();
    resp.insert_answers(found.answers);
    resp.insert_authorities(found.authorities);
    resp.insert_additionals(found.additionals);
    match found.outcome {
        Outcome::NxDomain => ResponseCode::NXDomain,
        _ => ResponseCode::NoError,
    }
}

/// Encodes `resp`; past `max_size`, the truncated form (RFC 2181 §9: TC, no partial
/// RRsets; this sends the question and OPT only, as most servers do).
pub(crate) fn encode(resp: &Message, max_size: usize) -> Vec<u8> {
    match resp.to_vec() {
        Ok(bytes) if bytes.len() <= max_size => bytes,
        Ok(_) => {
            let mut short = resp.truncate();
            short.metadata.id = resp.id;
            short.metadata.authoritative = resp.authoritative;
            short
                .to_vec()
                .unwrap_or_else(|_| header_only(resp, resp.response_code))
        }
        Err(e) => {
            tracing::warn!("cannot encode a DNS answer: {e}");
            header_only(resp, ResponseCode::ServFail)
        }
    }
}

/// The truncated form of the answer to `query` (TC, question only): what response rate
/// limiting sends instead of a full answer.
pub fn truncated(query: &Message) -> Vec<u8> {
    let mut resp = Message::response(query.id, query.op_code);
    resp.metadata = Metadata::response_from_request(&query.metadata);
    resp.metadata.truncation = true;
    if let Some(q) = query.queries.first() {
        resp.add_query(q.clone());
    }
    encode(&resp, MAX_UDP_SLIP)
}

/// A slipped answer is never larger than this (a question of the longest name fits).
const MAX_UDP_SLIP: usize = 512;

/// A bare 12-byte header: what is left when nothing else can be encoded.
fn header_only(resp: &Message, rcode: ResponseCode) -> Vec<u8> {
    let mut m = Message::response(resp.id, resp.op_code);
    m.metadata = resp.metadata;
    m.metadata.response_code = ResponseCode::from_low(rcode.low());
    m.to_vec().unwrap_or_default()
}

/// The largest answer a UDP client may get (RFC 6891 §6.2.5): its EDNS0 payload size, at
/// most ours, at least 512; 512 without EDNS0.
pub fn udp_limit(query: &Message, ours: u16) -> usize {
    match &query.edns {
        Some(e) => usize::from(e.max_payload().clamp(512, ours.max(512))),
        None => 512,
    }
}

/// Answers one UDP datagram, truncating to what the client can take over UDP.
pub fn respond_udp(catalog: &Catalog, bytes: &[u8], ours: u16) -> Option<Vec<u8>> {
    match parse(bytes) {
        Parsed::Query(q) => Some(answer(catalog, &q, udp_limit(&q, ours), Channel::Plaintext)),
        Parsed::Malformed(h) => Some(formerr(&h)),
        Parsed::Ignore => None,
    }
}

/// Whether `query` is a well-formed recursive question (RD, one IN question, no zone
/// transfer) for a name outside every local zone: one the forwarding cache may take.
/// Whether the answer to `query` may go in an [`crate::answer_cache::AnswerCache`]: it
/// was looked up in a local zone (not a pkarr name, which changes without a catalog swap,
/// nor a forwarded answer).
pub fn cacheable(catalog: &Catalog, query: &Message) -> bool {
    query.queries.len() == 1 && catalog.find(&query.queries[0].name).is_some()
}

pub fn forwardable(catalog: &Catalog, query: &Message) -> bool {
    query.op_code == OpCode::Query
        && query.recursion_desired
        && query.edns.as_ref().is_none_or(|e| e.version() == 0)
        && query.queries.len() == 1
        && query.answers.is_empty()
        && query.authorities.is_empty()
        && !query.truncation
        && query.queries[0].query_class == DNSClass::IN
        && !matches!(
            query.queries[0].query_type,
            RecordType::OPT | RecordType::AXFR | RecordType::IXFR
        )
        && catalog.find(&query.queries[0].name).is_none()
        && catalog
            .pkarr_lookup(&query.queries[0].name, query.queries[0].query_type)
            .is_none()
}

/// Who is asking, for the recursion decision.
#[derive(Debug, Clone, Copy)]
pub struct Asker {
    pub source: std::net::IpAddr,
    /// The identity has the `dns:recursion` scope.
    pub may_recurse: bool,
}

/// Answers a parsed query: from the zones, or — for a name outside them, from a client
/// allowed to recurse, with forwarding configured — from the forwarding cache.
pub async fn answer_query(
    catalog: &crate::SharedCatalog,
    forwarder: Option<&crate::forward::Forwarder>,
    query: &Message,
    max_size: usize,
    channel: Channel,
    asker: Asker,
) -> Vec<u8> {
    if let Some(f) = forwarder {
        if f.allows(asker.source, asker.may_recurse) && forwardable(&catalog.load(), query) {
            return f.answer(query, max_size, channel).await;
        }
    }
    answer(&catalog.load(), query, max_size, channel)
}

/// Answers one message: `None` when there is nothing to send back.
pub fn respond(
    catalog: &Catalog,
    bytes: &[u8],
    max_size: usize,
    channel: Channel,
) -> Option<Vec<u8>> {
    match parse(bytes) {
        Parsed::Query(q) => Some(answer(catalog, &q, max_size, channel)),
        Parsed::Malformed(h) => Some(formerr(&h)),
        Parsed::Ignore => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::str::FromStr;
    use std::sync::Arc;

    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RData};

    use super::*;

    /// [`respond`] on an encrypted transport (padding allowed).
    fn respond_encrypted(catalog: &Catalog, bytes: &[u8], max_size: usize) -> Option<Vec<u8>> {
        respond(catalog, bytes, max_size, Channel::Encrypted)
    }
    use crate::zone::Zone;
    use crate::MAX_MESSAGE_SIZE;

    fn catalog() -> Catalog {
        let text = "$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\n@ IN NS ns\nns IN A 192.0.2.53\n\
                    big IN TXT \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n\
                    big IN TXT \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"\n\
                    big IN TXT \"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\"\n\
                    sub IN NS ns.sub\nns.sub IN A 192.0.2.54\n";
        let zone = Zone::parse("example.com.", text, Path::new("z")).expect("zone");
        Catalog::new([Arc::new(zone)])
    }

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).expect("name"), qtype));
        m
    }

    fn ask(m: &Message) -> Message {
        let bytes = m.to_vec().expect("encode");
        let out = respond_encrypted(&catalog(), &bytes, MAX_MESSAGE_SIZE).expect("an answer");
        Message::from_vec(&out).expect("decode answer")
    }

    #[test]
    fn answers_copy_id_question_and_rd() {
        let r = ask(&query("ns.example.com.", RecordType::A));
        assert_eq!(r.id, 0x1234);
        assert_eq!(r.message_type, MessageType::Response);
        assert_eq!(r.response_code, ResponseCode::NoError);
        assert!(r.authoritative && r.recursion_desired && !r.recursion_available);
        assert_eq!(r.queries.len(), 1);
        assert!(matches!(r.answers[0].data, RData::A(_)));
    }

    #[test]
    fn rcodes_follow_the_rules() {
        let nx = ask(&query("nope.example.com.", RecordType::A));
        assert_eq!(nx.response_code, ResponseCode::NXDomain);
        assert!(nx.authoritative);
        assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
        let refused = ask(&query("example.org.", RecordType::A));
        assert_eq!(refused.response_code, ResponseCode::Refused);
        assert!(!refused.authoritative);
        let axfr = ask(&query("example.com.", RecordType::AXFR));
        assert_eq!(axfr.response_code, ResponseCode::Refused);
        let mut chaos = query("version.bind.", RecordType::TXT);
        chaos.queries[0].query_class = DNSClass::CH;
        assert_eq!(ask(&chaos).response_code, ResponseCode::Refused);
        let mut notify = query("example.com.", RecordType::SOA);
        notify.metadata.op_code = OpCode::Update;
        assert_eq!(ask(&notify).response_code, ResponseCode::NotImp);
        let mut two = query("example.com.", RecordType::A);
        two.add_query(Query::query(
            Name::from_str("ns.example.com.").expect("name"),
            RecordType::A,
        ));
        assert_eq!(ask(&two).response_code, ResponseCode::FormErr);
        let mut none = query("example.com.", RecordType::A);
        none.queries.clear();
        assert_eq!(ask(&none).response_code, ResponseCode::FormErr);
        let mut tc = query("example.com.", RecordType::A);
        tc.metadata.truncation = true;
        assert_eq!(ask(&tc).response_code, ResponseCode::FormErr);
    }

    #[test]
    fn referrals_are_not_authoritative() {
        let r = ask(&query("www.sub.example.com.", RecordType::A));
        assert_eq!(r.response_code, ResponseCode::NoError);
        assert!(!r.authoritative);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::NS);
        assert_eq!(r.additionals.len(), 1);
    }

    #[test]
    fn edns_is_answered_and_bad_versions_get_badvers() {
        let mut q = query("ns.example.com.", RecordType::A);
        q.set_edns(Edns::new());
        let r = ask(&q);
        assert!(r.edns.is_some());
        assert_eq!(r.response_code, ResponseCode::NoError);
        let mut edns = Edns::new();
        edns.set_version(1);
        let mut q = query("ns.example.com.", RecordType::A);
        q.set_edns(edns);
        // 16 reads back as BADSIG, which shares BADVERS's number (RFC 6891 §9)
        assert_eq!(u16::from(ask(&q).response_code), 16);
        let r = ask(&query("ns.example.com.", RecordType::A));
        assert!(r.edns.is_none(), "no OPT unless asked");
    }

    #[test]
    fn malformed_and_ignored_input() {
        let c = catalog();
        assert_eq!(respond_encrypted(&c, &[], MAX_MESSAGE_SIZE), None);
        assert_eq!(respond_encrypted(&c, &[0; 11], MAX_MESSAGE_SIZE), None);
        // a header claiming one question and no question bytes
        let mut bytes = query("example.com.", RecordType::A)
            .to_vec()
            .expect("encode");
        bytes.truncate(14);
        let r =
            Message::from_vec(&respond_encrypted(&c, &bytes, MAX_MESSAGE_SIZE).expect("formerr"))
                .expect("decode");
        assert_eq!(r.response_code, ResponseCode::FormErr);
        assert_eq!(r.id, 0x1234);
        // responses are never answered
        let mut resp = query("example.com.", RecordType::A);
        resp.metadata.message_type = MessageType::Response;
        let bytes = resp.to_vec().expect("encode");
        assert_eq!(respond_encrypted(&c, &bytes, MAX_MESSAGE_SIZE), None);
    }

    #[test]
    fn padded_queries_get_padded_answers() {
        let mut q = query("ns.example.com.", RecordType::A);
        let mut edns = Edns::new();
        edns.options_mut().insert(EdnsOption::Unknown(
            u16::from(EdnsCode::Padding),
            vec![0; 40],
        ));
        q.set_edns(edns);
        let bytes = q.to_vec().expect("encode");
        let out = respond_encrypted(&catalog(), &bytes, MAX_MESSAGE_SIZE).expect("answer");
        assert_eq!(out.len(), PADDING_BLOCK, "one block");
        let r = Message::from_vec(&out).expect("decode");
        assert_eq!(r.answers.len(), 1);
        assert!(r.edns.expect("OPT").option(EdnsCode::Padding).is_some());
        // the 3-TXT answer (over one block) takes two; past the size limit, no padding
        let mut big = q.clone();
        big.queries[0] = Query::query(
            Name::from_str("big.example.com.").expect("n"),
            RecordType::TXT,
        );
        let out = respond_encrypted(&catalog(), &big.to_vec().expect("encode"), MAX_MESSAGE_SIZE)
            .expect("answer");
        assert_eq!(out.len(), 2 * PADDING_BLOCK);
        let out = respond_encrypted(&catalog(), &bytes, 400).expect("answer");
        assert!(out.len() < PADDING_BLOCK);
        // unpadded queries: unpadded answers
        let plain = respond_encrypted(
            &catalog(),
            &query("ns.example.com.", RecordType::A)
                .to_vec()
                .expect("encode"),
            MAX_MESSAGE_SIZE,
        )
        .expect("answer");
        assert!(plain.len() < 100);
        // over plaintext UDP or TCP, never padded (RFC 7830 §4)
        let clear = respond(&catalog(), &bytes, MAX_MESSAGE_SIZE, Channel::Plaintext);
        let udp = respond_udp(&catalog(), &bytes, 1232);
        for out in [clear, udp] {
            let r = Message::from_vec(&out.expect("answer")).expect("decode");
            assert_eq!(r.answers.len(), 1);
            assert!(r.edns.expect("OPT").option(EdnsCode::Padding).is_none());
        }
    }

    #[test]
    fn oversized_answers_are_truncated() {
        let q = query("big.example.com.", RecordType::TXT);
        let bytes = q.to_vec().expect("encode");
        let full = respond_encrypted(&catalog(), &bytes, MAX_MESSAGE_SIZE).expect("answer");
        assert!(full.len() > 512);
        let short = respond_encrypted(&catalog(), &bytes, 512).expect("answer");
        assert!(short.len() <= 512);
        let r = Message::from_vec(&short).expect("decode");
        assert!(r.truncation);
        assert_eq!(r.id, 0x1234);
        assert!(r.answers.is_empty());
        assert_eq!(r.queries.len(), 1);
        // over UDP: 512 without EDNS0, the client's EDNS0 size up to ours with it
        let udp = respond_udp(&catalog(), &bytes, 1232).expect("answer");
        assert!(Message::from_vec(&udp).expect("decode").truncation);
        let mut q = q;
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        q.set_edns(edns);
        assert_eq!(udp_limit(&q, 1232), 1232);
        let udp = respond_udp(&catalog(), &q.to_vec().expect("encode"), 1232).expect("answer");
        let r = Message::from_vec(&udp).expect("decode");
        assert!(!r.truncation && r.answers.len() == 3);
    }
}
