//! `flood`: a handshake flood beside a legitimate client. A flooder thread sends real QUIC
//! Initials (made by a quinn-proto client endpoint, each with its own connection ID and
//! ClientHello) from many source ports of one loopback prefix at a fixed rate and never
//! answers, as a spoofing flooder cannot. Meanwhile `rr` runs from 127.0.0.1. Reports the
//! legitimate client's p99 without and under the flood, what the server did with the
//! Initials (Retry, dropped over the prefix's rate, refused, accepted), its memory, and how
//! long Retry stayed engaged after the flood stopped.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alknet_runtime::tls::{client_crypto, ServerTrust};
use alknet_runtime::Fingerprint;

use crate::server::{rss_bytes, EngineCounters, ServerProc};

/// Distinct Initials made before the flood; replayed in turn (a replay whose connection
/// the server still holds is a duplicate to it, cheaper than a new one: the pool is large
/// enough that most are new at the rates used here).
pub const INITIAL_POOL: usize = 8192;
/// Longest the flooder runs, whatever it is asked.
pub const MAX_FLOOD: Duration = Duration::from_secs(120);
/// How long to wait for Retry to disengage after the flood before giving up (the server's
/// unanswered handshakes are closed after `[admission] handshake_timeout_ms`, 10 s by
/// default).
pub const DISENGAGE_TIMEOUT: Duration = Duration::from_secs(45);

/// Makes `n` distinct client Initials for `target` (what a real client's first datagram is).
pub fn make_initials(
    target: SocketAddr,
    fingerprint: Fingerprint,
    n: usize,
) -> Result<Vec<Vec<u8>>, String> {
    let crypto = client_crypto(
        &ServerTrust::Fingerprint(fingerprint),
        vec![alknet_echo::ALPN.to_vec()],
        None,
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(n);
    let mut buf = Vec::with_capacity(1500);
    // a fresh endpoint per batch keeps the client-side state bounded
    for batch in 0..n.div_ceil(1024) {
        let mut endpoint = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            None,
            true,
            None,
        );
        for _ in 0..(n - batch * 1024).min(1024) {
            let now = Instant::now();
            let (_, mut conn) = endpoint
                .connect(
                    now,
                    quinn_proto::ClientConfig::new(crypto.clone()),
                    target,
                    "localhost",
                )
                .map_err(|e| e.to_string())?;
            buf.clear();
            let t = conn
                .poll_transmit(now, 1, &mut buf)
                .ok_or("the client endpoint made no Initial")?;
            out.push(buf[..t.size].to_vec());
        }
    }
    Ok(out)
}

/// A running flooder thread; stops when dropped.
pub struct Flooder {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flooder {
    /// Sends `initials` in turn to `target` at `rate` per second, from `ports` sockets
    /// bound to `source` (ephemeral ports), for at most [`MAX_FLOOD`].
    pub fn start(
        initials: Vec<Vec<u8>>,
        target: SocketAddr,
        source: std::net::IpAddr,
        ports: usize,
        rate: u32,
    ) -> Result<Self, String> {
        let sockets = (0..ports.max(1))
            .map(|_| UdpSocket::bind(SocketAddr::new(source, 0)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("binding flood sockets on {source}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let thread = std::thread::Builder::new()
            .name("flooder".into())
            .spawn(move || {
                let started = Instant::now();
                let mut n: u64 = 0;
                while !stop2.load(Ordering::Relaxed) && started.elapsed() < MAX_FLOOD {
                    let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
                    while n < due && !stop2.load(Ordering::Relaxed) {
                        let i = n as usize;
                        // errors (a full socket buffer) are losses, as on a real network
                        let _ = sockets[i % sockets.len()]
                            .send_to(&initials[i % initials.len()], target);
                        n += 1;
                        // Published per datagram, not per catch-up: when the rate asked
                        // for is above what this thread can send, one catch-up lasts
                        // seconds, and a count published only at its end made the
                        // window's "sent" stale (the saturation run's 31% over-count).
                        sent2.store(n, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .map_err(|e| format!("flooder thread: {e}"))?;
        Ok(Self {
            stop,
            sent,
            thread: Some(thread),
        })
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Flooder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the server did with a phase's Initials.
pub fn describe(c: &EngineCounters) -> String {
    format!(
        "accepted {}, Retry sent {}, dropped over rate {}, refused per source {}, refused (handshakes/worker) {}, refused (capacity) {}",
        c.connections_accepted,
        c.retries_sent,
        c.refused_rate,
        c.refused_source,
        c.refused_handshakes,
        c.refused_capacity
    )
}

/// Counters of `proc` now (an error if it cannot tell).
pub fn counters(proc: &mut ServerProc) -> Result<EngineCounters, String> {
    proc.counters()
        .ok_or_else(|| "the server did not report its counters".into())
}

/// RSS of `pid` in MiB, for the report.
pub fn rss_mib(pid: u32) -> String {
    rss_bytes(pid).map_or("?".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}
