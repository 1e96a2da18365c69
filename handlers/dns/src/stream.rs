//! The queries of one pipelined byte stream, whatever carries it: a classic DNS-over-TCP
//! connection ([`crate::classic`]), an `alknet/dns` QUIC stream ([`crate::pipeline`]) or a
//! DNS-over-TLS connection ([`crate::dot`]). Messages behind 2-byte lengths, any IDs,
//! answered in completion order (RFC 7766 §6.2.1.1).
//!
//! Every query complete in a pushed chunk is answered, and the zone answers leave as one
//! batch for the transport's writer. A forwarded query (a name outside the zones, see
//! [`crate::forward`]) runs as its own task and its answer joins the stream when it
//! completes, so a slow upstream holds back none of the queries behind it. At most
//! `max_pipelined_queries` are in flight per stream ([`InFlight`]); at the bound the
//! answers made so far go out and the stream is not read until a place is free
//! (back-pressure, not a refusal).

use std::sync::Arc;

use alknet_runtime::rt::spawn_guarded;
use bytes::Bytes;
use hickory_proto::op::Message;

use crate::answer_cache::Lookup::{Hit, Parse};
use crate::answer_cache::{stream_lookup, with_stream_answers};
use crate::forward::Forwarder;
use crate::framing::{frame, FrameDecoder};
use crate::in_flight::{InFlight, Place};
use crate::limits::MAX_MESSAGE_SIZE;
use crate::responder::{self, Asker, Channel, Parsed};
use crate::DnsState;

/// What the reading side hands the transport's writer.
pub(crate) enum Out {
    /// Framed answers (length prefixes and bodies), in order.
    Answers(Vec<Bytes>),
    /// End the stream with this error code (QUIC transports; TLS just closes).
    Reset(u32),
}

/// Answer batches queued for the writer before the reader waits: what a client that does
/// not read its answers can make the server hold, per stream.
pub(crate) const WRITE_QUEUE: usize = 16;

/// Why a stream cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// A message with no DNS header to answer (too short, or a response).
    NotAQuery,
    /// The writer is gone: the stream is lost.
    WriterGone,
}

/// The sans-transport half of a pipelined stream: bytes in, answers to the writer.
pub(crate) struct StreamAnswerer {
    dns: DnsState,
    asker: Asker,
    /// Whether answers may be padded: encrypted for DoT and `alknet/dns`, plaintext for
    /// classic TCP.
    channel: Channel,
    decoder: FrameDecoder,
    in_flight: InFlight,
    tx: async_channel::Sender<Out>,
}

impl StreamAnswerer {
    pub(crate) fn new(
        dns: DnsState,
        asker: Asker,
        channel: Channel,
        tx: async_channel::Sender<Out>,
    ) -> Self {
        Self {
            asker,
            channel,
            in_flight: InFlight::new(dns.config.max_pipelined_queries),
            decoder: FrameDecoder::new(),
            dns,
            tx,
        }
    }

    /// Whether a message has begun and not ended (its sender must finish it in time).
    pub(crate) fn mid_message(&self) -> bool {
        self.decoder.pending() > 0
    }

    /// Forwarded queries still being answered (a stream waiting for them is not idle).
    pub(crate) fn forwarding(&self) -> usize {
        self.in_flight.taken()
    }

    /// Takes received bytes and answers every query they complete.
    pub(crate) async fn push(&mut self, chunk: &[u8]) -> Result<(), StreamEnd> {
        self.decoder.push(chunk);
        let mut out: Vec<Bytes> = Vec::new();
        let catalog = self.dns.catalog.load_full();
        let bytes = self.dns.config.answer_cache_bytes;
        while let Some(message) = self.decoder.next_message() {
            let reply = match stream_lookup(bytes, self.channel, &catalog, &message) {
                Hit(reply) => reply,
                Parse(Parsed::Query(q)) if responder::cacheable(&catalog, &q) => {
                    let reply = responder::answer(&catalog, &q, MAX_MESSAGE_SIZE, self.channel);
                    with_stream_answers(bytes, self.channel, |a| {
                        a.insert(&catalog, &message, &reply)
                    });
                    reply
                }
                Parse(Parsed::Query(q)) => {
                    if let Some(f) = self.forward_target(&q) {
                        if !self.in_flight.has_room() {
                            // at the bound: what is answered leaves now, and the stream
                            // waits (unread) for a forwarded query to be answered
                            self.send(std::mem::take(&mut out)).await?;
                        }
                        let place = self.in_flight.take().await;
                        spawn_forward(f, q, self.channel, place, self.tx.clone());
                        continue;
                    }
                    responder::answer(&catalog, &q, MAX_MESSAGE_SIZE, self.channel)
                }
                Parse(Parsed::Malformed(header)) => responder::formerr(&header),
                Parse(Parsed::Ignore) => return Err(StreamEnd::NotAQuery),
            };
            if let Some(framed) = frame(Bytes::from(reply)) {
                out.extend(framed);
            }
        }
        self.send(out).await
    }

    /// Queues a batch of framed answers (none: nothing) for the writer.
    async fn send(&self, out: Vec<Bytes>) -> Result<(), StreamEnd> {
        if !out.is_empty() && self.tx.send(Out::Answers(out)).await.is_err() {
            return Err(StreamEnd::WriterGone);
        }
        Ok(())
    }

    /// Tells the writer to end the stream with `code`.
    pub(crate) async fn reset(&self, code: u32) {
        let _ = self.tx.send(Out::Reset(code)).await;
    }

    fn forward_target(&self, q: &Message) -> Option<Arc<Forwarder>> {
        let f = self.dns.forwarder.as_ref()?;
        (f.allows(self.asker.source, self.asker.may_recurse)
            && responder::forwardable(&self.dns.catalog.load(), q))
        .then(|| f.clone())
    }
}

/// Answers a forwarded query as a task of its own, holding `place` until its answer is
/// queued for the writer.
fn spawn_forward(
    f: Arc<Forwarder>,
    q: Box<Message>,
    channel: Channel,
    place: Place,
    tx: async_channel::Sender<Out>,
) {
    spawn_guarded("dns stream forward", async move {
        let reply = f.answer(&q, MAX_MESSAGE_SIZE, channel).await;
        if let Some(framed) = frame(Bytes::from(reply)) {
            let _ = tx.send(Out::Answers(framed.to_vec())).await;
        }
        drop(place);
    });
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::str::FromStr;

    use hickory_proto::op::{MessageType, Metadata, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;
    use crate::catalog::{shared, Catalog};
    use crate::limits::DnsConfig;
    use crate::zone::Zone;

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(
            Name::from_str(name).expect("name"),
            RecordType::A,
        ));
        let wire = m.to_vec().expect("encode");
        let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&wire);
        framed
    }

    /// The IDs of a batch of framed answers, in order.
    fn ids(out: Out) -> Vec<u16> {
        let Out::Answers(chunks) = out else {
            panic!("answers expected");
        };
        chunks
            .chunks(2)
            .map(|c| Message::from_vec(&c[1]).expect("an answer").id)
            .collect()
    }

    /// Answers one forwarded query the upstream socket holds; the name it asked.
    async fn upstream_answers(upstream: &monoio::net::udp::UdpSocket) -> String {
        let (res, buf) = upstream.recv_from(vec![0u8; 4096]).await;
        let (n, from): (usize, SocketAddr) = res.expect("a forwarded query");
        let q = Message::from_vec(&buf[..n]).expect("a query");
        let question = q.queries[0].clone();
        let mut a = Message::response(q.id, q.op_code);
        a.metadata = Metadata::response_from_request(&q.metadata);
        a.add_answer(Record::from_rdata(
            question.name.clone(),
            60,
            RData::A(A::new(192, 0, 2, 77)),
        ));
        a.add_query(question.clone());
        let (res, _) = upstream.send_to(a.to_vec().expect("encode"), from).await;
        res.expect("send");
        question.name.to_string()
    }

    /// With one query in flight allowed: the local answer ahead of the second forwarded
    /// query leaves at once, the stream waits (nothing past it is answered) until the
    /// first forwarded query is, and the rest follows in completion order. The upstream
    /// answers only when the test says, so the order is fixed, not timed.
    #[test]
    fn a_stream_waits_at_the_bound_and_answers_in_completion_order() {
        alknet_runtime::rt::run_local(|_| async {
            let upstream = monoio::net::udp::UdpSocket::bind("127.0.0.1:0").expect("bind");
            let zone = Zone::parse(
                "example.com.",
                "$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\n@ IN NS ns\nns IN A 192.0.2.53\n",
                Path::new("z"),
            )
            .expect("zone");
            let config = DnsConfig {
                upstreams: vec![upstream.local_addr().expect("addr")],
                recursion_allow: vec!["127.0.0.0/8".parse().expect("net")],
                max_pipelined_queries: 1,
                ..DnsConfig::default()
            };
            let dns = DnsState::new(shared(Catalog::new([Arc::new(zone)])), config);
            let asker = Asker {
                source: [127, 0, 0, 1].into(),
                may_recurse: false,
            };
            let (tx, rx) = async_channel::bounded(WRITE_QUEUE);
            let mut answerer = StreamAnswerer::new(dns, asker, Channel::Encrypted, tx);
            let chunk = [
                query(1, "one.example.org."),
                query(2, "ns.example.com."),
                query(3, "two.example.org."),
                query(4, "ns.example.com."),
            ]
            .concat();
            let script = async {
                // 2 leaves before the stream waits for a place for 3
                assert_eq!(ids(rx.recv().await.expect("a batch")), [2]);
                assert_eq!(upstream_answers(&upstream).await, "one.example.org.");
                assert_eq!(ids(rx.recv().await.expect("a batch")), [1]);
                // a place is free: 3 goes to the upstream, and 4 is answered
                assert_eq!(ids(rx.recv().await.expect("a batch")), [4]);
                assert_eq!(upstream_answers(&upstream).await, "two.example.org.");
                assert_eq!(ids(rx.recv().await.expect("a batch")), [3]);
            };
            let (pushed, ()) = monoio::join!(answerer.push(&chunk), script);
            assert_eq!(pushed, Ok(()));
            assert_eq!(answerer.forwarding(), 0);
        })
        .expect("runtime");
    }
}
