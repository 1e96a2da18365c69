//! DNS messages on a byte stream, each behind a 2-byte big-endian length (RFC 1035 §4.2.2,
//! RFC 9250 §4.2). Sans-IO: chunks in, whole messages out.
//!
//! Memory bound: the decoder holds at most one incomplete message (≤ 2 + 65 535 bytes)
//! plus the chunk last pushed, because the caller takes every complete message out
//! before pushing the next chunk.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 2;

/// Splits a stream into messages.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete message, if one is buffered.
    pub fn next_message(&mut self) -> Option<Bytes> {
        let len = usize::from(u16::from_be_bytes(self.buf.get(..2)?.try_into().ok()?));
        if self.buf.len() < LENGTH_PREFIX + len {
            return None;
        }
        self.buf.advance(LENGTH_PREFIX);
        Some(self.buf.split_to(len).freeze())
    }

    /// Bytes of an incomplete message held (0 at a message boundary).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes complete the message being received, if its length is known.
    pub fn wanted(&self) -> Option<usize> {
        let len = usize::from(u16::from_be_bytes(self.buf.get(..2)?.try_into().ok()?));
        Some((LENGTH_PREFIX + len).saturating_sub(self.buf.len()))
    }
}

/// `message` with its length prefix, as the two chunks to queue on a stream (no copy of
/// the body). `None` if it is longer than a prefix can say.
pub fn frame(message: Bytes) -> Option<[Bytes; 2]> {
    let len = u16::try_from(message.len()).ok()?;
    Some([Bytes::copy_from_slice(&len.to_be_bytes()), message])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_messages_across_any_chunking() {
        let mut stream = Vec::new();
        let messages: Vec<Vec<u8>> = vec![vec![1; 12], vec![], vec![7; 300], vec![9; 65535]];
        for m in &messages {
            stream.extend_from_slice(&(m.len() as u16).to_be_bytes());
            stream.extend_from_slice(m);
        }
        for chunk in [1, 2, 3, 1000, stream.len()] {
            let mut d = FrameDecoder::new();
            let mut out = Vec::new();
            for c in stream.chunks(chunk) {
                d.push(c);
                while let Some(m) = d.next_message() {
                    out.push(m.to_vec());
                }
                assert!(d.pending() <= LENGTH_PREFIX + 65535 + chunk);
            }
            assert_eq!(out, messages, "chunk size {chunk}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn reports_what_is_missing() {
        let mut d = FrameDecoder::new();
        assert_eq!(d.wanted(), None);
        d.push(&[0]);
        assert_eq!(d.wanted(), None);
        d.push(&[5, 1, 2]);
        assert_eq!(d.wanted(), Some(3));
        assert_eq!(d.next_message(), None);
        d.push(&[3, 4, 5]);
        assert_eq!(d.next_message().as_deref(), Some(&[1, 2, 3, 4, 5][..]));
    }

    #[test]
    fn frames_with_a_prefix() {
        let [p, b] = frame(Bytes::from_static(b"abc")).expect("fits");
        assert_eq!(&p[..], &[0, 3]);
        assert_eq!(&b[..], b"abc");
        assert!(frame(Bytes::from(vec![0; 65536])).is_none());
    }
}
