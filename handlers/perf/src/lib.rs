//! ALPN `perf`, the protocol of quinn's `perf` tool (`perf/src/server.rs` in the quinn
//! repository), so the stock `quinn-perf client` can measure this server and
//! `quinn-perf server` alike:
//!
//! * on each client bidirectional stream the client sends an 8-byte big-endian download
//!   size, then any upload bytes, then FIN; the server drains the stream, then sends that
//!   many bytes and finishes;
//! * a unidirectional request is the same on a uni stream, answered on a new server uni
//!   stream.
//!
//! Upload bytes are discarded as chunks without copying; the response is slices of one
//! static buffer, so serving costs no allocation per byte.

use alknet_runtime::rt::serve_streams;
use alknet_runtime::{
    AuthContext, Connection, HandlerError, LocalBoxFuture, ProtocolHandler, ReadError, RecvStream,
    SendStream,
};
use bytes::Bytes;

/// The ALPN this handler serves (the one quinn-perf offers).
pub const ALPN: &[u8] = b"perf";

/// Response bytes come from this buffer, as in quinn-perf (which sends 42s).
static RESPONSE: [u8; 1024 * 1024] = [42; 1024 * 1024];

#[derive(Debug, Default, Clone, Copy)]
pub struct PerfHandler;

impl ProtocolHandler for PerfHandler {
    fn alpn(&self) -> &[u8] {
        ALPN
    }

    fn handle(
        &self,
        conn: Connection,
        _auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            let opener = conn.clone();
            serve_streams(
                &conn,
                "perf request",
                |stream| async move {
                    let (send, recv) = stream.split();
                    log_request(async { respond(read_request(recv).await?, send).await }.await);
                },
                move |recv| {
                    let conn = opener.clone();
                    async move {
                        let result = async {
                            let size = read_request(recv).await?;
                            respond(size, conn.open_uni().await?).await
                        };
                        log_request(result.await);
                    }
                },
            )
            .await;
            Ok(())
        })
    }
}

/// Reads the 8-byte download size, then drains the upload to FIN. Chunks are taken whole
/// (the header's bytes copied out of the first ones): a small request is one read, not
/// one for the header and another for the rest.
async fn read_request(mut recv: RecvStream) -> Result<u64, HandlerError> {
    let mut header = [0u8; 8];
    let mut have = 0;
    while let Some(chunk) = recv.read_chunk(usize::MAX).await? {
        let n = chunk.len().min(header.len() - have);
        header[have..have + n].copy_from_slice(&chunk[..n]);
        have += n;
    }
    if have < header.len() {
        return Err(HandlerError::Protocol {
            code: 0u32.into(),
            reason: format!("stream ended after {have} of 8 request bytes"),
        });
    }
    Ok(u64::from_be_bytes(header))
}

async fn respond(mut size: u64, mut send: SendStream) -> Result<(), HandlerError> {
    while size > 0 {
        let n = size.min(RESPONSE.len() as u64) as usize;
        send.write_chunk(Bytes::from_static(&RESPONSE[..n])).await?;
        size -= n as u64;
    }
    let _ = send.finish();
    Ok(())
}

fn log_request(result: Result<(), HandlerError>) {
    match result {
        Ok(()) => {}
        // a client that abandons a request mid-way is normal under load tests
        Err(HandlerError::Read(ReadError::ConnectionLost(_))) => {}
        Err(e) => tracing::debug!("perf request failed: {e}"),
    }
}
