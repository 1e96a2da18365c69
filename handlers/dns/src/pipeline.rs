//! `alknet/dns`: DoQ's framing, but any number of queries pipelined on each client
//! bidirectional stream, with any message IDs, as on DNS over TCP (RFC 7766 §6.2.1.1), for
//! resolvers that send thousands of queries a second to one node. Answers go back in
//! completion order, matched by ID (`crate::stream` answers; this module moves bytes).
//!
//! Back-pressure: the next chunk is read only after the previous answers were queued, so a
//! client that does not read its answers stops being read. Errors end only their stream
//! (reset with a DoQ error code): a message with no DNS header to answer, a FIN inside a
//! message (DOQ_PROTOCOL_ERROR), or a message begun and not finished within
//! `query_timeout_ms` (DOQ_REQUEST_CANCELLED). A stream may idle between messages.

use alknet_runtime::rt::{serve_streams, spawn_guarded};
use alknet_runtime::{
    AuthContext, BiStream, Connection, HandlerError, LocalBoxFuture, ProtocolHandler, RecvStream,
    SendStream, VarInt,
};

use crate::doq::error_code::{DOQ_PROTOCOL_ERROR, DOQ_REQUEST_CANCELLED};
use crate::responder::{Asker, Channel};
use crate::stream::{Out, StreamAnswerer, StreamEnd, WRITE_QUEUE};
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

impl PipelineHandler {
    async fn serve(&self, send: SendStream, mut recv: RecvStream, asker: Asker) {
        let (tx, rx) = async_channel::bounded::<Out>(WRITE_QUEUE);
        spawn_guarded("alknet/dns writer", write_answers(send, rx));
        let mut answerer = StreamAnswerer::new(self.dns.clone(), asker, Channel::Encrypted, tx);
        if let Some(code) = self.read_queries(&mut recv, &mut answerer).await {
            let _ = recv.stop(VarInt::from_u32(code));
            answerer.reset(code).await;
        }
        // the writer finishes the stream once this and every forwarded query's sender is gone
    }

    /// Reads and answers queries until the stream ends; an error code to end it with.
    async fn read_queries(
        &self,
        recv: &mut RecvStream,
        answerer: &mut StreamAnswerer,
    ) -> Option<u32> {
        loop {
            let read = if answerer.mid_message() {
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
                Ok(None) if !answerer.mid_message() => return None,
                Ok(None) => return Some(DOQ_PROTOCOL_ERROR),
                Err(_) => return None,
            };
            match answerer.push(&chunk).await {
                Ok(()) => {}
                Err(StreamEnd::NotAQuery) => return Some(DOQ_PROTOCOL_ERROR),
                Err(StreamEnd::WriterGone) => return None,
            }
        }
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
