//! The forwarding cache: names outside every local zone, asked with RD by a client allowed
//! to recurse, are sent to the configured upstreams over UDP (again over TCP when the
//! answer comes back truncated), and the answers are cached by TTL in bounded memory.
//!
//! Safety: every upstream query gets a fresh random ID from a fresh socket (random source
//! port), and an answer is taken only if its ID and question match. Negative answers are
//! cached per RFC 2308 (for the SOA's negative TTL; not at all without an SOA). SERVFAIL,
//! timeouts and malformed upstream answers are never cached: the client gets SERVFAIL.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, RData, Record, RecordType};
use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};

use crate::framing::frame;
use crate::limits::{DnsConfig, MAX_MESSAGE_SIZE};

/// Cached answers are kept at most this long, whatever their TTL says (a day, as most
/// resolvers cap it).
pub const MAX_CACHE_TTL: u32 = 86_400;

/// What a cached answer is found by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    name: LowerName,
    qtype: RecordType,
}

#[derive(Debug)]
struct Cached {
    rcode: ResponseCode,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    stored: Instant,
    ttl: u32,
}

/// A source network allowed to recurse, as `recursion_allow` writes it ("127.0.0.0/8",
/// "::1/128", or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl TryFrom<String> for Network {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The upstreams, the cache and who may use them. Shared by every thread.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    allow: Vec<Network>,
    cache: quick_cache::sync::Cache<CacheKey, Arc<Cached>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("upstreams", &self.upstreams)
            .field("allow", &self.allow)
            .field("cached", &self.cache.len())
            .finish()
    }
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("answer does not match the question")]
    Mismatch,
    #[error("undecodable answer")]
    Decode,
}

impl Forwarder {
    /// `None` when no upstream is configured: forwarding is off.
    pub fn from_config(config: &DnsConfig) -> Option<Self> {
        if config.upstreams.is_empty() {
            return None;
        }
        Some(Self {
            upstreams: config.upstreams.clone(),
            timeout: config.forward_timeout,
            allow: config.recursion_allow.clone(),
            cache: quick_cache::sync::Cache::new(config.cache_entries.max(1)),
        })
    }

    /// May this client recurse? With the `dns:recursion` scope, or from `recursion_allow`.
    pub fn allows(&self, source: IpAddr, has_scope: bool) -> bool {
        has_scope || self.allow.iter().any(|n| n.contains(source))
    }

    /// Answers `query` (one IN question, RD set, outside the zones) from the cache or the
    /// upstreams, within `max_size`.
    pub async fn answer(
        &self,
        query: &Message,
        max_size: usize,
        channel: crate::responder::Channel,
    ) -> Vec<u8> {
        let q = &query.queries[0];
        let key = CacheKey {
            name: LowerName::new(&q.name),
            qtype: q.query_type,
        };
        let mut resp = Message::response(query.id, query.op_code);
        resp.metadata = Metadata::response_from_request(&query.metadata);
        resp.metadata.recursion_available = true;
        resp.add_query(q.clone());
        if query.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(max_size.clamp(512, MAX_MESSAGE_SIZE) as u16);
            resp.set_edns(edns);
        }
        let cached = match self.cache.get(&key) {
            Some(c) if c.stored.elapsed().as_secs() < u64::from(c.ttl) => Some(c),
            _ => None,
        };
        let entry = match cached {
            Some(c) => c,
            None => match self.ask_upstreams(q).await {
                Some(c) => {
                    let c = Arc::new(c);
                    if c.ttl > 0 {
                        self.cache.insert(key, c.clone());
                    }
                    c
                }
                None => {
                    resp.metadata.response_code = ResponseCode::ServFail;
                    return crate::responder::finish(&mut resp, query, max_size, channel);
                }
            },
        };
        let age = entry.stored.elapsed().as_secs().min(u64::from(u32::MAX)) as u32;
        let aged = |records: &[Record]| -> Vec<Record> {
            records
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.ttl = r.ttl.saturating_sub(age);
                    r
                })
                .collect()
        };
        resp.metadata.response_code = entry.rcode;
        resp.insert_answers(aged(&entry.answers));
        resp.insert_authorities(aged(&entry.authorities));
        resp.insert_additionals(aged(&entry.additionals));
        crate::responder::finish(&mut resp, query, max_size, channel)
    }

    /// Tries each upstream in turn; the first usable answer, made cacheable.
    async fn ask_upstreams(&self, q: &Query) -> Option<Cached> {
        for upstream in &self.upstreams {
            match monoio::time::timeout(self.timeout, exchange(*upstream, q)).await {
                Ok(Ok(m)) if m.response_code != ResponseCode::ServFail => {
                    return Some(cacheable(m));
                }
                Ok(Ok(_)) => tracing::debug!(%upstream, "upstream SERVFAIL"),
                Ok(Err(e)) => tracing::debug!(%upstream, "upstream: {e}"),
                Err(_) => tracing::debug!(%upstream, "upstream: {}", UpstreamError::Timeout),
            }
        }
        None
    }
}

/// One question to one upstream: UDP, then TCP if the answer is truncated.
async fn exchange(upstream: SocketAddr, q: &Query) -> Result<Message, UpstreamError> {
    let id: u16 = rand::random();
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(q.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(crate::limits::DEFAULT_UDP_PAYLOAD_SIZE);
    m.set_edns(edns);
    let wire = m.to_vec().map_err(|_| UpstreamError::Decode)?;
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = monoio::net::udp::UdpSocket::bind(local)?;
    socket.connect(upstream).await?;
    let (res, _) = socket.send(wire.clone()).await;
    res?;
    let answer = loop {
        let (res, buf) = socket.recv(vec![0u8; MAX_MESSAGE_SIZE]).await;
        let n = res?;
        // anything that does not match is ignored (a late or spoofed datagram)
        if let Ok(a) = Message::from_vec(&buf[..n]) {
            if matches(&a, id, q) {
                break a;
            }
        }
    };
    if !answer.truncation {
        return Ok(answer);
    }
    let mut stream = monoio::net::TcpStream::connect(upstream).await?;
    let Some([len, body]) = frame(Bytes::from(wire)) else {
        return Err(UpstreamError::Decode);
    };
    let mut out = len.to_vec();
    out.extend_from_slice(&body);
    let (res, _) = stream.write_all(out).await;
    res?;
    let (res, len) = stream.read_exact(vec![0u8; 2]).await;
    res?;
    let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (res, body) = stream.read_exact(vec![0u8; n]).await;
    res?;
    let answer = Message::from_vec(&body).map_err(|_| UpstreamError::Decode)?;
    if !matches(&answer, id, q) {
        return Err(UpstreamError::Mismatch);
    }
    Ok(answer)
}

fn matches(a: &Message, id: u16, q: &Query) -> bool {
    a.id == id
        && a.message_type == MessageType::Response
        && a.queries.len() == 1
        && a.queries[0].name.eq_ignore_root(&q.name)
        && a.queries[0].query_type == q.query_type
        && a.queries[0].query_class == DNSClass::IN
}

/// The parts of an upstream answer kept, and for how long: the smallest TTL of the
/// records; for a negative answer, the SOA's negative TTL (RFC 2308 §5), and 0 (not
/// cached) without an SOA.
fn cacheable(mut m: Message) -> Cached {
    let negative = m.response_code == ResponseCode::NXDomain || m.answers.is_empty();
    let ttl = if negative {
        m.authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
            .unwrap_or(0)
    } else {
        m.answers
            .iter()
            .chain(&m.authorities)
            .map(|r| r.ttl)
            .min()
            .unwrap_or(0)
    };
    let additionals = std::mem::take(&mut m.additionals)
        .into_iter()
        .filter(|r| r.record_type() != RecordType::OPT)
        .collect();
    Cached {
        rcode: m.response_code,
        answers: std::mem::take(&mut m.answers),
        authorities: std::mem::take(&mut m.authorities),
        additionals,
        stored: Instant::now(),
        ttl: ttl.min(MAX_CACHE_TTL),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::Name;

    use super::*;
    use crate::responder::Channel;

    #[test]
    fn networks_match_by_prefix() {
        let n: Network = "127.0.0.0/8".parse().expect("net");
        assert!(n.contains("127.1.2.3".parse().expect("ip")));
        assert!(!n.contains("10.0.0.1".parse().expect("ip")));
        assert!(
            n.contains("::ffff:127.0.0.1".parse().expect("ip")),
            "mapped"
        );
        let one: Network = "::1".parse().expect("net");
        assert!(one.contains("::1".parse().expect("ip")));
        assert!(!one.contains("::2".parse().expect("ip")));
        let all: Network = "0.0.0.0/0".parse().expect("net");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        assert!("1.2.3.4/33".parse::<Network>().is_err());
        assert!("nope".parse::<Network>().is_err());
    }

    #[test]
    fn ttls_follow_rfc_2308() {
        let name = Name::from_str("x.example.org.").expect("name");
        let a = |ttl| Record::from_rdata(name.clone(), ttl, RData::A(A::new(192, 0, 2, 1)));
        let soa = Record::from_rdata(
            Name::from_str("example.org.").expect("name"),
            3600,
            RData::SOA(SOA::new(name.clone(), name.clone(), 1, 2, 3, 4, 60)),
        );
        let mut positive = Message::new(1, MessageType::Response, OpCode::Query);
        positive.insert_answers(vec![a(300), a(30)]);
        assert_eq!(cacheable(positive).ttl, 30);
        let mut nx = Message::new(1, MessageType::Response, OpCode::Query);
        nx.metadata.response_code = ResponseCode::NXDomain;
        nx.insert_authorities(vec![soa]);
        assert_eq!(cacheable(nx).ttl, 60, "min(SOA TTL, SOA minimum)");
        let mut bare = Message::new(1, MessageType::Response, OpCode::Query);
        bare.metadata.response_code = ResponseCode::NXDomain;
        assert_eq!(cacheable(bare).ttl, 0, "no SOA: not cached");
        let mut long = Message::new(1, MessageType::Response, OpCode::Query);
        long.insert_answers(vec![a(u32::MAX)]);
        assert_eq!(cacheable(long).ttl, MAX_CACHE_TTL);
    }

    /// A forwarded answer is finished as a zone answer is: an upstream's OPT (and its
    /// Padding option) is not relayed, and a padded query gets a padded answer within the
    /// client's size limit.
    #[test]
    fn forwarded_answers_are_padded_like_zone_answers() {
        use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

        use crate::responder::PADDING_BLOCK;

        let padding = |len: usize| EdnsOption::Unknown(u16::from(EdnsCode::Padding), vec![0; len]);
        let name = Name::from_str("x.example.org.").expect("name");
        // the upstream's answer, padded its own way (an odd block of 100)
        let mut upstream = Message::new(7, MessageType::Response, OpCode::Query);
        upstream.add_query(Query::query(name.clone(), RecordType::A));
        upstream.insert_answers(vec![Record::from_rdata(
            name.clone(),
            300,
            RData::A(A::new(192, 0, 2, 1)),
        )]);
        let mut edns = Edns::new();
        edns.options_mut().insert(padding(77));
        upstream.set_edns(edns);
        let upstream = Message::from_vec(&upstream.to_vec().expect("encode")).expect("decode");

        let config = DnsConfig {
            upstreams: vec!["127.0.0.1:9".parse().expect("addr")],
            ..DnsConfig::default()
        };
        let f = Forwarder::from_config(&config).expect("forwarding on");
        // cached, so answering asks no upstream
        f.cache.insert(
            CacheKey {
                name: LowerName::new(&name),
                qtype: RecordType::A,
            },
            Arc::new(cacheable(upstream)),
        );
        let ask = |pad: bool, max_size: usize, channel: Channel| {
            let mut q = Message::new(0x4242, MessageType::Query, OpCode::Query);
            q.metadata.recursion_desired = true;
            q.add_query(Query::query(name.clone(), RecordType::A));
            let mut edns = Edns::new();
            if pad {
                edns.options_mut().insert(padding(20));
            }
            q.set_edns(edns);
            let f = &f;
            let mut out = Vec::new();
            alknet_runtime::rt::run_local(|_| async {
                out = f.answer(&q, max_size, channel).await;
            })
            .expect("runtime");
            out
        };

        let plain = ask(false, MAX_MESSAGE_SIZE, Channel::Encrypted);
        let m = Message::from_vec(&plain).expect("decode");
        assert_eq!(m.answers.len(), 1);
        assert!(
            m.edns.expect("OPT").option(EdnsCode::Padding).is_none(),
            "the upstream's padding is not relayed"
        );
        assert_ne!(plain.len() % PADDING_BLOCK, 0);

        let padded = ask(true, MAX_MESSAGE_SIZE, Channel::Encrypted);
        assert_eq!(padded.len(), PADDING_BLOCK, "padded to one block");
        let m = Message::from_vec(&padded).expect("decode");
        assert_eq!(m.id, 0x4242);
        assert_eq!(m.answers.len(), 1);
        let opt = m.edns.expect("OPT");
        assert_eq!(
            opt.options().as_ref().len(),
            1,
            "one Padding option: {opt:?}"
        );
        assert!(opt.option(EdnsCode::Padding).is_some());

        // a client taking 400 bytes gets the answer unpadded (RFC 7830 §4), whole
        let small = ask(true, 400, Channel::Encrypted);
        assert!(small.len() < PADDING_BLOCK);
        let m = Message::from_vec(&small).expect("decode");
        assert!(!m.truncation && m.answers.len() == 1);

        // over plaintext UDP or TCP the Padding option is never used (RFC 7830 §4)
        let clear = ask(true, MAX_MESSAGE_SIZE, Channel::Plaintext);
        assert_eq!(
            clear, plain,
            "the same bytes as an answer to an unpadded query"
        );
    }
}
