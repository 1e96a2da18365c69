//! Per-handle ordering for a session that serves many requests at once, sans-IO.
//!
//! Requests run concurrently and are answered in completion order (SFTP matches replies
//! by id). Reads and writes at offsets on one handle may overlap each other (`pread`/
//! `pwrite`), but some requests must see the handle alone: `CLOSE` (every earlier request
//! on the handle is answered first, so "closed" means "all written"), `READDIR` (it
//! advances the directory's position) and writes in append mode. Such a request waits
//! for those before it, and the requests after it wait for it: a reader-writer queue per
//! handle, in arrival order.

use std::collections::{HashMap, VecDeque};

/// How a request uses its handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// May run beside other shared requests on the handle.
    Shared,
    /// Runs alone on the handle, after everything before it.
    Exclusive,
}

#[derive(Debug)]
struct Lane<T> {
    running: usize,
    exclusive_running: bool,
    waiting: VecDeque<(Access, T)>,
}

impl<T> Default for Lane<T> {
    fn default() -> Self {
        Self {
            running: 0,
            exclusive_running: false,
            waiting: VecDeque::new(),
        }
    }
}

/// Decides which requests may start now. `T` is the caller's request.
#[derive(Debug)]
pub struct Sequencer<T> {
    lanes: HashMap<String, Lane<T>>,
}

impl<T> Default for Sequencer<T> {
    fn default() -> Self {
        Self {
            lanes: HashMap::new(),
        }
    }
}

impl<T> Sequencer<T> {
    /// A request on `handle` arrived: `Some(req)` if it may start now (the caller must
    /// call [`Self::finish`] when it is done), `None` if it was queued.
    pub fn arrive(&mut self, handle: &str, access: Access, req: T) -> Option<T> {
        let lane = self.lanes.entry(handle.to_string()).or_default();
        let free = lane.waiting.is_empty()
            && !lane.exclusive_running
            && (access == Access::Shared || lane.running == 0);
        if free {
            lane.running += 1;
            lane.exclusive_running = access == Access::Exclusive;
            Some(req)
        } else {
            lane.waiting.push_back((access, req));
            None
        }
    }

    /// A request on `handle` that was started is done: the requests that may start now.
    pub fn finish(&mut self, handle: &str) -> Vec<T> {
        let mut ready = Vec::new();
        let Some(lane) = self.lanes.get_mut(handle) else {
            return ready;
        };
        lane.running = lane.running.saturating_sub(1);
        if lane.running == 0 {
            lane.exclusive_running = false;
        }
        while let Some((access, _)) = lane.waiting.front() {
            let startable =
                !lane.exclusive_running && (*access == Access::Shared || lane.running == 0);
            if !startable {
                break;
            }
            let Some((access, req)) = lane.waiting.pop_front() else {
                break;
            };
            lane.running += 1;
            lane.exclusive_running = access == Access::Exclusive;
            ready.push(req);
        }
        if lane.running == 0 && lane.waiting.is_empty() {
            self.lanes.remove(handle);
        }
        ready
    }

    /// Requests queued (not started) on all handles.
    pub fn waiting(&self) -> usize {
        self.lanes.values().map(|l| l.waiting.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Access::*;

    #[test]
    fn shared_requests_overlap_and_close_waits_for_them() {
        let mut s = Sequencer::default();
        assert_eq!(s.arrive("h", Shared, 1), Some(1));
        assert_eq!(s.arrive("h", Shared, 2), Some(2));
        assert_eq!(s.arrive("h", Exclusive, 3), None); // close
        assert_eq!(s.arrive("h", Shared, 4), None); // after the close: waits too
        assert_eq!(s.arrive("other", Shared, 5), Some(5)); // other handles unaffected
        assert_eq!(s.finish("h"), Vec::<i32>::new());
        assert_eq!(s.finish("h"), vec![3]);
        assert_eq!(s.waiting(), 1);
        assert_eq!(s.finish("h"), vec![4]);
        assert_eq!(s.finish("h"), Vec::<i32>::new());
        assert_eq!(s.waiting(), 0);
        assert!(s.lanes.contains_key("other"));
        s.finish("other");
        assert!(s.lanes.is_empty());
    }

    #[test]
    fn exclusive_requests_run_one_at_a_time_in_order() {
        let mut s = Sequencer::default();
        assert_eq!(s.arrive("d", Exclusive, 1), Some(1));
        assert_eq!(s.arrive("d", Exclusive, 2), None);
        assert_eq!(s.arrive("d", Shared, 3), None);
        assert_eq!(s.arrive("d", Shared, 4), None);
        assert_eq!(s.finish("d"), vec![2]);
        // both shared requests start together once the exclusive one is done
        assert_eq!(s.finish("d"), vec![3, 4]);
        // a finish for an unknown handle is harmless
        assert!(s.finish("nope").is_empty());
    }
}
