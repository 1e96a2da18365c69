//! `idle`: `connections` connections that do nothing; the server's resident memory per
//! connection is read from /proc before they connect and once they have settled.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use crate::harness::{ClientThread, Schedule, Tally, Workload};
use crate::rr::split;

#[derive(Debug, Clone)]
pub struct Idle {
    pub connections: Vec<usize>,
}

impl Idle {
    pub fn new(connections: usize, threads: usize) -> Self {
        Self {
            connections: split(connections, threads),
        }
    }
}

impl Workload for Idle {
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
            // hold them, untouched, until the end of the window
            monoio::time::sleep_until(monoio::time::Instant::from_std(sched.end)).await;
            tally.operations = conns.iter().filter(|c| c.close_reason().is_none()).count() as u64;
        }
        thread.close_all(conns).await;
        tally.client = thread.endpoint.stats();
        tally
    }
}
