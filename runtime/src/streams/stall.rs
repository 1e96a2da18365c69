//! The send stall timeout of a stream (`[limits] send_stall_timeout_ms`): how long a write
//! may wait for a peer that takes no data.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Times the current wait of a stream's writer. The timer is armed when a write first has
/// to wait and dropped by the next write that moves data, so a stream whose writes never
/// wait (a request/response stream) never touches the timer wheel.
pub(crate) struct StallWatch {
    /// Zero: no limit.
    after: Duration,
    timer: Option<Pin<Box<monoio::time::Sleep>>>,
}

impl StallWatch {
    pub(crate) fn new(after: Duration) -> Self {
        Self { after, timer: None }
    }

    /// A new timeout (zero: none) for the next wait on.
    pub(crate) fn set(&mut self, after: Duration) {
        self.after = after;
        self.timer = None;
    }

    /// A write moved data (or ended): the next wait starts a new interval.
    pub(crate) fn progressed(&mut self) {
        self.timer = None;
    }

    /// A write has to wait: Ready(how long) once this wait has lasted the whole timeout.
    pub(crate) fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<Duration> {
        if self.after.is_zero() {
            return Poll::Pending;
        }
        let after = self.after;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(monoio::time::sleep(after)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timer = None;
                Poll::Ready(after)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
