//! WebTransport over HTTP/3 (draft-02): the bytes that are not HTTP/3 frames, sans-IO:
//! the signal and session ID that start every stream of a session, and the quarter
//! stream ID that starts every datagram (RFC 9297). A peer controls all of it, so every
//! parser here takes any bytes and never panics (see `fuzz/`).

use bytes::{BufMut, Bytes, BytesMut};

/// First varint of a client- or server-opened bidirectional stream of a session.
pub const SIGNAL_BI: u64 = 0x41;
/// Stream type of a unidirectional stream of a session.
pub const SIGNAL_UNI: u64 = 0x54;
/// The largest QUIC variable-length integer (RFC 9000, section 16).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Length of the varint whose first byte is `first`.
pub fn varint_len(first: u8) -> usize {
    1 << (first >> 6)
}

/// Decodes one varint from the start of `buf`: its value and length, or `None` if `buf`
/// holds less than the whole varint.
pub fn decode_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = varint_len(first);
    let bytes = buf.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// Bytes of the shortest varint encoding of `v`.
pub fn encoded_len(v: u64) -> usize {
    match v {
        0..=63 => 1,
        64..=16_383 => 2,
        16_384..=1_073_741_823 => 4,
        _ => 8,
    }
}

/// Appends `v` as a varint (the shortest encoding). `v` above [`VARINT_MAX`] is a bug of
/// the caller: stream IDs and signals always fit.
pub fn encode_varint(v: u64, out: &mut BytesMut) {
    debug_assert!(v <= VARINT_MAX);
    if v < 1 << 6 {
        out.put_u8(v as u8);
    } else if v < 1 << 14 {
        out.put_u16(0x4000 | v as u16);
    } else if v < 1 << 30 {
        out.put_u32(0x8000_0000 | v as u32);
    } else {
        out.put_u64(0xc000_0000_0000_0000 | v);
    }
}

/// The header that starts a stream this side opens in session `session_id`.
pub fn stream_header(signal: u64, session_id: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(16);
    encode_varint(signal, &mut b);
    encode_varint(session_id, &mut b);
    b.freeze()
}

/// What the first bytes of an incoming stream say it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStart {
    /// A stream of WebTransport session `session_id` (its header is consumed).
    Session { session_id: u64 },
    /// Anything else (an HTTP/3 request, control or QPACK stream): the bytes read so far,
    /// to be handed to HTTP/3 in front of the rest.
    Http3 { prefix: Bytes },
}

/// Reads the start of an incoming stream byte-exactly: [`StreamHeader::wanted`] says how
/// many more bytes to read (never more than the header needs, so no payload byte is taken
/// from a session stream), [`StreamHeader::push`] takes them. Holds at most 16 bytes.
#[derive(Debug)]
pub struct StreamHeader {
    signal: u64,
    buf: [u8; 16],
    len: usize,
}

impl StreamHeader {
    /// For a stream whose session signal is `signal` ([`SIGNAL_BI`] or [`SIGNAL_UNI`]).
    pub fn new(signal: u64) -> Self {
        Self {
            signal,
            buf: [0; 16],
            len: 0,
        }
    }

    /// Bytes still needed before [`StreamHeader::push`] can decide (at least 1). The
    /// first read asks for the shortest session header (the signal, a one-byte session
    /// ID): one read sorts most streams, and a session stream's payload is never touched.
    pub fn wanted(&self) -> usize {
        let Some(&first) = self.buf.first().filter(|_| self.len > 0) else {
            return encoded_len(self.signal) + 1;
        };
        let type_len = varint_len(first);
        if self.len < type_len {
            return type_len - self.len;
        }
        // the type is a session signal (else push has decided): then the session ID
        match self.buf.get(type_len) {
            Some(&id_first) if self.len > type_len => type_len + varint_len(id_first) - self.len,
            _ => 1,
        }
    }

    /// Takes bytes read from the stream; says what the stream is once it knows. Push at
    /// most [`StreamHeader::wanted`] bytes: a session stream's payload must stay in it.
    pub fn push(&mut self, bytes: &[u8]) -> Option<StreamStart> {
        let room = self.buf.len() - self.len;
        let take = bytes.len().min(room);
        self.buf[self.len..self.len + take].copy_from_slice(&bytes[..take]);
        self.len += take;
        if take < bytes.len() {
            // more than any header holds: whatever it is, it is not a session header
            return Some(self.http3(Some(&bytes[take..])));
        }
        let (ty, type_len) = decode_varint(&self.buf[..self.len])?;
        if ty != self.signal {
            return Some(self.http3(None));
        }
        let (session_id, _) = decode_varint(&self.buf[type_len..self.len])?;
        Some(StreamStart::Session { session_id })
    }

    /// The stream ended (FIN) before the header was complete: it is HTTP/3's to judge.
    pub fn ended(&self) -> StreamStart {
        StreamStart::Http3 {
            prefix: Bytes::copy_from_slice(&self.buf[..self.len]),
        }
    }

    fn http3(&self, extra: Option<&[u8]>) -> StreamStart {
        let mut prefix = BytesMut::with_capacity(self.len + extra.map_or(0, <[u8]>::len));
        prefix.extend_from_slice(&self.buf[..self.len]);
        if let Some(extra) = extra {
            prefix.extend_from_slice(extra);
        }
        StreamStart::Http3 {
            prefix: prefix.freeze(),
        }
    }
}

/// Splits an HTTP datagram (RFC 9297) into the session it belongs to (the quarter stream
/// ID times 4: the session's CONNECT stream) and its payload. `None`: malformed.
pub fn split_datagram(mut datagram: Bytes) -> Option<(u64, Bytes)> {
    let (quarter, len) = decode_varint(&datagram)?;
    let session_id = quarter.checked_mul(4)?;
    let _ = datagram.split_to(len);
    Some((session_id, datagram))
}

/// The prefix of a datagram of session `session_id`.
pub fn datagram_prefix(session_id: u64) -> BytesMut {
    let mut b = BytesMut::with_capacity(8);
    encode_varint(session_id / 4, &mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` the way the adapter does: exactly `wanted()` at a time.
    fn classify(signal: u64, bytes: &[u8]) -> Option<(StreamStart, usize)> {
        let mut h = StreamHeader::new(signal);
        let mut at = 0;
        while at < bytes.len() {
            let n = h.wanted().min(bytes.len() - at);
            let r = h.push(&bytes[at..at + n]);
            at += n;
            if let Some(r) = r {
                return Some((r, at));
            }
        }
        None
    }

    #[test]
    fn varints_round_trip_at_every_length() {
        for v in [
            0,
            63,
            64,
            16_383,
            16_384,
            (1 << 30) - 1,
            1 << 30,
            VARINT_MAX,
        ] {
            let mut b = BytesMut::new();
            encode_varint(v, &mut b);
            assert_eq!(decode_varint(&b), Some((v, b.len())), "{v}");
            assert_eq!(decode_varint(&b[..b.len() - 1]), None);
        }
    }

    #[test]
    fn session_streams_are_recognised_without_reading_their_payload() {
        // 0x41 is a two-byte varint (0x40 0x41); session 0 (the first request stream)
        let (start, used) = classify(SIGNAL_BI, &[0x40, 0x41, 0x00, b'h', b'i']).unwrap();
        assert_eq!(start, StreamStart::Session { session_id: 0 });
        assert_eq!(used, 3, "the payload stays in the stream");
        // a four-byte session ID
        let mut b = BytesMut::new();
        encode_varint(SIGNAL_UNI, &mut b);
        encode_varint(1_000_000, &mut b);
        let n = b.len();
        b.extend_from_slice(b"payload");
        let (start, used) = classify(SIGNAL_UNI, &b).unwrap();
        assert_eq!(
            start,
            StreamStart::Session {
                session_id: 1_000_000
            }
        );
        assert_eq!(used, n);
    }

    #[test]
    fn http3_streams_get_their_bytes_back() {
        // a request stream starts with HEADERS (type 1)
        let (start, used) = classify(SIGNAL_BI, &[0x01, 0x10, 0xff, 0x00]).unwrap();
        assert_eq!(
            start,
            StreamStart::Http3 {
                prefix: Bytes::from_static(&[0x01, 0x10, 0xff])
            }
        );
        assert_eq!(used, 3, "one read of the shortest session header");
        // a control stream (type 0) on the uni side; a bi signal on a uni stream is not one
        assert!(matches!(
            classify(SIGNAL_UNI, &[0x00, 0x04]),
            Some((StreamStart::Http3 { .. }, 2))
        ));
        assert!(matches!(
            classify(SIGNAL_UNI, &[0x40, 0x41, 0x00]),
            Some((StreamStart::Http3 { .. }, 3))
        ));
        // FIN in the middle of the header
        let mut h = StreamHeader::new(SIGNAL_BI);
        assert_eq!(h.push(&[0x40]), None);
        assert_eq!(
            h.ended(),
            StreamStart::Http3 {
                prefix: Bytes::from_static(&[0x40])
            }
        );
    }

    #[test]
    fn any_bytes_in_any_split_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let bytes = seed.to_le_bytes();
            let mut h = StreamHeader::new(SIGNAL_BI);
            // pushing more than wanted is allowed and decides
            let _ = h.push(&bytes[..(seed as usize % 9)]);
            let _ = classify(SIGNAL_BI, &bytes);
            let _ = split_datagram(Bytes::copy_from_slice(&bytes[..(seed as usize % 9)]));
        }
    }

    #[test]
    fn datagrams_carry_the_quarter_stream_id() {
        let mut d = datagram_prefix(8);
        d.extend_from_slice(b"ping");
        assert_eq!(
            split_datagram(d.freeze()),
            Some((8, Bytes::from_static(b"ping")))
        );
        assert_eq!(split_datagram(Bytes::new()), None);
        assert_eq!(split_datagram(Bytes::from_static(&[0x40])), None);
    }
}
