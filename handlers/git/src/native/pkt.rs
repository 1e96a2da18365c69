//! Blocking pkt-line framing (`gitprotocol-common`) for the gix backend, which runs the
//! conversation on a blocking thread ([`super::bridge`]).
//!
//! The reader is written for a hostile peer: a length prefix is checked before anything
//! is read behind it, a line is at most [`MAX_PKT_PAYLOAD`] bytes, and it reads exactly
//! one line from the input, never more, so the raw pack behind a push's commands stays
//! in the input for the pack reader.

use std::io::{self, Read, Write};

pub use crate::request::MAX_PKT_PAYLOAD;

/// Largest payload of a side-band data line: a pkt-line's, minus the band byte.
pub const MAX_BAND_PAYLOAD: usize = MAX_PKT_PAYLOAD - 1;

/// One pkt-line as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkt<'a> {
    /// `0000`
    Flush,
    /// `0001` (protocol v2)
    Delim,
    /// `0002` (protocol v2)
    ResponseEnd,
    /// A data line, its trailing LF (if any) removed.
    Data(&'a [u8]),
}

/// Why a pkt-line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PktError {
    #[error("the stream ended")]
    Eof,
    #[error("invalid pkt-line length prefix {0:?}")]
    BadPrefix([u8; 4]),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads pkt-lines one at a time from `inner`.
pub struct PktReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: Read> PktReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
        }
    }

    /// The input, positioned right behind the last line read.
    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The next line. [`PktError::Eof`] if the input ends before its first byte.
    pub fn read(&mut self) -> Result<Pkt<'_>, PktError> {
        let mut prefix = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.inner.read(&mut prefix[got..]) {
                Ok(0) if got == 0 => return Err(PktError::Eof),
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let len = parse_prefix(prefix).ok_or(PktError::BadPrefix(prefix))?;
        match len {
            0 => return Ok(Pkt::Flush),
            1 => return Ok(Pkt::Delim),
            2 => return Ok(Pkt::ResponseEnd),
            _ => {}
        }
        let payload = len - 4;
        self.buf.resize(payload, 0);
        self.inner.read_exact(&mut self.buf)?;
        let line = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        Ok(Pkt::Data(line))
    }
}

/// The length a prefix announces (0, 1, 2 for the special lines), or `None` if it is not
/// one: not hex, `0003`, or a data line longer than a pkt-line may be.
pub fn parse_prefix(prefix: [u8; 4]) -> Option<usize> {
    let text = std::str::from_utf8(&prefix).ok()?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let len = usize::from_str_radix(text, 16).ok()?;
    match len {
        0..=2 => Some(len),
        3 => None,
        n if n - 4 > MAX_PKT_PAYLOAD => None,
        n => Some(n),
    }
}

/// Writes one data line (`data` as given: callers add the LF the protocol wants).
pub fn write_line(out: &mut (impl Write + ?Sized), data: &[u8]) -> io::Result<()> {
    debug_assert!(data.len() <= MAX_PKT_PAYLOAD);
    write!(out, "{:04x}", data.len() + 4)?;
    out.write_all(data)
}

/// Writes `text` and a LF as one line.
pub fn write_text(out: &mut (impl Write + ?Sized), text: &str) -> io::Result<()> {
    writeln!(out, "{:04x}{text}", text.len() + 5)
}

pub fn write_flush(out: &mut (impl Write + ?Sized)) -> io::Result<()> {
    out.write_all(b"0000")
}

pub fn write_delim(out: &mut (impl Write + ?Sized)) -> io::Result<()> {
    out.write_all(b"0001")
}

/// Side-band multiplexing (`side-band-64k`, and every v2 `packfile` section): band 1 is
/// data, 2 progress, 3 a fatal error.
pub struct SideBand<W> {
    pub inner: W,
    /// Progress messages are dropped (`no-progress`, `quiet`).
    pub quiet: bool,
}

impl<W: Write> SideBand<W> {
    pub fn new(inner: W, quiet: bool) -> Self {
        Self { inner, quiet }
    }

    fn band(&mut self, band: u8, data: &[u8]) -> io::Result<()> {
        for part in data.chunks(MAX_BAND_PAYLOAD) {
            write!(self.inner, "{:04x}", part.len() + 5)?;
            self.inner.write_all(&[band])?;
            self.inner.write_all(part)?;
        }
        Ok(())
    }

    /// A progress message (band 2) unless quiet.
    pub fn progress(&mut self, message: &str) -> io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        self.band(2, message.as_bytes())
    }

    /// A fatal error (band 3): the client prints it and stops.
    pub fn fatal(&mut self, message: &str) -> io::Result<()> {
        self.band(3, message.as_bytes())?;
        self.inner.flush()
    }
}

impl<W: Write> Write for SideBand<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.band(1, buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exactly_one_line_at_a_time() {
        let input: &[u8] = b"0009want\n00000001000ahello\n0002PACKrest";
        let mut r = PktReader::new(input);
        assert_eq!(r.read().expect("line"), Pkt::Data(b"want"));
        assert_eq!(r.read().expect("flush"), Pkt::Flush);
        assert_eq!(r.read().expect("delim"), Pkt::Delim);
        assert_eq!(r.read().expect("line"), Pkt::Data(b"hello"));
        assert_eq!(r.read().expect("end"), Pkt::ResponseEnd);
        let mut rest = Vec::new();
        r.inner_mut().read_to_end(&mut rest).expect("rest");
        assert_eq!(rest, b"PACKrest");
        assert!(matches!(
            PktReader::new(&b""[..]).read(),
            Err(PktError::Eof)
        ));
    }

    #[test]
    fn refuses_bad_prefixes_and_truncation() {
        for bad in [&b"0003"[..], b"zzzz", b"fff5", b"ffff", b"00-1"] {
            assert!(
                matches!(PktReader::new(bad).read(), Err(PktError::BadPrefix(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            PktReader::new(&b"0010abc"[..]).read(),
            Err(PktError::Io(_))
        ));
        assert!(matches!(
            PktReader::new(&b"00"[..]).read(),
            Err(PktError::Io(_))
        ));
    }

    #[test]
    fn writes_lines_and_bands() {
        let mut out = Vec::new();
        write_text(&mut out, "version 2").expect("write");
        write_flush(&mut out).expect("write");
        assert_eq!(out, b"000eversion 2\n0000");
        let mut band = SideBand::new(Vec::new(), false);
        band.write_all(&vec![7u8; MAX_BAND_PAYLOAD + 1])
            .expect("write");
        band.progress("p").expect("write");
        let out = band.inner;
        assert_eq!(&out[..5], b"fff0\x01");
        let second = 4 + MAX_PKT_PAYLOAD;
        assert_eq!(&out[second..second + 6], b"0006\x01\x07");
        assert_eq!(&out[second + 6..], b"0006\x02p");
        let mut quiet = SideBand::new(Vec::new(), true);
        quiet.progress("p").expect("write");
        assert!(quiet.inner.is_empty());
    }
}
