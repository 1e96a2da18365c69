//! The bookkeeping of one session with many requests in flight, sans-IO, shared by both
//! drivers ([`crate::driver`] on tokio, [`crate::worker`] on the monoio worker): which
//! requests may start now ([`Sequencer`]), which replies may leave now (`ReplyOrder`),
//! and the two limits that stop the session reading (`max_outstanding` requests,
//! `max_bytes_in_flight` bytes).
//!
//! `Q` is the driver's request, `R` its encoded reply.

use std::collections::{HashMap, VecDeque};

use crate::config::SftpConfig;
use crate::sequencer::{Access, Sequencer};

/// A request admitted and allowed to start: run it, then hand its reply to
/// [`Pipeline::finish`] with `place` and `cost`.
#[derive(Debug)]
pub struct Job<Q> {
    pub req: Q,
    /// Bytes it holds while in flight (see [`crate::driver::cost`]).
    pub cost: usize,
    /// Its handle and its place in that handle's reply order.
    pub place: Option<(String, u64)>,
}

/// A job's outcome, as a driver hands it back: its [`Job`]'s place and cost, and its reply.
pub struct Done<R> {
    pub place: Option<(String, u64)>,
    pub cost: usize,
    pub reply: R,
}

/// Requests in flight on one session.
pub struct Pipeline<Q, R> {
    sequencer: Sequencer<Job<Q>>,
    order: ReplyOrder<R>,
    outstanding: usize,
    in_flight: usize,
    max_outstanding: usize,
    max_bytes_in_flight: usize,
}

impl<Q, R> Pipeline<Q, R> {
    pub fn new(config: &SftpConfig) -> Self {
        Self {
            sequencer: Sequencer::default(),
            order: ReplyOrder::default(),
            outstanding: 0,
            in_flight: 0,
            max_outstanding: config.max_outstanding,
            max_bytes_in_flight: config.max_bytes_in_flight,
        }
    }

    /// Whether another request may be taken (both limits leave room).
    pub fn may_take(&self) -> bool {
        self.outstanding < self.max_outstanding && self.in_flight < self.max_bytes_in_flight
    }

    /// Requests admitted and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Admits a request using `handle` as said (or none): the job if it may start now,
    /// `None` if it waits behind others on its handle.
    pub fn admit(
        &mut self,
        req: Q,
        cost: usize,
        handle: Option<(String, Access)>,
    ) -> Option<Job<Q>> {
        self.outstanding += 1;
        self.in_flight += cost;
        match handle {
            None => Some(Job {
                req,
                cost,
                place: None,
            }),
            Some((h, access)) => {
                let seq = self.order.reserve(&h);
                let job = Job {
                    req,
                    cost,
                    place: Some((h.clone(), seq)),
                };
                self.sequencer.arrive(&h, access, job)
            }
        }
    }

    /// A job is done with `reply`: the jobs that may start now, and the replies due (to be
    /// written now, in this order). Their requests stop counting against the limits.
    pub fn finish(
        &mut self,
        place: Option<(String, u64)>,
        cost: usize,
        reply: R,
    ) -> (Vec<Job<Q>>, Vec<R>) {
        let (started, due) = match place {
            None => (Vec::new(), vec![(reply, cost)]),
            Some((h, seq)) => (
                self.sequencer.finish(&h),
                self.order.complete(&h, seq, reply, cost),
            ),
        };
        let mut replies = Vec::with_capacity(due.len());
        for (reply, cost) in due {
            self.outstanding -= 1;
            self.in_flight -= cost;
            replies.push(reply);
        }
        (started, replies)
    }

    /// [`Pipeline::finish`] for each of `batch` in turn (the jobs that completed together):
    /// the jobs that may start now, and the replies due, in the order to write them.
    pub fn finish_all(&mut self, batch: Vec<Done<R>>) -> (Vec<Job<Q>>, Vec<R>) {
        let (mut started, mut due) = (Vec::new(), Vec::new());
        for done in batch {
            let (s, d) = self.finish(done.place, done.cost, done.reply);
            started.extend(s);
            due.extend(d);
        }
        (started, due)
    }
}

/// Replies on one handle go out in request order: the spec allows any order, but clients
/// rely on it (paramiko's pipelined writes wait for each reply in turn and lose those
/// that come early). Execution still overlaps; a reply that completes early waits here.
pub(crate) struct ReplyOrder<R> {
    next: u64,
    pub(crate) lanes: HashMap<String, VecDeque<Place<R>>>,
}

impl<R> Default for ReplyOrder<R> {
    fn default() -> Self {
        Self {
            next: 0,
            lanes: HashMap::new(),
        }
    }
}

/// A place in a handle's reply order: its number, and the reply with its cost once done.
type Place<R> = (u64, Option<(R, usize)>);

impl<R> ReplyOrder<R> {
    /// Reserves the next place on `handle`.
    pub(crate) fn reserve(&mut self, handle: &str) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.lanes
            .entry(handle.to_string())
            .or_default()
            .push_back((seq, None));
        seq
    }

    /// Fills place `seq` on `handle`; returns the replies (and their costs) now due.
    pub(crate) fn complete(
        &mut self,
        handle: &str,
        seq: u64,
        reply: R,
        cost: usize,
    ) -> Vec<(R, usize)> {
        let mut due = Vec::new();
        let Some(lane) = self.lanes.get_mut(handle) else {
            return vec![(reply, cost)];
        };
        if let Some(slot) = lane.iter_mut().find(|(s, _)| *s == seq) {
            slot.1 = Some((reply, cost));
        }
        while lane.front().is_some_and(|(_, r)| r.is_some()) {
            if let Some((_, Some(r))) = lane.pop_front() {
                due.push(r);
            }
        }
        if lane.is_empty() {
            self.lanes.remove(handle);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn replies_on_a_handle_leave_in_request_order() {
        let mut o = ReplyOrder::default();
        let a = o.reserve("h");
        let b = o.reserve("h");
        let x = o.reserve("other");
        assert!(o.complete("h", b, Bytes::from_static(b"b"), 1).is_empty());
        assert_eq!(o.complete("other", x, Bytes::from_static(b"x"), 1).len(), 1);
        let due = o.complete("h", a, Bytes::from_static(b"a"), 2);
        assert_eq!(
            due,
            vec![(Bytes::from_static(b"a"), 2), (Bytes::from_static(b"b"), 1)]
        );
        assert!(o.lanes.is_empty());
    }

    #[test]
    fn limits_count_until_the_reply_is_due() {
        let config = SftpConfig {
            max_outstanding: 2,
            ..SftpConfig::default()
        };
        let mut p: Pipeline<u32, &str> = Pipeline::new(&config);
        let a = p
            .admit(1, 10, Some(("h".into(), Access::Shared)))
            .expect("starts");
        let b = p
            .admit(2, 10, Some(("h".into(), Access::Shared)))
            .expect("starts");
        assert!(!p.may_take());
        // b completes first: its reply waits for a's, and still counts
        let (started, due) = p.finish(b.place, b.cost, "b");
        assert!(started.is_empty() && due.is_empty());
        assert_eq!(p.outstanding(), 2);
        let (_, due) = p.finish(a.place, a.cost, "a");
        assert_eq!(due, vec!["a", "b"]);
        assert_eq!(p.outstanding(), 0);
        assert!(p.may_take());
        // a close waits for the running read, then starts
        let r = p
            .admit(3, 1, Some(("h".into(), Access::Shared)))
            .expect("starts");
        assert!(p
            .admit(4, 1, Some(("h".into(), Access::Exclusive)))
            .is_none());
        let (started, due) = p.finish(r.place, r.cost, "r");
        assert_eq!(due, vec!["r"]);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].req, 4);
    }
}
