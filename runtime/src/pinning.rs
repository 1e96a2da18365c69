//! Whether workers are pinned to cores.
//!
//! Pinning worker `i` to core `i` is right on a machine dedicated to the server: a worker
//! never migrates, its socket, connections and allocator arenas stay in one core's caches.
//! It is wrong where other busy threads share the cores (a load generator on the same box,
//! other services): a pinned worker cannot move away from a thread the scheduler put on
//! its core, so the two time-share one core while another idles. `Auto` (the default)
//! pins only when the server may assume the machine is its own: as many workers as usable
//! cores (fewer means the operator left room for other work) and no other runnable thread
//! at start-up. A machine idle at start-up may be shared later (a load generator started
//! after the server, a batch job): under `Auto` each pinned worker also watches how long
//! it waits, runnable, for its core ([`ContentionWatch`]) and unpins itself when that wait
//! stays above [`PIN_MAX_WAIT_PERCENT`] of the time. `pin_workers = true` never unpins.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// How often a worker pinned by `auto` reads its run-queue wait.
pub const PIN_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Share of a check interval (in percent) a worker pinned by `auto` may spend runnable but
/// waiting for its core. On a machine of its own a worker waits for nothing but the
/// kernel's own short work; 5 % of every 250 ms for a whole second means another busy
/// thread holds the core, and a pinned worker cannot move to a core that is idle. The
/// wait does not say whose thread it was: `ksoftirqd` on the worker's core (softirq work
/// that spilled over under a packet flood) counts too, which is why `pin_workers = true`
/// exists for machines that must keep their pins.
pub const PIN_MAX_WAIT_PERCENT: u64 = 5;

/// Consecutive intervals above [`PIN_MAX_WAIT_PERCENT`] before a worker unpins: one burst
/// (a page-cache flush, a short cron job) is not a shared machine.
pub const PIN_CONTENDED_INTERVALS: u32 = 4;

/// `pin_workers` in the configuration: `true`, `false` or `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PinWorkers {
    Always(bool),
    #[default]
    Auto,
}

impl<'de> Deserialize<'de> for PinWorkers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(b) => Ok(Self::Always(b)),
            Raw::Text(s) if s == "auto" => Ok(Self::Auto),
            Raw::Text(s) => Err(serde::de::Error::custom(format!(
                "pin_workers must be true, false or \"auto\", got {s:?}"
            ))),
        }
    }
}

impl PinWorkers {
    /// Parses `true`/`1`/`yes`, `false`/`0`/`no` or `auto` (for environment variables).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "true" | "1" | "yes" => Some(Self::Always(true)),
            "false" | "0" | "no" => Some(Self::Always(false)),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    /// Whether a worker pinned under this setting watches for a shared core and unpins.
    pub fn unpins_when_contended(self) -> bool {
        self == Self::Auto
    }

    /// Decides for `workers` workers on `cores` usable cores, with `others_runnable`
    /// threads of other processes runnable right now.
    pub fn decide(self, workers: usize, cores: usize, others_runnable: usize) -> PinDecision {
        match self {
            Self::Always(true) => PinDecision::Pin("pin_workers = true"),
            Self::Always(false) => PinDecision::DontPin("pin_workers = false"),
            Self::Auto if workers < cores => PinDecision::DontPin(
                "auto: fewer workers than cores, the rest of the machine runs other work",
            ),
            Self::Auto if others_runnable > 0 => PinDecision::DontPin(
                "auto: other threads are runnable at start-up, the cores are shared",
            ),
            Self::Auto => PinDecision::Pin("auto: one worker per core and the machine is idle"),
        }
    }
}

/// The outcome and the reason logged at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinDecision {
    Pin(&'static str),
    DontPin(&'static str),
}

impl PinDecision {
    pub fn pins(&self) -> bool {
        matches!(self, Self::Pin(_))
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Self::Pin(r) | Self::DontPin(r) => r,
        }
    }
}

/// Threads runnable right now on the machine, less this one (the 4th field of
/// /proc/loadavg counts running and runnable threads, the reader included). 0 where it
/// cannot be read.
pub fn others_runnable() -> usize {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| parse_runnable(&s))
        .map_or(0, |n| n.saturating_sub(1))
}

fn parse_runnable(loadavg: &str) -> Option<usize> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// Decides, from samples of a pinned thread's run-queue wait (the second field of
/// `/proc/thread-self/schedstat`, in nanoseconds), when its core is shared. Sans-IO: the
/// caller reads the clock and the file.
#[derive(Debug)]
pub struct ContentionWatch {
    last_wait_ns: u64,
    last_at: Instant,
    contended: u32,
}

impl ContentionWatch {
    pub fn new(wait_ns: u64, now: Instant) -> Self {
        Self {
            last_wait_ns: wait_ns,
            last_at: now,
            contended: 0,
        }
    }

    /// Takes one sample; returns the wait of the interval (percent) when the thread should
    /// unpin now, `None` otherwise.
    pub fn sample(&mut self, wait_ns: u64, now: Instant) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.last_at).as_nanos();
        let waited = u128::from(wait_ns.saturating_sub(self.last_wait_ns));
        self.last_wait_ns = wait_ns;
        self.last_at = now;
        if elapsed == 0 {
            return None;
        }
        let percent = u64::try_from(waited * 100 / elapsed).unwrap_or(u64::MAX);
        if percent > PIN_MAX_WAIT_PERCENT {
            self.contended += 1;
        } else {
            self.contended = 0;
        }
        (self.contended >= PIN_CONTENDED_INTERVALS).then_some(percent)
    }
}

/// Nanoseconds the calling thread has spent runnable but waiting for a CPU, from
/// `/proc/thread-self/schedstat` (`None` where the kernel does not keep it).
pub fn thread_run_wait_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Lets the calling thread run on every core in `cores` (undoes a pin to one of them).
pub fn unpin_current(cores: &[core_affinity::CoreId]) -> bool {
    // SAFETY: cpu_set_t is plain data, zeroed is the empty set; CPU_SET writes within it
    // for ids below CPU_SETSIZE (checked), and sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for core in cores {
            if core.id < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(core.id, &mut set);
            }
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_pins_only_a_dedicated_machine() {
        assert!(PinWorkers::Auto.decide(4, 4, 0).pins());
        assert!(!PinWorkers::Auto.decide(2, 4, 0).pins());
        assert!(!PinWorkers::Auto.decide(4, 4, 1).pins());
        assert!(PinWorkers::Always(true).decide(2, 4, 3).pins());
        assert!(!PinWorkers::Always(false).decide(4, 4, 0).pins());
    }

    #[test]
    fn parses_config_and_environment_forms() {
        #[derive(Deserialize)]
        struct C {
            pin_workers: PinWorkers,
        }
        let c: C = toml::from_str("pin_workers = true").expect("bool");
        assert_eq!(c.pin_workers, PinWorkers::Always(true));
        let c: C = toml::from_str("pin_workers = \"auto\"").expect("auto");
        assert_eq!(c.pin_workers, PinWorkers::Auto);
        assert!(toml::from_str::<C>("pin_workers = \"sometimes\"").is_err());
        assert_eq!(PinWorkers::parse("0"), Some(PinWorkers::Always(false)));
        assert_eq!(PinWorkers::parse("auto"), Some(PinWorkers::Auto));
        assert_eq!(PinWorkers::parse("maybe"), None);
    }

    #[test]
    fn unpins_after_sustained_waits_only() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut w = ContentionWatch::new(1_000, t0);
        // 2 % waits: a machine of its own
        let mut wait = 1_000;
        for i in 1..=20 {
            wait += 5_000_000;
            assert_eq!(w.sample(wait, ms(250 * i)), None);
        }
        // a burst shorter than PIN_CONTENDED_INTERVALS, then quiet again
        for i in 21..(21 + u64::from(PIN_CONTENDED_INTERVALS) - 1) {
            wait += 100_000_000;
            assert_eq!(w.sample(wait, ms(250 * i)), None);
        }
        let mut t = 250 * (21 + u64::from(PIN_CONTENDED_INTERVALS) - 1);
        assert_eq!(w.sample(wait, ms(t)), None);
        // sustained 20 % waits
        for _ in 1..PIN_CONTENDED_INTERVALS {
            t += 250;
            wait += 50_000_000;
            assert_eq!(w.sample(wait, ms(t)), None);
        }
        t += 250;
        wait += 50_000_000;
        assert_eq!(w.sample(wait, ms(t)), Some(20));
        // a clock that did not move, or a counter that went back, decides nothing
        assert_eq!(w.sample(wait, ms(t)), None);
        assert_eq!(w.sample(0, ms(t + 250)), None);
    }

    #[test]
    fn reads_this_threads_wait_where_the_kernel_keeps_it() {
        if std::path::Path::new("/proc/thread-self/schedstat").exists() {
            assert!(thread_run_wait_ns().is_some());
        }
    }

    #[test]
    fn reads_the_runnable_count() {
        assert_eq!(parse_runnable("0.52 0.58 0.59 3/467 12345\n"), Some(3));
        assert_eq!(parse_runnable("garbage"), None);
    }
}
