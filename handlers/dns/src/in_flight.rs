//! The queries of one pipelined connection or stream in flight (`max_pipelined_queries`):
//! a count with a bound the reader waits on. Single-threaded, as the connection's tasks
//! all run on one worker; one waiter at a time (the connection's reader).

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Places for queries in flight, at most `limit` taken at once.
#[derive(Clone)]
pub(crate) struct InFlight(Rc<RefCell<State>>);

struct State {
    taken: usize,
    limit: usize,
    /// The reader waiting for a place, woken when one is given back.
    waiting: Option<Waker>,
}

/// A place taken; given back when dropped (by a task that ends, or one that panics).
pub(crate) struct Place(InFlight);

impl InFlight {
    /// `limit` places (at least one).
    pub(crate) fn new(limit: usize) -> Self {
        Self(Rc::new(RefCell::new(State {
            taken: 0,
            limit: limit.max(1),
            waiting: None,
        })))
    }

    /// Places taken now.
    pub(crate) fn taken(&self) -> usize {
        self.0.borrow().taken
    }

    /// Whether a place is free now ([`Self::take`] would not wait).
    pub(crate) fn has_room(&self) -> bool {
        let s = self.0.borrow();
        s.taken < s.limit
    }

    /// Takes a place, waiting until one is free.
    pub(crate) async fn take(&self) -> Place {
        poll_fn(|cx| {
            let mut s = self.0.borrow_mut();
            if s.taken < s.limit {
                s.taken += 1;
                s.waiting = None;
                Poll::Ready(())
            } else {
                s.waiting = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        Place(self.clone())
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let waiting = {
            let mut s = (self.0).0.borrow_mut();
            s.taken -= 1;
            s.waiting.take()
        };
        // woken outside the borrow: a waker may poll at once
        if let Some(w) = waiting {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake};

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn the_reader_waits_at_the_bound_until_a_place_is_given_back() {
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let places = InFlight::new(2);

        let mut held = Vec::new();
        for _ in 0..2 {
            let mut take = pin!(places.take());
            match take.as_mut().poll(&mut cx) {
                Poll::Ready(p) => held.push(p),
                Poll::Pending => panic!("a free place is taken at once"),
            }
        }
        assert_eq!(places.taken(), 2);
        assert!(!places.has_room());

        // at the bound the third waits, however often it is polled
        let mut third = pin!(places.take());
        assert!(third.as_mut().poll(&mut cx).is_pending());
        assert!(third.as_mut().poll(&mut cx).is_pending());
        assert_eq!(counter.0.load(Ordering::Relaxed), 0);

        // one query answered: the reader is woken and gets its place
        held.pop();
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
        assert_eq!(places.taken(), 1);
        let third = match third.as_mut().poll(&mut cx) {
            Poll::Ready(p) => p,
            Poll::Pending => panic!("a place was given back"),
        };
        assert_eq!(places.taken(), 2);
        drop(third);
        drop(held);
        assert_eq!(places.taken(), 0);
        assert!(places.has_room());
        // nobody was waiting for these
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_place_held_by_a_panicking_task_is_given_back() {
        let places = InFlight::new(1);
        let place = {
            let waker = Waker::from(Arc::new(CountingWaker::default()));
            let mut take = pin!(places.take());
            match take.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Ready(p) => p,
                Poll::Pending => panic!("free"),
            }
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = place;
            panic!("answering panicked");
        }));
        assert!(r.is_err());
        assert_eq!(places.taken(), 0);
    }
}
