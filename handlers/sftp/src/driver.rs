//! The IO driver of one SFTP session over any tokio byte stream: reads requests, runs up
//! to `max_outstanding` of them at once (ordered per handle by the
//! [`Sequencer`](crate::sequencer::Sequencer)): on blocking threads those that may wait for
//! a device or take long ([`Server::may_wait`]),
//! the others (open, stat, close, reads and writes of files in memory, ...) at once on
//! the session's task, and writes each reply as soon as it is ready (SFTP matches replies by
//! id), except that replies on one handle keep their requests' order (see
//! `ReplyOrder`). Unlike `russh_sftp::server::run`, which awaits each
//! request before reading the next, this keeps a pipelining client (OpenSSH keeps 64
//! requests in flight) busy.
//!
//! Memory per session is bounded: the frame decoder holds at most one packet beyond what
//! was read, and reading stops while `max_outstanding` requests or `max_bytes_in_flight`
//! bytes of request and reply data are in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::stream::{FuturesUnordered, StreamExt};
use russh_sftp::protocol::{Packet, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::SftpConfig;
use crate::frame::{FrameDecoder, FrameError};
use crate::init::SSH_FXP_INIT;
use crate::pipeline::{Done, Job, Pipeline};
use crate::server::{encode, version_reply, Server};

const SSH_FXP_READ: u8 = 5;
const SSH_FXP_WRITE: u8 = 6;

/// Why a session ended other than by the client's clean end of stream.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the first packet was not SSH_FXP_INIT")]
    NoInit,
    #[error("the stream ended before SSH_FXP_INIT")]
    EndedBeforeInit,
}

/// A request decoded from a frame, or what to answer instead.
#[derive(Debug)]
pub enum Decoded {
    Request(Packet),
    /// Malformed or unknown: answer this (a status for the request's id).
    Reply(Bytes),
}

/// Decodes one request frame (type byte first). Never fails: what cannot be decoded is
/// answered with `SSH_FX_BAD_MESSAGE` (or `OP_UNSUPPORTED` for an unknown type) under the
/// request's id when it has one.
pub fn decode_request(frame: Bytes) -> Decoded {
    let kind = frame.first().copied().unwrap_or(0);
    let id = if frame.len() >= 5 {
        u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]])
    } else {
        0
    };
    let is_request = (3..=20).contains(&kind) || kind == 200;
    if !is_request {
        // replies, INIT again, unknown types: never decoded
        let msg = format!("packet type {kind} is not a request");
        return Decoded::Reply(encode(Packet::status(
            id,
            StatusCode::OpUnsupported,
            &msg,
            "en",
        )));
    }
    let mut body = frame;
    match Packet::try_from(&mut body) {
        Ok(p) => Decoded::Request(p),
        Err(e) => Decoded::Reply(encode(Packet::status(
            id,
            StatusCode::BadMessage,
            &e.to_string(),
            "en",
        ))),
    }
}

/// A `READ` or `WRITE`, decoded without copying its data: the requests a bulk transfer is
/// made of, which a driver may serve itself (the worker front, through io_uring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataRequest {
    Read {
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    },
    Write {
        id: u32,
        handle: String,
        offset: u64,
        /// Slices of the frame (one, or the parts of a frame that spanned received
        /// chunks), in order, not copied.
        data: Vec<Bytes>,
    },
}

impl DataRequest {
    pub fn id(&self) -> u32 {
        match self {
            DataRequest::Read { id, .. } | DataRequest::Write { id, .. } => *id,
        }
    }

    pub fn handle(&self) -> &str {
        match self {
            DataRequest::Read { handle, .. } | DataRequest::Write { handle, .. } => handle,
        }
    }
}

/// Decodes a `READ` or `WRITE` frame (type byte first); `None` for any other packet, or
/// one that is malformed or carries trailing bytes (left to [`decode_request`], which
/// answers it).
pub fn decode_data_request(frame: &Bytes) -> Option<DataRequest> {
    decode_data_parts(std::slice::from_ref(frame))
}

/// [`decode_data_request`] on a frame in parts ([`crate::frame::Frame::Parts`]), without
/// joining them: the fields must lie in the first part (a `WRITE`'s data may start there
/// and go on through the others). `None` also when they do not (join the parts and try
/// [`decode_data_request`]).
pub fn decode_data_parts(parts: &[Bytes]) -> Option<DataRequest> {
    let (first, rest) = parts.split_first()?;
    let kind = *first.first()?;
    if kind != SSH_FXP_READ && kind != SSH_FXP_WRITE {
        return None;
    }
    let mut b = first.slice(1..);
    let id = b.try_get_u32().ok()?;
    let hlen = b.try_get_u32().ok()? as usize;
    if b.remaining() < hlen {
        return None;
    }
    let handle = String::from_utf8(b.split_to(hlen).to_vec()).ok()?;
    let offset = b.try_get_u64().ok()?;
    if kind == SSH_FXP_READ {
        let len = b.try_get_u32().ok()?;
        return (b.is_empty() && rest.is_empty()).then_some(DataRequest::Read {
            id,
            handle,
            offset,
            len,
        });
    }
    let dlen = b.try_get_u32().ok()? as usize;
    let mut data = Vec::with_capacity(1 + rest.len());
    if !b.is_empty() {
        data.push(b);
    }
    data.extend(rest.iter().filter(|p| !p.is_empty()).cloned());
    // exactly the data, no trailing bytes
    (data.iter().map(Bytes::len).sum::<usize>() == dlen).then_some(DataRequest::Write {
        id,
        handle,
        offset,
        data,
    })
}

/// Bytes a request holds while in flight: its own data (WRITE) or its reply's (READ).
pub fn cost(frame: &Bytes, max_read: u32) -> usize {
    if frame.first() == Some(&SSH_FXP_READ) && frame.len() >= 5 {
        // id, handle string, offset, then len
        let mut b = frame.slice(5..);
        let len = b.try_get_u32().ok().map(|n| n as usize);
        if let Some(hlen) = len {
            if b.remaining() >= hlen + 12 {
                b.advance(hlen + 8);
                return b.get_u32().min(max_read) as usize + 64;
            }
        }
        return max_read as usize;
    }
    frame.len() + 64
}

type Running = Pin<Box<dyn Future<Output = Done<Bytes>> + Send>>;

/// Serves one session until the client ends its side and every request is answered
/// (then the stream is shut down: a clean end), or an error (the caller drops the stream,
/// which resets it).
pub async fn serve<S>(
    stream: S,
    server: Arc<Server>,
    config: SftpConfig,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut decoder = FrameDecoder::new(config.max_packet);

    // INIT first
    let init = loop {
        if let Some(frame) = decoder.next_packet()? {
            break frame;
        }
        if reader.read_buf(decoder.buffer()).await? == 0 {
            return Err(SessionError::EndedBeforeInit);
        }
    };
    if init.first() != Some(&SSH_FXP_INIT) {
        return Err(SessionError::NoInit);
    }
    writer.write_all(&version_reply()).await?;
    writer.flush().await?;

    let mut pipeline: Pipeline<Packet, Bytes> = Pipeline::new(&config);
    let mut running: FuturesUnordered<Running> = FuturesUnordered::new();
    let mut eof = false;
    let start = |job: Job<Packet>| -> Running {
        let Job { req, cost, place } = job;
        let id = req.get_request_id();
        let failed = move |why: &dyn std::fmt::Display| {
            tracing::error!("sftp: request {id} failed: {why}");
            encode(Packet::status(
                id,
                StatusCode::Failure,
                "internal error",
                "en",
            ))
        };
        if !server.may_wait(&req) {
            // a few system calls: cheaper here than a hop to a blocking thread and back;
            // a panic fails the request, as on a blocking thread, not the session
            let run = std::panic::AssertUnwindSafe(|| server.execute(req));
            let reply = std::panic::catch_unwind(run).unwrap_or_else(|_| failed(&"panicked"));
            return Box::pin(std::future::ready(Done { place, cost, reply }));
        }
        let server = server.clone();
        Box::pin(async move {
            let reply = tokio::task::spawn_blocking(move || server.execute(req))
                .await
                .unwrap_or_else(|e| failed(&e));
            Done { place, cost, reply }
        })
    };
    loop {
        // take buffered requests while the limits allow
        while pipeline.may_take() {
            let Some(frame) = decoder.next_packet()? else {
                break;
            };
            let c = cost(&frame, config.max_read);
            match decode_request(frame) {
                Decoded::Reply(reply) => writer.write_all(&reply).await?,
                Decoded::Request(packet) => {
                    let handle = server.plan(&packet).handle;
                    if let Some(job) = pipeline.admit(packet, c, handle) {
                        running.push(start(job));
                    }
                }
            }
        }
        if eof && pipeline.outstanding() == 0 {
            break;
        }
        let may_read = !eof && pipeline.may_take();
        tokio::select! {
            biased;
            Some(done) = running.next(), if !running.is_empty() => {
                let mut batch = vec![done];
                while let Some(Some(more)) = futures_util::FutureExt::now_or_never(running.next()) {
                    batch.push(more);
                }
                let (started, due) = pipeline.finish_all(batch);
                for job in started {
                    running.push(start(job));
                }
                for reply in due {
                    writer.write_all(&reply).await?;
                }
                writer.flush().await?;
            }
            read = reader.read_buf(decoder.buffer()), if may_read => {
                if read? == 0 {
                    eof = true;
                    if decoder.buffered() > 0 {
                        tracing::debug!("sftp: stream ended inside a packet");
                    }
                }
            }
            else => {
                // nothing running and nothing to read: only possible at eof
                if eof && pipeline.outstanding() > 0 {
                    // requests queued behind handles that never finish cannot exist:
                    // every queued request waits on a running one
                    tracing::error!("sftp: {} requests stranded", pipeline.outstanding());
                    break;
                }
            }
        }
    }
    writer.flush().await?;
    writer.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests;
