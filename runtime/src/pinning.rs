//! Whether workers are pinned to cores.
//!
//! Pinning worker `i` to core `i` is right on a machine dedicated to the server: a worker
//! never migrates, its socket, connections and allocator arenas stay in one core's caches.
//! It is wrong where other busy threads share the cores (a load generator on the same box,
//! other services): a pinned worker cannot move away from a thread the scheduler put on
//! its core, so the two time-share one core while another idles. `Auto` (the default)
//! pins only when the server may assume the machine is its own: as many workers as usable
//! cores (fewer means the operator left room for other work) and no other runnable thread
//! at start-up.

use serde::Deserialize;

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
    fn reads_the_runnable_count() {
        assert_eq!(parse_runnable("0.52 0.58 0.59 3/467 12345\n"), Some(3));
        assert_eq!(parse_runnable("garbage"), None);
    }
}
