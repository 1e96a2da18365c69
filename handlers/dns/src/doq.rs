//! `doq`: DNS over QUIC, RFC 9250. One query per client-initiated bidirectional stream,
//! behind a 2-byte length; the answer goes back on the same stream, which the server then
//! finishes.
//!
//! Fatal errors close the connection with DOQ_PROTOCOL_ERROR (RFC 9250 §4.3.3): a
//! non-zero message ID, a FIN before the whole message, more than one message on a stream,
//! an edns-tcp-keepalive option, or a message with no DNS header to answer. A stream the
//! client resets is answered with a reset carrying DOQ_REQUEST_CANCELLED; a stream past
//! `max_queries_per_connection` is refused with DOQ_EXCESSIVE_LOAD; a stream whose query
//! does not arrive within `query_timeout_ms` is abandoned with DOQ_REQUEST_CANCELLED. A
//! panic while answering resets only its stream, with DOQ_INTERNAL_ERROR (the engine's
//! stream-panic code, 0x1, is the same number).
//!
//! 0-RTT: the engine accepts no early data (`max_early_data_size = 0`), so every query
//! arrives in 1-RTT data and §4.5's rule (only QUERY/NOTIFY in 0-RTT) holds trivially.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use alknet_runtime::rt::{run_or_spawn_guarded, spawn_guarded, timeout_if_pending};
use alknet_runtime::{
    AuthContext, BiStream, Bytes, Connection, HandlerError, LocalBoxFuture, ProtocolHandler,
    ReadError, RecvStream, SendStream, VarInt,
};
use hickory_proto::op::Message;
use hickory_proto::rr::rdata::opt::EdnsCode;

use crate::answer_cache::Lookup::{Hit, Parse};
use crate::answer_cache::{stream_lookup, with_stream_answers};
use crate::catalog::SharedCatalog;
use crate::forward::Forwarder;
use crate::framing::{frame, FrameDecoder, LENGTH_PREFIX};
use crate::limits::MAX_MESSAGE_SIZE;
use crate::responder::{self, Asker, Channel, Parsed};
use crate::DnsState;

/// The ALPN of DNS over QUIC (RFC 9250 §4.1.1).
pub const DOQ_ALPN: &[u8] = b"doq";

/// RFC 9250 §4.3 error codes, used as QUIC application error codes.
pub mod error_code {
    /// No error: closing a connection that is simply done.
    pub const DOQ_NO_ERROR: u32 = 0x0;
    /// The server failed to answer (used for a panic while answering).
    pub const DOQ_INTERNAL_ERROR: u32 = 0x1;
    /// The peer broke RFC 9250; fatal for the connection.
    pub const DOQ_PROTOCOL_ERROR: u32 = 0x2;
    /// A query was cancelled (by the client, or abandoned after `query_timeout_ms`).
    pub const DOQ_REQUEST_CANCELLED: u32 = 0x3;
    /// Too many queries in progress on the connection.
    pub const DOQ_EXCESSIVE_LOAD: u32 = 0x4;
    /// Any other error.
    pub const DOQ_UNSPECIFIED_ERROR: u32 = 0x5;
}
use error_code::*;

/// Largest chunk read from a stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Serves `doq` connections from a shared catalog.
#[derive(Clone)]
pub struct DoqHandler {
    dns: DnsState,
}

impl DoqHandler {
    pub fn new(dns: DnsState) -> Self {
        Self { dns }
    }
}

/// The recursion decision's inputs for a connection.
pub(crate) fn asker(conn: &Connection, auth: &AuthContext) -> Asker {
    Asker {
        source: conn.remote_address().ip(),
        may_recurse: auth
            .identity
            .as_ref()
            .is_some_and(|i| i.has_scope(RECURSION_SCOPE)),
    }
}

/// The identity scope that allows recursion through the forwarding cache.
pub const RECURSION_SCOPE: &str = "dns:recursion";

impl ProtocolHandler for DoqHandler {
    fn alpn(&self) -> &[u8] {
        DOQ_ALPN
    }

    fn handle(
        &self,
        conn: Connection,
        auth: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        let this = self.clone();
        Box::pin(async move {
            let asker = asker(&conn, &auth);
            let uni = conn.clone();
            spawn_guarded("doq uni streams", async move {
                // DoQ uses no unidirectional streams: refuse any without failing the rest
                while let Ok(mut recv) = uni.accept_uni().await {
                    let _ = recv.stop(VarInt::from_u32(DOQ_PROTOCOL_ERROR));
                }
            });
            let in_progress = Rc::new(Cell::new(0usize));
            while let Ok(BiStream { mut send, mut recv }) = conn.accept_bi().await {
                if in_progress.get() >= this.dns.config.max_queries_per_connection {
                    let _ = send.reset(VarInt::from_u32(DOQ_EXCESSIVE_LOAD));
                    let _ = recv.stop(VarInt::from_u32(DOQ_EXCESSIVE_LOAD));
                    continue;
                }
                let guard = InProgress::enter(&in_progress);
                let query = Query {
                    conn: conn.clone(),
                    catalog: this.dns.catalog.clone(),
                    forwarder: this.dns.forwarder.clone(),
                    asker,
                    timeout: this.dns.config.query_timeout,
                    answer_cache_bytes: this.dns.config.answer_cache_bytes,
                };
                run_or_spawn_guarded("doq query", async move {
                    query.serve(send, recv).await;
                    drop(guard);
                });
            }
            Ok(())
        })
    }
}

/// Counts a stream in progress until dropped.
struct InProgress(Rc<Cell<usize>>);

impl InProgress {
    fn enter(count: &Rc<Cell<usize>>) -> Self {
        count.set(count.get() + 1);
        Self(count.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// How reading the one query of a stream ended, when it did not yield one.
#[derive(Debug)]
enum QueryError {
    /// Fatal (RFC 9250 §4.3.3): close the connection with DOQ_PROTOCOL_ERROR.
    Protocol(&'static str),
    /// The client reset the stream.
    Cancelled,
    /// No whole query within the timeout.
    TimedOut,
    /// The connection is gone.
    Lost,
}

struct Query {
    conn: Connection,
    catalog: SharedCatalog,
    forwarder: Option<Arc<Forwarder>>,
    asker: Asker,
    timeout: Duration,
    answer_cache_bytes: usize,
}

impl Query {
    async fn serve(self, mut send: SendStream, mut recv: RecvStream) {
        // a query usually arrives whole with its stream, and its FIN with it: the timers
        // are armed only when they have something to wait for
        let read = timeout_if_pending(self.timeout, read_query(&mut recv)).await;
        let result = match read {
            Ok(Ok(message)) => self.answer(&message, &mut send).await,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(QueryError::TimedOut),
        };
        match result {
            // the client must finish its side; wait (bounded) to see that it sends nothing more
            Ok(()) => match timeout_if_pending(self.timeout, recv.read_chunk(1)).await {
                Ok(Ok(Some(_))) => self.protocol_error("more than one query on a stream"),
                Ok(_) => {}
                Err(_) => {
                    let _ = recv.stop(VarInt::from_u32(DOQ_REQUEST_CANCELLED));
                }
            },
            Err(QueryError::Protocol(reason)) => self.protocol_error(reason),
            Err(QueryError::Cancelled) | Err(QueryError::TimedOut) => {
                let _ = send.reset(VarInt::from_u32(DOQ_REQUEST_CANCELLED));
                let _ = recv.stop(VarInt::from_u32(DOQ_REQUEST_CANCELLED));
            }
            Err(QueryError::Lost) => {}
        }
    }

    /// Answers one query (already checked for a zero ID) and finishes the stream.
    async fn answer(&self, message: &[u8], send: &mut SendStream) -> Result<(), QueryError> {
        let catalog = self.catalog.load_full();
        let bytes = self.answer_cache_bytes;
        // a hit is a query answered before from this catalog, so one that passed the checks
        let reply = match stream_lookup(bytes, Channel::Encrypted, &catalog, message) {
            Hit(reply) => reply,
            Parse(Parsed::Query(q)) if has_tcp_keepalive(&q) => {
                return Err(QueryError::Protocol("edns-tcp-keepalive in a DoQ query"));
            }
            Parse(Parsed::Query(q)) if responder::cacheable(&catalog, &q) => {
                let reply = responder::answer(&catalog, &q, MAX_MESSAGE_SIZE, Channel::Encrypted);
                with_stream_answers(bytes, Channel::Encrypted, |a| {
                    a.insert(&catalog, message, &reply)
                });
                reply
            }
            Parse(Parsed::Query(q)) => {
                responder::answer_query(
                    &self.catalog,
                    self.forwarder.as_deref(),
                    &q,
                    MAX_MESSAGE_SIZE,
                    Channel::Encrypted,
                    self.asker,
                )
                .await
            }
            Parse(Parsed::Malformed(header)) => responder::formerr(&header),
            Parse(Parsed::Ignore) => return Err(QueryError::Protocol("not a DNS query")),
        };
        let Some(mut chunks) = frame(Bytes::from(reply)) else {
            return Err(QueryError::Lost);
        };
        match send.write_all_chunks(&mut chunks).await {
            Ok(()) => {
                let _ = send.finish();
                Ok(())
            }
            // the client stopped reading: it no longer wants the answer
            Err(_) => Err(QueryError::Lost),
        }
    }

    fn protocol_error(&self, reason: &str) {
        tracing::debug!(peer = %self.conn.remote_address(), "doq protocol error: {reason}");
        self.conn
            .close(VarInt::from_u32(DOQ_PROTOCOL_ERROR), reason.as_bytes());
    }
}

/// Reads the stream's one message (never past its end: what follows is read after the
/// answer, to tell a FIN from a second query).
async fn read_query(recv: &mut RecvStream) -> Result<Bytes, QueryError> {
    let mut decoder = FrameDecoder::new();
    loop {
        let want = decoder.wanted().unwrap_or(LENGTH_PREFIX).max(1);
        match recv.read_chunk(want.min(READ_CHUNK)).await {
            Ok(Some(chunk)) => {
                decoder.push(&chunk);
                if let Some(message) = decoder.next_message() {
                    if decoder.pending() > 0 {
                        return Err(QueryError::Protocol("more than one query on a stream"));
                    }
                    if message.get(..2).is_some_and(|id| id != [0, 0]) {
                        return Err(QueryError::Protocol("message ID is not 0"));
                    }
                    return Ok(message);
                }
            }
            Ok(None) => {
                return Err(QueryError::Protocol(
                    "stream finished before the whole query",
                ))
            }
            Err(ReadError::Reset(_)) => return Err(QueryError::Cancelled),
            Err(_) => return Err(QueryError::Lost),
        }
    }
}

/// RFC 9250 §5.5.2: edns-tcp-keepalive MUST NOT be used in DoQ.
fn has_tcp_keepalive(q: &Message) -> bool {
    q.edns
        .as_ref()
        .is_some_and(|e| e.option(EdnsCode::Keepalive).is_some())
}
