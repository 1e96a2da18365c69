//! At most one log line per interval for one kind of event: a flood of refused
//! connections or refused sends must not turn into a flood of log lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one kind of event is logged at most (refused connections, refused sends, a
/// file system refusing SFTP writes).
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One kind of event's log budget. Shareable between threads (a `static` for a handler's
/// blocking threads) as well as held by a worker, which can then log while other parts of
/// itself are borrowed. Only error paths touch it, and a worker's own throttle is never
/// contended.
pub struct LogThrottle {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub const fn new() -> Self {
        Self {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event may be logged (`n` events were held back since the last
    /// one logged); `None` when one was logged less than [`LOG_INTERVAL`] ago.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.saturating_duration_since(t) < LOG_INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
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
