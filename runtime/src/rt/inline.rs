//! Running a new task's first poll on the caller's stack, and spawning it only if it waits.
//!
//! A stream handler's future usually finishes at its first poll (a small request arrives
//! with its FIN in the packet that opened the stream, and its answer fits the send window).
//! Spawning it anyway costs a task allocation, two copies of the future (monoio's `spawn`
//! moves it into the task cell), a run-queue push and a separate poll. Polling it once
//! first saves all of that for the common case.
//!
//! The first poll cannot use the caller's waker: what the future registers with it would
//! wake the caller instead of the task spawned afterwards, and some registrations are kept
//! for good (monoio's timer entry stores the first waker it sees and ignores later ones, so
//! a `sleep` begun in the first poll would never wake the spawned task). The first poll
//! therefore gets a waker of its own, [`FirstPoll`]'s, which costs nothing unless it is
//! cloned (registered somewhere): a clone is a [`Forward`], an `Arc` that wakes whatever
//! task the future is spawned as, once that task has been polled.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};

/// Where the wake-ups of a future's first poll go: the task it was spawned as, once known.
#[derive(Default)]
struct Forward {
    target: Mutex<Option<Waker>>,
}

impl Forward {
    fn set_target(&self, waker: &Waker) {
        let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        if !target.as_ref().is_some_and(|t| t.will_wake(waker)) {
            *target = Some(waker.clone());
        }
    }
}

impl Wake for Forward {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        // no target yet: the task is not spawned or not yet polled, and its first poll
        // comes anyway
        if let Some(t) = target.as_ref() {
            t.wake_by_ref();
        }
    }
}

/// The state behind the first poll's borrowed waker: a [`Forward`] made on the first clone.
#[derive(Default)]
struct FirstPoll {
    forward: OnceLock<Arc<Forward>>,
}

impl FirstPoll {
    fn forward(&self) -> &Arc<Forward> {
        self.forward.get_or_init(Default::default)
    }
}

// The borrowed waker's data is a `*const FirstPoll` that outlives every use of the waker:
// the waker itself lives only for the first poll (`poll_first` keeps it on its stack and
// never hands it out by value), and a clone is a `Forward` waker that owns its state.
static FIRST_POLL_VTABLE: RawWakerVTable =
    RawWakerVTable::new(first_clone, first_wake, first_wake, first_drop);

unsafe fn first_clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` is the `FirstPoll` on `poll_first`'s stack, alive while the borrowed
    // waker is (see FIRST_POLL_VTABLE).
    let first = unsafe { &*(data as *const FirstPoll) };
    let waker = Waker::from(first.forward().clone());
    let raw = RawWaker::new(waker.data(), waker.vtable());
    std::mem::forget(waker);
    raw
}

/// A wake-up during the first poll itself (a future that yields): nothing to do, a future
/// still waiting after it is spawned, and a new task is always polled.
unsafe fn first_wake(_: *const ()) {}

unsafe fn first_drop(_: *const ()) {}

/// The outcome of [`poll_first`].
pub(super) enum FirstOutcome<F: ?Sized> {
    Done,
    /// Not done: spawn this; it forwards the first poll's wake-ups to itself.
    Waits(Forwarded<F>),
}

/// Polls `task` once with a waker of its own (see the module comment).
pub(super) fn poll_first<F>(mut task: Pin<Box<F>>) -> FirstOutcome<F>
where
    F: Future<Output = ()> + ?Sized,
{
    let first = FirstPoll::default();
    let raw = RawWaker::new(&first as *const FirstPoll as *const (), &FIRST_POLL_VTABLE);
    // SAFETY: the vtable's functions uphold the RawWaker contract for `first`, which
    // outlives this waker (dropped at the end of this block; `first_drop` does nothing).
    let waker = std::mem::ManuallyDrop::new(unsafe { Waker::from_raw(raw) });
    let mut cx = Context::from_waker(&waker);
    match task.as_mut().poll(&mut cx) {
        Poll::Ready(()) => FirstOutcome::Done,
        Poll::Pending => FirstOutcome::Waits(Forwarded {
            forward: first.forward.into_inner(),
            task,
        }),
    }
}

/// A task whose first poll happened elsewhere: on its first own poll it points the first
/// poll's registrations (if any were made) at itself.
pub(super) struct Forwarded<F: ?Sized> {
    forward: Option<Arc<Forward>>,
    task: Pin<Box<F>>,
}

impl<F: Future<Output = ()> + ?Sized> Future for Forwarded<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(forward) = self.forward.take() {
            forward.set_target(cx.waker());
            // a registration made in the first poll may still fire later: keep the Forward
            // alive through the Arc clones held by those registrations, not here
        }
        self.task.as_mut().poll(cx)
    }
}
