//! The IO driver of one SFTP session over any tokio byte stream: reads requests, runs up
//! to `max_outstanding` of them at once on blocking threads (ordered per handle by the
//! [`Sequencer`]), and writes each reply as soon as it is ready (SFTP matches replies by
//! id), except that replies on one handle keep their requests' order (see
//! [`ReplyOrder`]). Unlike `russh_sftp::server::run`, which awaits each
//! request before reading the next, this keeps a pipelining client (OpenSSH keeps 64
//! requests in flight) busy.
//!
//! Memory per session is bounded: the frame decoder holds at most one packet beyond what
//! was read, and reading stops while `max_outstanding` requests or `max_bytes_in_flight`
//! bytes of request and reply data are in flight.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::stream::{FuturesUnordered, StreamExt};
use russh_sftp::protocol::{Packet, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::SftpConfig;
use crate::frame::{FrameDecoder, FrameError};
use crate::sequencer::Sequencer;
use crate::server::{encode, version_reply, Server};

const SSH_FXP_INIT: u8 = 1;
const SSH_FXP_READ: u8 = 5;

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

/// Bytes a request holds while in flight: its own data (WRITE) or its reply's (READ).
fn cost(frame: &Bytes, max_read: u32) -> usize {
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

type Running = Pin<Box<dyn Future<Output = Done> + Send>>;

struct Done {
    /// The handle and the request's place in its reply order.
    handle: Option<(String, u64)>,
    cost: usize,
    reply: Bytes,
}

/// Replies on one handle go out in request order: the spec allows any order, but clients
/// rely on it (paramiko's pipelined writes wait for each reply in turn and lose those
/// that come early). Execution still overlaps; a reply that completes early waits here.
#[derive(Default)]
struct ReplyOrder {
    next: u64,
    lanes: HashMap<String, VecDeque<Place>>,
}

/// A place in a handle's reply order: its number, and the reply with its cost once done.
type Place = (u64, Option<(Bytes, usize)>);

impl ReplyOrder {
    /// Reserves the next place on `handle`.
    fn reserve(&mut self, handle: &str) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.lanes
            .entry(handle.to_string())
            .or_default()
            .push_back((seq, None));
        seq
    }

    /// Fills place `seq` on `handle`; returns the replies (and their costs) now due.
    fn complete(
        &mut self,
        handle: &str,
        seq: u64,
        reply: Bytes,
        cost: usize,
    ) -> Vec<(Bytes, usize)> {
        let mut due = Vec::new();
        let Some(lane) = self.lanes.get_mut(handle) else {
            return vec![(reply, cost)];
        };
        if let Some(slot) = lane.iter_mut().find(|(s, _)| *s == seq) {
            slot.1 = Some((reply, cost));
        }
        while lane.front().is_some_and(|(_, r)| r.is_some()) {
            if let Some((_, Some(r))) = lane.pop_front() {
                due.push(r);
            }
        }
        if lane.is_empty() {
            self.lanes.remove(handle);
        }
        due
    }
}

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

    let mut sequencer: Sequencer<(Packet, usize, u64)> = Sequencer::default();
    let mut order = ReplyOrder::default();
    let mut running: FuturesUnordered<Running> = FuturesUnordered::new();
    let mut outstanding = 0usize;
    let mut in_flight = 0usize;
    let mut eof = false;
    let start = |packet: Packet, cost: usize, handle: Option<(String, u64)>| -> Running {
        let server = server.clone();
        Box::pin(async move {
            let id = packet.get_request_id();
            let reply = tokio::task::spawn_blocking(move || server.execute(packet))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!("sftp: request {id} failed: {e}");
                    encode(Packet::status(
                        id,
                        StatusCode::Failure,
                        "internal error",
                        "en",
                    ))
                });
            Done {
                handle,
                cost,
                reply,
            }
        })
    };
    loop {
        // take buffered requests while the limits allow
        while outstanding < config.max_outstanding && in_flight < config.max_bytes_in_flight {
            let Some(frame) = decoder.next_packet()? else {
                break;
            };
            let c = cost(&frame, config.max_read);
            match decode_request(frame) {
                Decoded::Reply(reply) => writer.write_all(&reply).await?,
                Decoded::Request(packet) => {
                    outstanding += 1;
                    in_flight += c;
                    let plan = server.plan(&packet);
                    match plan.handle {
                        None => running.push(start(packet, c, None)),
                        Some((h, access)) => {
                            let seq = order.reserve(&h);
                            if let Some((p, c, seq)) =
                                sequencer.arrive(&h, access, (packet, c, seq))
                            {
                                running.push(start(p, c, Some((h, seq))));
                            }
                        }
                    }
                }
            }
        }
        if eof && outstanding == 0 {
            break;
        }
        let may_read =
            !eof && outstanding < config.max_outstanding && in_flight < config.max_bytes_in_flight;
        tokio::select! {
            biased;
            Some(done) = running.next(), if !running.is_empty() => {
                let mut batch = vec![done];
                while let Some(Some(more)) = futures_util::FutureExt::now_or_never(running.next()) {
                    batch.push(more);
                }
                for done in batch {
                    let due = match done.handle {
                        None => vec![(done.reply, done.cost)],
                        Some((h, seq)) => {
                            for (p, c, seq) in sequencer.finish(&h) {
                                running.push(start(p, c, Some((h.clone(), seq))));
                            }
                            order.complete(&h, seq, done.reply, done.cost)
                        }
                    };
                    for (reply, cost) in due {
                        writer.write_all(&reply).await?;
                        outstanding -= 1;
                        in_flight -= cost;
                    }
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
                if eof && outstanding > 0 {
                    // requests queued behind handles that never finish cannot exist:
                    // every queued request waits on a running one
                    tracing::error!("sftp: {outstanding} requests stranded");
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
