//! `stream-rr` and `stream-bulk`: `alknet/echo` on ONE bidirectional stream per
//! connection, the shape every transport carries (a TLS/TCP connection has exactly one
//! stream), so QUIC and TLS/TCP (`--transport tcp`) are measured doing the same thing:
//!
//! * `stream-rr`: each connection ping-pongs `--size` bytes on its stream (write them,
//!   read the echo back whole) in a closed loop for the window; one request per round trip;
//! * `stream-bulk`: each connection writes `--bytes` and reads the echo back at the same
//!   time; every byte crosses the server twice (in and out); the tally counts `--bytes`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use alknet_runtime::{RecvStream, SendStream};

use crate::harness::{
    closed_loop, cpu_over_window, thread_cpu, upload_chunks, ClientThread, Schedule, Tally,
    Workload,
};
use crate::rr::split;

/// A round trip slower than this counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub enum StreamMode {
    /// Ping-pong this many bytes per request.
    Rr { size: usize },
    /// Echo this many bytes once per connection.
    Bulk { bytes: u64 },
}

#[derive(Debug, Clone)]
pub struct StreamEcho {
    pub connections: Vec<usize>,
    pub mode: StreamMode,
}

impl StreamEcho {
    pub fn new(connections: usize, threads: usize, mode: StreamMode) -> Self {
        Self {
            connections: split(connections, threads),
            mode,
        }
    }
}

type Stream = (SendStream, RecvStream);

impl Workload for StreamEcho {
    async fn run_thread(
        self,
        thread: ClientThread,
        schedule: Arc<OnceLock<Schedule>>,
        ready: mpsc::Sender<()>,
    ) -> Tally {
        let mut tally = Tally::default();
        let n = self.connections.get(thread.index).copied().unwrap_or(0);
        let conns = thread.connect_many(n, &mut tally).await;
        let mut streams = Vec::with_capacity(conns.len());
        for c in &conns {
            match c.open_bi().await {
                Ok(s) => streams.push(s.split()),
                Err(e) => tally.error("open", || e.to_string()),
            }
        }
        let _ = ready.send(());
        let Some(sched) = crate::harness::wait_for_start(&schedule).await else {
            thread.close_all(conns).await;
            return tally;
        };
        match self.mode {
            StreamMode::Rr { size } => {
                let cpu = monoio::spawn(cpu_over_window(sched));
                let shared = Rc::new(RefCell::new(tally));
                let payload = bytes::Bytes::from(vec![0x5a; size]);
                let loops: Vec<_> = streams
                    .into_iter()
                    .map(|stream| {
                        let (shared, payload) = (shared.clone(), payload.clone());
                        // the stream is taken out for each request and put back after it:
                        // a request that times out loses it, and its loop ends
                        let slot = Rc::new(RefCell::new(Some(stream)));
                        let dead = slot.clone();
                        monoio::spawn(async move {
                            closed_loop(
                                sched,
                                shared,
                                REQUEST_TIMEOUT,
                                || dead.borrow().is_none(),
                                || {
                                    let (slot, payload) = (slot.clone(), payload.clone());
                                    async move {
                                        let Some(mut s) = slot.borrow_mut().take() else {
                                            return Err(("open", "stream lost".into()));
                                        };
                                        let r = ping(&mut s, payload).await;
                                        *slot.borrow_mut() = Some(s);
                                        r.map_err(|k| (k, "ping-pong".into()))
                                    }
                                },
                            )
                            .await
                        })
                    })
                    .collect();
                for l in loops {
                    l.await;
                }
                tally = shared.replace(Tally::default());
                tally.cpu_s = cpu.await;
            }
            StreamMode::Bulk { bytes } => {
                monoio::time::sleep_until(monoio::time::Instant::from_std(sched.measure_from))
                    .await;
                let cpu_start = thread_cpu();
                let transfers: Vec<_> = streams
                    .into_iter()
                    .map(|s| monoio::spawn(echo_all(s, bytes, sched)))
                    .collect();
                for t in transfers {
                    match t.await {
                        Ok(elapsed) => tally.record(elapsed, bytes),
                        Err(kind) => tally.error(kind, || "echo transfer failed".into()),
                    }
                }
                tally.cpu_s = (thread_cpu() - cpu_start).as_secs_f64();
            }
        }
        thread.close_all(conns).await;
        tally.client = thread.endpoint.stats();
        tally
    }
}

/// One request: `payload` out, the same number of bytes back.
async fn ping(s: &mut Stream, payload: bytes::Bytes) -> Result<u64, &'static str> {
    let len = payload.len();
    let (send, recv) = s;
    let writer = async { send.write_chunk(payload).await.map_err(|_| "write") };
    let reader = async {
        let mut got = 0;
        while got < len {
            match recv.read_chunk(len - got).await {
                Ok(Some(c)) => got += c.len(),
                Ok(None) => return Err("mismatch"),
                Err(_) => return Err("read"),
            }
        }
        Ok(())
    };
    let (w, r) = monoio::join!(writer, reader);
    w.and(r).map(|()| 2 * len as u64)
}

/// Writes `bytes` and reads the echo to its end; how long since the start.
async fn echo_all(s: Stream, bytes: u64, sched: Schedule) -> Result<Duration, &'static str> {
    let (mut send, mut recv) = s;
    let work = async {
        let writer = async {
            for chunk in upload_chunks(bytes) {
                send.write_chunk(chunk).await.map_err(|_| "write")?;
            }
            send.finish().map_err(|_| "write")
        };
        let reader = crate::harness::drain_expecting(&mut recv, bytes);
        let (w, r) = monoio::join!(writer, reader);
        w.and(r)
    };
    match monoio::time::timeout_at(monoio::time::Instant::from_std(sched.end), work).await {
        Ok(Ok(())) => Ok(Instant::now() - sched.measure_from),
        Ok(Err(kind)) => Err(kind),
        Err(_) => Err("timeout"),
    }
}
