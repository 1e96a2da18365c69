//! A process's `/proc/PID/stat` line: its CPU time, start time and memory, as the kernel
//! writes them (proc(5)). The one reader of that file in the project: `/metrics`' process
//! metrics read this process through it, the load-test harness a server it measures.

/// Fields 14, 15, 22, 23 and 24 of `/proc/PID/stat`, in the kernel's units (clock ticks,
/// bytes, pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// User-mode CPU time, in clock ticks (`_SC_CLK_TCK`).
    pub utime: u64,
    /// Kernel-mode CPU time, in clock ticks.
    pub stime: u64,
    /// When the process started, in clock ticks after boot.
    pub starttime: u64,
    /// Virtual memory size, in bytes.
    pub vsize: u64,
    /// Resident set size, in pages (`_SC_PAGESIZE`).
    pub rss_pages: u64,
}

impl ProcStat {
    /// Parses one `/proc/PID/stat` line. The command name (field 2) may hold spaces and
    /// parentheses (a thread can set it to anything), so fields are counted after its last
    /// `)`. `None` for a line that is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = &text[text.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] is field 3 (state)
        let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }

    /// Process `pid` now (`None`: the process is gone or `/proc` cannot be read).
    pub fn read(pid: u32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// This process now.
    pub fn read_self() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// User plus kernel CPU time, in seconds, at `ticks_per_second`.
    pub fn cpu_seconds_at(&self, ticks_per_second: u64) -> f64 {
        (self.utime + self.stime) as f64 / ticks_per_second.max(1) as f64
    }

    /// User plus kernel CPU time, in seconds, at this system's clock tick.
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_seconds_at(ticks_per_second())
    }

    /// When the process started, in seconds after the system booted, at a clock of
    /// `ticks_per_second` (the unit of `starttime`).
    pub fn started_after_boot_at(&self, ticks_per_second: u64) -> f64 {
        self.starttime as f64 / ticks_per_second.max(1) as f64
    }
}

/// `_SC_CLK_TCK`: the unit of `/proc`'s times (100 on Linux, whatever `HZ` is).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a configuration value; no memory is passed
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100).max(1)
}

/// `btime` of `/proc/stat`: the boot time, seconds since the Unix epoch.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_after_the_command_name() {
        // a command name with spaces and a parenthesis, as a thread may set it
        let stat = "4242 (alk net) (w0)) S 1 4242 4242 0 -1 4194560 1 0 0 0 \
                    250 125 0 0 20 0 3 0 1000 123456789 2048 18446744073709551615";
        let f = ProcStat::parse(stat).expect("parses");
        assert_eq!(
            f,
            ProcStat {
                utime: 250,
                stime: 125,
                starttime: 1000,
                vsize: 123_456_789,
                rss_pages: 2048
            }
        );
        assert_eq!(f.cpu_seconds_at(100), 3.75);
        assert_eq!(f.started_after_boot_at(100), f.starttime as f64 / 100.0);
        assert_eq!(f.started_after_boot_at(0), f.starttime as f64);
        assert_eq!(ProcStat::parse("12 (x) S 1 2"), None);
        assert_eq!(ProcStat::parse("no parenthesis"), None);
        assert_eq!(ProcStat::parse(""), None);
    }

    #[test]
    fn reads_boot_time() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(parse_boot_time(text), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[test]
    fn reads_this_process_by_pid_and_as_self() {
        // spend some CPU so the count is above zero at any tick rate
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let by_pid = ProcStat::read(std::process::id()).expect("/proc is there");
        let own = ProcStat::read_self().expect("/proc is there");
        assert!(own.rss_pages > 0 && own.vsize > 0);
        assert_eq!(by_pid.starttime, own.starttime);
        assert!(own.cpu_seconds() > 0.0);
        assert!(ProcStat::read(u32::MAX).is_none());
    }
}
