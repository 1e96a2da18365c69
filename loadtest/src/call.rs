//! `call`: request/response through the whole `alknet/call` stack (framing, JSON, registry,
//! ACL, one task per request) with the built-in `echo` operation. Each connection opens
//! one call stream and keeps `streams` calls in flight on it, multiplexed by id — how the
//! protocol is meant to be used, unlike `rr`'s one QUIC stream per request.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alknet_call::CallClient;
use serde_json::Value;

use crate::harness::{closed_loop, cpu_over_window, ClientThread, Schedule, Tally, Workload};
use crate::rr::split;

/// A call slower than this counts as an error (rather than stalling its loop).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Call {
    /// Connections of each client thread.
    pub connections: Vec<usize>,
    /// Calls in flight per connection.
    pub in_flight: usize,
    /// The echo input: a JSON string of `size` characters.
    pub input: Value,
    /// Bytes of the input string, counted each way.
    pub size: usize,
}

impl Call {
    pub fn new(connections: usize, threads: usize, in_flight: usize, size: usize) -> Self {
        let text: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        Self {
            connections: split(connections, threads),
            in_flight,
            input: Value::String(text),
            size,
        }
    }
}

impl Workload for Call {
    async fn run_thread(
        self,
        thread: ClientThread,
        schedule: Arc<OnceLock<Schedule>>,
        ready: mpsc::Sender<()>,
    ) -> Tally {
        let mut tally = Tally::default();
        let n = self.connections.get(thread.index).copied().unwrap_or(0);
        let conns = thread.connect_many(n, &mut tally).await;
        let mut clients = Vec::new();
        for conn in &conns {
            match CallClient::new(conn).await {
                Ok(c) => clients.push(c),
                Err(e) => tally.error("stream", || e.to_string()),
            }
        }
        let _ = ready.send(());
        if let Some(sched) = crate::harness::wait_for_start(&schedule).await {
            let cpu = monoio::spawn(cpu_over_window(sched));
            let shared = Rc::new(RefCell::new(tally));
            let mut loops = Vec::new();
            for client in &clients {
                for _ in 0..self.in_flight {
                    loops.push(monoio::spawn(call_loop(
                        client.clone(),
                        self.input.clone(),
                        self.size,
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
        drop(clients);
        thread.close_all(conns).await;
        tally.client = thread.endpoint.stats();
        tally
    }
}

/// One in-flight slot: calls `echo` back to back until the end of the run.
async fn call_loop(
    client: CallClient,
    input: Value,
    size: usize,
    sched: Schedule,
    tally: Rc<RefCell<Tally>>,
) {
    closed_loop(
        sched,
        tally,
        CALL_TIMEOUT,
        || client.connection().close_reason().is_some(),
        || async {
            match client.call("echo", input.clone()).await {
                Ok(out) if out == input => Ok(2 * size as u64),
                Ok(_) => Err(("mismatch", "echo returned other JSON".into())),
                Err(e) => Err(("call", e.to_string())),
            }
        },
    )
    .await
}
