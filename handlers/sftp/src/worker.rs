//! The IO driver of one `alknet/sftp` session on the monoio worker that owns its QUIC
//! connection: no thread hop between the stream and the file system.
//!
//! * `READ` and `WRITE`, what bulk transfers are made of, go through monoio's file
//!   operations (`pread`/`pwrite` as io_uring operations on the io_uring driver; plain
//!   calls on the legacy driver). A `READ`'s data is sent as it was read, behind a
//!   separate 13-byte header, and a `WRITE`'s data is written from a slice of the
//!   received frame: no copy of the payload either way.
//! * Other requests (open, stat, readdir, rename, ...) are a few system calls each on
//!   local file systems; they run inline on the worker through [`Server::execute`], as
//!   the blocking driver runs them on a thread: `openat2` and the others have no io_uring
//!   form in monoio. A hop to another thread would cost more than the call.
//! * Requests that may take long (`copy-data`, which copies a whole range, and
//!   `fsync@openssh.com`) run on the `offload` runtime's blocking threads, so the worker's
//!   other connections are not held up.
//!
//! Ordering, limits and ends are the blocking driver's ([`crate::driver`]): the same
//! [`Pipeline`], replies as requests complete except in request order per handle, FIN on
//! a clean end, a reset otherwise.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use alknet_runtime::{BiStream, Bytes, ReadError, RecvStream, SendStream, VarInt, WriteError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use russh_sftp::protocol::{Packet, StatusCode};

use crate::config::SftpConfig;
use crate::driver::{cost, decode_data_request, decode_request, DataRequest, Decoded};
use crate::frame::{FrameDecoder, FrameError};
use crate::pipeline::{Done, Job, Pipeline};
use crate::server::{
    data_header, encode, eof_reply, io_error_reply, ok_reply, version_reply, Need, Server,
};

/// Most bytes taken from the QUIC stream at once (what has arrived, merged).
pub const WORKER_READ_CHUNK: usize = 256 * 1024;

/// Application error code of a stream reset because its session failed.
pub const SESSION_ABORT_CODE: u32 = 0x1;

const SSH_FXP_INIT: u8 = 1;

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
    /// monoio's view of the handles read or written so far (a duplicate of the server's
    /// descriptor, made on first use, dropped at `CLOSE`).
    files: RefCell<HashMap<String, Rc<monoio::fs::File>>>,
}

impl Session {
    fn file(&self, id: u32, handle: &str) -> Result<Rc<monoio::fs::File>, Bytes> {
        if let Some(f) = self.files.borrow().get(handle) {
            return Ok(f.clone());
        }
        let std = self.server.file_of(id, handle)?;
        let dup = std.try_clone().map_err(|e| io_error_reply(id, e))?;
        let file = Rc::new(monoio::fs::File::from_std(dup).map_err(|e| io_error_reply(id, e))?);
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
        // one read, as OpenSSH's sftp-server does: short only at the end of the file
        let (res, buf) = file.read_at(Vec::with_capacity(len), offset).await;
        match res {
            Ok(0) if len > 0 => Ok(vec![eof_reply(id)]),
            Ok(n) => Ok(vec![data_header(id, n), Bytes::from(buf)]),
            Err(e) => Err(vec![io_error_reply(id, e)]),
        }
    }

    async fn write(&self, id: u32, handle: &str, offset: u64, data: Bytes) -> Result<Bytes, Bytes> {
        self.server.check(id, Need::Write)?;
        let file = self.file(id, handle)?;
        let (res, _) = file.write_all_at(data, offset).await;
        res.map_err(|e| io_error_reply(id, e))?;
        Ok(ok_reply(id))
    }

    async fn other(&self, packet: Packet) -> Bytes {
        if let Packet::Close(c) = &packet {
            // CLOSE runs after every earlier request on its handle (sequencer)
            self.files.borrow_mut().remove(&c.handle);
        }
        let slow = matches!(&packet, Packet::Extended(e)
            if e.request == "copy-data" || e.request == "fsync@openssh.com");
        if !slow {
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
pub async fn serve_on_worker(
    stream: BiStream,
    server: Arc<Server>,
    config: SftpConfig,
    offload: tokio::runtime::Handle,
) -> Result<(), WorkerSessionError> {
    let BiStream { mut send, mut recv } = stream;
    let session = Session {
        server,
        max_read: config.max_read,
        offload,
        files: RefCell::new(HashMap::new()),
    };
    let res = serve_session(&session, &config, &mut send, &mut recv).await;
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

async fn serve_session(
    session: &Session,
    config: &SftpConfig,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), WorkerSessionError> {
    let mut decoder = FrameDecoder::new(config.max_packet);
    let init = loop {
        if let Some(frame) = decoder.next_packet()? {
            break frame;
        }
        match recv.read_available(WORKER_READ_CHUNK).await? {
            Some(data) => decoder.feed_bytes(data),
            None => return Err(WorkerSessionError::EndedBeforeInit),
        }
    };
    if init.first() != Some(&SSH_FXP_INIT) {
        return Err(WorkerSessionError::NoInit);
    }
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
            let Some(frame) = decoder.next_packet()? else {
                break;
            };
            let c = cost(&frame, config.max_read);
            let (req, handle) = match decode_data_request(&frame) {
                Some(data) => {
                    let access = match &data {
                        DataRequest::Read { .. } => crate::sequencer::Access::Shared,
                        DataRequest::Write { handle, .. } => session.server.write_access(handle),
                    };
                    let handle = data.handle().to_string();
                    (Req::Data(data), Some((handle, access)))
                }
                None => match decode_request(frame) {
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
