//! The standard process metrics every Prometheus client library exports (the
//! `process_*` names of Prometheus' "Writing client libraries" guide, unprefixed, so that
//! stock dashboards and alerts find them): CPU seconds, resident and virtual memory, start
//! time, open and maximum file descriptors. Read from `/proc` at scrape time; the parsing is
//! sans-IO and unit-tested.
//!
//! Cost: two small files and `getrlimit` per scrape, plus one directory entry per open file
//! descriptor for `process_open_fds` (as Go's and Python's collectors read it): each TCP
//! connection is a descriptor, QUIC connections are not (one UDP socket per worker).

/// One reading of the process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: f64,
    pub open_fds: Option<u64>,
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
            open_fds: None,
            max_fds: None,
        })
    }

    /// This process now; `None` where `/proc` cannot be read.
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
        // the directory's own descriptor, open while it is read, is one of the entries
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| (d.count() as u64).saturating_sub(1));
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
        // stdin, stdout and stderr at least
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{:?}", s.open_fds);
        assert!(s.max_fds.is_some_and(|n| n >= 3));
    }
}
