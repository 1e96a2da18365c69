//! Moving a stream's bytes between the QUIC worker and the blocking thread that runs a
//! gix-backend command.
//!
//! Reading a repository, building a pack and indexing a received one are blocking
//! filesystem and CPU work, so they never run on a worker: each command runs on its own
//! thread (`alknet-git`, at most `[git] max_processes` at once, the same bound as the
//! `git` backend's processes), and its input and output cross over bounded
//! `async_channel`s of [`Bytes`], the mechanism of `alknet-ssh`'s tokio bridge (their
//! wakers are thread-safe: the worker awaits, the thread blocks).
//!
//! ```text
//!  QUIC RecvStream ──read_chunk──▶ [CHANNEL_DEPTH] ──▶ Input: io::Read   (blocking thread)
//!  QUIC SendStream ◀─write_chunk── [CHANNEL_DEPTH] ◀── Output: io::Write
//! ```
//!
//! Back-pressure: at most [`CHANNEL_DEPTH`] chunks wait in each direction. A client that
//! reads slowly makes the thread's writes block (it builds the pack only as fast as the
//! client takes it); a full inbound channel stops the worker reading the QUIC stream, so
//! flow control reaches the peer. Nothing buffers a whole pack.
//!
//! Ends: FIN is EOF for [`Input`]; a reset is an error (`ConnectionReset`). When the
//! worker gives up on the command (the peer stopped reading, the connection went away)
//! it raises the command's interrupt flag and drops its channel ends, so the thread's
//! next read or write fails and nothing is committed.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use alknet_runtime::{Bytes, RecvStream, SendStream, VarInt};
use async_channel::{Receiver, Sender};
use bytes::BytesMut;

use crate::process::{GIT_ABORT_CODE, PUMP_CHUNK};

/// Chunks queued in each direction.
pub const CHANNEL_DEPTH: usize = 16;

/// What crosses inbound: data, or the stream's abortive end.
type Inbound = Result<Bytes, io::ErrorKind>;

/// The thread's view of the client's bytes.
pub struct Input {
    rx: Receiver<Inbound>,
    current: Bytes,
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv_blocking() {
                Ok(Ok(chunk)) => self.current = chunk,
                Ok(Err(kind)) => return Err(io::Error::new(kind, "the git stream was reset")),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// The thread's way to the client: writes collect into chunks of [`PUMP_CHUNK`] bytes,
/// sent when full and on `flush()` (which the protocol code calls whenever it waits for
/// the client).
pub struct Output {
    tx: Sender<Bytes>,
    buf: BytesMut,
}

impl Output {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .send_blocking(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for Output {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PUMP_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// How a command ended, as the thread reports it.
pub type Verdict = Result<(), String>;

/// Runs `command` on a new thread with the stream's bytes (`leftover` first), and pumps
/// between the QUIC stream and the thread until it is done. Returns whether everything
/// the thread wrote was handed to the stream, and the thread's verdict (`Err` also when
/// the peer or the connection went away first).
pub async fn run_blocking<F>(
    send: &mut SendStream,
    recv: &mut RecvStream,
    leftover: Bytes,
    command: F,
) -> (bool, Verdict)
where
    F: FnOnce(&mut Input, &mut Output, &AtomicBool) -> Verdict + Send + 'static,
{
    let (in_tx, in_rx) = async_channel::bounded::<Inbound>(CHANNEL_DEPTH);
    let (out_tx, out_rx) = async_channel::bounded::<Bytes>(CHANNEL_DEPTH);
    let (done_tx, done_rx) = async_channel::bounded::<Verdict>(1);
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    let spawned = std::thread::Builder::new()
        .name("alknet-git".into())
        .spawn(move || {
            let mut input = Input {
                rx: in_rx,
                current: Bytes::new(),
            };
            let mut output = Output {
                tx: out_tx,
                buf: BytesMut::with_capacity(PUMP_CHUNK),
            };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                command(&mut input, &mut output, &flag)
            }));
            let verdict = match ran {
                Ok(Ok(())) => output.flush().map_err(|e| e.to_string()),
                Ok(Err(e)) => {
                    let _ = output.flush();
                    Err(e)
                }
                Err(_) => Err("the git command panicked".into()),
            };
            drop(output);
            let _ = done_tx.send_blocking(verdict);
        });
    if let Err(e) = spawned {
        return (false, Err(format!("cannot start a thread: {e}")));
    }
    // raised if this future is dropped before the thread is done (connection gone)
    let mut guard = InterruptOnDrop {
        flag: interrupt,
        armed: true,
    };

    let inbound = async {
        if !leftover.is_empty() && in_tx.send(Ok(leftover)).await.is_err() {
            return std::future::pending().await;
        }
        loop {
            match recv.read_chunk(PUMP_CHUNK).await {
                Ok(Some(chunk)) => {
                    if in_tx.send(Ok(chunk)).await.is_err() {
                        // the thread stopped reading: it is done with the input
                        let _ = recv.stop(VarInt::from_u32(0));
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("git: stream read ended: {e}");
                    let _ = in_tx.send(Err(io::ErrorKind::ConnectionReset)).await;
                    break;
                }
            }
        }
        in_tx.close();
        std::future::pending::<()>().await
    };
    let outbound = async {
        loop {
            match out_rx.recv().await {
                Ok(chunk) => {
                    if send.write_chunk(chunk).await.is_err() {
                        return false;
                    }
                }
                Err(_) => return true,
            }
        }
    };
    let delivered = {
        let inbound = std::pin::pin!(inbound);
        let outbound = std::pin::pin!(outbound);
        monoio::select! {
            d = outbound => d,
            _ = inbound => false,
        }
    };
    if !delivered {
        guard.flag.store(true, Ordering::Release);
        out_rx.close();
        in_tx.close();
    }
    // the thread ends soon after its channels close: its next read or write fails
    let verdict = match done_rx.recv().await {
        Ok(v) => v,
        Err(_) => Err("the git thread ended without a verdict".into()),
    };
    guard.armed = false;
    if !delivered {
        return (
            false,
            Err(match verdict {
                Err(e) => e,
                Ok(()) => "the client stopped reading".into(),
            }),
        );
    }
    (true, verdict)
}

struct InterruptOnDrop {
    flag: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::Release);
        }
    }
}

/// Ends the stream after a command: FIN when it went to its end, whether it succeeded
/// or told the client why not (an `ERR` line, a band-3 message, an `ng` report); a reset
/// when the client or the connection went away first.
pub async fn finish(send: &mut SendStream, delivered: bool, grace: std::time::Duration) {
    if delivered {
        let _ = send.finish();
        // keep the stream until the peer has it all (bounded)
        let _ = monoio::time::timeout(grace, send.stopped()).await;
    } else {
        let _ = send.reset(VarInt::from_u32(GIT_ABORT_CODE));
    }
}
