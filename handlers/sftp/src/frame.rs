//! SFTP framing, sans-IO: `uint32 length` then `length` bytes (type byte first). The
//! decoder holds at most one partial packet plus what the caller fed it, and refuses a
//! length over the configured maximum before buffering any of it.
//!
//! Received chunks of [`ADOPT_MIN_CHUNK`] bytes or more are kept as they came (a queue of
//! `Bytes`), so a packet inside one chunk is a slice of it. A packet that spans chunks is
//! handed on as its parts ([`Frame::Parts`], slices of the chunks, in order) by
//! [`FrameDecoder::next_frame`], or joined by one copy into a buffer of its own size by
//! [`FrameDecoder::next_packet`]. OpenSSH's client writes what `limits@openssh.com`
//! allows, 255 KiB per `WRITE` here, so with 64 KiB QUIC packets every `WRITE` spans four
//! or five chunks: the worker front writes their parts to the file as they are (one
//! `pwritev`) instead of copying every byte of a `put` once more. Smaller chunks are appended to
//! a tail buffer, so a peer that sends a byte at a time cannot make the queue long: every
//! queued chunk holds at least [`ADOPT_MIN_CHUNK`] bytes or ended a run of small ones.
//! Memory: the buffered bytes, plus whatever larger buffer a kept chunk is a slice of (a
//! received datagram: at most 4 × for 64 KiB datagrams).

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Chunks at least this long are queued as given instead of copied into the tail buffer.
/// The engine hands on received stream chunks of this size or more without merging them
/// (`alknet_runtime`'s `UNMERGED_CHUNK`); smaller ones arrive merged, in buffers of their own.
pub const ADOPT_MIN_CHUNK: usize = 16 * 1024;

/// The stream cannot be continued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("packet of {len} bytes exceeds the limit of {max} (sftp.max_packet)")]
    TooLong { len: u32, max: u32 },
    #[error("empty packet (no type byte)")]
    Empty,
}

/// One whole packet (type byte and body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// In one piece: a slice of a received chunk, or of the tail buffer.
    One(Bytes),
    /// Spanning received chunks: its parts in order, none empty, not joined.
    Parts(Vec<Bytes>),
}

impl Frame {
    /// The packet's length (type byte and body).
    pub fn len(&self) -> usize {
        match self {
            Frame::One(b) => b.len(),
            Frame::Parts(parts) => parts.iter().map(Bytes::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The packet in one piece: parts are joined by one copy.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Frame::One(b) => b,
            Frame::Parts(parts) => {
                let mut joined = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
                for p in &parts {
                    joined.put_slice(p);
                }
                joined.freeze()
            }
        }
    }
}

/// Splits a byte stream into packets.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Chunks kept as received, in order, before `buf`.
    queued: VecDeque<Bytes>,
    /// Bytes in `queued`.
    queued_len: usize,
    /// The tail: what `feed`, `buffer()` readers and small chunks appended.
    buf: BytesMut,
    max: u32,
    /// Chunks this long or longer are queued ([`ADOPT_MIN_CHUNK`]).
    adopt_min: usize,
}

impl FrameDecoder {
    pub fn new(max: u32) -> Self {
        Self::with_chunk_threshold(max, ADOPT_MIN_CHUNK)
    }

    /// A decoder that queues chunks of `adopt_min` bytes or more instead of
    /// [`ADOPT_MIN_CHUNK`]: for the fuzzer, whose inputs are a few KiB.
    pub fn with_chunk_threshold(max: u32, adopt_min: usize) -> Self {
        Self {
            queued: VecDeque::new(),
            queued_len: 0,
            buf: BytesMut::new(),
            max,
            adopt_min: adopt_min.max(1),
        }
    }

    /// The buffer to read more bytes into (read with `read_buf`, which appends).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends bytes (for callers that receive chunks).
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Appends a received chunk: a large one is queued without copying (its packets, and
    /// a `WRITE`'s data, are slices of it); a small one is adopted as the buffer when
    /// nothing is buffered and it is not shared (a merged read), else copied.
    pub fn feed_bytes(&mut self, data: Bytes) {
        if data.len() >= self.adopt_min {
            if !self.buf.is_empty() {
                let tail = self.buf.split().freeze();
                self.queue(tail);
            }
            self.queue(data);
        } else if self.buffered() == 0 {
            match data.try_into_mut() {
                Ok(owned) => self.buf = owned,
                Err(shared) => self.buf.extend_from_slice(&shared),
            }
        } else {
            self.buf.extend_from_slice(&data);
        }
    }

    fn queue(&mut self, chunk: Bytes) {
        self.queued_len += chunk.len();
        self.queued.push_back(chunk);
    }

    /// Bytes buffered but not yet returned as packets.
    pub fn buffered(&self) -> usize {
        self.queued_len + self.buf.len()
    }

    /// The first four buffered bytes, across chunks.
    fn peek_len(&self) -> [u8; 4] {
        let mut out = [0u8; 4];
        let mut at = 0;
        for chunk in self.queued.iter().map(|c| &c[..]).chain([&self.buf[..]]) {
            let n = chunk.len().min(4 - at);
            out[at..at + n].copy_from_slice(&chunk[..n]);
            at += n;
            if at == 4 {
                break;
            }
        }
        out
    }

    /// The next whole packet (type byte and body) in one piece, if one is buffered: a
    /// packet that spans received chunks is joined (one copy).
    pub fn next_packet(&mut self) -> Result<Option<Bytes>, FrameError> {
        Ok(self.next_frame()?.map(Frame::into_bytes))
    }

    /// The next whole packet, if one is buffered, without copying: one slice, or the
    /// slices of the chunks it spans.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buffered() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.peek_len());
        if len > self.max {
            return Err(FrameError::TooLong { len, max: self.max });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        let total = 4 + len as usize;
        if self.buffered() < total {
            if self.queued.is_empty() {
                // room for the rest, so the next read_buf completes it in one go
                self.buf.reserve(total - self.buf.len());
            }
            return Ok(None);
        }
        let Some(first) = self.queued.front_mut() else {
            self.buf.advance(4);
            return Ok(Some(Frame::One(self.buf.split_to(len as usize).freeze())));
        };
        if first.len() >= total {
            // inside one chunk: a slice of it
            first.advance(4);
            let packet = first.split_to(len as usize);
            if first.is_empty() {
                self.queued.pop_front();
            }
            self.queued_len -= total;
            return Ok(Some(Frame::One(packet)));
        }
        // spans chunks: its parts, slices of them
        let mut parts = Vec::with_capacity(4);
        let mut skip = 4;
        let mut want = len as usize;
        while want > 0 {
            let Some(chunk) = self.queued.front_mut() else {
                // the rest is in the tail (buffered() said it is all there)
                self.buf.advance(skip);
                parts.push(self.buf.split_to(want).freeze());
                break;
            };
            let n = skip.min(chunk.len());
            chunk.advance(n);
            skip -= n;
            self.queued_len -= n;
            let n = want.min(chunk.len());
            if n > 0 {
                parts.push(chunk.split_to(n));
            }
            want -= n;
            self.queued_len -= n;
            if chunk.is_empty() {
                self.queued.pop_front();
            }
        }
        Ok(Some(match parts.len() {
            // the length prefix spanned chunks, the packet did not
            1 => Frame::One(parts.swap_remove(0)),
            _ => Frame::Parts(parts),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_packets_fed_byte_by_byte() {
        let mut d = FrameDecoder::new(1024);
        let wire = [0, 0, 0, 2, 1, 9, 0, 0, 0, 1, 7];
        let mut got = Vec::new();
        for b in wire {
            d.feed(&[b]);
            while let Some(p) = d.next_packet().unwrap() {
                got.push(p);
            }
        }
        assert_eq!(
            got,
            vec![Bytes::from_static(&[1, 9]), Bytes::from_static(&[7])]
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn an_unshared_chunk_is_adopted_without_a_copy() {
        let mut d = FrameDecoder::new(1024);
        let wire = Bytes::from(vec![0, 0, 0, 2, 1, 9, 0, 0, 0, 3, 7]);
        let at = wire.as_ptr();
        d.feed_bytes(wire);
        let p = d.next_packet().unwrap().expect("a whole packet");
        assert_eq!(&p[..], &[1, 9]);
        assert_eq!(p.as_ptr(), at.wrapping_add(4));
        assert_eq!(d.next_packet().unwrap(), None);
        // the rest of a partial packet: appended
        d.feed_bytes(Bytes::from_static(&[8, 9]));
        assert_eq!(
            d.next_packet().unwrap().expect("completed"),
            vec![7u8, 8, 9]
        );
        // a shared chunk is copied
        let shared = Bytes::from(vec![0, 0, 0, 1, 5]);
        let keep = shared.clone();
        d.feed_bytes(shared);
        assert_eq!(d.next_packet().unwrap().expect("packet"), keep.slice(4..));
    }

    #[test]
    fn packets_inside_a_large_chunk_are_slices_and_spanning_ones_copied_once() {
        // two 20 000-byte packets in one 40 008-byte chunk, a third split across chunks
        let body = |b: u8, n: usize| std::iter::repeat_n(b, n).collect::<Vec<u8>>();
        let mut wire = Vec::new();
        for b in [1u8, 2, 3] {
            wire.extend_from_slice(&20_000u32.to_be_bytes());
            wire.extend_from_slice(&body(b, 20_000));
        }
        let wire = Bytes::from(wire);
        let mut d = FrameDecoder::new(1 << 20);
        let first = wire.slice(..40_008 + ADOPT_MIN_CHUNK);
        d.feed_bytes(first.clone());
        let p1 = d.next_packet().unwrap().expect("first");
        assert_eq!(
            p1.as_ptr(),
            first.as_ptr().wrapping_add(4),
            "a slice, not a copy"
        );
        let p2 = d.next_packet().unwrap().expect("second");
        assert_eq!(p2.as_ptr(), first.as_ptr().wrapping_add(20_008));
        assert_eq!(d.next_packet().unwrap(), None);
        // the rest of the third: a small chunk, then a large one
        let rest = wire.slice(40_008 + ADOPT_MIN_CHUNK..);
        d.feed_bytes(rest.slice(..10));
        assert_eq!(d.next_packet().unwrap(), None);
        d.feed_bytes(rest.slice(10..));
        let p3 = d.next_packet().unwrap().expect("third");
        assert_eq!(p3, body(3, 20_000));
        assert_eq!(d.buffered(), 0);
        assert_eq!(
            (p1, p2),
            (Bytes::from(body(1, 20_000)), Bytes::from(body(2, 20_000)))
        );
    }

    #[test]
    fn a_spanning_packet_comes_as_slices_of_its_chunks() {
        // a 100 000-byte packet across three large chunks and a small tail
        let mut wire = 100_000u32.to_be_bytes().to_vec();
        wire.extend((0..100_000u32).map(|i| i as u8));
        let wire = Bytes::from(wire);
        let cuts = [0, 2, 40_000, 80_000, 99_990, wire.len()];
        let mut d = FrameDecoder::new(1 << 20);
        for w in cuts.windows(2) {
            assert_eq!(d.next_frame().unwrap(), None);
            d.feed_bytes(wire.slice(w[0]..w[1]));
        }
        let Some(Frame::Parts(parts)) = d.next_frame().unwrap() else {
            panic!("expected parts");
        };
        assert_eq!(d.buffered(), 0);
        // the 2-byte chunk went to the tail buffer, the 4-byte length straddles it
        let lens: Vec<usize> = parts.iter().map(Bytes::len).collect();
        assert_eq!(lens, [39_996, 40_000, 19_990, 14]);
        assert_eq!(
            parts[1].as_ptr(),
            wire[40_000..].as_ptr(),
            "a slice, not a copy"
        );
        let frame = Frame::Parts(parts);
        assert_eq!(frame.len(), 100_000);
        assert_eq!(frame.into_bytes(), wire.slice(4..));
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_packets() {
        // packets of varied sizes, cut at pseudo-random points into chunks of 1 byte to
        // 70 KiB, fed as shared slices: the packets come out whole and in order
        let mut wire = Vec::new();
        let mut expect = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for i in 0..300u32 {
            let len = 1 + next(40_000) as usize;
            let body: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            wire.extend_from_slice(&(len as u32).to_be_bytes());
            wire.extend_from_slice(&body);
            expect.push(Bytes::from(body));
        }
        let wire = Bytes::from(wire);
        let mut d = FrameDecoder::new(1 << 20);
        let mut got = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let n = match next(3) {
                0 => 1 + next(16) as usize,
                1 => 1 + next(4_096) as usize,
                _ => ADOPT_MIN_CHUNK + next(54 * 1024) as usize,
            }
            .min(wire.len() - at);
            d.feed_bytes(wire.slice(at..at + n));
            at += n;
            while let Some(p) = d.next_packet().unwrap() {
                got.push(p);
            }
            // never more than one partial packet plus the last chunk held
            assert!(d.buffered() <= 40_004 + 70 * 1024);
        }
        assert_eq!(got, expect);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn refuses_oversized_and_empty_before_buffering() {
        let mut d = FrameDecoder::new(1024);
        d.feed(&1025u32.to_be_bytes());
        assert_eq!(
            d.next_packet(),
            Err(FrameError::TooLong {
                len: 1025,
                max: 1024
            })
        );
        let mut d = FrameDecoder::new(1024);
        d.feed(&[0, 0, 0, 0]);
        assert_eq!(d.next_packet(), Err(FrameError::Empty));
    }
}
