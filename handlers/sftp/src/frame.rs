//! SFTP framing, sans-IO: `uint32 length` then `length` bytes (type byte first). The
//! decoder holds at most one partial packet plus what the caller fed it, and refuses a
//! length over the configured maximum before buffering any of it.

use bytes::{Buf, Bytes, BytesMut};

/// The stream cannot be continued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("packet of {len} bytes exceeds the limit of {max} (sftp.max_packet)")]
    TooLong { len: u32, max: u32 },
    #[error("empty packet (no type byte)")]
    Empty,
}

/// Splits a byte stream into packets.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max: u32,
}

impl FrameDecoder {
    pub fn new(max: u32) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
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

    /// Appends a received chunk; when nothing is buffered and the chunk is not shared
    /// (a merged read), adopts it without copying, so the packets (and a `WRITE`'s data)
    /// are slices of it.
    pub fn feed_bytes(&mut self, data: Bytes) {
        if self.buf.is_empty() {
            match data.try_into_mut() {
                Ok(owned) => self.buf = owned,
                Err(shared) => self.buf.extend_from_slice(&shared),
            }
        } else {
            self.buf.extend_from_slice(&data);
        }
    }

    /// Bytes buffered but not yet returned as packets.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole packet (type byte and body), if one is buffered.
    pub fn next_packet(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if len > self.max {
            return Err(FrameError::TooLong { len, max: self.max });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        let total = 4 + len as usize;
        if self.buf.len() < total {
            // room for the rest, so the next read_buf completes it in one go
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(len as usize).freeze()))
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
