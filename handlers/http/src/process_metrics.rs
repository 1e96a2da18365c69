//! The standard process metrics every Prometheus client library exports (the
//! `process_*` names of Prometheus' "Writing client libraries" guide, unprefixed, so that
//! stock dashboards and alerts find them): CPU seconds, resident and virtual memory, start
//! time, open and maximum file descriptors. Read from `/proc` at scrape time, through the
//! runtime's one `/proc/PID/stat` parser ([`alknet_runtime::proc_stat`]).
//!
//! Cost on the worker that answers the scrape: one small file (`/proc/self/stat`) and
//! `getrlimit`; the boot time (`/proc/stat`, whose size grows with the CPUs and interrupt
//! lines of the machine, a few KB on a big server) and the page size and clock tick are
//! read once per process, as they never change. The count
//! of open descriptors reads one directory entry per descriptor (as Go's and Python's
//! collectors do): each TCP connection is one (QUIC connections are not; one UDP socket per
//! worker), and 19 000 of them took 22–30 ms to list here, which no worker may spend between
//! its packets. [`OpenFds`] counts on a thread of its own, at most once per
//! [`OPEN_FDS_MAX_AGE`] however often `/metrics` is asked, and the scrape awaits it.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use alknet_runtime::proc_stat::{parse_boot_time, ticks_per_second, ProcStat};
use futures_channel::oneshot;

/// How long one count of open descriptors answers scrapes: a count is a thread and a
/// directory listing, and a public `/metrics` may be asked by anyone, as often as they like.
pub const OPEN_FDS_MAX_AGE: Duration = Duration::from_secs(1);

/// This process's open descriptors, counted off the worker (see the module's text).
#[derive(Default)]
pub struct OpenFds {
    state: Mutex<OpenFdsState>,
}

#[derive(Default)]
struct OpenFdsState {
    last: Option<(Instant, Option<u64>)>,
    /// Scrapes waiting for the count being taken (one at a time).
    waiting: Option<Vec<oneshot::Sender<Option<u64>>>>,
}

impl std::fmt::Debug for OpenFds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFds").finish_non_exhaustive()
    }
}

impl OpenFds {
    /// The count: the last one if younger than [`OPEN_FDS_MAX_AGE`], else a new one taken on
    /// a thread (joined if one is being taken). `None` where it cannot be counted.
    pub async fn count(self: &std::sync::Arc<Self>) -> Option<u64> {
        let rx = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, n)) = state.last {
                if at.elapsed() < OPEN_FDS_MAX_AGE {
                    return n;
                }
            }
            let (tx, rx) = oneshot::channel();
            match &mut state.waiting {
                Some(waiting) => waiting.push(tx),
                None => {
                    state.waiting = Some(vec![tx]);
                    let this = self.clone();
                    let spawned = std::thread::Builder::new()
                        .name("alknet-open-fds".into())
                        // finish whatever happens: a scrape waiting on a count that
                        // never comes would wait for ever
                        .spawn(move || {
                            this.finish(std::panic::catch_unwind(count_open_fds).ok().flatten())
                        });
                    if spawned.is_err() {
                        state.waiting = None;
                        return state.last.and_then(|(_, n)| n);
                    }
                }
            }
            rx
        };
        rx.await.ok().flatten()
    }

    fn finish(&self, n: Option<u64>) {
        let waiting = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.last = Some((Instant::now(), n));
            state.waiting.take().unwrap_or_default()
        };
        for tx in waiting {
            let _ = tx.send(n);
        }
    }
}

/// Entries of `/proc/self/fd`, less the listing's own descriptor.
fn count_open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some((entries.count() as u64).saturating_sub(1))
}

/// One reading of the process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// The soft `RLIMIT_NOFILE`: where `accept` starts failing.
    pub max_fds: Option<u64>,
    /// Open descriptors, as [`OpenFds`] counted them (`None` until the caller sets it).
    pub open_fds: Option<u64>,
}

/// What a reading needs of the system and never changes while the process runs.
#[derive(Debug, Clone, Copy)]
struct SystemConstants {
    ticks_per_second: u64,
    page_size: u64,
    /// Seconds since the Unix epoch.
    boot_time: u64,
}

impl SystemConstants {
    /// Read on first use; `None` (and never retried) where `/proc/stat` cannot be read.
    fn get() -> Option<Self> {
        static CONSTANTS: OnceLock<Option<SystemConstants>> = OnceLock::new();
        *CONSTANTS.get_or_init(|| {
            let boot_time = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
            // SAFETY: sysconf reads a configuration value; no memory is passed
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            Some(Self {
                ticks_per_second: ticks_per_second(),
                page_size: u64::try_from(page).ok()?,
                boot_time,
            })
        })
    }
}

impl ProcessStats {
    fn from_fields(stat: ProcStat, system: SystemConstants) -> Option<Self> {
        Some(Self {
            cpu_seconds: stat.cpu_seconds_at(system.ticks_per_second),
            resident_bytes: stat.rss_pages.checked_mul(system.page_size)?,
            virtual_bytes: stat.vsize,
            start_time_seconds: system.boot_time as f64
                + stat.started_after_boot_at(system.ticks_per_second),
            max_fds: None,
            open_fds: None,
        })
    }

    /// This process now, less its open descriptors (the caller awaits [`OpenFds`] for
    /// those); `None` where `/proc` cannot be read.
    pub fn read() -> Option<Self> {
        let mut stats = Self::from_fields(ProcStat::read_self()?, SystemConstants::get()?)?;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the struct it is given
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            stats.max_fds = Some(limit.rlim_cur);
        }
        Some(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_ticks_and_pages() {
        let stat = ProcStat {
            utime: 250,
            stime: 125,
            starttime: 1000,
            vsize: 123_456_789,
            rss_pages: 2048,
        };
        let system = SystemConstants {
            ticks_per_second: 100,
            page_size: 4096,
            boot_time: 1_700_000_000,
        };
        let s = ProcessStats::from_fields(stat, system).expect("stats");
        assert_eq!(s.cpu_seconds, 3.75);
        assert_eq!(s.resident_bytes, 2048 * 4096);
        assert_eq!(s.virtual_bytes, 123_456_789);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        let huge = ProcStat {
            rss_pages: u64::MAX,
            ..stat
        };
        assert_eq!(ProcessStats::from_fields(huge, system), None);
    }

    #[test]
    fn reads_this_process() {
        let s = ProcessStats::read().expect("/proc is there");
        assert!(s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 86_400.0);
        assert!(s.max_fds.is_some_and(|n| n >= 3));
        assert_eq!(s.open_fds, None, "counted by OpenFds, off the reader");
        // the constants are read once: a second reading starts at the same second
        let again = ProcessStats::read().expect("/proc is there");
        assert_eq!(again.start_time_seconds, s.start_time_seconds);
        // stdin, stdout and stderr at least
        assert!(count_open_fds().is_some_and(|n| n >= 3));
    }

    #[test]
    fn open_fds_are_counted_off_the_caller_and_reused_for_a_while() {
        let fds = std::sync::Arc::new(OpenFds::default());
        let (a, b) = count_twice(&fds);
        assert!(a.is_some_and(|n| n >= 3), "{a:?}");
        // within OPEN_FDS_MAX_AGE: the same count, no new thread
        assert_eq!(a, b);
        let last = fds.state.lock().expect("lock").last.expect("a count");
        assert!(last.0.elapsed() < OPEN_FDS_MAX_AGE);
        assert!(fds.state.lock().expect("lock").waiting.is_none());
    }

    /// Two counts in a row, awaited on this thread.
    fn count_twice(fds: &std::sync::Arc<OpenFds>) -> (Option<u64>, Option<u64>) {
        let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("runtime");
        let mut rt = rt;
        rt.block_on(async { (fds.count().await, fds.count().await) })
    }
}
