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
use crate::responder::{self, Asker, Parsed};
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
    decoder: FrameDecoder,
    in_flight: InFlight,
    tx: async_channel::Sender<Out>,
}

impl StreamAnswerer {
    pub(crate) fn new(dns: DnsState, asker: Asker, tx: async_channel::Sender<Out>) -> Self {
        Self {
            asker,
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
            let reply = match stream_lookup(bytes, &catalog, &message) {
                Hit(reply) => reply,
                Parse(Parsed::Query(q)) if responder::cacheable(&catalog, &q) => {
                    let reply = responder::answer(&catalog, &q, MAX_MESSAGE_SIZE);
                    with_stream_answers(bytes, |a| a.insert(&catalog, &message, &reply));
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
                        spawn_forward(f, q, place, self.tx.clone());
                        continue;
                    }
                    responder::answer(&catalog, &q, MAX_MESSAGE_SIZE)
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
fn spawn_forward(f: Arc<Forwarder>, q: Box<Message>, place: Place, tx: async_channel::Sender<Out>) {
    spawn_guarded("dns stream forward", async move {
        let reply = f.answer(&q, MAX_MESSAGE_SIZE).await;
        if let Some(framed) = frame(Bytes::from(reply)) {
            let _ = tx.send(Out::Answers(framed.to_vec())).await;
        }
        drop(place);
    });
}
