//! `handshake`: new connections per second. `connections` loops per run, each connecting,
//! doing one tiny exchange on `alknet/echo` (so the handler really ran), and closing, back
//! to back. With `resumption`, the client keeps TLS sessions and resumes them.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use alknet_runtime::VarInt;

use crate::harness::{cpu_over_window, wait_for_start, ClientThread, Schedule, Tally, Workload};
use crate::rr::split;

#[derive(Debug, Clone)]
pub struct Handshake {
    /// Concurrent connect loops of each client thread.
    pub loops: Vec<usize>,
}

impl Handshake {
    pub fn new(loops: usize, threads: usize) -> Self {
        Self {
            loops: split(loops, threads),
        }
    }
}

impl Workload for Handshake {
    async fn run_thread(
        self,
        thread: ClientThread,
        schedule: Arc<OnceLock<Schedule>>,
        ready: mpsc::Sender<()>,
    ) -> Tally {
        let _ = ready.send(());
        let Some(sched) = wait_for_start(&schedule).await else {
            return Tally::default();
        };
        let cpu = monoio::spawn(cpu_over_window(sched));
        let thread = Rc::new(thread);
        let tally = Rc::new(RefCell::new(Tally::default()));
        let n = self.loops.get(thread.index).copied().unwrap_or(0);
        let loops: Vec<_> = (0..n)
            .map(|_| monoio::spawn(connect_loop(thread.clone(), sched, tally.clone())))
            .collect();
        for l in loops {
            l.await;
        }
        let mut out = tally.replace(Tally::default());
        out.cpu_s = cpu.await;
        let _ =
            monoio::time::timeout(crate::harness::CLOSE_TIMEOUT, thread.endpoint.wait_idle()).await;
        out.client = thread.endpoint.stats();
        out
    }
}

async fn connect_loop(thread: Rc<ClientThread>, sched: Schedule, tally: Rc<RefCell<Tally>>) {
    while Instant::now() < sched.end {
        let started = Instant::now();
        let mut scratch = Tally::default();
        let result = match thread.connect(&mut scratch).await {
            Some(conn) => {
                let exchange = async {
                    let (mut send, mut recv) = conn.open_bi().await.map_err(|_| "open")?.split();
                    send.write_all(PROBE).await.map_err(|_| "write")?;
                    send.finish().map_err(|_| "write")?;
                    echoed(recv.read_to_end(PROBE.len()).await.ok())
                };
                let r = exchange.await;
                conn.close(VarInt::from_u32(0), b"");
                r
            }
            None => Err("connect"),
        };
        record(&tally, sched, started, result, |kind| {
            scratch
                .first_error
                .take()
                .unwrap_or_else(|| kind.to_string())
        });
    }
}

/// The byte each handshake's exchange sends on `alknet/echo` and expects back.
pub(crate) const PROBE: &[u8] = b"!";

/// Whether the exchange read back exactly [`PROBE`] (`None`: the read failed).
pub(crate) fn echoed(read: Option<Vec<u8>>) -> Result<(), &'static str> {
    match read {
        Some(b) if b == PROBE => Ok(()),
        Some(_) => Err("mismatch"),
        None => Err("read"),
    }
}

/// Records one connect loop's iteration that began at `started` if it ended inside the
/// measured window: a handshake and its exchange, or an error of kind `kind` that `why`
/// explains.
pub(crate) fn record(
    tally: &RefCell<Tally>,
    sched: Schedule,
    started: Instant,
    result: Result<(), &'static str>,
    why: impl FnOnce(&'static str) -> String,
) {
    let done = Instant::now();
    if !sched.measuring(done) {
        return;
    }
    let mut t = tally.borrow_mut();
    match result {
        Ok(()) => {
            t.connected += 1;
            t.record(done - started, PROBE.len() as u64);
        }
        Err(kind) => t.error(kind, || why(kind)),
    }
}
