//! The IO driver of one `alknet/sftp` session on the monoio worker that owns its QUIC
//! connection: no thread hop between the stream and the file system.
//!
//! * `READ` and `WRITE`, what bulk transfers are made of, are served without waiting
//!   when they can be (`OpenFile`): a read the page cache holds is copied at once
//!   (`preadv2` with `RWF_NOWAIT`), and files on a memory file system (tmpfs, ramfs: no
//!   device to wait for) are read and written with plain `pread`/`pwrite`. What would
//!   wait goes through monoio's file operations (io_uring operations on the io_uring
//!   driver; plain calls on the legacy driver). Why: an answer ready in the same turn
//!   leaves with the ACK of its request in one packet, and io_uring hands every
//!   operation on a file without non-blocking support (tmpfs) to a kernel worker
//!   thread, a thread hop per request. A `READ`'s data is sent as it was read, behind a
//!   separate 13-byte header, and a `WRITE`'s data is written from a slice of the
//!   received frame: no copy of the payload either way.
//! * Other requests (open, stat, readdir, rename, ...) are a few system calls each on
//!   local file systems; they run inline on the worker through [`Server::execute`], as
//!   the blocking driver runs them on a thread: `openat2` and the others have no io_uring
//!   form in monoio. A hop to another thread would cost more than the call.
//! * Requests that may take long (`copy-data`, which copies a whole range,
//!   `fsync@openssh.com`, and those that truncate, remove or replace a file larger than
//!   [`crate::server::INLINE_FREE_MAX_BYTES`], whose blocks the kernel frees inside the
//!   call) run on the `offload` runtime's blocking threads, so the worker's other
//!   connections are not held up.
//!
//! Ordering, limits and ends are the blocking driver's ([`crate::driver`]): the same
//! [`Pipeline`], replies as requests complete except in request order per handle, FIN on
//! a clean end, a reset otherwise.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use alknet_runtime::{BiStream, Bytes, ReadError, RecvStream, SendStream, VarInt, WriteError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use monoio::buf::IoBufMut;
use russh_sftp::protocol::{Packet, StatusCode};

use crate::config::SftpConfig;
use crate::driver::{
    cost, decode_data_parts, decode_data_request, decode_request, DataRequest, Decoded,
};
use crate::frame::{Frame, FrameDecoder, FrameError};
use crate::init::{token_of, InitError, SSH_FXP_INIT};
use crate::pipeline::{Done, Job, Pipeline};
use crate::server::{
    data_header, encode, eof_reply, io_error_reply, ok_reply, version_reply, Need, Server,
};

/// Most bytes taken from the QUIC stream at once (what has arrived, merged).
pub const WORKER_READ_CHUNK: usize = 256 * 1024;

/// Application error code of a stream reset because its session failed.
pub const SESSION_ABORT_CODE: u32 = 0x1;

/// Why a session on the worker ended other than by the client's clean end of stream.
#[derive(Debug, thiserror::Error)]
pub enum WorkerSessionError {
    #[error("reading the stream: {0}")]
    Read(#[from] ReadError),
    #[error("writing the stream: {0}")]
    Write(#[from] WriteError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the first packet was not SSH_FXP_INIT")]
    NoInit,
    #[error("the stream ended before SSH_FXP_INIT")]
    EndedBeforeInit,
    #[error("no SSH_FXP_INIT within {0} ms (sftp.init_timeout_ms)")]
    InitTimeout(u64),
    #[error(transparent)]
    Init(#[from] InitError),
    /// `session_of` refused the session (the reason it gave).
    #[error("not allowed: {0}")]
    NotAllowed(String),
}

/// A request as this driver runs it.
enum Req {
    Data(DataRequest),
    Other(Packet),
}

/// A request being served; it borrows the session it runs in.
/// Its reply is encoded in pieces, sent as they are.
type Running<'s> = Pin<Box<dyn Future<Output = Done<Vec<Bytes>>> + 's>>;

/// What the requests of one session share while they run.
struct Session {
    server: Arc<Server>,
    max_read: u32,
    offload: tokio::runtime::Handle,
    /// The handles read or written so far (made on first use, dropped at `CLOSE`).
    files: RefCell<HashMap<String, Rc<OpenFile>>>,
}

/// A file handle as this driver reads and writes it.
struct OpenFile {
    std: Arc<std::fs::File>,
    /// On tmpfs or ramfs: reads and writes copy memory and never wait for a device, and
    /// these file systems offer no non-blocking reads (`RWF_NOWAIT` fails with
    /// `EOPNOTSUPP`; io_uring would pass each one to a kernel worker thread). Served
    /// with plain calls on the worker.
    in_memory: bool,
    /// `RWF_NOWAIT` reads are refused on this file: straight to io_uring.
    no_nowait: Cell<bool>,
    /// monoio's view (a duplicate of the server's descriptor), made when an operation
    /// first has to wait.
    ring: OnceCell<Rc<monoio::fs::File>>,
}

impl OpenFile {
    fn new((std, in_memory): (Arc<std::fs::File>, bool)) -> Self {
        Self {
            in_memory,
            std,
            no_nowait: Cell::new(false),
            ring: OnceCell::new(),
        }
    }

    fn ring(&self) -> std::io::Result<Rc<monoio::fs::File>> {
        if let Some(f) = self.ring.get() {
            return Ok(f.clone());
        }
        let file = Rc::new(monoio::fs::File::from_std(self.std.try_clone()?)?);
        Ok(self.ring.get_or_init(|| file).clone())
    }

    /// Reads into `buf`'s spare capacity at `offset` what can be had without waiting for
    /// a device. `Ok(true)` when done: `buf` is full, or holds everything up to the end of
    /// the file; `Ok(false)` when the rest has to wait.
    fn read_now(&self, buf: &mut Vec<u8>, offset: u64) -> std::io::Result<bool> {
        loop {
            if buf.len() == buf.capacity() {
                return Ok(true);
            }
            let at = offset + buf.len() as u64;
            let n = if self.in_memory {
                match rustix::io::pread(&*self.std, rustix::buffer::spare_capacity(buf), at) {
                    Ok(n) => n,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            } else {
                if self.no_nowait.get() {
                    return Ok(false);
                }
                match read_cached(&self.std, buf, at) {
                    Ok(n) => n,
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(false),
                    Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                        self.no_nowait.set(true);
                        return Ok(false);
                    }
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Ok(true);
            }
        }
    }

    /// Writes all of `data` (its pieces one after another) at `offset`.
    async fn write_all_at(&self, data: Vec<Bytes>, mut offset: u64) -> std::io::Result<()> {
        if !self.in_memory {
            let ring = self.ring()?;
            for piece in data {
                let n = piece.len() as u64;
                let (res, _) = ring.write_all_at(piece, offset).await;
                res?;
                offset += n;
            }
            return Ok(());
        }
        // one pwritev for all pieces (a WRITE that spanned received chunks)
        let (mut piece, mut skip) = (0, 0);
        while piece < data.len() {
            let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&data[piece][skip..])
                .chain(data[piece + 1..].iter().map(|d| &d[..]))
                .map(std::io::IoSlice::new)
                .collect();
            let mut n = match rustix::io::pwritev(&*self.std, &slices, offset) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            offset += n as u64;
            // advance past what was written
            while n > 0 {
                let left = data[piece].len() - skip;
                if n < left {
                    skip += n;
                    n = 0;
                } else {
                    n -= left;
                    piece += 1;
                    skip = 0;
                }
            }
            while piece < data.len() && data[piece].len() == skip {
                piece += 1;
                skip = 0;
            }
        }
        Ok(())
    }
}

/// `preadv2(RWF_NOWAIT)` into `buf`'s spare capacity: what the page cache holds, or
/// `EAGAIN` at once. Returns the bytes read (appended to `buf`).
fn read_cached(file: &std::fs::File, buf: &mut Vec<u8>, offset: u64) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let spare = buf.spare_capacity_mut();
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    let Ok(offset) = libc::off_t::try_from(offset) else {
        return Ok(0); // past any file's end
    };
    // SAFETY: the iovec covers `buf`'s spare capacity, which stays allocated and
    // unaliased during the call; the kernel writes at most `iov_len` bytes into it.
    #[allow(unsafe_code)]
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
    #[allow(unsafe_code)]
    unsafe {
        buf.set_len(buf.len() + n)
    };
    Ok(n)
}

impl Session {
    fn file(&self, id: u32, handle: &str) -> Result<Rc<OpenFile>, Bytes> {
        if let Some(f) = self.files.borrow().get(handle) {
            return Ok(f.clone());
        }
        let file = Rc::new(OpenFile::new(self.server.file_of(id, handle)?));
        self.files
            .borrow_mut()
            .insert(handle.to_string(), file.clone());
        Ok(file)
    }

    async fn run(&self, req: Req) -> Vec<Bytes> {
        match req {
            Req::Data(DataRequest::Read {
                id,
                handle,
                offset,
                len,
            }) => match self.read(id, &handle, offset, len).await {
                Ok(reply) | Err(reply) => reply,
            },
            Req::Data(DataRequest::Write {
                id,
                handle,
                offset,
                data,
            }) => vec![self
                .write(id, &handle, offset, data)
                .await
                .unwrap_or_else(|e| e)],
            Req::Other(packet) => vec![self.other(packet).await],
        }
    }

    async fn read(
        &self,
        id: u32,
        handle: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<Bytes>, Vec<Bytes>> {
        self.server.check(id, Need::Read).map_err(|e| vec![e])?;
        let file = self.file(id, handle).map_err(|e| vec![e])?;
        let len = len.min(self.max_read) as usize;
        let mut buf = Vec::with_capacity(len);
        let done = file
            .read_now(&mut buf, offset)
            .map_err(|e| vec![io_error_reply(id, e)])?;
        if !done {
            // one read for the rest, as OpenSSH's sftp-server reads: short only at the
            // end of the file
            let ring = file.ring().map_err(|e| vec![io_error_reply(id, e)])?;
            let at = offset + buf.len() as u64;
            let start = buf.len();
            let (res, rest) = ring.read_at(buf.slice_mut(start..), at).await;
            buf = rest.into_inner();
            res.map_err(|e| vec![io_error_reply(id, e)])?;
        }
        if buf.is_empty() && len > 0 {
            return Ok(vec![eof_reply(id)]);
        }
        Ok(vec![data_header(id, buf.len()), Bytes::from(buf)])
    }

    async fn write(
        &self,
        id: u32,
        handle: &str,
        offset: u64,
        data: Vec<Bytes>,
    ) -> Result<Bytes, Bytes> {
        self.server.check(id, Need::Write)?;
        let file = self.file(id, handle)?;
        file.write_all_at(data, offset)
            .await
            .map_err(|e| io_error_reply(id, e))?;
        Ok(ok_reply(id))
    }

    async fn other(&self, packet: Packet) -> Bytes {
        if let Packet::Close(c) = &packet {
            // CLOSE runs after every earlier request on its handle (sequencer)
            self.files.borrow_mut().remove(&c.handle);
        }
        if !self.server.may_wait(&packet) {
            return self.server.execute(packet);
        }
        let id = packet.get_request_id();
        let server = self.server.clone();
        self.offload
            .spawn_blocking(move || server.execute(packet))
            .await
            .unwrap_or_else(|e| {
                tracing::error!("sftp: request {id} failed: {e}");
                encode(Packet::status(
                    id,
                    StatusCode::Failure,
                    "internal error",
                    "en",
                ))
            })
    }
}

/// Serves one session on `stream` until the client ends its side and every request is
/// answered (then the stream is finished: FIN), or an error (then it is reset and
/// stopped). Must run on the worker that owns the stream's connection. `offload` runs the
/// requests that may take long ([`crate::worker`]).
///
/// `session_of` decides whose session it is once `SSH_FXP_INIT` has arrived, from the
/// token that `INIT` carries, if any ([`crate::init`]); its refusal ends the stream
/// before `SSH_FXP_VERSION` as [`WorkerSessionError::NotAllowed`].
pub async fn serve_on_worker(
    stream: BiStream,
    session_of: impl FnOnce(Option<&str>) -> Result<Arc<Server>, String>,
    config: SftpConfig,
    offload: tokio::runtime::Handle,
) -> Result<(), WorkerSessionError> {
    let BiStream { mut send, mut recv } = stream;
    let res = async {
        let mut decoder = FrameDecoder::new(config.max_packet);
        let read_init = async {
            loop {
                if let Some(frame) = decoder.next_packet()? {
                    return Ok(frame);
                }
                match recv.read_available(WORKER_READ_CHUNK).await? {
                    Some(data) => decoder.feed_bytes(data),
                    None => return Err(WorkerSessionError::EndedBeforeInit),
                }
            }
        };
        let init = monoio::time::timeout(config.init_timeout(), read_init)
            .await
            .map_err(|_| WorkerSessionError::InitTimeout(config.init_timeout_ms))??;
        if init.first() != Some(&SSH_FXP_INIT) {
            return Err(WorkerSessionError::NoInit);
        }
        let server = session_of(token_of(&init)?).map_err(WorkerSessionError::NotAllowed)?;
        let session = Session {
            server,
            max_read: config.max_read,
            offload,
            files: RefCell::new(HashMap::new()),
        };
        serve_session(&session, &config, decoder, &mut send, &mut recv).await
    }
    .await;
    match &res {
        Ok(()) => {
            let _ = send.finish();
            // keep the stream until the peer has it all (or stops it)
            let _ = send.stopped().await;
        }
        Err(_) => {
            let _ = send.reset(VarInt::from_u32(SESSION_ABORT_CODE));
            let _ = recv.stop(VarInt::from_u32(SESSION_ABORT_CODE));
        }
    }
    res
}

/// The session after its `INIT`: `decoder` holds whatever arrived behind it.
async fn serve_session(
    session: &Session,
    config: &SftpConfig,
    mut decoder: FrameDecoder,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), WorkerSessionError> {
    send.write_chunk(version_reply()).await?;

    let mut pipeline: Pipeline<Req, Vec<Bytes>> = Pipeline::new(config);
    let mut running: FuturesUnordered<Running<'_>> = FuturesUnordered::new();
    let mut out: Vec<Bytes> = Vec::new();
    let mut eof = false;
    let start = |job: Job<Req>| -> Running<'_> {
        let Job { req, cost, place } = job;
        let fut = session.run(req);
        Box::pin(async move {
            let reply = fut.await;
            Done { place, cost, reply }
        })
    };
    loop {
        while pipeline.may_take() {
            let Some(frame) = decoder.next_frame()? else {
                break;
            };
            // a WRITE that spanned received chunks is served from its parts; any other
            // packet in parts is joined (one copy)
            let whole = match frame {
                Frame::Parts(parts) => match decode_data_parts(&parts) {
                    Some(write) => Ok((write, parts.iter().map(Bytes::len).sum::<usize>() + 64)),
                    None => Err(Frame::Parts(parts).into_bytes()),
                },
                Frame::One(frame) => Err(frame),
            };
            let (data, c) = match whole {
                Ok((write, c)) => (Ok(write), c),
                Err(frame) => {
                    let c = cost(&frame, config.max_read);
                    (decode_data_request(&frame).ok_or(frame), c)
                }
            };
            let (req, handle) = match data {
                Ok(data) => {
                    let access = match &data {
                        DataRequest::Read { .. } => crate::sequencer::Access::Shared,
                        DataRequest::Write { handle, .. } => session.server.write_access(handle),
                    };
                    let handle = data.handle().to_string();
                    (Req::Data(data), Some((handle, access)))
                }
                Err(frame) => match decode_request(frame) {
                    Decoded::Reply(reply) => {
                        out.push(reply);
                        continue;
                    }
                    Decoded::Request(packet) => {
                        let handle = session.server.plan(&packet).handle;
                        (Req::Other(packet), handle)
                    }
                },
            };
            if let Some(job) = pipeline.admit(req, c, handle) {
                running.push(start(job));
            }
        }
        if !out.is_empty() {
            send.write_all_chunks(&mut out).await?;
            out.clear();
        }
        if eof && pipeline.outstanding() == 0 {
            return Ok(());
        }
        let may_read = !eof && pipeline.may_take();
        if running.is_empty() && !may_read {
            // every queued request waits on a running one: cannot happen
            tracing::error!("sftp: {} requests stranded", pipeline.outstanding());
            return Ok(());
        }
        enum Event {
            Done(Done<Vec<Bytes>>),
            Read(Result<Option<Bytes>, ReadError>),
        }
        let event = poll_fn(|cx| {
            if let Poll::Ready(Some(done)) = running.poll_next_unpin(cx) {
                return Poll::Ready(Event::Done(done));
            }
            if may_read {
                if let Poll::Ready(r) = recv.poll_read_available(cx, WORKER_READ_CHUNK) {
                    return Poll::Ready(Event::Read(r));
                }
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Done(done) => {
                let mut batch = vec![done];
                while let Some(Some(more)) = futures_util::FutureExt::now_or_never(running.next()) {
                    batch.push(more);
                }
                let (started, due) = pipeline.finish_all(batch);
                for job in started {
                    running.push(start(job));
                }
                for reply in due {
                    out.extend(reply);
                }
            }
            Event::Read(read) => match read? {
                Some(data) => decoder.feed_bytes(data),
                None => {
                    eof = true;
                    if decoder.buffered() > 0 {
                        tracing::debug!("sftp: stream ended inside a packet");
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WRITE's data in pieces lands in the file in order, by one `pwritev` (files in
    /// memory) or one io_uring write per piece (the others).
    #[test]
    fn pieces_are_written_in_order_both_ways() {
        let pieces: Vec<Bytes> = [&b"abc"[..], b"", b"defghij", b"k"]
            .iter()
            .map(|p| Bytes::copy_from_slice(p))
            .collect();
        for in_memory in [true, false] {
            let file = tempfile::tempfile().expect("temp file");
            let open = OpenFile::new((Arc::new(file.try_clone().expect("dup")), in_memory));
            let data = pieces.clone();
            alknet_runtime::rt::run_local(|_| async move {
                open.write_all_at(data, 5).await.expect("write");
                open.write_all_at(Vec::new(), 100)
                    .await
                    .expect("nothing to write");
            })
            .expect("runtime");
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut got).expect("read back");
            assert_eq!(got, b"\0\0\0\0\0abcdefghijk", "in_memory {in_memory}");
        }
    }
}
