//! `dot`: DNS over TLS (RFC 7858) on the runtime's TLS-over-TCP listener (the QUIC port,
//! ALPN `dot`, or no ALPN and a first byte no HTTP request begins with). The same framing and pipelining as classic DNS over TCP and `alknet/dns`
//! (`crate::stream`): any number of queries on one connection, answered in completion
//! order (RFC 7766 §6.2.1.1), forwarded ones as they come back.
//!
//! A connection ends when the client closes it, when it sends a message with no DNS header
//! (a response, or fewer than 12 bytes), when no query is in progress for
//! `dot_idle_timeout_ms` (RFC 7858 §3.4), when a message begun is not finished within
//! `query_timeout_ms`, or when a batch of answers cannot be written within
//! `dot_idle_timeout_ms` (a client that does not read). The listener's own limits apply
//! first: `[tcp]` connections per worker and the `[admission]` caps per source.

use alknet_runtime::{AuthContext, HandlerError, LocalBoxFuture, TcpHandler, TlsTcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::doq::RECURSION_SCOPE;
use crate::responder::{Asker, Channel};
use crate::stream::{Out, StreamAnswerer, StreamEnd, WRITE_QUEUE};
use crate::DnsState;

/// The ALPN of DNS over TLS (RFC 7858 §3.2, IANA "dot").
pub const DOT_ALPN: &[u8] = b"dot";

/// Bytes read from a connection at once.
const READ_CHUNK: usize = 16 * 1024;

/// Serves DNS over TLS from the DNS state the QUIC transports share.
#[derive(Clone)]
pub struct DotHandler {
    dns: DnsState,
}

impl DotHandler {
    pub fn new(dns: DnsState) -> Self {
        Self { dns }
    }
}

impl TcpHandler for DotHandler {
    fn alpns(&self) -> Vec<Vec<u8>> {
        vec![DOT_ALPN.to_vec()]
    }

    /// DoT clients that offer no ALPN (RFC 7858 predates the `dot` ALPN; dnsperf,
    /// resolvers forwarding over TLS) begin with a message length. A query under 3 328
    /// bytes (all real ones) has a first byte of 0x00–0x0C, and no HTTP/1.1 request begins
    /// so (a method token, or the CR of a stray empty line, 0x0D).
    fn claims_without_alpn(&self, first_byte: u8) -> bool {
        first_byte < b'\r'
    }

    fn handle(
        &self,
        stream: TlsTcpStream,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        let asker = Asker {
            source: auth.remote.ip(),
            may_recurse: auth
                .identity
                .as_ref()
                .is_some_and(|i| i.has_scope(RECURSION_SCOPE)),
        };
        let dns = self.dns.clone();
        Box::pin(async move {
            serve(dns, stream, asker).await;
            Ok(())
        })
    }
}

/// Reads and answers until the connection ends, while the writer sends answers as they
/// come; returns when both are done.
async fn serve(dns: DnsState, stream: TlsTcpStream, asker: Asker) {
    let (reader, writer) = tokio::io::split(stream);
    let (tx, rx) = async_channel::bounded::<Out>(WRITE_QUEUE);
    let idle = dns.config.dot_idle_timeout;
    let answerer = StreamAnswerer::new(dns.clone(), asker, Channel::Encrypted, tx);
    monoio::join!(
        read_queries(&dns, reader, answerer),
        write_answers(writer, rx, idle)
    );
}

async fn read_queries(
    dns: &DnsState,
    mut reader: ReadHalf<TlsTcpStream>,
    mut answerer: StreamAnswerer,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let wait = if answerer.mid_message() {
            dns.config.query_timeout
        } else {
            dns.config.dot_idle_timeout
        };
        let n = match monoio::time::timeout(wait, reader.read(&mut buf)).await {
            Ok(Ok(0)) => {
                if answerer.mid_message() {
                    tracing::debug!("dot: connection closed inside a message");
                }
                return;
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::debug!("dot read: {e}");
                return;
            }
            // not idle while forwarded answers are still to come
            Err(_) if !answerer.mid_message() && answerer.forwarding() > 0 => continue,
            Err(_) => {
                tracing::debug!(mid_message = answerer.mid_message(), "dot: timed out");
                return;
            }
        };
        match answerer.push(&buf[..n]).await {
            Ok(()) => {}
            Err(StreamEnd::NotAQuery) => {
                tracing::debug!("dot: a message that is not a query; closing");
                return;
            }
            Err(StreamEnd::WriterGone) => return,
        }
    }
    // dropping the answerer drops its sender: the writer ends once forwarded answers are in
}

/// Writes answer batches as they come (one flush per batch); closes the TLS session
/// (close_notify) once every sender is gone, or at once when a write fails or stalls.
async fn write_answers(
    mut writer: WriteHalf<TlsTcpStream>,
    rx: async_channel::Receiver<Out>,
    stall: std::time::Duration,
) {
    while let Ok(out) = rx.recv().await {
        let Out::Answers(chunks) = out else {
            break;
        };
        // one buffer, so the batch leaves in as few TLS records as it fits (a write per
        // chunk would make a record of each 2-byte length prefix)
        let batch = chunks.concat();
        let write = async {
            writer.write_all(&batch).await?;
            writer.flush().await
        };
        match monoio::time::timeout(stall, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!("dot write: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("dot: the client does not read its answers; closing");
                return;
            }
        }
    }
    rx.close();
    let _ = monoio::time::timeout(stall, writer.shutdown()).await;
}
