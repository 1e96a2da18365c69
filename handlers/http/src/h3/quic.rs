//! The `h3::quic` traits over the runtime's worker-local [`Connection`] and streams.
//!
//! Every call goes straight to the runtime's poll functions: no task, channel or lock sits
//! between h3 and quinn-proto. Received chunks are handed to h3 as the `Bytes` the runtime
//! read (slices of the decrypted packets). On the send side h3 hands over a `WriteBuf`
//! (frame header, then the payload `Buf`), which can only be read as slices: the header is
//! copied (a few bytes), and a DATA payload is queued without a copy when the caller named
//! it first with [`offer_payload`] (see there), else copied once into a `Bytes`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use alknet_runtime::{
    BiStream, Connection, ConnectionError, RecvStream, SendStream, StreamId, VarInt, WriteError,
};
use bytes::{Buf, Bytes};
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, WriteBuf};

use super::webtransport::sessions::SessionStream;
use super::webtransport::wire::{StreamHeader, StreamStart, SIGNAL_BI, SIGNAL_UNI};
use super::webtransport::Sessions;

thread_local! {
    /// The DATA payload about to be passed to h3 on this thread (see [`offer_payload`]).
    static OFFERED: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Names `payload` as the body chunk about to be given to h3's `send_data` on this thread,
/// so the adapter can queue that `Bytes` itself instead of copying the slice h3 exposes.
/// The adapter only uses it when h3's frame payload is exactly this memory (same pointer
/// and length), so a stale or wrong offer costs a copy, never correctness. Everything runs
/// on one worker thread and h3 passes the frame to the adapter synchronously in the first
/// poll of `send_data`, so nothing can come between the offer and its use.
pub fn offer_payload(payload: &Bytes) {
    OFFERED.with(|o| *o.borrow_mut() = Some(payload.clone()));
}

fn take_offer() -> Option<Bytes> {
    OFFERED.with(|o| o.borrow_mut().take())
}

/// Turns a runtime connection error into h3's.
pub fn connection_error(e: ConnectionError) -> ConnectionErrorIncoming {
    match e {
        ConnectionError::ApplicationClosed(close) => ConnectionErrorIncoming::ApplicationClose {
            error_code: close.error_code.into_inner(),
        },
        ConnectionError::TimedOut => ConnectionErrorIncoming::Timeout,
        other => ConnectionErrorIncoming::Undefined(Arc::new(other)),
    }
}

fn stream_error_from_conn(e: ConnectionError) -> StreamErrorIncoming {
    StreamErrorIncoming::ConnectionErrorIncoming {
        connection_error: connection_error(e),
    }
}

fn write_error(e: WriteError) -> StreamErrorIncoming {
    match e {
        WriteError::Stopped(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        WriteError::ConnectionLost(e) => stream_error_from_conn(e),
        WriteError::ClosedStream | WriteError::Stalled(_) => {
            StreamErrorIncoming::Unknown(Box::new(e))
        }
    }
}

fn read_error(e: alknet_runtime::ReadError) -> StreamErrorIncoming {
    match e {
        alknet_runtime::ReadError::Reset(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        alknet_runtime::ReadError::ConnectionLost(e) => stream_error_from_conn(e),
        other @ alknet_runtime::ReadError::ClosedStream => {
            StreamErrorIncoming::Unknown(Box::new(other))
        }
    }
}

/// h3 error codes are QUIC varints; anything larger (h3 never makes one) becomes
/// H3_INTERNAL_ERROR.
fn varint(code: u64) -> VarInt {
    VarInt::from_u64(code).unwrap_or(VarInt::from_u32(0x102))
}

fn h3_stream_id(id: StreamId) -> quic::StreamId {
    quic::StreamId::try_from(VarInt::from(id).into_inner())
        .expect("a QUIC stream id is a varint, which h3 accepts")
}

/// A QUIC connection as h3 sees it: accepts the peer's streams and opens ours.
///
/// With WebTransport on, it reads the first bytes of every stream the peer opens: a
/// WebTransport stream (signal 0x41 bidirectional, 0x54 unidirectional, then the session
/// ID) goes to its session in [`Sessions`] with its payload untouched; any other stream
/// goes to h3 with the bytes read in front of it.
pub struct H3Connection {
    conn: Connection,
    webtransport: Option<Rc<Sessions>>,
    /// Incoming streams whose first bytes are still being read.
    sorting_bi: Vec<(BiStream, StreamHeader)>,
    sorting_uni: Vec<(RecvStream, StreamHeader)>,
    /// Sorted streams for h3, not taken yet.
    ready_bi: VecDeque<H3BidiStream>,
    ready_uni: VecDeque<H3RecvStream>,
}

impl H3Connection {
    pub fn new(conn: Connection) -> Self {
        Self {
            conn,
            webtransport: None,
            sorting_bi: Vec::new(),
            sorting_uni: Vec::new(),
            ready_bi: VecDeque::new(),
            ready_uni: VecDeque::new(),
        }
    }

    /// The runtime connection under h3.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Sorts WebTransport streams into `sessions`.
    pub fn with_webtransport(mut self, sessions: Rc<Sessions>) -> Self {
        self.webtransport = Some(sessions);
        self
    }

    /// Takes every stream the peer opened and reads the first bytes of each (as far as
    /// they have arrived). The connection's own stream limits bound both lists.
    fn sort_bi(
        &mut self,
        cx: &mut Context<'_>,
        sessions: &Sessions,
    ) -> Result<(), ConnectionError> {
        loop {
            match self.conn.poll_accept_bi(cx) {
                Poll::Ready(Ok(s)) => self.sorting_bi.push((s, StreamHeader::new(SIGNAL_BI))),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        let mut i = 0;
        while i < self.sorting_bi.len() {
            let (stream, header) = &mut self.sorting_bi[i];
            match read_start(cx, &mut stream.recv, header) {
                Poll::Pending => i += 1,
                Poll::Ready(start) => {
                    let (stream, _) = self.sorting_bi.swap_remove(i);
                    match start {
                        Some(StreamStart::Session { session_id }) => {
                            sessions.deliver(session_id, SessionStream::Bi(stream))
                        }
                        Some(StreamStart::Http3 { prefix }) => {
                            let mut s = H3BidiStream::new(stream);
                            s.recv.prefix = Some(prefix).filter(|p| !p.is_empty());
                            self.ready_bi.push_back(s);
                        }
                        // reset before it said what it is: nothing to serve
                        None => {}
                    }
                }
            }
        }
        Ok(())
    }

    fn sort_uni(
        &mut self,
        cx: &mut Context<'_>,
        sessions: &Sessions,
    ) -> Result<(), ConnectionError> {
        loop {
            match self.conn.poll_accept_uni(cx) {
                Poll::Ready(Ok(s)) => self.sorting_uni.push((s, StreamHeader::new(SIGNAL_UNI))),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        let mut i = 0;
        while i < self.sorting_uni.len() {
            let (stream, header) = &mut self.sorting_uni[i];
            match read_start(cx, stream, header) {
                Poll::Pending => i += 1,
                Poll::Ready(start) => {
                    let (stream, _) = self.sorting_uni.swap_remove(i);
                    match start {
                        Some(StreamStart::Session { session_id }) => {
                            sessions.deliver(session_id, SessionStream::Uni(stream))
                        }
                        Some(StreamStart::Http3 { prefix }) => {
                            let mut s = H3RecvStream::new(stream);
                            s.prefix = Some(prefix).filter(|p| !p.is_empty());
                            self.ready_uni.push_back(s);
                        }
                        None => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// Reads the start of `stream` byte-exactly until `header` knows what it is; `None` if
/// the stream was reset first.
fn read_start(
    cx: &mut Context<'_>,
    stream: &mut RecvStream,
    header: &mut StreamHeader,
) -> Poll<Option<StreamStart>> {
    loop {
        match stream.poll_read_chunk(cx, header.wanted()) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(Some(chunk))) => {
                if let Some(start) = header.push(&chunk) {
                    return Poll::Ready(Some(start));
                }
            }
            Poll::Ready(Ok(None)) => return Poll::Ready(Some(header.ended())),
            Poll::Ready(Err(_)) => return Poll::Ready(None),
        }
    }
}

impl quic::Connection<Bytes> for H3Connection {
    type RecvStream = H3RecvStream;
    type OpenStreams = H3Opener;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::RecvStream, ConnectionErrorIncoming>> {
        let Some(sessions) = self.webtransport.clone() else {
            return self
                .conn
                .poll_accept_uni(cx)
                .map_ok(H3RecvStream::new)
                .map_err(connection_error);
        };
        let sorted = self.sort_uni(cx, &sessions);
        if let Some(s) = self.ready_uni.pop_front() {
            return Poll::Ready(Ok(s));
        }
        match sorted {
            Err(e) => Poll::Ready(Err(connection_error(e))),
            Ok(()) => Poll::Pending,
        }
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        let Some(sessions) = self.webtransport.clone() else {
            return self
                .conn
                .poll_accept_bi(cx)
                .map_ok(H3BidiStream::new)
                .map_err(connection_error);
        };
        let sorted = self.sort_bi(cx, &sessions);
        if let Some(s) = self.ready_bi.pop_front() {
            return Poll::Ready(Ok(s));
        }
        match sorted {
            Err(e) => Poll::Ready(Err(connection_error(e))),
            Ok(()) => Poll::Pending,
        }
    }

    fn opener(&self) -> Self::OpenStreams {
        H3Opener {
            conn: self.conn.clone(),
        }
    }
}

impl quic::OpenStreams<Bytes> for H3Connection {
    type BidiStream = H3BidiStream;
    type SendStream = H3SendStream;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        open_bidi(&self.conn, cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        open_send(&self.conn, cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        self.conn.close(varint(code.value()), reason);
    }
}

fn open_bidi(
    conn: &Connection,
    cx: &mut Context<'_>,
) -> Poll<Result<H3BidiStream, StreamErrorIncoming>> {
    conn.poll_open_bi(cx)
        .map_ok(H3BidiStream::new)
        .map_err(stream_error_from_conn)
}

fn open_send(
    conn: &Connection,
    cx: &mut Context<'_>,
) -> Poll<Result<H3SendStream, StreamErrorIncoming>> {
    conn.poll_open_uni(cx)
        .map_ok(H3SendStream::new)
        .map_err(stream_error_from_conn)
}

/// Opens streams on a connection for h3 (its control and QPACK streams).
#[derive(Clone)]
pub struct H3Opener {
    conn: Connection,
}

impl quic::OpenStreams<Bytes> for H3Opener {
    type BidiStream = H3BidiStream;
    type SendStream = H3SendStream;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        open_bidi(&self.conn, cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        open_send(&self.conn, cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        self.conn.close(varint(code.value()), reason);
    }
}

/// The sending half of a stream: one h3 frame at a time is queued as `Bytes` and handed to
/// quinn-proto's send buffer as flow control allows.
pub struct H3SendStream {
    stream: SendStream,
    /// The frame h3 gave last, not yet fully taken by the stream (header, payload).
    pending: Vec<Bytes>,
    /// h3 has given this stream at least one frame.
    sent: bool,
    finished: bool,
}

impl H3SendStream {
    fn new(stream: SendStream) -> Self {
        Self {
            stream,
            pending: Vec::with_capacity(2),
            sent: false,
            finished: false,
        }
    }

    /// Queues what h3 wrote; see the module comment for when the payload is copied.
    fn queue(&mut self, mut buf: WriteBuf<Bytes>) {
        self.sent = true;
        let offered = take_offer();
        while buf.has_remaining() {
            let chunk = buf.chunk();
            let n = chunk.len();
            if n == 0 {
                break;
            }
            let whole = match &offered {
                Some(b) if n == buf.remaining() && b.len() == n && b.as_ptr() == chunk.as_ptr() => {
                    b.clone()
                }
                _ => Bytes::copy_from_slice(chunk),
            };
            self.pending.push(whole);
            buf.advance(n);
        }
    }
}

impl quic::SendStream<Bytes> for H3SendStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        while !self.pending.is_empty() {
            match self.stream.poll_write_chunks(cx, &mut self.pending) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(write_error(e))),
                Poll::Ready(Ok(written)) => {
                    self.pending.drain(..written.chunks);
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        if !self.pending.is_empty() {
            // h3 always polls poll_ready to completion between frames
            return Err(StreamErrorIncoming::Unknown(
                "send_data before the previous frame was written".into(),
            ));
        }
        self.queue(data.into());
        Ok(())
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        match self.poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        if !self.finished {
            self.finished = true;
            if let Err(e) = self.stream.finish() {
                return Poll::Ready(Err(StreamErrorIncoming::Unknown(Box::new(e))));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn reset(&mut self, reset_code: u64) {
        self.pending.clear();
        self.finished = true;
        let _ = self.stream.reset(varint(reset_code));
    }

    fn send_id(&self) -> quic::StreamId {
        h3_stream_id(self.stream.id())
    }
}

impl Drop for H3SendStream {
    /// A stream h3 drops before writing anything to it is a request abandoned without a
    /// response (its headers never came in time, or its task ended): the client gets
    /// H3_REQUEST_CANCELLED rather than an empty, seemingly complete response. Anything
    /// else ends as the runtime's streams do (FIN, e.g. after h3's own 431 response).
    fn drop(&mut self) {
        if !self.sent && !self.finished {
            let _ = self.stream.reset(varint(H3_REQUEST_CANCELLED));
        }
    }
}

/// RFC 9114 H3_REQUEST_CANCELLED.
const H3_REQUEST_CANCELLED: u64 = 0x10c;

/// The receiving half of a stream: chunks go to h3 as the runtime read them.
pub struct H3RecvStream {
    stream: RecvStream,
    /// Bytes read while sorting out WebTransport streams, given to h3 first.
    prefix: Option<Bytes>,
}

impl H3RecvStream {
    fn new(stream: RecvStream) -> Self {
        Self {
            stream,
            prefix: None,
        }
    }
}

/// Largest chunk handed to h3 at once; a chunk never exceeds one packet's payload anyway.
const MAX_READ_CHUNK: usize = 64 * 1024;

impl quic::RecvStream for H3RecvStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Ok(Some(prefix)));
        }
        self.stream
            .poll_read_chunk(cx, MAX_READ_CHUNK)
            .map_err(read_error)
    }

    fn stop_sending(&mut self, error_code: u64) {
        let _ = self.stream.stop(varint(error_code));
    }

    fn recv_id(&self) -> quic::StreamId {
        h3_stream_id(self.stream.id())
    }
}

/// Both halves of a request stream.
pub struct H3BidiStream {
    send: H3SendStream,
    recv: H3RecvStream,
}

impl H3BidiStream {
    fn new(stream: BiStream) -> Self {
        let (send, recv) = stream.split();
        Self {
            send: H3SendStream::new(send),
            recv: H3RecvStream::new(recv),
        }
    }
}

impl quic::SendStream<Bytes> for H3BidiStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code)
    }

    fn send_id(&self) -> quic::StreamId {
        self.send.send_id()
    }
}

impl quic::RecvStream for H3BidiStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code)
    }

    fn recv_id(&self) -> quic::StreamId {
        self.recv.recv_id()
    }
}

impl quic::BidiStream<Bytes> for H3BidiStream {
    type SendStream = H3SendStream;
    type RecvStream = H3RecvStream;

    fn split(self) -> (Self::SendStream, Self::RecvStream) {
        (self.send, self.recv)
    }
}
