//! The WebTransport sessions of one HTTP/3 connection and the streams and datagrams the
//! connection's adapter sorts into them. Worker-local (`Rc`, wakers, no lock).
//!
//! A stream can arrive before the CONNECT request that makes its session has been
//! answered (the client may open streams at once): it waits in a small per-connection
//! buffer ([`super::WebTransportConfig::max_buffered_streams`]) and is handed over when
//! the session is established, or refused with H3_WEBTRANSPORT_BUFFERED_STREAM_REJECTED
//! when the buffer is full or the session is refused.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use alknet_runtime::{BiStream, Bytes, Connection, ConnectionError, RecvStream, VarInt};
use rustc_hash::FxHashMap;

use super::wire::split_datagram;
use super::WebTransportConfig;

/// draft-ietf-webtrans-http3-02: a buffered stream whose session never came.
pub const H3_WEBTRANSPORT_BUFFERED_STREAM_REJECTED: u32 = 0x3994_bd84;
/// RFC 9114 H3_REQUEST_CANCELLED: a session's streams when the session ends under them.
pub const H3_REQUEST_CANCELLED: u32 = 0x10c;

/// A stream sorted to a session.
pub enum SessionStream {
    Bi(BiStream),
    Uni(RecvStream),
}

fn refuse(stream: SessionStream, code: u32) {
    let code = VarInt::from_u32(code);
    match stream {
        SessionStream::Bi(BiStream { mut send, mut recv }) => {
            let _ = recv.stop(code);
            let _ = send.reset(code);
        }
        SessionStream::Uni(mut recv) => {
            let _ = recv.stop(code);
        }
    }
}

/// One session's queues and the tasks waiting on them.
#[derive(Default)]
pub struct SessionQueues {
    bi: VecDeque<BiStream>,
    uni: VecDeque<RecvStream>,
    datagrams: VecDeque<Bytes>,
    accept_bi: Option<Waker>,
    accept_uni: Option<Waker>,
    datagram: Option<Waker>,
    closed_wakers: Vec<Waker>,
    /// Why the session ended, once it has.
    pub closed: Option<ConnectionError>,
    /// Datagrams dropped because the handler did not read them in time.
    pub datagrams_dropped: u64,
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

fn park(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

impl SessionQueues {
    fn push(&mut self, stream: SessionStream, max: usize) {
        match stream {
            SessionStream::Bi(s) if self.bi.len() < max => {
                self.bi.push_back(s);
                wake(&mut self.accept_bi);
            }
            SessionStream::Uni(s) if self.uni.len() < max => {
                self.uni.push_back(s);
                wake(&mut self.accept_uni);
            }
            // the handler is not accepting: the QUIC stream limit bounds this already,
            // this is the session's own bound
            other => refuse(other, H3_WEBTRANSPORT_BUFFERED_STREAM_REJECTED),
        }
    }

    fn push_datagram(&mut self, payload: Bytes, max: usize) {
        if self.datagrams.len() >= max {
            // unreliable delivery: the oldest goes, as quinn-proto's own buffer does
            self.datagrams.pop_front();
            self.datagrams_dropped += 1;
        }
        self.datagrams.push_back(payload);
        wake(&mut self.datagram);
    }

    /// Ends the session: queued streams are cancelled, every waiting task wakes.
    pub fn close(&mut self, why: ConnectionError) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(why);
        for s in self.bi.drain(..) {
            refuse(SessionStream::Bi(s), H3_REQUEST_CANCELLED);
        }
        for s in self.uni.drain(..) {
            refuse(SessionStream::Uni(s), H3_REQUEST_CANCELLED);
        }
        self.datagrams.clear();
        wake(&mut self.accept_bi);
        wake(&mut self.accept_uni);
        wake(&mut self.datagram);
        for w in self.closed_wakers.drain(..) {
            w.wake();
        }
    }

    pub fn poll_accept_bi(&mut self, cx: &Context<'_>) -> Poll<Result<BiStream, ConnectionError>> {
        if let Some(s) = self.bi.pop_front() {
            return Poll::Ready(Ok(s));
        }
        if let Some(e) = &self.closed {
            return Poll::Ready(Err(e.clone()));
        }
        park(&mut self.accept_bi, cx);
        Poll::Pending
    }

    pub fn poll_accept_uni(
        &mut self,
        cx: &Context<'_>,
    ) -> Poll<Result<RecvStream, ConnectionError>> {
        if let Some(s) = self.uni.pop_front() {
            return Poll::Ready(Ok(s));
        }
        if let Some(e) = &self.closed {
            return Poll::Ready(Err(e.clone()));
        }
        park(&mut self.accept_uni, cx);
        Poll::Pending
    }

    /// A datagram already sorted to this session, or parks the task.
    fn poll_datagram(&mut self, cx: &Context<'_>) -> Poll<Result<Bytes, ConnectionError>> {
        if let Some(d) = self.datagrams.pop_front() {
            return Poll::Ready(Ok(d));
        }
        if let Some(e) = &self.closed {
            return Poll::Ready(Err(e.clone()));
        }
        park(&mut self.datagram, cx);
        Poll::Pending
    }

    pub fn poll_closed(&mut self, cx: &Context<'_>) -> Poll<ConnectionError> {
        if let Some(e) = &self.closed {
            return Poll::Ready(e.clone());
        }
        if !self.closed_wakers.iter().any(|w| w.will_wake(cx.waker())) {
            self.closed_wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The sessions of one HTTP/3 connection.
pub struct Sessions {
    conn: Connection,
    config: Rc<WebTransportConfig>,
    state: RefCell<SessionsState>,
}

#[derive(Default)]
struct SessionsState {
    live: FxHashMap<u64, Rc<RefCell<SessionQueues>>>,
    /// Streams for sessions not established yet, oldest first.
    waiting: VecDeque<(u64, SessionStream)>,
    /// Sessions that ended or were refused, newest last (at most
    /// `max_buffered_streams`): a late stream of one is refused at once, not buffered.
    ended: VecDeque<u64>,
    /// Datagrams for no known session, dropped.
    datagrams_unrouted: u64,
}

impl SessionsState {
    fn remember_ended(&mut self, id: u64, max: usize) {
        if self.ended.len() >= max.max(1) {
            self.ended.pop_front();
        }
        self.ended.push_back(id);
    }
}

impl Sessions {
    pub fn new(conn: Connection, config: Rc<WebTransportConfig>) -> Rc<Self> {
        Rc::new(Self {
            conn,
            config,
            state: RefCell::new(SessionsState::default()),
        })
    }

    pub fn config(&self) -> &WebTransportConfig {
        &self.config
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.state.borrow().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers session `id` (its CONNECT stream) and gives it the streams that came
    /// early. `None` if that session exists already.
    pub fn open(&self, id: u64) -> Option<Rc<RefCell<SessionQueues>>> {
        let mut st = self.state.borrow_mut();
        if st.live.contains_key(&id) {
            return None;
        }
        let queues = Rc::new(RefCell::new(SessionQueues::default()));
        let max = self.config.max_queued_streams;
        let mut early = Vec::new();
        let waiting = std::mem::take(&mut st.waiting);
        for (sid, s) in waiting {
            if sid == id {
                early.push(s);
            } else {
                st.waiting.push_back((sid, s));
            }
        }
        {
            let mut q = queues.borrow_mut();
            for s in early {
                q.push(s, max);
            }
        }
        st.live.insert(id, queues.clone());
        Some(queues)
    }

    /// Ends session `id` (its CONNECT stream is done): `why` for its tasks.
    pub fn close(&self, id: u64, why: ConnectionError) {
        let queues = {
            let mut st = self.state.borrow_mut();
            let q = st.live.remove(&id);
            if q.is_some() {
                st.remember_ended(id, self.config.max_buffered_streams);
            }
            q
        };
        if let Some(q) = queues {
            q.borrow_mut().close(why);
        }
    }

    /// A refused CONNECT: streams that were waiting for it are refused too.
    pub fn refused(&self, id: u64) {
        let mut st = self.state.borrow_mut();
        st.remember_ended(id, self.config.max_buffered_streams);
        let waiting = std::mem::take(&mut st.waiting);
        for (sid, s) in waiting {
            if sid == id {
                refuse(s, H3_WEBTRANSPORT_BUFFERED_STREAM_REJECTED);
            } else {
                st.waiting.push_back((sid, s));
            }
        }
    }

    /// Sorts an incoming stream whose header named session `id`.
    pub fn deliver(&self, id: u64, stream: SessionStream) {
        let mut st = self.state.borrow_mut();
        if let Some(q) = st.live.get(&id) {
            q.borrow_mut().push(stream, self.config.max_queued_streams);
            return;
        }
        // a session ID is a client-initiated bidirectional stream (request) ID; anything
        // else can never become a session
        if !id.is_multiple_of(4) || st.ended.contains(&id) {
            drop(st);
            refuse(stream, H3_WEBTRANSPORT_BUFFERED_STREAM_REJECTED);
            return;
        }
        if st.waiting.len() >= self.config.max_buffered_streams {
            tracing::debug!(
                session = id,
                "WebTransport stream for an unknown session refused: buffer full"
            );
            if let Some((_, oldest)) = st.waiting.pop_front() {
                refuse(oldest, H3_WEBTRANSPORT_BUFFERED_STREAM_REJECTED);
            }
        }
        st.waiting.push_back((id, stream));
    }

    /// The next datagram of session `queues` (`id`): reads the connection's datagrams,
    /// sorting each to its session, until one is this session's.
    pub fn poll_datagram(
        &self,
        cx: &mut Context<'_>,
        id: u64,
        queues: &RefCell<SessionQueues>,
    ) -> Poll<Result<Bytes, ConnectionError>> {
        if let Poll::Ready(r) = queues.borrow_mut().poll_datagram(cx) {
            return Poll::Ready(r);
        }
        loop {
            let next = {
                let fut = std::pin::pin!(self.conn.read_datagram());
                std::future::Future::poll(fut, cx)
            };
            let datagram = match next {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(d)) => d,
            };
            let Some((sid, payload)) = split_datagram(datagram) else {
                self.state.borrow_mut().datagrams_unrouted += 1;
                continue;
            };
            if sid == id {
                return Poll::Ready(Ok(payload));
            }
            let target = self.state.borrow().live.get(&sid).cloned();
            match target {
                Some(q) => q
                    .borrow_mut()
                    .push_datagram(payload, self.config.max_queued_datagrams),
                None => self.state.borrow_mut().datagrams_unrouted += 1,
            }
        }
    }

    /// The HTTP/3 connection is gone: every session ends with `why`, buffered streams go.
    pub fn close_all(&self, why: ConnectionError) {
        let (live, waiting) = {
            let mut st = self.state.borrow_mut();
            (
                std::mem::take(&mut st.live),
                std::mem::take(&mut st.waiting),
            )
        };
        for (_, q) in live {
            q.borrow_mut().close(why.clone());
        }
        for (_, s) in waiting {
            refuse(s, H3_WEBTRANSPORT_BUFFERED_STREAM_REJECTED);
        }
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}
