//! `alknet/echo`: every bidirectional stream is echoed back on itself, every
//! unidirectional stream on a new unidirectional stream, and every DATAGRAM as a
//! DATAGRAM. Bytes move as received chunks, never copied.

use alknet_runtime::rt::{serve_streams, spawn_guarded};
use alknet_runtime::{
    AuthContext, BiStream, Connection, HandlerError, LocalBoxFuture, ProtocolHandler, RecvStream,
    SendStream,
};

/// The ALPN this handler serves.
pub const ALPN: &[u8] = b"alknet/echo";

/// Largest chunk taken from a stream at once; bounded by the stream window anyway.
const MAX_CHUNK: usize = 64 * 1024;

#[derive(Debug, Default, Clone, Copy)]
pub struct EchoHandler;

impl ProtocolHandler for EchoHandler {
    fn alpn(&self) -> &[u8] {
        ALPN
    }

    fn handle(
        &self,
        conn: Connection,
        _auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            let dgram = conn.clone();
            spawn_guarded("echo datagrams", async move {
                while let Ok(d) = dgram.read_datagram().await {
                    if dgram.send_datagram(d).is_err() {
                        break;
                    }
                }
            });
            let opener = conn.clone();
            serve_streams(
                &conn,
                "echo stream",
                |BiStream { send, recv }| async move { log_stream_end(pump(recv, send).await) },
                move |recv| {
                    let conn = opener.clone();
                    async move {
                        if let Ok(send) = conn.open_uni().await {
                            log_stream_end(pump(recv, send).await);
                        }
                    }
                },
            )
            .await;
            // the peer closing is how an echo session normally ends
            Ok(())
        })
    }
}

/// Copies `recv` to `send` chunk by chunk, then finishes `send`. Back-pressure holds: a
/// chunk is read only after the previous one was accepted by the send side.
async fn pump(mut recv: RecvStream, mut send: SendStream) -> Result<u64, HandlerError> {
    let mut total = 0u64;
    while let Some(chunk) = recv.read_chunk(MAX_CHUNK).await? {
        total += chunk.len() as u64;
        send.write_chunk(chunk).await?;
    }
    let _ = send.finish();
    Ok(total)
}

fn log_stream_end(result: Result<u64, HandlerError>) {
    match result {
        Ok(n) => tracing::trace!(bytes = n, "echo stream done"),
        Err(e) => tracing::debug!("echo stream ended: {e}"),
    }
}
