//! HTTP requests answered, by route pattern, status and protocol, counted with no shared
//! lock and no shared atomic on the request path.
//!
//! Requests are served by every worker at once. A `prometheus-client` `Family` takes a
//! read lock on one map and adds to one atomic per request, so each request moved two
//! cache lines between cores. Here each thread counts into counters of its own, found
//! through a thread-local index (no lock) and bumped with a plain load and store (one
//! writer per counter); the list of every thread's counters is locked only when a thread
//! meets a label set for the first time and when a scrape sums them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The labels of one counter: the route pattern (never the raw path, so a peer cannot
/// grow the set), the status and the protocol (`"HTTP/1.1"`, `"HTTP/2"`, `"HTTP/3"`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestKey {
    pub route: String,
    pub status: u16,
    pub protocol: &'static str,
}

/// One thread's counter for one label set: written by that thread only.
type ThreadCounter = Arc<AtomicU64>;

/// Every thread's counters of one [`RequestCounts`] (the scrape's view).
struct Registered {
    /// Names this instance in the threads' indexes (an address could be reused).
    id: u64,
    counters: Mutex<Vec<(RequestKey, ThreadCounter)>>,
}

/// Request counters shared by the clones of one [`crate::HttpMetrics`] (a reloaded state
/// keeps counting into the same ones).
#[derive(Clone)]
pub struct RequestCounts(Arc<Registered>);

impl Default for RequestCounts {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self(Arc::new(Registered {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            counters: Mutex::new(Vec::new()),
        }))
    }
}

/// Per thread: each `RequestCounts` (by id) → route → this thread's counters by
/// (status, protocol). Looked up by `&str`, so counting allocates nothing once a label
/// set has been seen on this thread.
type ThreadIndex = HashMap<u64, HashMap<String, Vec<(u16, &'static str, ThreadCounter)>>>;

thread_local! {
    static INDEX: RefCell<ThreadIndex> = RefCell::new(HashMap::new());
}

impl RequestCounts {
    /// Counts one answered request.
    pub fn count(&self, route: &str, status: u16, protocol: &'static str) {
        let id = self.0.id;
        INDEX.with(|index| {
            let mut index = index.borrow_mut();
            let routes = index.entry(id).or_default();
            if let Some(list) = routes.get(route) {
                if let Some((_, _, c)) =
                    list.iter().find(|(s, p, _)| *s == status && *p == protocol)
                {
                    // the only writer of this counter: no read-modify-write needed
                    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                    return;
                }
            }
            let counter: ThreadCounter = Arc::new(AtomicU64::new(1));
            self.0
                .counters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((
                    RequestKey {
                        route: route.to_owned(),
                        status,
                        protocol,
                    },
                    counter.clone(),
                ));
            routes
                .entry(route.to_owned())
                .or_default()
                .push((status, protocol, counter));
        });
    }

    /// Every label set seen, with its count summed over the threads, in label order.
    pub fn snapshot(&self) -> Vec<(RequestKey, u64)> {
        let mut sums: std::collections::BTreeMap<RequestKey, u64> = Default::default();
        let counters = self
            .0
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, c) in counters.iter() {
            *sums.entry(key.clone()).or_default() += c.load(Ordering::Relaxed);
        }
        sums.into_iter().collect()
    }

    /// Every request counted, summed (the dashboard's request rate).
    pub fn total(&self) -> u64 {
        self.0
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(route: &str, status: u16, protocol: &'static str) -> RequestKey {
        RequestKey {
            route: route.into(),
            status,
            protocol,
        }
    }

    #[test]
    fn counts_from_several_threads_are_summed_per_label_set() {
        let counts = RequestCounts::default();
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let counts = counts.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counts.count("/health", 200, "HTTP/2");
                    }
                    counts.count("/health", 503, "HTTP/2");
                    counts.count("/metrics", 200, "HTTP/1.1");
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        counts.count("/health", 200, "HTTP/3");
        assert_eq!(
            counts.snapshot(),
            vec![
                (key("/health", 200, "HTTP/2"), 3000),
                (key("/health", 200, "HTTP/3"), 1),
                (key("/health", 503, "HTTP/2"), 3),
                (key("/metrics", 200, "HTTP/1.1"), 3),
            ]
        );
        assert_eq!(counts.total(), 3007);
    }

    #[test]
    fn separate_instances_count_apart_and_clones_together() {
        let a = RequestCounts::default();
        let b = RequestCounts::default();
        let a2 = a.clone();
        a.count("/x", 200, "HTTP/2");
        a2.count("/x", 200, "HTTP/2");
        b.count("/x", 200, "HTTP/2");
        assert_eq!(a.total(), 2);
        assert_eq!(b.total(), 1);
        assert_eq!(a.snapshot(), vec![(key("/x", 200, "HTTP/2"), 2)]);
    }
}
