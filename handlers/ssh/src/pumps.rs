//! Moving bytes between SSH channels and local byte sources/sinks (child pipes, a pty
//! master, TCP sockets), with back-pressure both ways.
//!
//! Inbound, [`pump_input`] drains russh's per-channel queue into a backlog and writes it
//! to the sink; a growing backlog throttles the client through the SSH window (see
//! [`crate::flow`]). Outbound, [`pump_output`] sends as the peer's channel window allows.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use alknet_runtime::pipe::RingPipe;
use bytes::{Bytes, BytesMut};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::flow::Backlog;

/// Bytes read from a local source at once; at most one SSH packet's worth is sent at a
/// time anyway (russh splits by the peer's maximum packet size).
pub const OUTPUT_CHUNK: usize = 32 * 1024;

/// What to do with the sink when the client sends EOF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnEof {
    /// Close it (a pipe's EOF, a TCP half-close).
    Close,
    /// Leave it (a pty master: closing it would hang up the terminal).
    Keep,
}

/// Copies a channel's data into `sink` until the client's EOF or close (or the session
/// ends). russh's queue is drained at once into `backlog` (see [`crate::flow`]) while a
/// second half writes the backlog to the sink, so a slow sink throttles the client's
/// window instead of stalling the session. A sink that fails (the child stopped reading)
/// is dropped and the rest of the data discarded; a close without EOF discards the rest.
pub async fn pump_input<W>(
    mut read: ChannelReadHalf,
    sink: Option<W>,
    on_eof: OnEof,
    backlog: Backlog,
) where
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<Bytes>>();
    let aborted = AtomicBool::new(false);
    let (aborted, backlog) = (&aborted, &backlog);
    // `tx` moves into the reader: its end is the writer's end of input
    let reader = async move {
        loop {
            backlog.below_hard().await;
            match read.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    backlog.add(data.len());
                    if tx.send(Some(data)).is_err() {
                        return;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = tx.send(None);
                    return;
                }
                Some(ChannelMsg::Close) | None => {
                    aborted.store(true, Ordering::Release);
                    return;
                }
                // requests are answered by the session handler; nothing else carries data
                Some(_) => {}
            }
        }
    };
    let writer = async {
        let mut sink = sink;
        while let Some(item) = rx.recv().await {
            match item {
                Some(data) => {
                    if let Some(w) = sink.as_mut() {
                        if aborted.load(Ordering::Acquire) {
                            sink = None;
                        } else if let Err(e) = w.write_all(&data).await {
                            tracing::debug!("ssh channel input: sink closed: {e}");
                            sink = None;
                        }
                    }
                    backlog.sub(data.len());
                }
                None => {
                    if on_eof == OnEof::Close {
                        if let Some(mut w) = sink.take() {
                            let _ = w.shutdown().await;
                        }
                    }
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

/// Copies `source` to the channel (as extended data `ext` when given) until EOF; returns
/// the byte count. A pty master reports the end of its terminal as EIO: that is EOF too.
pub async fn pump_output<R>(
    mut source: R,
    write: &ChannelWriteHalf<Msg>,
    ext: Option<u32>,
) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(OUTPUT_CHUNK);
    let mut total = 0u64;
    loop {
        buf.reserve(OUTPUT_CHUNK);
        let n = match source.read_buf(&mut buf).await {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        send_output(write, ext, buf.split().freeze()).await?;
    }
}

/// [`pump_output`] for a pipe read with io_uring on the worker ([`RingPipe`]): the
/// command's output wakes the session's own thread, where the tokio reactor's thread
/// would have woken it from another.
pub async fn pump_output_ring(
    mut source: RingPipe,
    write: &ChannelWriteHalf<Msg>,
    ext: Option<u32>,
) -> io::Result<u64> {
    let mut total = 0u64;
    while let Some(chunk) = source.read_chunk().await? {
        total += chunk.len() as u64;
        send_output(write, ext, chunk).await?;
    }
    Ok(total)
}

/// Sends one chunk of output as channel data (extended data `ext` when given), as the
/// peer's window allows.
async fn send_output(
    write: &ChannelWriteHalf<Msg>,
    ext: Option<u32>,
    chunk: Bytes,
) -> io::Result<()> {
    let sent = match ext {
        None => write.data_bytes(chunk).await,
        Some(code) => write.extended_data_bytes(code, chunk).await,
    };
    sent.map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))
}

/// Joins a channel and a connection (TCP or Unix: ssh -L, ssh -R, a forwarded agent)
/// both ways, given the connection's two halves: EOF travels as EOF, and the channel is
/// closed once both directions are done.
pub async fn splice<R, W>(channel: Channel<Msg>, source: R, sink: W, backlog: Backlog)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (read, write) = channel.split();
    let inbound = pump_input(read, Some(sink), OnEof::Close, backlog);
    let outbound = async {
        match pump_output(source, &write, None).await {
            Ok(n) => tracing::trace!(bytes = n, "forwarded connection: remote end done"),
            Err(e) => tracing::debug!("forwarded connection: {e}"),
        }
        let _ = write.eof().await;
    };
    tokio::join!(inbound, outbound);
    let _ = write.close().await;
}

/// Counts a session's open channels against `[ssh].max_channels_per_session`.
#[derive(Debug, Clone)]
pub struct ChannelSlots {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One open channel; frees its slot when dropped.
#[derive(Debug)]
pub struct ChannelSlot(Arc<AtomicUsize>);

impl ChannelSlots {
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A slot, or `None` when `max` channels are open.
    pub fn try_acquire(&self) -> Option<ChannelSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| ChannelSlot(self.open.clone()))
    }

    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_freed() {
        let slots = ChannelSlots::new(2);
        let a = slots.try_acquire().expect("first");
        let _b = slots.try_acquire().expect("second");
        assert!(slots.try_acquire().is_none());
        assert_eq!(slots.open(), 2);
        drop(a);
        assert!(slots.try_acquire().is_some());
    }
}
