//! What DNS over HTTPS (RFC 8484) asks of the DNS side: one message in, its answer and how
//! long HTTP caches may keep it out. The HTTP handler owns the HTTP (routes `GET`/`POST
//! /dns-query`, media type, base64url); it reaches this through the runtime's
//! [`DnsResolver`] trait object, which the binary wires.

use std::net::IpAddr;

use alknet_runtime::{Bytes, DnsAnswer, DnsResolver, Identity, LocalBoxFuture};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;

use crate::answer_cache::Lookup::{Hit, Parse};
use crate::answer_cache::{stream_lookup, with_stream_answers};
use crate::doq::RECURSION_SCOPE;
use crate::limits::MAX_MESSAGE_SIZE;
use crate::responder::{self, Asker, Channel, Parsed};
use crate::DnsState;

/// Answers DoH queries from the state every DNS transport shares.
#[derive(Clone, Debug)]
pub struct DohResolver {
    dns: DnsState,
}

impl DohResolver {
    pub fn new(dns: DnsState) -> Self {
        Self { dns }
    }
}

impl DnsResolver for DohResolver {
    fn resolve(
        &self,
        message: Bytes,
        source: IpAddr,
        caller: Option<Identity>,
    ) -> LocalBoxFuture<'static, Option<DnsAnswer>> {
        let dns = self.dns.clone();
        Box::pin(async move {
            let catalog = dns.catalog.load_full();
            let bytes = dns.config.answer_cache_bytes;
            let reply = match stream_lookup(bytes, Channel::Encrypted, &catalog, &message) {
                Hit(reply) => reply,
                Parse(Parsed::Query(q)) if responder::cacheable(&catalog, &q) => {
                    let reply =
                        responder::answer(&catalog, &q, MAX_MESSAGE_SIZE, Channel::Encrypted);
                    with_stream_answers(bytes, Channel::Encrypted, |a| {
                        a.insert(&catalog, &message, &reply)
                    });
                    reply
                }
                Parse(Parsed::Query(q)) => {
                    let asker = Asker {
                        source,
                        may_recurse: caller.is_some_and(|i| i.has_scope(RECURSION_SCOPE)),
                    };
                    responder::answer_query(
                        &dns.catalog,
                        dns.forwarder.as_deref(),
                        &q,
                        MAX_MESSAGE_SIZE,
                        Channel::Encrypted,
                        asker,
                    )
                    .await
                }
                Parse(Parsed::Malformed(header)) => responder::formerr(&header),
                Parse(Parsed::Ignore) => return None,
            };
            let max_age = cache_lifetime(&reply);
            Some(DnsAnswer {
                message: reply,
                max_age,
            })
        })
    }
}

/// How long an answer may be cached, in seconds (RFC 8484 §5.1): the smallest TTL in its
/// answer section; for a negative answer (NXDOMAIN, NODATA) the SOA's TTL capped by its
/// MINIMUM (RFC 2308 §5); for a referral the smallest TTL of its NS records. `None` for
/// errors and answers with no record to take a TTL from.
pub fn cache_lifetime(answer: &[u8]) -> Option<u32> {
    let m = Message::from_vec(answer).ok()?;
    if !matches!(
        m.response_code,
        ResponseCode::NoError | ResponseCode::NXDomain
    ) || m.truncation
    {
        return None;
    }
    if !m.answers.is_empty() {
        return m.answers.iter().map(|r| r.ttl).min();
    }
    let soa = m.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    });
    soa.or_else(|| m.authorities.iter().map(|r| r.ttl).min())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::str::FromStr;
    use std::sync::Arc;

    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;
    use crate::catalog::Catalog;
    use crate::zone::Zone;

    fn ask(name: &str, qtype: RecordType) -> Vec<u8> {
        let text = "$TTL 300\n@ IN SOA ns hm 1 2 3 4 60\n@ 3600 IN NS ns\nns 120 IN A 192.0.2.53\n\
                    ns 90 IN A 192.0.2.54\nsub IN NS ns.sub\nns.sub IN A 192.0.2.9\n";
        let zone = Zone::parse("example.com.", text, Path::new("z")).expect("zone");
        let catalog = Catalog::new([Arc::new(zone)]);
        let mut q = Message::new(0, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(Name::from_str(name).expect("name"), qtype));
        responder::answer(&catalog, &q, MAX_MESSAGE_SIZE, Channel::Encrypted)
    }

    #[test]
    fn lifetimes_follow_the_smallest_ttl_and_rfc_2308() {
        assert_eq!(
            cache_lifetime(&ask("ns.example.com.", RecordType::A)),
            Some(90)
        );
        // NXDOMAIN and NODATA: min(SOA TTL 300, MINIMUM 60)
        assert_eq!(
            cache_lifetime(&ask("no.example.com.", RecordType::A)),
            Some(60)
        );
        assert_eq!(
            cache_lifetime(&ask("ns.example.com.", RecordType::MX)),
            Some(60)
        );
        // a referral: its NS TTL
        assert_eq!(
            cache_lifetime(&ask("a.sub.example.com.", RecordType::A)),
            Some(300)
        );
        // REFUSED and garbage: not cached
        assert_eq!(cache_lifetime(&ask("example.org.", RecordType::A)), None);
        assert_eq!(cache_lifetime(&[1, 2, 3]), None);
    }
}
