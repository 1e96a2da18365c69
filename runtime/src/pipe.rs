//! Pipes and Unix sockets read and written with io_uring operations on the thread that
//! uses them: `alknet connect`'s stdin and stdout, an SSH command's stdout and stderr.
//!
//! The descriptor is in blocking mode and the io_uring driver runs: the kernel then waits
//! for the pipe itself (io_uring arms a poll and finishes the read or write when it is
//! ready), no thread of ours does and nothing crosses a thread. A terminal or a regular
//! file would go to one of the kernel's io_uring worker threads per operation instead,
//! and a non-blocking descriptor would answer `EAGAIN` where the ring should wait, so both
//! are refused ([`RingPipe::new`]), as is a thread without the io_uring driver (the
//! legacy driver would run the read in place and block the whole worker).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use bytes::{Bytes, BytesMut};

use crate::rt::{current_driver, DriverKind};

/// A pipe or Unix socket end for io_uring reads and writes on this thread.
#[derive(Debug)]
pub struct RingPipe {
    file: monoio::fs::File,
    /// The room left in the buffer the last read went into (see [`RingPipe::read_chunk`]).
    room: Option<BytesMut>,
    /// Size of the buffers reads go into.
    chunk: usize,
    /// A buffer with less room than this left is replaced by a new one.
    min_room: usize,
    /// A socket (written with `send`), not a pipe (written with `pwritev2`).
    socket: bool,
    /// The kernel refused a write that must not wait (`EOPNOTSUPP`, `EINVAL`): every
    /// write goes through the ring.
    no_nowait: bool,
}

impl RingPipe {
    /// Takes `fd` for io_uring operations: `Err` (with `fd` back) unless it is a pipe or a
    /// socket in blocking mode and this thread runs the io_uring driver. Reads go into
    /// buffers of `chunk` bytes, each shared by the chunks read into it until less than
    /// `min_room` is left.
    pub fn new(fd: OwnedFd, chunk: usize, min_room: usize) -> Result<Self, OwnedFd> {
        if current_driver() != Some(DriverKind::IoUring) {
            return Err(fd);
        }
        let Some(socket) = blocking_pipe_kind(&fd) else {
            return Err(fd);
        };
        // from_std consumes what it is given and fails only without a runtime (ruled out
        // above): give it a duplicate, so a refusal still hands `fd` back
        let Ok(dup) = fd.try_clone() else {
            return Err(fd);
        };
        match monoio::fs::File::from_std(std::fs::File::from(dup)) {
            Ok(file) => Ok(RingPipe {
                file,
                room: None,
                chunk: chunk.max(1),
                min_room: min_room.clamp(1, chunk.max(1)),
                socket,
                no_nowait: false,
            }),
            Err(e) => {
                tracing::debug!("io_uring pipe refused: {e}");
                Err(fd)
            }
        }
    }

    /// The next bytes the pipe holds, `None` at its end. Each read goes on as a slice of
    /// its buffer, not a copy, and the next one reads into the room behind it: a Unix
    /// socket pair (`sftp -D`, ssh's ProxyCommand) hands over at most the writer's send
    /// buffer per read, and a command's pipe what the command wrote, so most reads are
    /// partial. A buffer is freed once every chunk read into it is.
    pub async fn read_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let buf = match self.room.take() {
            Some(b) if b.capacity() >= self.min_room => b,
            _ => BytesMut::with_capacity(self.chunk),
        };
        // offset 0: pipes and sockets have none (and refuse any other)
        let (res, mut buf) = self.file.read_at(buf, 0).await;
        match res? {
            0 => Ok(None),
            n => {
                let chunk = buf.split_to(n).freeze();
                self.room = Some(buf);
                Ok(Some(chunk))
            }
        }
    }

    /// Writes all of `chunk`, without copying it. What the pipe has room for goes at
    /// once, by a write that must not wait (`RWF_NOWAIT`, `MSG_DONTWAIT`); only the rest
    /// waits in the ring. Why: an io_uring write is issued when the thread next enters
    /// the ring, so a chunk that could go at once (the common case: the reader keeps up)
    /// cost a turn of the event loop and one more `io_uring_enter` before the thread
    /// could sleep: one per answer through `alknet connect`.
    pub async fn write_all(&mut self, chunk: Bytes) -> io::Result<()> {
        let mut rest = chunk;
        if let Some(n) = self.write_now(&rest)? {
            rest = rest.slice(n..);
        }
        while !rest.is_empty() {
            // offset 0: pipes and sockets have none, and refuse any other (`ESPIPE`), so
            // not `write_all_at`, which advances it
            let (res, buf) = self.file.write_at(rest, 0).await;
            match res? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => rest = buf.slice(n..),
            }
        }
        Ok(())
    }

    /// Writes what the pipe takes without waiting: `Some(bytes written)`, `None` when it
    /// has no room (or the kernel offers no such write for it).
    fn write_now(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
        if self.no_nowait || buf.is_empty() {
            return Ok(None);
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: `buf` is a live slice for the duration of the call; the kernel only
        // reads `buf.len()` bytes from it.
        #[allow(unsafe_code)]
        let n = unsafe {
            if self.socket {
                libc::send(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            } else {
                let iov = libc::iovec {
                    iov_base: buf.as_ptr().cast_mut().cast(),
                    iov_len: buf.len(),
                };
                // offset -1: the pipe's own (it has none to move)
                libc::pwritev2(fd, &iov, 1, -1, libc::RWF_NOWAIT)
            }
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => {
                tracing::debug!("writes that must not wait refused ({e}): the ring only");
                self.no_nowait = true;
                Ok(None)
            }
            _ => Err(e),
        }
    }
}

/// What [`RingPipe::new`] takes: a pipe (`Some(false)`) or a socket (`Some(true)`) whose
/// descriptor is in blocking mode.
fn blocking_pipe_kind(fd: &OwnedFd) -> Option<bool> {
    let raw = fd.as_raw_fd();
    // SAFETY: fstat writes only into `st`, a local of the right type; F_GETFL reads the
    // descriptor's flags and touches no memory.
    #[allow(unsafe_code)]
    let (st, flags) = unsafe {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        if libc::fstat(raw, st.as_mut_ptr()) != 0 {
            return None;
        }
        (st.assume_init(), libc::fcntl(raw, libc::F_GETFL))
    };
    let kind = st.st_mode & libc::S_IFMT;
    if flags < 0 || flags & libc::O_NONBLOCK != 0 {
        return None;
    }
    match kind {
        libc::S_IFIFO => Some(false),
        libc::S_IFSOCK => Some(true),
        _ => None,
    }
}

/// Puts `fd` in blocking mode (a descriptor this process owns alone: a command's pipe, not
/// a stdin shared with others), so [`RingPipe::new`] takes it.
pub fn set_blocking(fd: &OwnedFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: F_GETFL and F_SETFL read and set the descriptor's flags, touching no memory.
    #[allow(unsafe_code)]
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK != 0
            && libc::fcntl(raw, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::run_local;
    use std::io::{Read, Write};

    fn pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = std::io::pipe().expect("pipe");
        (OwnedFd::from(r), OwnedFd::from(w))
    }

    #[test]
    fn refuses_what_the_ring_would_not_wait_for() {
        // no runtime on this thread: refused, and the descriptor comes back
        let (r, _w) = pipe();
        let r = RingPipe::new(r, 4096, 1024).expect_err("no runtime");
        run_local(|kind| async move {
            if kind != DriverKind::IoUring {
                return;
            }
            // a regular file
            let file = OwnedFd::from(std::fs::File::open("/proc/self/status").expect("open"));
            assert!(RingPipe::new(file, 4096, 1024).is_err());
            // a non-blocking pipe, then the same made blocking
            let (nb, _w2) = pipe();
            // SAFETY: sets O_NONBLOCK on a descriptor the test owns
            #[allow(unsafe_code)]
            unsafe {
                libc::fcntl(nb.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK)
            };
            let nb = RingPipe::new(nb, 4096, 1024).expect_err("non-blocking");
            set_blocking(&nb).expect("blocking");
            assert!(RingPipe::new(nb, 4096, 1024).is_ok());
            assert!(RingPipe::new(r, 4096, 1024).is_ok());
        })
        .expect("runtime");
    }

    #[test]
    fn moves_every_byte_both_ways_in_order() {
        const TOTAL: usize = 3 * 1024 * 1024 + 17;
        let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        run_local(|kind| async move {
            if kind != DriverKind::IoUring {
                return;
            }
            // ring writes into a pipe drained by a thread, more than the pipe holds
            let (r, w) = pipe();
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                std::fs::File::from(r).read_to_end(&mut got).expect("read");
                got
            });
            let mut out = RingPipe::new(w, 4096, 1024).expect("ring");
            for part in Bytes::from(data).chunks(100_000) {
                out.write_all(Bytes::copy_from_slice(part))
                    .await
                    .expect("write");
            }
            // monoio closes the descriptor through the ring: let the runtime run until the
            // reader has seen the end (bounded), rather than block it in join()
            drop(out);
            for _ in 0..1000 {
                if reader.is_finished() {
                    break;
                }
                monoio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert!(reader.is_finished(), "the reader saw no EOF in 5 s");
            assert!(reader.join().expect("reader") == expected);
            // ring reads from a pipe filled by a thread, in 64 KiB buffers shared by reads
            let (r, w) = pipe();
            let writer = std::thread::spawn(move || {
                let mut w = std::fs::File::from(w);
                for part in expected.chunks(7_000) {
                    w.write_all(part).expect("write");
                }
            });
            let mut input = RingPipe::new(r, 64 * 1024, 16 * 1024).expect("ring");
            let mut got = Vec::with_capacity(TOTAL);
            while let Some(chunk) = input.read_chunk().await.expect("read") {
                assert!(!chunk.is_empty() && chunk.len() <= 64 * 1024);
                got.extend_from_slice(&chunk);
            }
            writer.join().expect("writer");
            assert_eq!(got.len(), TOTAL);
            assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        })
        .expect("runtime");
    }

    #[test]
    fn a_write_with_room_goes_at_once_and_the_rest_through_the_ring() {
        run_local(|kind| async move {
            if kind != DriverKind::IoUring {
                return;
            }
            for socket in [false, true] {
                let (r, w) = if socket {
                    let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
                    (OwnedFd::from(a), OwnedFd::from(b))
                } else {
                    pipe()
                };
                let mut out = RingPipe::new(w, 4096, 1024).expect("ring");
                assert_eq!(out.socket, socket);
                // room: taken whole without the ring, readable before any ring turn
                assert_eq!(out.write_now(b"hello").expect("write"), Some(5));
                assert!(
                    !out.no_nowait,
                    "socket {socket}: the kernel refused RWF_NOWAIT"
                );
                let mut got = [0u8; 5];
                let mut reader = std::fs::File::from(r);
                reader.read_exact(&mut got).expect("read");
                assert_eq!(&got, b"hello");
                // full: a write that must not wait takes what fits, then nothing
                let big = vec![7u8; 4 << 20];
                let first = out.write_now(&big).expect("write").unwrap_or(0);
                assert!(first > 0 && first < big.len(), "socket {socket}: {first}");
                let mut more = 0;
                while let Some(n) = out.write_now(&big).expect("write") {
                    more += n;
                    assert!(more < big.len(), "socket {socket}: never full");
                }
                // write_all waits in the ring for the rest while a thread drains
                let total = first + more + big.len();
                let drain = std::thread::spawn(move || {
                    let mut n = 0;
                    let mut buf = vec![0u8; 65536];
                    while n < total {
                        n += reader.read(&mut buf).expect("drain");
                    }
                    n
                });
                out.write_all(Bytes::from(big)).await.expect("write_all");
                for _ in 0..1000 {
                    if drain.is_finished() {
                        break;
                    }
                    monoio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                assert!(drain.is_finished(), "socket {socket}: not drained in 5 s");
                assert_eq!(drain.join().expect("drain"), total);
            }
        })
        .expect("runtime");
    }
}
