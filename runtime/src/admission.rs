//! Admission of new connections: per-source caps and rates, decided at quinn-proto's
//! `Incoming` stage — before any TLS work, so a refused Initial costs a hash and a few
//! atomics — and per-ALPN caps, decided when the handshake completes (the ALPN is known only
//! then). The `[admission]` config section; live-reloadable
//! ([`crate::ConfigReloadHandle::set_admission`]).
//!
//! Counts are kept in one table shared by all workers, made of atomics: no lock, and
//! cross-core traffic only when a connection starts or ends, never per packet. A source's
//! count is a count-min estimate over two rows of [`SOURCE_TABLE_CELLS`] cells indexed by a
//! hash keyed at random per process (a peer cannot aim its addresses at a legitimate
//! client's cells): it can only over-estimate, and only if another heavy source collides in
//! both rows. Checks and increments are not one atomic step, so with N workers a cap can be
//! overshot by at most N - 1 connections.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::log_throttle::LogThrottle;

/// `max_connections_per_address` default: open connections from one IP address. Generous
/// (a NAT gateway or a load test shows many clients behind one address); 0 = no cap.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: u32 = 16_384;
/// `max_connections_per_prefix` default: open connections from one /24 (IPv4) or /64
/// (IPv6) — one site, one ISP customer, one host with many IPv6 addresses. 0 = no cap.
pub const DEFAULT_MAX_CONNECTIONS_PER_PREFIX: u32 = 65_536;
/// `ipv4_prefix_len` default: the IPv4 prefix that counts as one source.
pub const DEFAULT_IPV4_PREFIX_LEN: u8 = 24;
/// `ipv6_prefix_len` default: the IPv6 prefix that counts as one source (a customer's
/// subnet: one host can pick any address in it).
pub const DEFAULT_IPV6_PREFIX_LEN: u8 = 64;
/// `new_connections_per_second` default: sustained rate of new connections from one
/// prefix (a token bucket per prefix, refilled at this rate); 0 = no rate limit. Above a
/// full-speed handshake benchmark of one client (about 2 000/s per core).
pub const DEFAULT_NEW_CONNECTIONS_PER_SECOND: u32 = 20_000;
/// `new_connection_burst` default: the bucket's size, connections a prefix may open at
/// once before the rate applies.
pub const DEFAULT_NEW_CONNECTION_BURST: u32 = 40_000;
/// `max_handshakes_per_worker` default: handshakes in flight on one worker. Each holds a
/// connection's state and has cost a certificate signature; beyond this a worker refuses
/// new ones until some finish. 0 = no cap.
pub const DEFAULT_MAX_HANDSHAKES_PER_WORKER: u32 = 4_096;
/// `handshake_timeout_ms` default: a QUIC handshake not complete this long after its
/// Initial was accepted is closed with [`crate::close_code::HANDSHAKE_TIMEOUT`]. Without
/// it a half-open handshake (a flood's, or a client that vanished) holds its place until
/// `idle_timeout`, and keeps `retry = "auto"` engaged that long after a flood ends. 10 s
/// leaves a handshake over a 750 ms path with heavy loss room for its retransmissions.
/// 0 = no timeout of its own (the idle timeout applies).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Cells per row of the source table (two rows for addresses, two for prefixes, one for
/// rates): 4 × 4 KiB of counters + 32 KiB of token buckets per server, whatever the number
/// of sources.
pub const SOURCE_TABLE_CELLS: usize = 4_096;

/// `[admission]`: who may start a connection. Every field has a default (the constants
/// above); 0 turns a cap off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionLimits {
    pub max_connections_per_address: u32,
    pub max_connections_per_prefix: u32,
    pub ipv4_prefix_len: u8,
    pub ipv6_prefix_len: u8,
    pub new_connections_per_second: u32,
    pub new_connection_burst: u32,
    pub max_handshakes_per_worker: u32,
    #[serde(rename = "handshake_timeout_ms", with = "crate::limits::millis")]
    pub handshake_timeout: Duration,
    /// `max_connections_per_alpn`: open connections per service, e.g.
    /// `{ "alknet/ssh" = 1000 }`; services not named have no cap of their own. Checked
    /// when the handshake completes; over the cap the connection is closed with
    /// [`crate::close_code::ALPN_LIMIT`].
    pub max_connections_per_alpn: BTreeMap<String, usize>,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_connections_per_prefix: DEFAULT_MAX_CONNECTIONS_PER_PREFIX,
            ipv4_prefix_len: DEFAULT_IPV4_PREFIX_LEN,
            ipv6_prefix_len: DEFAULT_IPV6_PREFIX_LEN,
            new_connections_per_second: DEFAULT_NEW_CONNECTIONS_PER_SECOND,
            new_connection_burst: DEFAULT_NEW_CONNECTION_BURST,
            max_handshakes_per_worker: DEFAULT_MAX_HANDSHAKES_PER_WORKER,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections_per_alpn: BTreeMap::new(),
        }
    }
}

/// Errors in an [`AdmissionLimits`] value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmissionError {
    #[error("admission.ipv4_prefix_len must be 1 to 32, got {0}")]
    Ipv4Prefix(u8),
    #[error("admission.ipv6_prefix_len must be 1 to 128, got {0}")]
    Ipv6Prefix(u8),
    #[error(
        "admission.new_connection_burst must be at least 1 when new_connections_per_second is set"
    )]
    Burst,
    #[error("admission.max_connections_per_alpn.{0:?} must be greater than zero (leave it out for no cap)")]
    AlpnZero(String),
}

impl AdmissionLimits {
    pub fn validate(&self) -> Result<(), AdmissionError> {
        if !(1..=32).contains(&self.ipv4_prefix_len) {
            return Err(AdmissionError::Ipv4Prefix(self.ipv4_prefix_len));
        }
        if !(1..=128).contains(&self.ipv6_prefix_len) {
            return Err(AdmissionError::Ipv6Prefix(self.ipv6_prefix_len));
        }
        if self.new_connections_per_second > 0 && self.new_connection_burst == 0 {
            return Err(AdmissionError::Burst);
        }
        if let Some((alpn, _)) = self.max_connections_per_alpn.iter().find(|(_, n)| **n == 0) {
            return Err(AdmissionError::AlpnZero(alpn.clone()));
        }
        Ok(())
    }

    /// The cap of one ALPN, if it has one.
    pub(crate) fn alpn_cap(&self, alpn: &[u8]) -> Option<usize> {
        let alpn = std::str::from_utf8(alpn).ok()?;
        self.max_connections_per_alpn.get(alpn).copied()
    }
}

/// Why a new connection was not admitted. Each is counted in the worker's stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source prefix opened connections faster than `new_connections_per_second`
    /// allows: the Initial is dropped without an answer (a flood gets nothing back).
    Rate,
    /// `max_connections_per_address` open from this address: CONNECTION_REFUSED.
    Address,
    /// `max_connections_per_prefix` open from this prefix: CONNECTION_REFUSED.
    Prefix,
}

impl Refusal {
    /// Why, for logs (QUIC's refusal log and the TCP listener's alike).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Rate => "new-connection rate of its prefix",
            Refusal::Address => "connections open from its address",
            Refusal::Prefix => "connections open from its prefix",
        }
    }
}

/// The shared counts and token buckets of all sources (one per server; public for the
/// benchmarks that measure what a refused Initial costs).
pub struct SourceTable {
    hasher: std::collections::hash_map::RandomState,
    /// rows 0 and 1: addresses; rows 2 and 3: prefixes
    counts: [Box<[AtomicU32]>; 4],
    /// GCRA "theoretical arrival time" per prefix, ns since `epoch` (a token bucket in one
    /// word: admitted while it is at most the bucket's depth ahead of now); two rows, one
    /// cell of each per prefix (see [`SourceTable::rate_allows`])
    buckets: [Box<[AtomicU64]>; 2],
    epoch: Instant,
}

impl SourceTable {
    pub fn new() -> Arc<Self> {
        let row = || (0..SOURCE_TABLE_CELLS).map(|_| AtomicU32::new(0)).collect();
        Arc::new(Self {
            hasher: Default::default(),
            counts: [row(), row(), row(), row()],
            buckets: [bucket_row(), bucket_row()],
            epoch: Instant::now(),
        })
    }

    /// Two cell indices for one key (two independent halves of one keyed 64-bit hash).
    fn cells(&self, key: (u8, u128)) -> [usize; 2] {
        let h = self.hasher.hash_one(key);
        let mask = SOURCE_TABLE_CELLS as u64 - 1;
        [(h & mask) as usize, ((h >> 32) & mask) as usize]
    }

    /// Whether `remote`'s prefix may start another connection at `now` (takes a token
    /// from its bucket if so).
    ///
    /// Each prefix has a cell in each of two rows, as the counts do: it is over its rate
    /// only when both cells are, so a prefix that shares one cell with a flooding prefix
    /// (the hash is random per table) still gets its rate from the other. A token is taken
    /// from each cell that has one; a lone prefix's two cells move together.
    pub fn rate_allows(&self, limits: &AdmissionLimits, remote: IpAddr, now: Instant) -> bool {
        if limits.new_connections_per_second == 0 {
            return true;
        }
        let rate = Gcra::new(limits, self.nanos(now));
        let [a, b] = self.cells(prefix_key(remote.to_canonical(), limits));
        let first = rate.take_token(&self.buckets[0][a]);
        let second = rate.take_token(&self.buckets[1][b]);
        first || second
    }

    /// Whether `remote`'s prefix is over its rate at `now`, without taking a token: lets the
    /// worker drop a flooding prefix's Initials before decrypting them.
    pub fn over_rate(&self, limits: &AdmissionLimits, remote: IpAddr, now: Instant) -> bool {
        if limits.new_connections_per_second == 0 {
            return false;
        }
        let rate = Gcra::new(limits, self.nanos(now));
        let [a, b] = self.cells(prefix_key(remote.to_canonical(), limits));
        let over = |bucket: &AtomicU64| rate.next(bucket.load(Ordering::Relaxed)).is_none();
        over(&self.buckets[0][a]) && over(&self.buckets[1][b])
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Counts a connection from `remote` until the ticket drops, unless its address or its
    /// prefix has its cap of open connections.
    pub fn admit(
        self: &Arc<Self>,
        limits: &AdmissionLimits,
        remote: IpAddr,
    ) -> Result<SourceTicket, Refusal> {
        let remote = remote.to_canonical();
        let address = self.cells(address_key(remote));
        let prefix = self.cells(prefix_key(remote, limits));
        if over(
            &self.counts[0..2],
            address,
            limits.max_connections_per_address,
        ) {
            return Err(Refusal::Address);
        }
        if over(
            &self.counts[2..4],
            prefix,
            limits.max_connections_per_prefix,
        ) {
            return Err(Refusal::Prefix);
        }
        let cells = [address[0], address[1], prefix[0], prefix[1]];
        for (row, &cell) in self.counts.iter().zip(cells.iter()) {
            row[cell].fetch_add(1, Ordering::Relaxed);
        }
        Ok(SourceTicket {
            table: self.clone(),
            cells: cells.map(|c| c as u16),
        })
    }

    /// Open connections counted for `remote` (the count-min estimate), for tests and stats.
    #[cfg(test)]
    fn open_from(&self, remote: IpAddr) -> u32 {
        let address = self.cells(address_key(remote.to_canonical()));
        estimate(&self.counts[0..2], address)
    }
}

fn bucket_row() -> Box<[AtomicU64]> {
    (0..SOURCE_TABLE_CELLS).map(|_| AtomicU64::new(0)).collect()
}

/// GCRA at one instant: one token per `1/rate` seconds, at most `burst` saved up. A cell
/// holds its "theoretical arrival time" (ns since the table's epoch).
struct Gcra {
    /// ns per token
    interval: u64,
    /// how far ahead of now a cell may run, ns
    depth: u64,
    now: u64,
}

impl Gcra {
    fn new(limits: &AdmissionLimits, now: u64) -> Self {
        let interval = 1_000_000_000 / u64::from(limits.new_connections_per_second.max(1));
        Self {
            interval,
            depth: interval * u64::from(limits.new_connection_burst),
            now,
        }
    }

    /// The cell's time after taking a token, if it has one.
    fn next(&self, tat: u64) -> Option<u64> {
        let next = tat.max(self.now) + self.interval;
        (next - self.now <= self.depth).then_some(next)
    }

    /// Takes a token from `bucket` if it has one.
    fn take_token(&self, bucket: &AtomicU64) -> bool {
        let mut tat = bucket.load(Ordering::Relaxed);
        while let Some(next) = self.next(tat) {
            match bucket.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
        false
    }
}

fn estimate(rows: &[Box<[AtomicU32]>], cells: [usize; 2]) -> u32 {
    rows[0][cells[0]]
        .load(Ordering::Relaxed)
        .min(rows[1][cells[1]].load(Ordering::Relaxed))
}

fn over(rows: &[Box<[AtomicU32]>], cells: [usize; 2], cap: u32) -> bool {
    cap > 0 && estimate(rows, cells) >= cap
}

/// An address as a table key, tagged with its family.
fn address_key(ip: IpAddr) -> (u8, u128) {
    match ip {
        IpAddr::V4(v4) => (0, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (1, u128::from(v6)),
    }
}

/// The source prefix as a table key: the address with its host bits cleared, tagged with
/// its family (an IPv4 /24 and an IPv6 /64 never share a key, nor with an address).
fn prefix_key(ip: IpAddr, limits: &AdmissionLimits) -> (u8, u128) {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX
                .checked_shl(32 - u32::from(limits.ipv4_prefix_len))
                .unwrap_or(0);
            (2, u128::from(u32::from(v4) & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX
                .checked_shl(128 - u32::from(limits.ipv6_prefix_len))
                .unwrap_or(0);
            (3, u128::from(v6) & keep)
        }
    }
}

/// One admitted connection's place in the source counts; dropping it (when the connection
/// is gone) gives the place back.
pub struct SourceTicket {
    table: Arc<SourceTable>,
    cells: [u16; 4],
}

impl Drop for SourceTicket {
    fn drop(&mut self) {
        for (row, &cell) in self.table.counts.iter().zip(self.cells.iter()) {
            row[usize::from(cell)].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Open connections of one ALPN, shared by the workers (one atomic add each way per
/// connection, never per packet or stream).
pub(crate) struct AlpnCount {
    pub alpn: Box<[u8]>,
    pub open: AtomicUsize,
    /// Connections handed to the ALPN's handler since start (refused ones not counted).
    pub accepted: AtomicU64,
    /// Streams of this ALPN's connections since start, one slot per worker.
    pub streams: Box<[WorkerStreamCounts]>,
}

impl AlpnCount {
    pub fn new(alpn: &[u8], workers: usize) -> Self {
        Self {
            alpn: alpn.into(),
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            streams: (0..workers.max(1))
                .map(|_| WorkerStreamCounts::default())
                .collect(),
        }
    }

    /// Streams opened so far, summed over the workers.
    pub fn stream_totals(&self) -> StreamTotals {
        let mut t = StreamTotals::default();
        for w in self.streams.iter() {
            let [pb, pu, lb, lu] = &w.0;
            t.peer_bidi += pb.load(Ordering::Relaxed);
            t.peer_uni += pu.load(Ordering::Relaxed);
            t.local_bidi += lb.load(Ordering::Relaxed);
            t.local_uni += lu.load(Ordering::Relaxed);
        }
        t
    }
}

/// One worker's stream counts of one ALPN: peer-opened bidi, peer-opened uni, locally
/// opened bidi, locally opened uni. Written only by that worker's thread, so a count is
/// a plain load and store (no locked read-modify-write on the stream path); aligned so two
/// workers' slots never share a cache line.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct WorkerStreamCounts([AtomicU64; 4]);

/// Streams opened on one ALPN's connections since start (see
/// [`crate::NodeStatus::alpn_connections`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamTotals {
    /// Bidirectional streams the peers opened.
    pub peer_bidi: u64,
    /// Unidirectional streams the peers opened.
    pub peer_uni: u64,
    /// Bidirectional streams the handler opened.
    pub local_bidi: u64,
    /// Unidirectional streams the handler opened.
    pub local_uni: u64,
}

/// The counts for `registry`'s ALPNs: `old`'s where it has one (its connections are still
/// counted), new ones for the rest; `old`'s other counts are kept while connections hold
/// them.
pub(crate) fn alpn_counts(
    registry: &crate::router::AlpnRegistry,
    old: &[Arc<AlpnCount>],
    workers: usize,
) -> Vec<Arc<AlpnCount>> {
    let mut counts: Vec<Arc<AlpnCount>> = old
        .iter()
        .filter(|c| c.open.load(Ordering::Relaxed) > 0 || registry.lookup(&c.alpn).is_some())
        .cloned()
        .collect();
    for alpn in registry.alpns() {
        if !counts.iter().any(|c| *c.alpn == *alpn) {
            counts.push(Arc::new(AlpnCount::new(&alpn, workers)));
        }
    }
    counts
}

/// One connection counted against its ALPN's cap until dropped.
pub(crate) struct AlpnTicket(Arc<AlpnCount>);

impl AlpnTicket {
    /// Counts one more connection of `count`'s ALPN unless `cap` is reached.
    pub fn take(count: &Arc<AlpnCount>, cap: Option<usize>) -> Option<Self> {
        let before = count.open.fetch_add(1, Ordering::Relaxed);
        if cap.is_some_and(|cap| before >= cap) {
            count.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        count.accepted.fetch_add(1, Ordering::Relaxed);
        Some(Self(count.clone()))
    }

    /// Counts a stream of this connection, on the worker that owns it (only that
    /// worker's thread writes its slot: a load and a store, not an atomic add).
    pub fn count_stream(&self, worker: usize, local: bool, dir: quinn_proto::Dir) {
        let Some(slot) = self.0.streams.get(worker) else {
            return;
        };
        let i = usize::from(local) * 2 + usize::from(dir == quinn_proto::Dir::Uni);
        let c = &slot.0[i];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

impl Drop for AlpnTicket {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection holds from admission: given back when the worker forgets it.
#[derive(Default)]
pub(crate) struct AdmissionGuard {
    pub source: Option<SourceTicket>,
    pub alpn: Option<AlpnTicket>,
}

/// Logs refusals at most once per [`crate::log_throttle::LOG_INTERVAL`] per worker, with
/// the count of those not logged.
pub(crate) struct RefusalLog(LogThrottle);

impl RefusalLog {
    pub fn new() -> Self {
        Self(LogThrottle::new())
    }

    /// Logs this refusal unless one was logged less than the interval ago.
    pub fn refused(
        &mut self,
        now: Instant,
        worker: usize,
        remote: std::net::SocketAddr,
        why: &str,
    ) {
        if let Some(suppressed) = self.0.admit(now) {
            tracing::warn!(
                worker,
                %remote,
                also_refused_since_last_report = suppressed,
                "new connection refused: {why}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn caps_per_address_and_prefix_count_open_connections() {
        let table = SourceTable::new();
        let limits = AdmissionLimits {
            max_connections_per_address: 2,
            max_connections_per_prefix: 3,
            new_connections_per_second: 0,
            ..AdmissionLimits::default()
        };
        let a = table.admit(&limits, ip("10.0.0.1")).expect("1st");
        let b = table.admit(&limits, ip("10.0.0.1")).expect("2nd");
        assert_eq!(
            table.admit(&limits, ip("10.0.0.1")).err(),
            Some(Refusal::Address)
        );
        // the same /24: one more fits the prefix, then it is full
        let c = table.admit(&limits, ip("10.0.0.2")).expect("3rd");
        assert_eq!(
            table.admit(&limits, ip("10.0.0.3")).err(),
            Some(Refusal::Prefix)
        );
        // another /24 and IPv4-mapped IPv6 counted as IPv4
        let d = table.admit(&limits, ip("10.0.1.1")).expect("other prefix");
        assert_eq!(
            table.admit(&limits, ip("::ffff:10.0.0.9")).err(),
            Some(Refusal::Prefix)
        );
        drop(a);
        assert_eq!(table.open_from(ip("10.0.0.1")), 1);
        let e = table
            .admit(&limits, ip("10.0.0.4"))
            .expect("a place came back");
        drop((b, c, d, e));
        assert_eq!(table.open_from(ip("10.0.0.1")), 0);
        assert!(table
            .counts
            .iter()
            .all(|r| r.iter().all(|c| c.load(Ordering::Relaxed) == 0)));
    }

    #[test]
    fn ipv6_sources_are_grouped_by_their_prefix() {
        let table = SourceTable::new();
        let limits = AdmissionLimits {
            max_connections_per_prefix: 2,
            new_connections_per_second: 0,
            ..AdmissionLimits::default()
        };
        let _a = table.admit(&limits, ip("2001:db8:1:2::1")).expect("a");
        let _b = table.admit(&limits, ip("2001:db8:1:2:ffff::9")).expect("b");
        assert_eq!(
            table.admit(&limits, ip("2001:db8:1:2::77")).err(),
            Some(Refusal::Prefix)
        );
        assert!(table.admit(&limits, ip("2001:db8:1:3::1")).is_ok());
        // IPv4 0.0.0.1/24 and the IPv6 ::1/64 are different prefixes
        assert!(table.admit(&limits, ip("0.0.0.1")).is_ok());
    }

    #[test]
    fn a_prefix_sharing_one_rate_cell_with_a_flooder_keeps_its_rate() {
        let table = SourceTable::new();
        let limits = AdmissionLimits {
            new_connections_per_second: 10,
            new_connection_burst: 2,
            ..AdmissionLimits::default()
        };
        let t0 = Instant::now();
        let innocent = ip("198.51.100.1");
        let [a, b] = table.cells(prefix_key(innocent, &limits));
        // a flooding prefix hashed to the same first cell has spent it far ahead
        table.buckets[0][a].store(u64::MAX / 4, Ordering::Relaxed);
        assert!(
            !table.over_rate(&limits, innocent, t0),
            "its other cell has tokens"
        );
        assert!(table.rate_allows(&limits, innocent, t0));
        assert!(table.rate_allows(&limits, innocent, t0));
        assert!(
            !table.rate_allows(&limits, innocent, t0),
            "its own burst, no more"
        );
        assert!(table.over_rate(&limits, innocent, t0));
        // and the flooder's cell was not pushed further by the innocent's admissions
        assert_eq!(table.buckets[0][a].load(Ordering::Relaxed), u64::MAX / 4);
        // both cells spent: over, as a lone flooder is
        table.buckets[1][b].store(u64::MAX / 4, Ordering::Relaxed);
        assert!(table.over_rate(&limits, innocent, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn the_rate_is_a_token_bucket_per_prefix() {
        let table = SourceTable::new();
        let limits = AdmissionLimits {
            new_connections_per_second: 10,
            new_connection_burst: 5,
            ..AdmissionLimits::default()
        };
        let allows = |addr: &str, at: Instant| table.rate_allows(&limits, ip(addr), at);
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(allows("192.0.2.1", t0), "burst token {i}");
        }
        assert!(
            table.over_rate(&limits, ip("192.0.2.9"), t0),
            "peeking says so"
        );
        assert!(
            !allows("192.0.2.7", t0),
            "the burst is spent for the whole /24"
        );
        assert!(
            allows("198.51.100.1", t0),
            "other prefixes are not affected"
        );
        // 100 ms later one token is back, and only one (peeking takes none)
        let t1 = t0 + Duration::from_millis(100);
        assert!(!table.over_rate(&limits, ip("192.0.2.1"), t1));
        assert!(!table.over_rate(&limits, ip("192.0.2.1"), t1));
        assert!(allows("192.0.2.1", t1));
        assert!(!allows("192.0.2.1", t1));
        // after a long pause the bucket is full again, not fuller
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(allows("192.0.2.1", t2), "refilled");
        }
        assert!(!allows("192.0.2.1", t2));
        let off = AdmissionLimits {
            new_connections_per_second: 0,
            ..limits.clone()
        };
        assert!(
            table.rate_allows(&off, ip("192.0.2.1"), t2),
            "0 turns the rate off"
        );
    }

    #[test]
    fn alpn_tickets_cap_and_give_back() {
        let count = Arc::new(AlpnCount::new(b"alknet/ssh", 2));
        let a = AlpnTicket::take(&count, Some(2)).expect("1");
        let _b = AlpnTicket::take(&count, Some(2)).expect("2");
        assert!(AlpnTicket::take(&count, Some(2)).is_none());
        assert_eq!(count.open.load(Ordering::Relaxed), 2);
        drop(a);
        assert!(AlpnTicket::take(&count, Some(2)).is_some());
        assert!(AlpnTicket::take(&count, None).is_some());
        // the refused one is not counted as accepted
        assert_eq!(count.accepted.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn streams_are_counted_per_worker_and_summed() {
        let count = Arc::new(AlpnCount::new(b"perf", 2));
        let t = AlpnTicket::take(&count, None).expect("ticket");
        t.count_stream(0, false, quinn_proto::Dir::Bi);
        t.count_stream(1, false, quinn_proto::Dir::Bi);
        t.count_stream(1, false, quinn_proto::Dir::Uni);
        t.count_stream(0, true, quinn_proto::Dir::Uni);
        t.count_stream(1, true, quinn_proto::Dir::Bi);
        t.count_stream(7, true, quinn_proto::Dir::Bi); // no such worker: ignored
        assert_eq!(
            count.stream_totals(),
            StreamTotals {
                peer_bidi: 2,
                peer_uni: 1,
                local_bidi: 1,
                local_uni: 1
            }
        );
        assert_eq!(std::mem::align_of::<WorkerStreamCounts>(), 128);
    }

    #[test]
    fn parses_and_validates() {
        let l: AdmissionLimits = toml::from_str(
            "max_connections_per_address = 8\nnew_connections_per_second = 0\n[max_connections_per_alpn]\n\"alknet/ssh\" = 100",
        )
        .expect("parses");
        assert_eq!(l.max_connections_per_address, 8);
        assert_eq!(l.alpn_cap(b"alknet/ssh"), Some(100));
        assert_eq!(l.alpn_cap(b"h3"), None);
        assert_eq!(l.validate(), Ok(()));
        assert_eq!(AdmissionLimits::default().validate(), Ok(()));
        let bad = AdmissionLimits {
            ipv6_prefix_len: 129,
            ..AdmissionLimits::default()
        };
        assert_eq!(bad.validate(), Err(AdmissionError::Ipv6Prefix(129)));
        assert!(toml::from_str::<AdmissionLimits>("max_connections_per_adress = 1").is_err());
    }
}
