//! `bulk`: each connection moves `bytes` one way on one stream, using the `perf` protocol
//! (both servers speak it): a download asks for `bytes` and reads them; an upload sends
//! `bytes` and asks for none. All transfers start together; throughput is the bytes moved
//! over the time until the last one finished.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use alknet_runtime::Connection;
use bytes::Bytes;

use crate::harness::{
    drain_expecting, thread_cpu, write_upload, ClientThread, Schedule, Tally, Workload,
};
use crate::rr::split;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    Download,
    Upload,
}

#[derive(Debug, Clone)]
pub struct Bulk {
    pub connections: Vec<usize>,
    pub bytes: u64,
    pub direction: Direction,
}

impl Bulk {
    pub fn new(connections: usize, threads: usize, bytes: u64, direction: Direction) -> Self {
        Self {
            connections: split(connections, threads),
            bytes,
            direction,
        }
    }
}

impl Workload for Bulk {
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
            // bulk measures until its transfers end, not over a fixed window
            monoio::time::sleep_until(monoio::time::Instant::from_std(sched.measure_from)).await;
            let cpu_start = thread_cpu();
            let transfers: Vec<_> = conns
                .iter()
                .map(|c| monoio::spawn(transfer(c.clone(), self.bytes, self.direction, sched)))
                .collect();
            for t in transfers {
                match t.await {
                    Ok(elapsed) => tally.record(elapsed, self.bytes),
                    Err(kind) => {
                        tally.error(kind, || format!("{:?} transfer failed", self.direction))
                    }
                }
            }
            tally.cpu_s = (thread_cpu() - cpu_start).as_secs_f64();
        }
        thread.close_all(conns).await;
        tally.client = thread.endpoint.stats();
        tally
    }
}

/// One perf request moving `bytes` one way; returns how long it took from the start.
async fn transfer(
    conn: Connection,
    bytes: u64,
    direction: Direction,
    sched: Schedule,
) -> Result<std::time::Duration, &'static str> {
    let deadline = monoio::time::Instant::from_std(sched.end);
    let work = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|_| "open")?.split();
        let download = if direction == Direction::Download {
            bytes
        } else {
            0
        };
        send.write_chunk(Bytes::copy_from_slice(&download.to_be_bytes()))
            .await
            .map_err(|_| "write")?;
        let writer = async {
            if direction == Direction::Upload {
                write_upload(&mut send, bytes).await?;
            }
            send.finish().map_err(|_| "write")
        };
        let reader = drain_expecting(&mut recv, download);
        let (w, r) = monoio::join!(writer, reader);
        w.and(r)
    };
    let res = monoio::time::timeout_at(deadline, work).await;
    // transport-level detail (RTT, cwnd, blocked frames) for investigating a slow transfer
    if std::env::var_os("ALKNET_LOADTEST_STATS").is_some() {
        eprintln!("{:#?}", conn.stats());
    }
    match res {
        Ok(Ok(())) => Ok(Instant::now() - sched.measure_from),
        Ok(Err(kind)) => Err(kind),
        Err(_) => Err("timeout"),
    }
}
