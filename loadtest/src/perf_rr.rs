//! `perf-rr`: the requests of `quinn-perf client` (`perf/src/client.rs` in the quinn
//! repository) on the `perf` ALPN, so the same bytes load Alknet's `perf` handler and the
//! baseline's. Per request, as quinn-perf does it: a new bidirectional stream, the 8-byte
//! big-endian download size, `upload` bytes written as chunks of one static buffer, FIN;
//! when it uploaded anything, wait until the server has the whole upload (`stopped`, as
//! quinn-perf waits); then read the response to FIN (not at all when it asked for none, as
//! quinn-perf). `streams` such requests are kept in flight per connection (quinn-perf's
//! `--bi-requests`).

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alknet_runtime::Connection;

use crate::harness::{
    drain_expecting, run_request_slots, write_upload, ClientThread, Schedule, Tally, Workload,
};
use crate::rr::split;

/// A request slower than this counts as an error (rather than stalling its slot).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct PerfRr {
    /// Connections of each client thread.
    pub connections: Vec<usize>,
    pub streams: usize,
    pub upload: u64,
    pub download: u64,
}

impl PerfRr {
    pub fn new(
        connections: usize,
        threads: usize,
        streams: usize,
        upload: u64,
        download: u64,
    ) -> Self {
        Self {
            connections: split(connections, threads),
            streams,
            upload,
            download,
        }
    }
}

impl Workload for PerfRr {
    async fn run_thread(
        self,
        thread: ClientThread,
        schedule: Arc<OnceLock<Schedule>>,
        ready: mpsc::Sender<()>,
    ) -> Tally {
        let n = self.connections.get(thread.index).copied().unwrap_or(0);
        let (upload, download) = (self.upload, self.download);
        run_request_slots(
            thread,
            n,
            self.streams,
            schedule,
            ready,
            REQUEST_TIMEOUT,
            move |conn| async move {
                request(&conn, upload, download)
                    .await
                    .map(|()| upload + download)
            },
        )
        .await
    }
}

/// One quinn-perf request (see the module comment).
async fn request(conn: &Connection, upload: u64, download: u64) -> Result<(), &'static str> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|_| "open")?.split();
    send.write_all(&download.to_be_bytes())
        .await
        .map_err(|_| "write")?;
    write_upload(&mut send, upload).await?;
    send.finish().map_err(|_| "write")?;
    if upload > 0 {
        send.stopped().await.map_err(|_| "write")?;
    }
    if download == 0 {
        return Ok(());
    }
    drain_expecting(&mut recv, download).await
}
