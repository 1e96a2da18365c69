//! At most one log line per interval for one kind of event: a flood of refused
//! connections or refused sends must not turn into a flood of log lines.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often a worker logs one kind of event at most (refused connections, refused sends).
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One kind of event's log budget. Interior mutability, so that a worker can log while
/// it holds other parts of itself borrowed.
pub(crate) struct LogThrottle {
    last: Cell<Option<Instant>>,
    suppressed: Cell<u64>,
}

impl LogThrottle {
    pub const fn new() -> Self {
        Self {
            last: Cell::new(None),
            suppressed: Cell::new(0),
        }
    }

    /// `Some(n)` when this event may be logged (`n` events were held back since the last
    /// one logged); `None` when one was logged less than [`LOG_INTERVAL`] ago.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        if self
            .last
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) < LOG_INTERVAL)
        {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.last.set(Some(now));
        Some(self.suppressed.replace(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_one_event_per_interval_and_counts_the_rest() {
        let t = LogThrottle::new();
        let t0 = Instant::now();
        assert_eq!(t.admit(t0), Some(0));
        assert_eq!(t.admit(t0 + Duration::from_millis(10)), None);
        assert_eq!(t.admit(t0 + LOG_INTERVAL - Duration::from_millis(1)), None);
        assert_eq!(t.admit(t0 + LOG_INTERVAL), Some(2));
        assert_eq!(t.admit(t0 + LOG_INTERVAL), None);
        assert_eq!(t.admit(t0 + 3 * LOG_INTERVAL), Some(1));
    }
}
