//! `alknet/dns`: DoQ's framing, but any number of queries pipelined on each client
//! bidirectional stream, with any message IDs, as on DNS over TCP (RFC 7766 §6.2.1.1), for
//! resolvers that send thousands of queries a second to one node. Answers go back in
//! completion order, matched by ID; every query complete in a received chunk is answered
//! and the answers leave in one write.
//!
//! Back-pressure: the next chunk is read only after the previous answers were queued, so a
//! client that does not read its answers stops being read. Forwarded queries (names outside
//! the zones, see [`crate::forward`]) run as their own tasks, at most
//! `max_queries_per_connection` at once per stream, and their answers join the stream when
//! they complete. Errors end only their stream
//! (reset with a DoQ error code): a message with no DNS header to answer, a FIN inside a
//! message (DOQ_PROTOCOL_ERROR), or a message begun and not finished within
//! `query_timeout_ms` (DOQ_REQUEST_CANCELLED). A stream may idle between messages.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use alknet_runtime::rt::{serve_streams, spawn_guarded};
use alknet_runtime::{
    AuthContext, BiStream, Bytes, Connection, HandlerError, LocalBoxFuture, ProtocolHandler,
    RecvStream, SendStream, VarInt,
};

use crate::doq::error_code::{DOQ_PROTOCOL_ERROR, DOQ_REQUEST_CANCELLED};
use crate::forward::Forwarder;
use crate::framing::{frame, FrameDecoder};
use crate::limits::MAX_MESSAGE_SIZE;
use crate::responder::{self, Asker, Parsed};
use crate::DnsState;

/// The ALPN of pipelined DNS over QUIC.
pub const PIPELINE_ALPN: &[u8] = b"alknet/dns";

/// Largest chunk read from a stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Serves `alknet/dns` connections from a shared catalog.
#[derive(Clone)]
pub struct PipelineHandler {
    dns: DnsState,
}

impl PipelineHandler {
    pub fn new(dns: DnsState) -> Self {
        Self { dns }
    }
}

impl ProtocolHandler for PipelineHandler {
    fn alpn(&self) -> &[u8] {
        PIPELINE_ALPN
    }

    fn handle(
        &self,
        conn: Connection,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        let this = self.clone();
        Box::pin(async move {
            let asker = crate::doq::asker(&conn, &auth);
            serve_streams(
                &conn,
                "alknet/dns stream",
                move |BiStream { send, recv }| {
                    let this = this.clone();
                    async move { this.serve(send, recv, asker).await }
                },
                |mut recv: RecvStream| async move {
                    let _ = recv.stop(VarInt::from_u32(DOQ_PROTOCOL_ERROR));
                },
            )
            .await;
            Ok(())
        })
    }
}

/// What the reader hands the writer.
enum Out {
    Answers(Vec<Bytes>),
    /// End the stream with this error code.
    Reset(u32),
}

/// Answer batches queued for the writer before the reader waits.
const WRITE_QUEUE: usize = 16;

impl PipelineHandler {
    async fn serve(&self, send: SendStream, mut recv: RecvStream, asker: Asker) {
        let (tx, rx) = async_channel::bounded::<Out>(WRITE_QUEUE);
        spawn_guarded("alknet/dns writer", write_answers(send, rx));
        if let Some(code) = self.read_queries(&mut recv, &tx, asker).await {
            let _ = recv.stop(VarInt::from_u32(code));
            let _ = tx.send(Out::Reset(code)).await;
        }
        // the writer finishes the stream once this and every forwarded query's sender is gone
    }

    /// Reads and answers queries until the stream ends; an error code to end it with.
    async fn read_queries(
        &self,
        recv: &mut RecvStream,
        tx: &async_channel::Sender<Out>,
        asker: Asker,
    ) -> Option<u32> {
        let mut decoder = FrameDecoder::new();
        let forwarding = Rc::new(Cell::new(0usize));
        loop {
            let read = if decoder.pending() > 0 {
                match monoio::time::timeout(
                    self.dns.config.query_timeout,
                    recv.read_chunk(READ_CHUNK),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => return Some(DOQ_REQUEST_CANCELLED),
                }
            } else {
                recv.read_chunk(READ_CHUNK).await
            };
            let chunk = match read {
                Ok(Some(chunk)) => chunk,
                Ok(None) if decoder.pending() == 0 => return None,
                Ok(None) => return Some(DOQ_PROTOCOL_ERROR),
                Err(_) => return None,
            };
            decoder.push(&chunk);
            let mut out: Vec<Bytes> = Vec::new();
            while let Some(message) = decoder.next_message() {
                let reply = match responder::parse(&message) {
                    Parsed::Query(q) => {
                        if let Some(f) = self.forward_target(&q, asker) {
                            if forwarding.get() < self.dns.config.max_queries_per_connection {
                                self.spawn_forward(f, q, tx.clone(), forwarding.clone());
                                continue;
                            }
                            // at the limit: this one waits, and so does the stream
                            f.answer(&q, MAX_MESSAGE_SIZE).await
                        } else {
                            responder::answer(&self.dns.catalog.load(), &q, MAX_MESSAGE_SIZE)
                        }
                    }
                    Parsed::Malformed(header) => responder::formerr(&header),
                    Parsed::Ignore => return Some(DOQ_PROTOCOL_ERROR),
                };
                if let Some(framed) = frame(Bytes::from(reply)) {
                    out.extend(framed);
                }
            }
            if !out.is_empty() && tx.send(Out::Answers(out)).await.is_err() {
                return None; // the writer is gone: the stream is lost
            }
        }
    }

    fn forward_target(
        &self,
        q: &hickory_proto::op::Message,
        asker: Asker,
    ) -> Option<Arc<Forwarder>> {
        let f = self.dns.forwarder.as_ref()?;
        (f.allows(asker.source, asker.may_recurse)
            && responder::forwardable(&self.dns.catalog.load(), q))
        .then(|| f.clone())
    }

    fn spawn_forward(
        &self,
        f: Arc<Forwarder>,
        q: Box<hickory_proto::op::Message>,
        tx: async_channel::Sender<Out>,
        forwarding: Rc<Cell<usize>>,
    ) {
        forwarding.set(forwarding.get() + 1);
        spawn_guarded("alknet/dns forward", async move {
            let reply = f.answer(&q, MAX_MESSAGE_SIZE).await;
            forwarding.set(forwarding.get() - 1);
            if let Some(framed) = frame(Bytes::from(reply)) {
                let _ = tx.send(Out::Answers(framed.to_vec())).await;
            }
        });
    }
}

/// Writes answer batches as they come; finishes the stream when every sender is gone, or
/// resets it when told to.
async fn write_answers(mut send: SendStream, rx: async_channel::Receiver<Out>) {
    while let Ok(out) = rx.recv().await {
        match out {
            Out::Answers(mut chunks) => {
                if send.write_all_chunks(&mut chunks).await.is_err() {
                    return;
                }
            }
            Out::Reset(code) => {
                let _ = send.reset(VarInt::from_u32(code));
                return;
            }
        }
    }
    let _ = send.finish();
}
