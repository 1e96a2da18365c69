//! The handler-facing `Connection` (QUIC, TLS/TCP or virtual) and the state a QUIC
//! connection shares with the worker's driver.
//!
//! Everything here is single-threaded: a connection lives on the worker that owns its CIDs,
//! and its handler tasks run on that worker too, so state is `Rc<RefCell<…>>` and wakers,
//! never a lock. A handler operation changes the quinn-proto state directly and marks the
//! connection dirty; the driver then polls it for transmits, timers and events.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use alknet_proto::Fingerprint;
use bytes::Bytes;
use quinn_proto::{
    ConnectionError, ConnectionHandle, ConnectionStats, Dir, Event, SendDatagramError, StreamEvent,
    StreamId, VarInt,
};
use rustc_hash::FxHashMap;

use crate::admission::AdmissionGuard;
use crate::streams::{BiStream, QuicRecv, QuicSend, RecvStream, SendStream};
use crate::tcp_connection::TcpConnection;

/// Why a DATAGRAM could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
    #[error("the peer does not accept QUIC DATAGRAM frames")]
    UnsupportedByPeer,
    #[error("DATAGRAM support is disabled locally")]
    Disabled,
    #[error("datagram larger than the path allows (see max_datagram_size)")]
    TooLarge,
    /// The connection's carrier has no datagrams (TLS/TCP).
    #[error("datagrams are not supported on this transport (TLS/TCP carries one byte stream)")]
    Unsupported,
}

impl From<SendDatagramError> for DatagramError {
    fn from(e: SendDatagramError) -> Self {
        match e {
            SendDatagramError::UnsupportedByPeer => DatagramError::UnsupportedByPeer,
            SendDatagramError::Disabled => DatagramError::Disabled,
            // Blocked only comes back from a non-dropping send, which retries it.
            SendDatagramError::TooLarge | SendDatagramError::Blocked(_) => DatagramError::TooLarge,
        }
    }
}

/// Wakes the worker's driver when a connection has work for it.
#[derive(Default)]
pub(crate) struct DriverNotify {
    dirty: RefCell<Vec<Rc<ConnInner>>>,
    waker: RefCell<Option<Waker>>,
}

impl DriverNotify {
    pub fn register(&self, waker: &Waker) {
        let mut w = self.waker.borrow_mut();
        if !w.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *w = Some(waker.clone());
        }
    }

    pub fn wake(&self) {
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    /// Takes the connections marked dirty since the last call.
    pub fn take_dirty(&self, into: &mut Vec<Rc<ConnInner>>) {
        std::mem::swap(&mut *self.dirty.borrow_mut(), into);
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.borrow().is_empty()
    }
}

/// Adds `waker` unless the same task is already listed. "Same task" is the same data
/// pointer: `Waker::will_wake` also compares vtable addresses, which are not unique across
/// codegen units, so in an optimized build it can say "different" for two wakers of the
/// same task; a task that polls without being woken (h3 polls `accept_uni` on every
/// request) then grew the list by one clone per poll, without bound.
fn push_waker(list: &mut Vec<Waker>, waker: &Waker) {
    if !list
        .iter()
        .any(|w| w.data() == waker.data() || w.will_wake(waker))
    {
        list.push(waker.clone());
    }
}

fn wake_all(list: &mut Vec<Waker>) {
    for w in list.drain(..) {
        w.wake();
    }
}

fn dir_index(dir: Dir) -> usize {
    match dir {
        Dir::Bi => 0,
        Dir::Uni => 1,
    }
}

/// What applying an event did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Dispatched {
    pub connected: bool,
    pub woke_reader: bool,
}

/// quinn-proto state plus the tasks waiting on it.
pub(crate) struct ConnState {
    pub conn: quinn_proto::Connection,
    pub error: Option<ConnectionError>,
    pub connected: bool,
    /// Why the handshake was given up on an ICMP error ("port unreachable": nothing
    /// listens there), as an errno; the error a client's connect reports.
    pub unreachable: Option<i32>,
    pub alpn: Option<Vec<u8>>,
    /// Whether the completed handshake resumed a TLS session (a ticket was accepted).
    pub resumed: bool,
    pub peer_fingerprint: Option<Fingerprint>,
    pub readers: FxHashMap<StreamId, Waker>,
    pub writers: FxHashMap<StreamId, Waker>,
    pub stopped: FxHashMap<StreamId, Waker>,
    accept: [Vec<Waker>; 2],
    open: [Vec<Waker>; 2],
    datagram_recv: Vec<Waker>,
    datagram_send: Vec<Waker>,
    on_connected: Vec<Waker>,
    on_closed: Vec<Waker>,
}

impl ConnState {
    fn new(conn: quinn_proto::Connection) -> Self {
        Self {
            conn,
            error: None,
            connected: false,
            unreachable: None,
            alpn: None,
            resumed: false,
            peer_fingerprint: None,
            readers: FxHashMap::default(),
            writers: FxHashMap::default(),
            stopped: FxHashMap::default(),
            accept: Default::default(),
            open: Default::default(),
            datagram_recv: Vec::new(),
            datagram_send: Vec::new(),
            on_connected: Vec::new(),
            on_closed: Vec::new(),
        }
    }

    /// Applies one application event; says whether it is `Connected` and whether it woke
    /// a task that reads or accepts (one that is likely to write an answer at once).
    pub fn dispatch(&mut self, event: Event) -> Dispatched {
        let mut woke = false;
        match event {
            Event::HandshakeDataReady => {}
            Event::Connected => {
                self.connected = true;
                self.read_handshake();
                wake_all(&mut self.on_connected);
                return Dispatched {
                    connected: true,
                    woke_reader: true,
                };
            }
            Event::ConnectionLost { reason } => self.terminate(reason),
            Event::Stream(StreamEvent::Opened { dir }) => {
                let list = &mut self.accept[dir_index(dir)];
                woke = !list.is_empty();
                wake_all(list)
            }
            Event::Stream(StreamEvent::Available { dir }) => {
                wake_all(&mut self.open[dir_index(dir)])
            }
            Event::Stream(StreamEvent::Readable { id }) => {
                if let Some(w) = self.readers.remove(&id) {
                    w.wake();
                    woke = true;
                }
            }
            Event::Stream(StreamEvent::Writable { id }) => {
                if let Some(w) = self.writers.remove(&id) {
                    w.wake();
                }
            }
            Event::Stream(StreamEvent::Finished { id }) => {
                if let Some(w) = self.stopped.remove(&id) {
                    w.wake();
                }
            }
            Event::Stream(StreamEvent::Stopped { id, .. }) => {
                if let Some(w) = self.writers.remove(&id) {
                    w.wake();
                }
                if let Some(w) = self.stopped.remove(&id) {
                    w.wake();
                }
            }
            Event::DatagramReceived => {
                woke = !self.datagram_recv.is_empty();
                wake_all(&mut self.datagram_recv)
            }
            Event::DatagramsUnblocked => wake_all(&mut self.datagram_send),
        }
        Dispatched {
            connected: false,
            woke_reader: woke,
        }
    }

    fn read_handshake(&mut self) {
        let session = self.conn.crypto_session();
        let data = session.handshake_data().and_then(|d| {
            d.downcast::<quinn_proto::crypto::rustls::HandshakeData>()
                .ok()
        });
        self.resumed = data.as_ref().is_some_and(|d| d.resumed);
        self.alpn = data.and_then(|d| d.protocol);
        self.peer_fingerprint = session
            .peer_identity()
            .and_then(|p| {
                p.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|chain| chain.first().map(crate::tls::fingerprint_of));
    }

    /// Records why the connection ended and wakes every waiting task.
    pub fn terminate(&mut self, reason: ConnectionError) {
        if self.error.is_none() {
            self.error = Some(reason);
        }
        for (_, w) in self.readers.drain() {
            w.wake();
        }
        for (_, w) in self.writers.drain() {
            w.wake();
        }
        for (_, w) in self.stopped.drain() {
            w.wake();
        }
        for list in self.accept.iter_mut().chain(self.open.iter_mut()) {
            wake_all(list);
        }
        wake_all(&mut self.datagram_recv);
        wake_all(&mut self.datagram_send);
        wake_all(&mut self.on_connected);
        wake_all(&mut self.on_closed);
    }
}

/// One connection as the worker sees it.
pub(crate) struct ConnInner {
    pub handle: ConnectionHandle,
    /// Tells this connection apart from a later one with the same `handle` (quinn-proto
    /// reuses handles) where a queue refers to it by handle (the handshake deadlines).
    pub serial: u64,
    pub worker: usize,
    pub state: RefCell<ConnState>,
    notify: Rc<DriverNotify>,
    dirty: Cell<bool>,
    /// The driver held this connection's transmits back for one pass so the tasks it just
    /// woke can answer in the same packets as the ACKs.
    pub deferred: Cell<bool>,
    /// Live `Connection`/stream handles; at zero the connection closes implicitly.
    handles: Cell<usize>,
    /// Earliest timer entry the driver has queued for this connection.
    pub scheduled: Cell<Option<Instant>>,
    /// quinn-proto's current `poll_timeout`.
    pub deadline: Cell<Option<Instant>>,
    /// Counted against `max_connections` (server side).
    pub counted: bool,
    /// Counted in the worker's unvalidated handshakes in flight (the Retry policy's load).
    pub unvalidated: Cell<bool>,
    /// Counted in the worker's handshakes in flight (`max_handshakes_per_worker`).
    pub in_handshake: Cell<bool>,
    /// Its places in the per-source and per-ALPN counts, given back when the worker
    /// forgets the connection.
    pub admission: RefCell<AdmissionGuard>,
    /// Which of the worker's sockets its packets leave from.
    pub sockets: RefCell<PathSockets>,
    /// `[limits] send_stall_timeout_ms` when the connection was made, for its streams.
    pub send_stall_timeout: std::time::Duration,
    /// Its worker's counters (for what its streams count: stalls).
    pub stats: std::sync::Arc<crate::stats::WorkerStats>,
}

/// Client addresses per connection whose socket is remembered (see [`PathSockets`]): the
/// current path, a probed one, and an old one still being answered. An address pushed out
/// falls back to the latest socket.
pub const PATH_SOCKETS: usize = 4;

/// Which worker socket (0: the main address; then the preferred addresses) a connection's
/// packets leave from. quinn-proto knows the client's address of each path but not our
/// side's: a packet to a client address leaves from the socket that address's latest
/// datagram arrived on, so a PATH_RESPONSE to a client probing the preferred address comes
/// from the preferred address while the old path still hears from the main one, and once
/// the client has moved, everything does. Sans-IO.
#[derive(Debug, Default)]
pub(crate) struct PathSockets {
    /// The socket of the latest datagram, for addresses not in `by_remote`.
    latest: u8,
    /// Per client address, most recent last; at most [`PATH_SOCKETS`].
    by_remote: Vec<(std::net::SocketAddr, u8)>,
}

impl PathSockets {
    /// Notes that a datagram from `remote` arrived on `socket`.
    pub fn arrived(&mut self, remote: std::net::SocketAddr, socket: u8) {
        self.latest = socket;
        let paths = &mut self.by_remote;
        if let Some(i) = paths.iter().position(|(r, _)| *r == remote) {
            if paths[i].1 == socket && i + 1 == paths.len() {
                return;
            }
            paths.remove(i);
        } else if paths.len() == PATH_SOCKETS {
            paths.remove(0);
        }
        paths.push((remote, socket));
    }

    /// The socket a packet to `destination` leaves from.
    pub fn socket_for(&self, destination: std::net::SocketAddr) -> u8 {
        self.by_remote
            .iter()
            .rev()
            .find(|(r, _)| *r == destination)
            .map_or(self.latest, |(_, s)| *s)
    }
}

impl ConnInner {
    pub fn new(
        w: &crate::worker::WorkerState,
        handle: ConnectionHandle,
        serial: u64,
        conn: quinn_proto::Connection,
        counted: bool,
        send_stall_timeout: std::time::Duration,
    ) -> Rc<Self> {
        Rc::new(Self {
            handle,
            serial,
            worker: w.index,
            state: RefCell::new(ConnState::new(conn)),
            notify: w.notify.clone(),
            dirty: Cell::new(false),
            deferred: Cell::new(false),
            handles: Cell::new(0),
            scheduled: Cell::new(None),
            deadline: Cell::new(None),
            counted,
            unvalidated: Cell::new(false),
            in_handshake: Cell::new(false),
            admission: RefCell::new(AdmissionGuard::default()),
            sockets: RefCell::new(PathSockets::default()),
            send_stall_timeout,
            stats: w.stats.clone(),
        })
    }

    /// Queues this connection for the driver (once) and wakes it.
    pub fn wake_driver(self: &Rc<Self>) {
        self.mark_dirty();
        self.notify.wake();
    }

    /// Queues without waking: for the driver itself.
    pub fn mark_dirty(self: &Rc<Self>) {
        if !self.dirty.replace(true) {
            self.notify.dirty.borrow_mut().push(self.clone());
        }
    }

    pub fn clear_dirty(&self) {
        self.dirty.set(false);
    }

    /// Gives up a client's handshake that drew an ICMP error (see
    /// [`crate::socket::bind_client`]) when nothing has come from the server yet: a
    /// server that has answered is reachable, and a forged or stale ICMP message must not
    /// end it. Says whether it gave up.
    pub fn give_up_unreachable(self: &Rc<Self>, errno: i32) -> bool {
        {
            let mut st = self.state.borrow_mut();
            if st.connected || st.conn.is_closed() || st.conn.stats().udp_rx.datagrams > 0 {
                return false;
            }
            st.unreachable = Some(errno);
            st.conn
                .close(Instant::now(), VarInt::from_u32(0), Bytes::new());
            st.terminate(ConnectionError::LocallyClosed);
        }
        self.wake_driver();
        true
    }

    /// Closes the connection (if it is not closed yet) and wakes everyone.
    pub fn close(self: &Rc<Self>, code: VarInt, reason: &[u8]) {
        {
            let mut st = self.state.borrow_mut();
            if st.conn.is_closed() {
                return;
            }
            st.conn
                .close(Instant::now(), code, Bytes::copy_from_slice(reason));
            st.terminate(ConnectionError::LocallyClosed);
        }
        self.wake_driver();
    }
}

/// A counted reference: the connection closes (code 0) when the last one is dropped, as in
/// quinn.
pub(crate) struct ConnectionRef(pub Rc<ConnInner>);

impl ConnectionRef {
    pub fn new(inner: Rc<ConnInner>) -> Self {
        inner.handles.set(inner.handles.get() + 1);
        Self(inner)
    }
}

impl Clone for ConnectionRef {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl Drop for ConnectionRef {
    fn drop(&mut self) {
        let n = self.0.handles.get() - 1;
        self.0.handles.set(n);
        if n == 0 {
            self.0.close(VarInt::from_u32(crate::close_code::OK), b"");
        }
    }
}

impl std::ops::Deref for ConnectionRef {
    type Target = ConnInner;
    fn deref(&self) -> &ConnInner {
        &self.0
    }
}

/// A connection as a handler (or a client) uses it, whatever carries it. Cheap to clone; a
/// QUIC connection closes with application code 0 when the last clone and the last of its
/// streams are dropped (a TLS/TCP one likewise; a virtual one as its carrier decides).
///
/// Three carriers, dispatched by an enum so the QUIC path costs one branch per call and
/// nothing is boxed:
/// - **QUIC** (the engine's own connections);
/// - **TLS/TCP** (`crate::tcp_connection`): exactly one bidirectional stream, taken by the
///   client's first `open_bi` and the server's first `accept_bi`; a further `accept_bi`
///   waits until the connection ends; opening more streams, and uni streams, fail with a
///   clear error; no datagrams ([`DatagramError::Unsupported`]);
/// - **virtual** ([`VirtualConnection`]): a session carried inside another connection,
///   e.g. a WebTransport session inside an HTTP/3 connection, whose streams are QUIC
///   streams of the carrying connection and whose datagrams its session code demultiplexes.
#[derive(Clone)]
pub struct Connection {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Quic(ConnectionRef),
    Tcp(TcpConnection),
    Virtual(Rc<dyn VirtualConnection>),
}

/// A connection carried inside another one (a WebTransport session inside an HTTP/3
/// connection): what [`Connection`] needs of it. Implemented by the carrier's session code
/// and wrapped with [`Connection::from_virtual`].
///
/// Streams are the runtime's own [`BiStream`]/[`SendStream`]/[`RecvStream`]: for
/// WebTransport, QUIC streams of the HTTP/3 connection (taken from its [`Connection`]),
/// with the session's stream header already read or written by the session code.
/// Everything runs on the worker that owns the carrying connection (no `Send`).
///
/// The session's lifetime is the implementor's: [`Connection`] holds it in an `Rc`, so
/// the implementor's `Drop` runs when the last `Connection` clone is dropped (its streams
/// are the carrying connection's and do not keep the session alive).
pub trait VirtualConnection: 'static {
    /// The next bidirectional stream the peer opened in this session.
    fn poll_accept_bi(&self, cx: &mut Context<'_>) -> Poll<Result<BiStream, ConnectionError>>;
    /// The next unidirectional stream the peer opened in this session.
    fn poll_accept_uni(&self, cx: &mut Context<'_>) -> Poll<Result<RecvStream, ConnectionError>>;
    /// Opens a bidirectional stream in this session (its header written).
    fn poll_open_bi(&self, cx: &mut Context<'_>) -> Poll<Result<BiStream, ConnectionError>>;
    /// Opens a unidirectional stream in this session (its header written).
    fn poll_open_uni(&self, cx: &mut Context<'_>) -> Poll<Result<SendStream, ConnectionError>>;
    /// Sends one unreliable datagram of this session, dropping the oldest queued one when
    /// the buffer is full.
    fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError>;
    /// Sends a datagram, waiting for buffer space: takes `data` out of the option once it
    /// is queued. The default treats it as [`VirtualConnection::send_datagram`].
    fn poll_send_datagram_wait(
        &self,
        _cx: &mut Context<'_>,
        data: &mut Option<Bytes>,
    ) -> Poll<Result<(), DatagramError>> {
        match data.take() {
            Some(d) => Poll::Ready(self.send_datagram(d)),
            None => Poll::Ready(Ok(())),
        }
    }
    /// The next datagram of this session from the peer.
    fn poll_read_datagram(&self, cx: &mut Context<'_>) -> Poll<Result<Bytes, ConnectionError>>;
    /// Largest datagram payload this session can send now (`None`: no datagrams).
    fn max_datagram_size(&self) -> Option<usize>;
    /// Closes the session with an application code and reason.
    fn close(&self, code: VarInt, reason: &[u8]);
    /// Resolves when the session has ended, saying why.
    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<ConnectionError>;
    /// Why the session ended, if it has.
    fn close_reason(&self) -> Option<ConnectionError>;
    /// The peer's address (the carrying connection's).
    fn remote_address(&self) -> SocketAddr;
    /// The ALPN the session is served as (for WebTransport: the one its path names).
    fn alpn(&self) -> Option<Vec<u8>>;
    /// SHA-256 of the peer's TLS certificate, if it presented one.
    fn peer_fingerprint(&self) -> Option<Fingerprint>;
    /// Index of the worker that owns the carrying connection.
    fn worker(&self) -> usize;
    /// The carrying connection's round-trip time.
    fn rtt(&self) -> std::time::Duration;
    /// The carrying connection's statistics.
    fn stats(&self) -> ConnectionStats;
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Quic(inner) => f
                .debug_struct("Connection")
                .field("handle", &inner.handle)
                .field("worker", &inner.worker)
                .finish(),
            Source::Tcp(t) => f
                .debug_struct("Connection")
                .field("tcp", &t.remote_address())
                .field("worker", &t.worker())
                .finish(),
            Source::Virtual(v) => f
                .debug_struct("Connection")
                .field("virtual", &v.remote_address())
                .field("worker", &v.worker())
                .finish(),
        }
    }
}

fn quic_bi(inner: &ConnectionRef, id: StreamId) -> BiStream {
    BiStream {
        send: QuicSend::new(inner.clone(), id).into(),
        recv: QuicRecv::new(inner.clone(), id).into(),
    }
}

impl Connection {
    pub(crate) fn new(inner: Rc<ConnInner>) -> Self {
        Self {
            source: Source::Quic(ConnectionRef::new(inner)),
        }
    }

    pub(crate) fn from_tcp(conn: TcpConnection) -> Self {
        Self {
            source: Source::Tcp(conn),
        }
    }

    /// A connection carried inside another (a WebTransport session): see
    /// [`VirtualConnection`].
    pub fn from_virtual(session: Rc<dyn VirtualConnection>) -> Self {
        Self {
            source: Source::Virtual(session),
        }
    }

    /// What carries this connection: `"quic"`, `"tcp"` or `"virtual"` (for logs).
    pub fn transport(&self) -> &'static str {
        match &self.source {
            Source::Quic(_) => "quic",
            Source::Tcp(_) => "tcp",
            Source::Virtual(_) => "virtual",
        }
    }

    /// Waits for the peer to open a bidirectional stream.
    pub async fn accept_bi(&self) -> Result<BiStream, ConnectionError> {
        poll_fn(|cx| self.poll_accept_bi(cx)).await
    }

    /// Waits for the peer to open a unidirectional stream.
    pub async fn accept_uni(&self) -> Result<RecvStream, ConnectionError> {
        poll_fn(|cx| self.poll_accept_uni(cx)).await
    }

    /// Opens a bidirectional stream, waiting while the peer's stream limit is reached.
    pub async fn open_bi(&self) -> Result<BiStream, ConnectionError> {
        poll_fn(|cx| self.poll_open_bi(cx)).await
    }

    /// Opens a unidirectional stream, waiting while the peer's stream limit is reached.
    pub async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        poll_fn(|cx| self.poll_open_uni(cx)).await
    }

    /// Poll form of [`Connection::accept_bi`], for poll-based adapters (HTTP/3).
    pub fn poll_accept_bi(&self, cx: &mut Context<'_>) -> Poll<Result<BiStream, ConnectionError>> {
        match &self.source {
            Source::Quic(inner) => {
                quic_poll_accept(inner, cx, Dir::Bi).map_ok(|id| quic_bi(inner, id))
            }
            Source::Tcp(t) => t.poll_accept_bi(cx),
            Source::Virtual(v) => v.poll_accept_bi(cx),
        }
    }

    /// Poll form of [`Connection::accept_uni`].
    pub fn poll_accept_uni(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<RecvStream, ConnectionError>> {
        match &self.source {
            Source::Quic(inner) => quic_poll_accept(inner, cx, Dir::Uni)
                .map_ok(|id| QuicRecv::new(inner.clone(), id).into()),
            Source::Tcp(t) => t.poll_accept_uni(cx),
            Source::Virtual(v) => v.poll_accept_uni(cx),
        }
    }

    /// Poll form of [`Connection::open_bi`].
    pub fn poll_open_bi(&self, cx: &mut Context<'_>) -> Poll<Result<BiStream, ConnectionError>> {
        match &self.source {
            Source::Quic(inner) => {
                quic_poll_open(inner, cx, Dir::Bi).map_ok(|id| quic_bi(inner, id))
            }
            Source::Tcp(t) => t.poll_open_bi(cx),
            Source::Virtual(v) => v.poll_open_bi(cx),
        }
    }

    /// Poll form of [`Connection::open_uni`].
    pub fn poll_open_uni(&self, cx: &mut Context<'_>) -> Poll<Result<SendStream, ConnectionError>> {
        match &self.source {
            Source::Quic(inner) => quic_poll_open(inner, cx, Dir::Uni)
                .map_ok(|id| QuicSend::new(inner.clone(), id).into()),
            Source::Tcp(t) => t.poll_open_uni(cx),
            Source::Virtual(v) => v.poll_open_uni(cx),
        }
    }

    /// Sends an unreliable datagram. When the send buffer is full the oldest queued
    /// datagram is dropped, as unreliable delivery allows.
    pub fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        match &self.source {
            Source::Quic(inner) => {
                let res = {
                    let mut st = inner.state.borrow_mut();
                    if let Some(e) = &st.error {
                        return Err(DatagramError::ConnectionLost(e.clone()));
                    }
                    st.conn.datagrams().send(data, true)
                };
                res?;
                inner.0.wake_driver();
                Ok(())
            }
            Source::Tcp(_) => Err(DatagramError::Unsupported),
            Source::Virtual(v) => v.send_datagram(data),
        }
    }

    /// Sends a datagram, waiting for buffer space instead of dropping older ones.
    pub async fn send_datagram_wait(&self, data: Bytes) -> Result<(), DatagramError> {
        let mut data = Some(data);
        poll_fn(|cx| match &self.source {
            Source::Quic(inner) => {
                let mut st = inner.state.borrow_mut();
                if let Some(e) = &st.error {
                    return Poll::Ready(Err(DatagramError::ConnectionLost(e.clone())));
                }
                let Some(d) = data.take() else {
                    return Poll::Ready(Ok(()));
                };
                match st.conn.datagrams().send(d, false) {
                    Ok(()) => {
                        drop(st);
                        inner.0.wake_driver();
                        Poll::Ready(Ok(()))
                    }
                    Err(SendDatagramError::Blocked(d)) => {
                        data = Some(d);
                        push_waker(&mut st.datagram_send, cx.waker());
                        Poll::Pending
                    }
                    Err(e) => Poll::Ready(Err(e.into())),
                }
            }
            Source::Tcp(_) => Poll::Ready(Err(DatagramError::Unsupported)),
            Source::Virtual(v) => v.poll_send_datagram_wait(cx, &mut data),
        })
        .await
    }

    /// Waits for the next datagram from the peer. On TLS/TCP (no datagrams) this waits
    /// until the connection ends and returns why.
    pub async fn read_datagram(&self) -> Result<Bytes, ConnectionError> {
        poll_fn(|cx| match &self.source {
            Source::Quic(inner) => {
                let mut st = inner.state.borrow_mut();
                if let Some(d) = st.conn.datagrams().recv() {
                    return Poll::Ready(Ok(d));
                }
                if let Some(e) = &st.error {
                    return Poll::Ready(Err(e.clone()));
                }
                push_waker(&mut st.datagram_recv, cx.waker());
                Poll::Pending
            }
            Source::Tcp(t) => t.poll_closed(cx).map(Err),
            Source::Virtual(v) => v.poll_read_datagram(cx),
        })
        .await
    }

    /// Largest datagram payload the path allows now (`None` if the peer does not take
    /// them, or the carrier has none: TLS/TCP).
    pub fn max_datagram_size(&self) -> Option<usize> {
        match &self.source {
            Source::Quic(inner) => inner.state.borrow_mut().conn.datagrams().max_size(),
            Source::Tcp(_) => None,
            Source::Virtual(v) => v.max_datagram_size(),
        }
    }

    /// Waits for the handshake to complete (clients; a handler's connection already has,
    /// and TLS/TCP and virtual connections are made complete).
    pub async fn connected(&self) -> Result<(), ConnectionError> {
        poll_fn(|cx| self.poll_connected(cx)).await
    }

    /// The ICMP error its handshake was given up on, as an errno (see
    /// [`ConnInner::give_up_unreachable`]).
    pub(crate) fn unreachable(&self) -> Option<i32> {
        match &self.source {
            Source::Quic(inner) => inner.state.borrow().unreachable,
            _ => None,
        }
    }

    pub(crate) fn poll_connected(&self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        let Source::Quic(inner) = &self.source else {
            return Poll::Ready(Ok(()));
        };
        let mut st = inner.state.borrow_mut();
        if st.connected {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = &st.error {
            return Poll::Ready(Err(e.clone()));
        }
        push_waker(&mut st.on_connected, cx.waker());
        Poll::Pending
    }

    /// Closes the connection now with an application error code and reason. Unsent stream
    /// data is discarded: finish streams and wait for the peer first for a clean end.
    /// (TLS/TCP cannot carry the code: the connection is cut.)
    pub fn close(&self, code: VarInt, reason: &[u8]) {
        match &self.source {
            Source::Quic(inner) => inner.0.close(code, reason),
            Source::Tcp(t) => t.close(code, reason),
            Source::Virtual(v) => v.close(code, reason),
        }
    }

    /// Waits until the connection is closed, by either side, and says why.
    pub async fn closed(&self) -> ConnectionError {
        poll_fn(|cx| match &self.source {
            Source::Quic(inner) => {
                let mut st = inner.state.borrow_mut();
                if let Some(e) = &st.error {
                    return Poll::Ready(e.clone());
                }
                push_waker(&mut st.on_closed, cx.waker());
                Poll::Pending
            }
            Source::Tcp(t) => t.poll_closed(cx),
            Source::Virtual(v) => v.poll_closed(cx),
        })
        .await
    }

    /// Why the connection ended, if it has.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        match &self.source {
            Source::Quic(inner) => inner.state.borrow().error.clone(),
            Source::Tcp(t) => t.close_reason(),
            Source::Virtual(v) => v.close_reason(),
        }
    }

    /// The peer's current address (changes when a QUIC peer migrates).
    pub fn remote_address(&self) -> SocketAddr {
        match &self.source {
            Source::Quic(inner) => inner.state.borrow().conn.remote_address(),
            Source::Tcp(t) => t.remote_address(),
            Source::Virtual(v) => v.remote_address(),
        }
    }

    /// The negotiated ALPN (for a virtual connection: the one it is served as).
    pub fn alpn(&self) -> Option<Vec<u8>> {
        match &self.source {
            Source::Quic(inner) => inner.state.borrow().alpn.clone(),
            Source::Tcp(t) => t.alpn(),
            Source::Virtual(v) => v.alpn(),
        }
    }

    /// SHA-256 of the peer's certificate, if it presented one.
    pub fn peer_fingerprint(&self) -> Option<Fingerprint> {
        match &self.source {
            Source::Quic(inner) => inner.state.borrow().peer_fingerprint,
            Source::Tcp(t) => t.peer_fingerprint(),
            Source::Virtual(v) => v.peer_fingerprint(),
        }
    }

    /// Index of the worker that owns this connection.
    pub fn worker(&self) -> usize {
        match &self.source {
            Source::Quic(inner) => inner.worker,
            Source::Tcp(t) => t.worker(),
            Source::Virtual(v) => v.worker(),
        }
    }

    /// Round-trip time (TLS/TCP: the kernel's smoothed estimate).
    pub fn rtt(&self) -> std::time::Duration {
        match &self.source {
            Source::Quic(inner) => inner.state.borrow().conn.rtt(),
            Source::Tcp(t) => t.rtt(),
            Source::Virtual(v) => v.rtt(),
        }
    }

    /// QUIC statistics (TLS/TCP: only the byte counts, in `udp_tx`/`udp_rx.bytes`, and
    /// the path's RTT).
    pub fn stats(&self) -> ConnectionStats {
        match &self.source {
            Source::Quic(inner) => inner.state.borrow().conn.stats(),
            Source::Tcp(t) => t.stats(),
            Source::Virtual(v) => v.stats(),
        }
    }
}

fn quic_poll_accept(
    inner: &ConnectionRef,
    cx: &mut Context<'_>,
    dir: Dir,
) -> Poll<Result<StreamId, ConnectionError>> {
    let mut st = inner.state.borrow_mut();
    if let Some(id) = st.conn.streams().accept(dir) {
        drop(st);
        count_stream(inner, false, dir);
        // accepting can let the connection raise the peer's stream limit
        inner.0.wake_driver();
        return Poll::Ready(Ok(id));
    }
    if let Some(e) = &st.error {
        return Poll::Ready(Err(e.clone()));
    }
    push_waker(&mut st.accept[dir_index(dir)], cx.waker());
    Poll::Pending
}

/// Counts a stream in its ALPN's figures (server connections only: a client's has no
/// ALPN ticket).
fn count_stream(inner: &ConnectionRef, local: bool, dir: Dir) {
    if let Some(t) = &inner.admission.borrow().alpn {
        t.count_stream(inner.worker, local, dir);
    }
}

fn quic_poll_open(
    inner: &ConnectionRef,
    cx: &mut Context<'_>,
    dir: Dir,
) -> Poll<Result<StreamId, ConnectionError>> {
    let mut st = inner.state.borrow_mut();
    if let Some(e) = &st.error {
        return Poll::Ready(Err(e.clone()));
    }
    if let Some(id) = st.conn.streams().open(dir) {
        drop(st);
        count_stream(inner, true, dir);
        return Poll::Ready(Ok(id));
    }
    push_waker(&mut st.open[dir_index(dir)], cx.waker());
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn packets_leave_from_where_their_address_was_heard() {
        let mut p = PathSockets::default();
        assert_eq!(
            p.socket_for(addr(1)),
            0,
            "nothing heard yet: the main socket"
        );
        p.arrived(addr(1), 0);
        // the client probes the preferred address (socket 1) from a new address, while
        // its old path keeps sending to the main address
        p.arrived(addr(2), 1);
        p.arrived(addr(1), 0);
        assert_eq!(
            p.socket_for(addr(2)),
            1,
            "PATH_RESPONSE from the preferred address"
        );
        assert_eq!(
            p.socket_for(addr(1)),
            0,
            "the old path still hears from the main one"
        );
        // the same client address on both (aioquic moves with its one socket)
        p.arrived(addr(1), 1);
        assert_eq!(p.socket_for(addr(1)), 1);
        // an address never heard from gets the latest socket
        assert_eq!(p.socket_for(addr(9)), 1);
        // bounded: the oldest address is forgotten
        for port in 10..10 + PATH_SOCKETS as u16 {
            p.arrived(addr(port), 0);
        }
        assert_eq!(p.by_remote.len(), PATH_SOCKETS);
        assert_eq!(p.socket_for(addr(2)), 0, "forgotten: the latest socket");
    }
}
