//! The standard process metrics every Prometheus client library exports (the
//! `process_*` names of Prometheus' "Writing client libraries" guide, unprefixed, so that
//! stock dashboards and alerts find them): CPU seconds, resident and virtual memory, start
//! time, open and maximum file descriptors. Read from `/proc` at scrape time; the parsing is
//! sans-IO and unit-tested.
//!
//! Cost on the worker that answers the scrape: two small files and `getrlimit`. The count
//! of open descriptors reads one directory entry per descriptor (as Go's and Python's
//! collectors do): each TCP connection is one (QUIC connections are not; one UDP socket per
//! worker), and 19 000 of them took 22–30 ms to list here, which no worker may spend between
//! its packets. [`OpenFds`] counts on a thread of its own, at most once per
//! [`OPEN_FDS_MAX_AGE`] however often `/metrics` is asked, and the scrape awaits it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
}

/// What `/proc/self/stat` gives, in the units the kernel writes (ticks, pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatFields {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Fields 14, 15, 22, 23 and 24 of `/proc/PID/stat` (proc(5)); the command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<StatFields> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state)
    let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    Some(StatFields {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// `btime` of `/proc/stat`: the boot time, seconds since the Unix epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

impl ProcessStats {
    fn from_fields(
        stat: StatFields,
        ticks_per_second: u64,
        page_size: u64,
        boot_time: u64,
    ) -> Option<Self> {
        let ticks = ticks_per_second.max(1) as f64;
        Some(Self {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_bytes: stat.rss_pages.checked_mul(page_size)?,
            virtual_bytes: stat.vsize,
            start_time_seconds: boot_time as f64 + stat.starttime as f64 / ticks,
            max_fds: None,
        })
    }

    /// This process now (its open descriptors are [`OpenFds`]' to count); `None` where
    /// `/proc` cannot be read.
    pub fn read() -> Option<Self> {
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let boot_time = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
        // SAFETY: sysconf reads configuration values; no memory is passed
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let mut stats = Self::from_fields(
            stat,
            u64::try_from(ticks).ok()?,
            u64::try_from(page).ok()?,
            boot_time,
        )?;
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
    fn reads_the_fields_after_the_command_name() {
        // a command name with spaces and a parenthesis, as a thread may set it
        let stat = "4242 (alk net) (w0)) S 1 4242 4242 0 -1 4194560 1 0 0 0 \
                    250 125 0 0 20 0 3 0 1000 123456789 2048 18446744073709551615";
        let f = parse_stat(stat).expect("parses");
        assert_eq!(
            f,
            StatFields {
                utime: 250,
                stime: 125,
                starttime: 1000,
                vsize: 123_456_789,
                rss_pages: 2048
            }
        );
        let s = ProcessStats::from_fields(f, 100, 4096, 1_700_000_000).expect("stats");
        assert_eq!(s.cpu_seconds, 3.75);
        assert_eq!(s.resident_bytes, 2048 * 4096);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        assert_eq!(parse_stat("12 (x) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn reads_boot_time() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(parse_boot_time(text), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
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
