//! `rr`: request/response on `alknet/echo`. `connections × streams` loops, each opening a
//! new bidirectional stream per request, sending `size` bytes, finishing, and reading the
//! whole echo back (one stream per request, as quinn's perf tool does).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alknet_runtime::{Connection, ReadToEndError};
use bytes::Bytes;

use crate::harness::{closed_loop, cpu_over_window, ClientThread, Schedule, Tally, Workload};

/// A request slower than this counts as an error (rather than stalling its loop).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Rr {
    /// Connections of each client thread.
    pub connections: Vec<usize>,
    pub streams: usize,
    pub payload: Bytes,
}

impl Rr {
    pub fn new(connections: usize, threads: usize, streams: usize, size: usize) -> Self {
        Self {
            connections: split(connections, threads),
            streams,
            // recognisable and non-constant, so a misplaced chunk shows up as a mismatch
            payload: (0..size)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>()
                .into(),
        }
    }
}

/// An even split of `n` over `parts`, the remainder to the first parts.
pub fn split(n: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| n / parts + usize::from(i < n % parts))
        .collect()
}

impl Workload for Rr {
    async fn run_thread(
        self,
        thread: ClientThread,
        schedule: Arc<OnceLock<Schedule>>,
        ready: mpsc::Sender<()>,
    ) -> Tally {
        let mut tally = Tally::default();
        let n = self.connections.get(thread.index).copied().unwrap_or(0);
        let (conns, start) = thread
            .connect_then_start(n, &schedule, ready, &mut tally)
            .await;
        if let Some(sched) = start {
            let cpu = monoio::spawn(cpu_over_window(sched));
            let shared = Rc::new(RefCell::new(tally));
            let mut loops = Vec::new();
            for conn in &conns {
                for _ in 0..self.streams {
                    loops.push(monoio::spawn(request_loop(
                        conn.clone(),
                        self.payload.clone(),
                        sched,
                        shared.clone(),
                    )));
                }
            }
            for l in loops {
                l.await;
            }
            tally = shared.replace(Tally::default());
            tally.cpu_s = cpu.await;
        }
        thread.close_all(conns).await;
        tally.client = thread.endpoint.stats();
        tally
    }
}

/// One in-flight slot: issues requests back to back until the end of the run.
async fn request_loop(
    conn: Connection,
    payload: Bytes,
    sched: Schedule,
    tally: Rc<RefCell<Tally>>,
) {
    let bytes = 2 * payload.len() as u64;
    closed_loop(
        sched,
        tally,
        REQUEST_TIMEOUT,
        || conn.close_reason().is_some(),
        || async {
            request(&conn, &payload)
                .await
                .map(|()| bytes)
                .map_err(|kind| (kind, format!("request on {conn:?}")))
        },
    )
    .await
}

/// One request: a new stream carrying `payload`, echoed back whole. Writing and reading
/// run together so a payload larger than the windows cannot deadlock against the echo.
async fn request(conn: &Connection, payload: &Bytes) -> Result<(), &'static str> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|_| "open")?.split();
    let writer = async {
        send.write_chunk(payload.clone())
            .await
            .map_err(|_| "write")?;
        send.finish().map_err(|_| "write")
    };
    let reader = async {
        match recv.read_to_end(payload.len()).await {
            Ok(echo) if echo == payload[..] => Ok(()),
            Ok(_) | Err(ReadToEndError::TooLong(_)) => Err("mismatch"),
            Err(ReadToEndError::Read(_)) => Err("read"),
        }
    };
    let (wrote, read) = monoio::join!(writer, reader);
    wrote.and(read)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_is_even_with_remainder_first() {
        assert_eq!(split(5, 2), vec![3, 2]);
        assert_eq!(split(1, 3), vec![1, 0, 0]);
        assert_eq!(split(64, 4).iter().sum::<usize>(), 64);
    }
}
