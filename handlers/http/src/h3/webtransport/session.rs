//! One WebTransport session as the handler it is routed to sees it: a runtime
//! [`Connection`] whose carrier is this session ([`VirtualConnection`]). Its streams are
//! QUIC streams of the HTTP/3 connection, handed over as the runtime's own stream types
//! with the session header already read or written, so their data path is the plain QUIC
//! one; its datagrams are the connection's, with the quarter stream ID prefix.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use alknet_runtime::{
    BiStream, Bytes, Connection, ConnectionError, ConnectionStats, DatagramError, Fingerprint,
    RecvStream, SendStream, VarInt, VirtualConnection, WriteError,
};
use bytes::BufMut;

use super::sessions::{SessionQueues, Sessions};
use super::wire::{datagram_prefix, stream_header, SIGNAL_BI, SIGNAL_UNI};

/// A stream this side opened whose session header is not queued yet (the peer's stream
/// window may be zero at first).
struct Opening<S> {
    stream: S,
    header: [Bytes; 1],
}

/// The session behind a handler's [`Connection`]. The session ends (its CONNECT stream is
/// finished) when the handler's last `Connection` clone is dropped or it calls `close`.
pub struct WebTransportSession {
    sessions: Rc<Sessions>,
    id: u64,
    queues: Rc<RefCell<SessionQueues>>,
    alpn: Vec<u8>,
    opening_bi: RefCell<Option<Opening<BiStream>>>,
    opening_uni: RefCell<Option<Opening<SendStream>>>,
}

impl Drop for WebTransportSession {
    fn drop(&mut self) {
        self.queues
            .borrow_mut()
            .close(ConnectionError::LocallyClosed);
    }
}

impl std::fmt::Debug for WebTransportSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebTransportSession")
            .field("id", &self.id)
            .field("alpn", &String::from_utf8_lossy(&self.alpn))
            .finish()
    }
}

impl WebTransportSession {
    /// The session as a connection for its handler.
    pub(crate) fn connection(
        sessions: Rc<Sessions>,
        id: u64,
        queues: Rc<RefCell<SessionQueues>>,
        alpn: Vec<u8>,
    ) -> Connection {
        Connection::from_virtual(Rc::new(Self {
            sessions,
            id,
            queues,
            alpn,
            opening_bi: RefCell::new(None),
            opening_uni: RefCell::new(None),
        }))
    }

    fn parent(&self) -> &Connection {
        self.sessions.connection()
    }

    fn check_open(&self) -> Result<(), ConnectionError> {
        match &self.queues.borrow().closed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

fn write_failed(e: WriteError) -> ConnectionError {
    match e {
        WriteError::ConnectionLost(e) => e,
        // a stream opened a moment ago was stopped by the peer before its first byte
        _ => ConnectionError::Reset,
    }
}

/// Queues the header of a freshly opened stream; `send` picks the send half.
fn poll_header<S>(
    cx: &mut Context<'_>,
    slot: &mut Option<Opening<S>>,
    send: impl Fn(&mut S) -> &mut SendStream,
) -> Poll<Result<S, ConnectionError>> {
    let Some(opening) = slot.as_mut() else {
        return Poll::Ready(Err(ConnectionError::LocallyClosed));
    };
    while !opening.header[0].is_empty() {
        let header = &mut opening.header;
        match ready!(send(&mut opening.stream).poll_write_chunks(cx, header)) {
            Ok(w) if w.chunks == 1 => break,
            Ok(_) => {}
            Err(e) => {
                *slot = None;
                return Poll::Ready(Err(write_failed(e)));
            }
        }
    }
    match slot.take() {
        Some(o) => Poll::Ready(Ok(o.stream)),
        None => Poll::Ready(Err(ConnectionError::LocallyClosed)),
    }
}

impl VirtualConnection for WebTransportSession {
    fn poll_accept_bi(&self, cx: &mut Context<'_>) -> Poll<Result<BiStream, ConnectionError>> {
        self.queues.borrow_mut().poll_accept_bi(cx)
    }

    fn poll_accept_uni(&self, cx: &mut Context<'_>) -> Poll<Result<RecvStream, ConnectionError>> {
        self.queues.borrow_mut().poll_accept_uni(cx)
    }

    fn poll_open_bi(&self, cx: &mut Context<'_>) -> Poll<Result<BiStream, ConnectionError>> {
        self.check_open()?;
        let mut slot = self.opening_bi.borrow_mut();
        if slot.is_none() {
            let stream = ready!(self.parent().poll_open_bi(cx))?;
            *slot = Some(Opening {
                stream,
                header: [stream_header(SIGNAL_BI, self.id)],
            });
        }
        poll_header(cx, &mut slot, |s: &mut BiStream| &mut s.send)
    }

    fn poll_open_uni(&self, cx: &mut Context<'_>) -> Poll<Result<SendStream, ConnectionError>> {
        self.check_open()?;
        let mut slot = self.opening_uni.borrow_mut();
        if slot.is_none() {
            let stream = ready!(self.parent().poll_open_uni(cx))?;
            *slot = Some(Opening {
                stream,
                header: [stream_header(SIGNAL_UNI, self.id)],
            });
        }
        poll_header(cx, &mut slot, |s: &mut SendStream| s)
    }

    fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        if let Some(e) = &self.queues.borrow().closed {
            return Err(DatagramError::ConnectionLost(e.clone()));
        }
        // one copy: the prefix and the payload go out as one QUIC DATAGRAM frame
        let mut d = datagram_prefix(self.id);
        d.reserve(data.len());
        d.put_slice(&data);
        self.parent().send_datagram(d.freeze())
    }

    fn poll_read_datagram(&self, cx: &mut Context<'_>) -> Poll<Result<Bytes, ConnectionError>> {
        self.sessions.poll_datagram(cx, self.id, &self.queues)
    }

    fn max_datagram_size(&self) -> Option<usize> {
        let prefix = datagram_prefix(self.id).len();
        self.parent()
            .max_datagram_size()
            .map(|n| n.saturating_sub(prefix))
    }

    /// Draft-02 carries no close code: the CONNECT stream is finished.
    fn close(&self, _code: VarInt, _reason: &[u8]) {
        self.queues
            .borrow_mut()
            .close(ConnectionError::LocallyClosed);
    }

    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<ConnectionError> {
        self.queues.borrow_mut().poll_closed(cx)
    }

    fn close_reason(&self) -> Option<ConnectionError> {
        self.queues.borrow().closed.clone()
    }

    fn remote_address(&self) -> SocketAddr {
        self.parent().remote_address()
    }

    fn alpn(&self) -> Option<Vec<u8>> {
        Some(self.alpn.clone())
    }

    fn peer_fingerprint(&self) -> Option<Fingerprint> {
        self.parent().peer_fingerprint()
    }

    fn worker(&self) -> usize {
        self.parent().worker()
    }

    fn rtt(&self) -> std::time::Duration {
        self.parent().rtt()
    }

    fn stats(&self) -> ConnectionStats {
        self.parent().stats()
    }
}
