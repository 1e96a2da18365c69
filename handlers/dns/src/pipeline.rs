//! `alknet/dns`: DoQ's framing, but any number of queries pipelined on each client
//! bidirectional stream, with any message IDs, as on DNS over TCP (RFC 7766 §6.2.1.1), for
//! resolvers that send thousands of queries a second to one node. Answers go back in
//! completion order, matched by ID; every query complete in a received chunk is answered
//! and the answers leave in one write.
//!
//! Back-pressure: the next chunk is read only after the previous answers were queued, so a
//! client that does not read its answers stops being read. Errors end only their stream
//! (reset with a DoQ error code): a message with no DNS header to answer, a FIN inside a
//! message (DOQ_PROTOCOL_ERROR), or a message begun and not finished within
//! `query_timeout_ms` (DOQ_REQUEST_CANCELLED). A stream may idle between messages.

use std::sync::Arc;

use alknet_runtime::rt::serve_streams;
use alknet_runtime::{
    AuthContext, BiStream, Bytes, Connection, HandlerError, LocalBoxFuture, ProtocolHandler,
    RecvStream, SendStream, VarInt,
};

use crate::catalog::SharedCatalog;
use crate::doq::error_code::{DOQ_PROTOCOL_ERROR, DOQ_REQUEST_CANCELLED};
use crate::framing::{frame, FrameDecoder};
use crate::limits::{DnsConfig, MAX_MESSAGE_SIZE};
use crate::responder;

/// The ALPN of pipelined DNS over QUIC.
pub const PIPELINE_ALPN: &[u8] = b"alknet/dns";

/// Largest chunk read from a stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Serves `alknet/dns` connections from a shared catalog.
#[derive(Clone)]
pub struct PipelineHandler {
    catalog: SharedCatalog,
    config: Arc<DnsConfig>,
}

impl PipelineHandler {
    pub fn new(catalog: SharedCatalog, config: Arc<DnsConfig>) -> Self {
        Self { catalog, config }
    }
}

impl ProtocolHandler for PipelineHandler {
    fn alpn(&self) -> &[u8] {
        PIPELINE_ALPN
    }

    fn handle(
        &self,
        conn: Connection,
        _auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        let this = self.clone();
        Box::pin(async move {
            serve_streams(
                &conn,
                "alknet/dns stream",
                move |BiStream { send, recv }| {
                    let this = this.clone();
                    async move { this.serve(send, recv).await }
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

/// How a stream ended.
enum End {
    Finished,
    Error(u32),
    Lost,
}

impl PipelineHandler {
    async fn serve(&self, mut send: SendStream, mut recv: RecvStream) {
        match self.pump(&mut send, &mut recv).await {
            End::Finished => {
                let _ = send.finish();
            }
            End::Error(code) => {
                let _ = send.reset(VarInt::from_u32(code));
                let _ = recv.stop(VarInt::from_u32(code));
            }
            End::Lost => {}
        }
    }

    async fn pump(&self, send: &mut SendStream, recv: &mut RecvStream) -> End {
        let mut decoder = FrameDecoder::new();
        let mut out: Vec<Bytes> = Vec::new();
        loop {
            let read = if decoder.pending() > 0 {
                match monoio::time::timeout(self.config.query_timeout, recv.read_chunk(READ_CHUNK))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => return End::Error(DOQ_REQUEST_CANCELLED),
                }
            } else {
                recv.read_chunk(READ_CHUNK).await
            };
            let chunk = match read {
                Ok(Some(chunk)) => chunk,
                Ok(None) if decoder.pending() == 0 => return End::Finished,
                Ok(None) => return End::Error(DOQ_PROTOCOL_ERROR),
                Err(_) => return End::Lost,
            };
            decoder.push(&chunk);
            let catalog = self.catalog.load();
            while let Some(message) = decoder.next_message() {
                let Some(reply) = responder::respond(&catalog, &message, MAX_MESSAGE_SIZE) else {
                    return End::Error(DOQ_PROTOCOL_ERROR);
                };
                if let Some(framed) = frame(Bytes::from(reply)) {
                    out.extend(framed);
                }
            }
            drop(catalog);
            if !out.is_empty() {
                if send.write_all_chunks(&mut out).await.is_err() {
                    return End::Lost;
                }
                out.clear();
            }
        }
    }
}
