//! Inbound flow control for SSH channels on top of russh.
//!
//! russh grants a channel's window back as soon as data *arrives*, not when it has been
//! consumed, so it offers no per-channel back-pressure. Its only lever is to block its
//! session loop on a full channel queue, and a blocked loop also stops the *output* of
//! every channel: `ssh host cat < big` then deadlocks (the child waits for its stdout to
//! drain, the output waits for the loop, the loop waits for the child's stdin).
//!
//! So inbound data is never left in russh's queue: each channel's pump drains it at once
//! into its own backlog, and the session's window target is what throttles the client.
//! While any channel's backlog is above `[ssh].channel_buffer` bytes, the session is
//! *congested*: [`SessionFlow::target_window`] answers russh's `adjust_window` with
//! [`TRICKLE_WINDOW`], so window adjustments shrink to a trickle and the client stops
//! within the window it already had (at most about two windows per channel). Once every
//! backlog is below half the buffer, the next adjustment restores the full window.
//! Everything else (output, the client's own window adjustments) keeps flowing. A client
//! that ignores windows altogether meets a hard cap, past which its session's loop is made
//! to wait.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The window target while congested. russh adjusts a channel's window when it falls below
/// half the target, so 2 means: only when the client's window is exhausted, and by 2 bytes.
/// Each such adjustment is also the moment russh asks again, which is how a congested
/// session notices that it no longer is. Not configurable: it is a mechanism, not a limit.
pub const TRICKLE_WINDOW: u32 = 2;

/// Congestion state of one session, shared by its handler and its channels' pumps.
#[derive(Debug, Clone)]
pub struct SessionFlow {
    congested: Arc<AtomicUsize>,
    /// Backlog bytes of one channel above which the session is congested.
    soft: usize,
    /// Backlog bytes of one channel at which its pump stops draining russh's queue.
    hard: usize,
    window: u32,
}

impl SessionFlow {
    /// `buffer`: the `[ssh].channel_buffer` bytes; `window`: the full window target.
    pub fn new(buffer: usize, window: u32) -> Self {
        // a well-behaved client sends at most about two windows after congestion starts
        let hard = buffer.saturating_add(4usize.saturating_mul(window as usize));
        Self {
            congested: Arc::new(AtomicUsize::new(0)),
            soft: buffer,
            hard,
            window,
        }
    }

    /// What russh's `adjust_window` should return: the full window, or a trickle.
    pub fn target_window(&self) -> u32 {
        if self.is_congested() {
            TRICKLE_WINDOW
        } else {
            self.window
        }
    }

    pub fn is_congested(&self) -> bool {
        self.congested.load(Ordering::Acquire) > 0
    }

    /// A backlog for one channel.
    pub fn backlog(&self) -> Backlog {
        Backlog(Arc::new(BacklogInner {
            bytes: AtomicUsize::new(0),
            congested: AtomicBool::new(false),
            below_hard: Notify::new(),
            session: self.clone(),
        }))
    }
}

/// Bytes a channel has taken from russh and not yet written to its sink.
#[derive(Debug, Clone)]
pub struct Backlog(Arc<BacklogInner>);

#[derive(Debug)]
struct BacklogInner {
    bytes: AtomicUsize,
    congested: AtomicBool,
    below_hard: Notify,
    session: SessionFlow,
}

impl Backlog {
    pub fn add(&self, n: usize) {
        let now = self
            .0
            .bytes
            .fetch_add(n, Ordering::AcqRel)
            .saturating_add(n);
        if now > self.0.session.soft && !self.0.congested.swap(true, Ordering::AcqRel) {
            self.0.session.congested.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn sub(&self, n: usize) {
        let now = self
            .0
            .bytes
            .fetch_sub(n, Ordering::AcqRel)
            .saturating_sub(n);
        // hysteresis: uncongest well below the threshold, not at every packet around it
        if now <= self.0.session.soft / 2 && self.0.congested.swap(false, Ordering::AcqRel) {
            self.0.session.congested.fetch_sub(1, Ordering::AcqRel);
        }
        if now < self.0.session.hard {
            self.0.below_hard.notify_waiters();
        }
    }

    pub fn bytes(&self) -> usize {
        self.0.bytes.load(Ordering::Acquire)
    }

    /// Waits while the backlog is at the hard cap (only a client ignoring its window gets
    /// there).
    pub async fn below_hard(&self) {
        loop {
            let notified = self.0.below_hard.notified();
            if self.bytes() < self.0.session.hard {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for BacklogInner {
    fn drop(&mut self) {
        if self.congested.load(Ordering::Acquire) {
            self.session.congested.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congestion_trickles_the_window_with_hysteresis() {
        let flow = SessionFlow::new(1000, 65536);
        assert_eq!(flow.target_window(), 65536);
        let a = flow.backlog();
        let b = flow.backlog();
        a.add(1000);
        assert!(!flow.is_congested(), "at the threshold is not above it");
        a.add(1);
        assert_eq!(flow.target_window(), TRICKLE_WINDOW);
        b.add(2000);
        a.sub(600);
        assert!(flow.is_congested(), "b is still above");
        b.sub(1400);
        assert!(flow.is_congested(), "600 is above half the buffer");
        b.sub(100);
        assert!(
            !flow.is_congested(),
            "a (401) and b (500) are both at most half"
        );
        assert_eq!(flow.target_window(), 65536);
        // a congested backlog that goes away (its channel closed) uncongests the session
        let c = flow.backlog();
        c.add(5000);
        assert!(flow.is_congested());
        drop(c);
        assert!(!flow.is_congested());
    }

    #[test]
    fn the_hard_cap_waits_until_drained() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let flow = SessionFlow::new(10, 10);
            let hard = 10 + 4 * 10;
            let b = flow.backlog();
            b.add(hard);
            let waiter = {
                let b = b.clone();
                tokio::spawn(async move { b.below_hard().await })
            };
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished());
            b.sub(1);
            waiter.await.expect("released");
        });
    }
}
