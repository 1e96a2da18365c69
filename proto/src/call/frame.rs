//! Splitting a stream's bytes into frames: a 4-byte big-endian length, then that many
//! bytes of body.
//!
//! Sans-IO: the caller pushes whatever chunks the transport delivered and pops frames.
//! The decoder is written for a hostile peer:
//! * the length a peer claims is never reserved up front: memory grows only with bytes
//!   that actually arrived, so a header claiming 4 GiB costs nothing until 4 GiB are sent;
//! * a frame over the limit is not buffered at all. Its first [`ID_SNIFF_PREFIX`] bytes are
//!   kept to find its id, it is reported as [`Frame::Oversized`], and the rest of it is
//!   skipped as it arrives. The stream stays usable, so one oversized call costs the peer
//!   one `call.error`, not its other in-flight calls.
//!
//! So what the decoder holds is bounded by `max_frame_size` plus one pushed chunk (plus
//! complete frames the caller has not popped yet).

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use super::sniff::sniff_id;

/// Bytes of the length header in front of every frame body.
pub const FRAME_HEADER_LEN: usize = 4;

/// Default limit on a frame body's length: 1 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1 << 20;

/// Bytes of an oversized frame's body kept to find its id ([`sniff_id`]). Our encoder puts
/// the id right after the type, well inside this.
pub const ID_SNIFF_PREFIX: usize = 1024;

/// What [`FrameDecoder::next_frame`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete frame body (header stripped), contiguous and mutable so it can be
    /// decoded in place ([`EventEnvelope::decode`](super::EventEnvelope::decode)).
    Body(BytesMut),
    /// A frame whose declared length exceeds the maximum. Returned as soon as
    /// `min(len, ID_SNIFF_PREFIX)` body bytes have arrived, with the id sniffed from that
    /// prefix if one is there. The decoder then silently discards the rest of that frame's
    /// bytes as they arrive (never buffering them) and carries on with the next frame, so a
    /// caller that knows the id can answer with an error and keep the stream.
    Oversized { len: u64, id: Option<String> },
}

/// The stream ended inside a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("stream ended inside a frame: {have} of {want} bytes arrived")]
pub struct TruncatedFrame {
    /// Bytes of the frame (header included) that arrived.
    pub have: usize,
    /// Bytes the frame needed: header plus body, or just the header's 4 while the header
    /// itself is incomplete.
    pub want: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the length header; `buf` holds its first bytes.
    Header,
    /// Reading a body of `len` bytes; `buf` holds what arrived of it.
    Body { len: usize },
    /// An oversized frame of `len` bytes; `buf` collects its first `want` bytes to sniff.
    Sniff { len: u64, want: usize },
    /// Skipping the `remaining` bytes of an oversized frame; `buf` is empty.
    Discard { len: u64, remaining: u64 },
}

/// Incremental frame splitter for one stream (sans-IO): push received chunks, pop frames.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_size: usize,
    state: State,
    /// The current frame's header or body bytes received so far.
    buf: BytesMut,
    /// Frames completed by `push` and not yet popped.
    ready: VecDeque<Frame>,
    /// Body bytes held in `ready`.
    ready_bytes: usize,
}

impl FrameDecoder {
    /// A decoder that reports bodies longer than `max_frame_size` as
    /// [`Frame::Oversized`] instead of buffering them.
    pub fn new(max_frame_size: usize) -> Self {
        FrameDecoder {
            max_frame_size,
            state: State::Header,
            buf: BytesMut::new(),
            ready: VecDeque::new(),
            ready_bytes: 0,
        }
    }

    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Takes in the next bytes of the stream.
    ///
    /// Frames are split off as soon as they are complete (so the bytes of an oversized
    /// frame can be dropped here, even if the caller pushes several chunks before popping).
    /// Each body is copied once, into its own contiguous buffer, growing only as its bytes
    /// arrive.
    pub fn push(&mut self, mut chunk: Bytes) {
        while !chunk.is_empty() {
            match self.state {
                State::Header => {
                    self.fill(&mut chunk, FRAME_HEADER_LEN);
                    let Ok(header) = <[u8; FRAME_HEADER_LEN]>::try_from(&self.buf[..]) else {
                        continue; // header still incomplete, and so chunk is used up
                    };
                    self.buf.clear();
                    let len = u32::from_be_bytes(header);
                    self.start_frame(len);
                }
                State::Body { len } => {
                    self.fill(&mut chunk, len);
                    if self.buf.len() == len {
                        self.complete_body();
                    }
                }
                State::Sniff { len, want } => {
                    self.fill(&mut chunk, want);
                    if self.buf.len() == want {
                        self.complete_sniff(len, want);
                    }
                }
                State::Discard { len, remaining } => {
                    let n = usize::try_from(remaining).map_or(chunk.len(), |r| r.min(chunk.len()));
                    chunk.advance(n);
                    // n <= remaining by construction.
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::Header
                    } else {
                        State::Discard { len, remaining }
                    };
                }
            }
        }
    }

    /// The next complete frame, if any.
    pub fn next_frame(&mut self) -> Option<Frame> {
        let frame = self.ready.pop_front()?;
        if let Frame::Body(body) = &frame {
            self.ready_bytes -= body.len();
        }
        Some(frame)
    }

    /// At end of stream: `Ok` if no partial frame is pending, else how many of how many
    /// bytes of the last frame arrived. Complete frames not yet popped are not an error.
    pub fn finish(&self) -> Result<(), TruncatedFrame> {
        let sat = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let (have, want) = match self.state {
            State::Header if self.buf.is_empty() => return Ok(()),
            State::Header => (self.buf.len(), FRAME_HEADER_LEN),
            State::Body { len } => (
                FRAME_HEADER_LEN + self.buf.len(),
                FRAME_HEADER_LEN.saturating_add(len),
            ),
            State::Sniff { len, .. } => (
                FRAME_HEADER_LEN + self.buf.len(),
                sat(len).saturating_add(FRAME_HEADER_LEN),
            ),
            State::Discard { len, remaining } => (
                sat(len - remaining).saturating_add(FRAME_HEADER_LEN),
                sat(len).saturating_add(FRAME_HEADER_LEN),
            ),
        };
        Err(TruncatedFrame { have, want })
    }

    /// Bytes held: the partial frame plus complete frames not yet popped.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.ready_bytes
    }

    /// Moves bytes from `chunk` into `buf` until `buf` holds `target` bytes or `chunk` is
    /// empty.
    fn fill(&mut self, chunk: &mut Bytes, target: usize) {
        let n = target.saturating_sub(self.buf.len()).min(chunk.len());
        self.buf.extend_from_slice(&chunk[..n]);
        chunk.advance(n);
    }

    fn start_frame(&mut self, len: u32) {
        let within_limit = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.max_frame_size);
        self.state = match within_limit {
            Some(len) => State::Body { len },
            None => {
                let len = u64::from(len);
                let want = usize::try_from(len).map_or(ID_SNIFF_PREFIX, |l| l.min(ID_SNIFF_PREFIX));
                State::Sniff { len, want }
            }
        };
        // A zero-length body is complete already; a (silly) limit of zero makes even an
        // empty sniff prefix complete.
        match self.state {
            State::Body { len: 0 } => self.complete_body(),
            State::Sniff { len, want: 0 } => self.complete_sniff(len, 0),
            _ => {}
        }
    }

    fn complete_body(&mut self) {
        let body = self.buf.split();
        self.ready_bytes += body.len();
        self.ready.push_back(Frame::Body(body));
        self.state = State::Header;
    }

    fn complete_sniff(&mut self, len: u64, want: usize) {
        let id = sniff_id(&self.buf);
        self.buf.clear();
        self.ready.push_back(Frame::Oversized { len, id });
        let remaining = len - want as u64;
        self.state = if remaining == 0 {
            State::Header
        } else {
            State::Discard { len, remaining }
        };
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{EventEnvelope, EventType};
    use super::*;

    fn envelope(i: usize) -> EventEnvelope {
        EventEnvelope::new(
            EventType::ALL[i % EventType::ALL.len()],
            Some(format!("id-{i}")),
            json!({"n": i, "s": "x".repeat(i % 7)}),
        )
    }

    fn frame(len: u32, body: &[u8]) -> Vec<u8> {
        let mut v = len.to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn drain(d: &mut FrameDecoder) -> Vec<Frame> {
        std::iter::from_fn(|| d.next_frame()).collect()
    }

    fn decode_body(f: Frame) -> EventEnvelope {
        match f {
            Frame::Body(mut b) => EventEnvelope::decode(&mut b).unwrap(),
            f => panic!("expected a body, got {f:?}"),
        }
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let mut stream = BytesMut::new();
        let envs: Vec<_> = (0..3).map(envelope).collect();
        for e in &envs {
            e.encode_into(&mut stream).unwrap();
        }
        let stream = stream.freeze();
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
                d.push(stream.slice(..a));
                d.push(stream.slice(a..b));
                d.push(stream.slice(b..));
                let got: Vec<_> = drain(&mut d).into_iter().map(decode_body).collect();
                assert_eq!(got, envs, "split at {a}, {b}");
                assert_eq!(d.finish(), Ok(()));
                assert_eq!(d.buffered(), 0);
            }
        }
    }

    #[test]
    fn one_byte_at_a_time_with_pops_in_between() {
        let mut stream = BytesMut::new();
        for i in 0..5 {
            envelope(i).encode_into(&mut stream).unwrap();
        }
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        let mut got = Vec::new();
        for i in 0..stream.len() {
            d.push(Bytes::copy_from_slice(&stream[i..i + 1]));
            got.extend(drain(&mut d).into_iter().map(decode_body));
        }
        assert_eq!(got, (0..5).map(envelope).collect::<Vec<_>>());
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn many_frames_in_one_chunk() {
        let mut stream = BytesMut::new();
        for i in 0..1000 {
            envelope(i).encode_into(&mut stream).unwrap();
        }
        let total = stream.len();
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        d.push(stream.freeze());
        assert_eq!(d.buffered(), total - 1000 * FRAME_HEADER_LEN);
        let got: Vec<_> = drain(&mut d).into_iter().map(decode_body).collect();
        assert_eq!(got, (0..1000).map(envelope).collect::<Vec<_>>());
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn empty_body_and_empty_chunks() {
        let mut d = FrameDecoder::new(16);
        d.push(Bytes::new());
        d.push(Bytes::from(frame(0, b"")));
        d.push(Bytes::new());
        assert_eq!(drain(&mut d), vec![Frame::Body(BytesMut::new())]);
        assert_eq!(d.finish(), Ok(()));
        // An exactly-at-the-limit body is not oversized.
        d.push(Bytes::from(frame(16, &[b' '; 16])));
        assert!(matches!(&drain(&mut d)[..], [Frame::Body(b)] if b.len() == 16));
    }

    /// An oversized frame is reported (with or without an id) and skipped, and the frame
    /// after it still decodes, however the bytes are chunked.
    #[test]
    fn oversized_then_valid() {
        let max = 64;
        let payload = "p".repeat(5000);
        let with_id = EventEnvelope::new(
            EventType::CallRequested,
            Some("big-1".into()),
            json!(payload),
        )
        .encode()
        .unwrap();
        // id after a long payload: beyond the sniffed prefix.
        let late_id = format!(r#"{{"payload":"{payload}","type":"call.requested","id":"late"}}"#);
        let late_id = frame(late_id.len() as u32, late_id.as_bytes());
        // Smaller than the sniff prefix but over max.
        let small_over =
            EventEnvelope::new(EventType::Event, Some("s".into()), json!("y".repeat(100)))
                .encode()
                .unwrap();
        let next = envelope(3);
        let next_frame = next.encode().unwrap();

        for (over, want_id) in [
            (&with_id[..], Some("big-1")),
            (&late_id[..], None),
            (&small_over[..], Some("s")),
        ] {
            let len = (over.len() - FRAME_HEADER_LEN) as u64;
            let mut stream = over.to_vec();
            stream.extend_from_slice(&next_frame);
            for chunk_size in [1, 3, 100, 1023, 1024, 1025, 4096, stream.len()] {
                let mut d = FrameDecoder::new(max);
                let mut got = Vec::new();
                for c in stream.chunks(chunk_size) {
                    d.push(Bytes::copy_from_slice(c));
                    assert!(d.buffered() <= ID_SNIFF_PREFIX + chunk_size);
                    got.extend(drain(&mut d));
                }
                assert_eq!(got.len(), 2, "chunk {chunk_size}");
                assert_eq!(
                    got[0],
                    Frame::Oversized {
                        len,
                        id: want_id.map(str::to_owned)
                    },
                    "chunk {chunk_size}"
                );
                assert_eq!(decode_body(got.remove(1)), next);
                assert_eq!(d.finish(), Ok(()));
            }
        }
    }

    #[test]
    fn oversized_is_reported_once_the_prefix_arrives() {
        let mut d = FrameDecoder::new(10);
        let mut body = br#"{"type":"call.requested","id":"early","payload":""#.to_vec();
        body.resize(5000, b'a');
        let f = frame(5000, &body);
        d.push(Bytes::copy_from_slice(
            &f[..FRAME_HEADER_LEN + ID_SNIFF_PREFIX - 1],
        ));
        assert_eq!(d.next_frame(), None);
        d.push(Bytes::copy_from_slice(
            &f[FRAME_HEADER_LEN + ID_SNIFF_PREFIX - 1..FRAME_HEADER_LEN + ID_SNIFF_PREFIX],
        ));
        assert_eq!(
            d.next_frame(),
            Some(Frame::Oversized {
                len: 5000,
                id: Some("early".into())
            })
        );
        assert_eq!(d.buffered(), 0);
        assert_eq!(
            d.finish(),
            Err(TruncatedFrame {
                have: FRAME_HEADER_LEN + ID_SNIFF_PREFIX,
                want: FRAME_HEADER_LEN + 5000
            })
        );
    }

    #[test]
    fn memory_bound_for_a_4gib_claim() {
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        d.push(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]));
        let mib = Bytes::from(vec![b'{'; 1 << 20]);
        let mut seen = 0;
        for _ in 0..8 {
            // In one piece and in pieces.
            d.push(mib.clone());
            assert!(d.buffered() <= ID_SNIFF_PREFIX, "{}", d.buffered());
            for c in mib.chunks(1000) {
                d.push(Bytes::copy_from_slice(c));
                assert!(d.buffered() <= ID_SNIFF_PREFIX, "{}", d.buffered());
            }
            seen += drain(&mut d).len();
        }
        assert_eq!(seen, 1);
        let err = d.finish().unwrap_err();
        assert_eq!(err.have, FRAME_HEADER_LEN + 16 * (1 << 20));
        assert_eq!(err.want, FRAME_HEADER_LEN + u32::MAX as usize);
        // A claim within the limit grows only with what arrives.
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        d.push(Bytes::copy_from_slice(&(1u32 << 20).to_be_bytes()));
        d.push(Bytes::from_static(b"{}"));
        assert_eq!(d.buffered(), 2);
        assert!(d.buf.capacity() < 4096, "{}", d.buf.capacity());
    }

    #[test]
    fn truncated_streams() {
        let mut d = FrameDecoder::new(100);
        d.push(Bytes::from_static(&[0, 0]));
        assert_eq!(d.finish(), Err(TruncatedFrame { have: 2, want: 4 }));
        d.push(Bytes::from_static(&[0, 10, b'{']));
        assert_eq!(d.finish(), Err(TruncatedFrame { have: 5, want: 14 }));
        let e = d.finish().unwrap_err();
        assert_eq!(
            e.to_string(),
            "stream ended inside a frame: 5 of 14 bytes arrived"
        );
        // Oversized, still sniffing.
        let mut d = FrameDecoder::new(100);
        d.push(Bytes::from(frame(200, b"{\"id\"")));
        assert_eq!(d.finish(), Err(TruncatedFrame { have: 9, want: 204 }));
    }

    #[test]
    fn bodies_decode_in_place_and_errors_keep_the_id() {
        let mut d = FrameDecoder::default();
        assert_eq!(d.max_frame_size(), DEFAULT_MAX_FRAME_SIZE);
        let bad = br#"{"type":"call.nope","id":"r9","payload":{}}"#;
        d.push(Bytes::from(frame(bad.len() as u32, bad)));
        let Some(Frame::Body(mut b)) = d.next_frame() else {
            panic!()
        };
        let e = EventEnvelope::decode(&mut b).unwrap_err();
        assert_eq!(e.id(), Some("r9"));
    }
}
