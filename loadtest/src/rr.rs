//! `rr`: request/response on `alknet/echo`. `connections × streams` loops, each opening a
//! new bidirectional stream per request, sending `size` bytes, finishing, and reading the
//! whole echo back (one stream per request, as quinn's perf tool does).

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alknet_runtime::{Connection, ReadToEndError};
use bytes::Bytes;

use crate::harness::{run_request_slots, ClientThread, Schedule, Tally, Workload};

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
            payload: payload(size),
        }
    }
}

/// `size` bytes of request: recognisable and non-constant, so a misplaced chunk shows up
/// as a mismatch in the echo.
pub fn payload(size: usize) -> Bytes {
    (0..size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
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
        let n = self.connections.get(thread.index).copied().unwrap_or(0);
        let payload = self.payload;
        let bytes = 2 * payload.len() as u64;
        run_request_slots(
            thread,
            n,
            self.streams,
            schedule,
            ready,
            REQUEST_TIMEOUT,
            move |conn| {
                let payload = payload.clone();
                async move { request(&conn, &payload).await.map(|()| bytes) }
            },
        )
        .await
    }
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
