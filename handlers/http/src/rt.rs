//! hyper's runtime hooks on the worker's monoio loop: an executor that spawns HTTP/2
//! streams as worker-local tasks, a timer built on monoio's, and the way an axum handler
//! (whose future must be `Send`) runs worker-local work.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Spawns hyper's HTTP/2 stream tasks on the current worker (they never leave it).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExecutor;

impl<F> hyper::rt::Executor<F> for LocalExecutor
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        alknet_runtime::rt::spawn_guarded("http/2 stream", async move {
            fut.await;
        });
    }
}

/// hyper's timer over monoio's. hyper asks for `Send + Sync` sleeps, and monoio's timer
/// entries are thread-local; so a [`WorkerSleep`] holds only its deadline and its key in
/// the worker's table of armed sleeps (`ArmedSleeps`), and one task per worker sleeps
/// on monoio's timer until the earliest deadline and wakes what is due. A dropped sleep
/// leaves the table at once: hyper drops an HTTP/1.1 connection's header-read sleep
/// after every request head and arms a new one for the next, so arming and dropping must
/// cost no task and no timer entry of its own. No `unsafe`, no tokio timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct WorkerTimer;

impl hyper::rt::Timer for WorkerTimer {
    fn sleep(&self, duration: std::time::Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(WorkerSleep::until(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(WorkerSleep::until(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<WorkerSleep>() {
            Some(s) => s.get_mut().deadline = new_deadline,
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A sleep until `deadline`; see [`WorkerTimer`].
#[derive(Debug)]
pub struct WorkerSleep {
    deadline: Instant,
    /// Its entry in this worker's [`ArmedSleeps`], while armed.
    armed: Option<SleepKey>,
}

/// (deadline, sequence number): unique, and ordered by deadline.
type SleepKey = (Instant, u64);

impl WorkerSleep {
    pub(crate) fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            armed: None,
        }
    }

    /// Moves the deadline (earlier or later); the next poll arms what is needed.
    pub(crate) fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }
}

impl Future for WorkerSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.deadline {
            if let Some(key) = this.armed.take() {
                ArmedSleeps::disarm(key);
            }
            return Poll::Ready(());
        }
        this.armed = Some(ArmedSleeps::arm(this.armed, this.deadline, cx.waker()));
        Poll::Pending
    }
}

impl Drop for WorkerSleep {
    fn drop(&mut self) {
        if let Some(key) = self.armed.take() {
            ArmedSleeps::disarm(key);
        }
    }
}

impl hyper::rt::Sleep for WorkerSleep {}

thread_local! {
    static ARMED: RefCell<ArmedSleeps> = RefCell::default();
}

/// This worker's armed [`WorkerSleep`]s and the task that wakes them.
#[derive(Default)]
struct ArmedSleeps {
    by_deadline: BTreeMap<SleepKey, Waker>,
    next_seq: u64,
    /// The waking task, while it runs: the deadline it sleeps until and its waker (woken
    /// when an earlier deadline is armed).
    driver: Option<(Option<Instant>, Option<Waker>)>,
}

impl ArmedSleeps {
    /// Arms (or re-arms) a sleep for `deadline` with `waker`; returns its key.
    fn arm(previous: Option<SleepKey>, deadline: Instant, waker: &Waker) -> SleepKey {
        ARMED.with(|cell| {
            let mut armed = cell.borrow_mut();
            if let Some(key) = previous.filter(|k| k.0 == deadline) {
                if let Some(w) = armed.by_deadline.get_mut(&key) {
                    if !w.will_wake(waker) {
                        w.clone_from(waker);
                    }
                    return key;
                }
            }
            if let Some(key) = previous {
                armed.by_deadline.remove(&key);
            }
            let key = (deadline, armed.next_seq);
            armed.next_seq += 1;
            armed.by_deadline.insert(key, waker.clone());
            match &mut armed.driver {
                None => {
                    armed.driver = Some((None, None));
                    monoio::spawn(wake_due_sleeps());
                }
                Some((target, driver)) => {
                    if target.is_none_or(|t| deadline < t) {
                        if let Some(w) = driver.take() {
                            w.wake();
                        }
                    }
                }
            }
            key
        })
    }

    fn disarm(key: SleepKey) {
        // `try_with`: a sleep dropped while its thread exits has nothing left to leave
        let _ = ARMED.try_with(|cell| {
            if let Ok(mut armed) = cell.try_borrow_mut() {
                armed.by_deadline.remove(&key);
            }
        });
    }
}

/// The worker's waking task: sleeps until the earliest armed deadline (or until an
/// earlier one is armed), wakes every sleep that is due, and ends when none is armed
/// (the next `arm` starts it again).
async fn wake_due_sleeps() {
    loop {
        let next = ARMED.with(|cell| {
            let mut armed = cell.borrow_mut();
            let next = armed.by_deadline.keys().next().map(|k| k.0);
            match next {
                Some(at) => armed.driver = Some((Some(at), None)),
                None => armed.driver = None,
            }
            next
        });
        let Some(at) = next else { return };
        let mut sleep = std::pin::pin!(monoio::time::sleep_until(monoio::time::Instant::from_std(
            at
        )));
        std::future::poll_fn(|cx| {
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            ARMED.with(|cell| {
                let mut armed = cell.borrow_mut();
                let first = armed.by_deadline.keys().next().map(|k| k.0);
                if first.is_none_or(|f| f < at) {
                    // an earlier deadline was armed (or all were dropped): start over
                    return Poll::Ready(());
                }
                armed.driver = Some((Some(at), Some(cx.waker().clone())));
                Poll::Pending
            })
        })
        .await;
        let due: Vec<Waker> = ARMED.with(|cell| {
            let mut armed = cell.borrow_mut();
            let later = armed.by_deadline.split_off(&(Instant::now(), u64::MAX));
            std::mem::replace(&mut armed.by_deadline, later)
                .into_values()
                .collect()
        });
        for w in due {
            w.wake();
        }
    }
}

/// Runs a worker-local (`!Send`) future on the current worker and awaits its output from
/// a `Send` future: what an axum handler uses to run a call operation. The task finishes
/// even if the request is dropped (its own deadline bounds it).
pub fn run_local<F, T>(fut: F) -> impl Future<Output = Option<T>> + Send
where
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let (tx, rx) = futures_channel::oneshot::channel();
    alknet_runtime::rt::spawn_guarded("http local task", async move {
        let _ = tx.send(fut.await);
    });
    async move { rx.await.ok() }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper::rt::Timer;

    use super::*;

    fn armed_count() -> usize {
        ARMED.with(|cell| cell.borrow().by_deadline.len())
    }

    fn on_worker<F: Future>(f: F) -> F::Output {
        alknet_runtime::rt::run_local(|_| f).expect("runtime")
    }

    #[test]
    fn sleeps_wake_in_deadline_order_and_dropped_ones_leave_the_table() {
        on_worker(async {
            let start = Instant::now();
            let late = WorkerTimer.sleep(Duration::from_millis(60));
            let mut late = std::pin::pin!(late);
            // armed by a first poll, then an earlier one is armed while the waking task
            // already sleeps for the later deadline: it must not wait for the later one
            assert!(futures_util_poll(late.as_mut()).is_pending());
            assert_eq!(armed_count(), 1);
            let dropped = {
                let mut gone = WorkerTimer.sleep(Duration::from_secs(3600));
                assert!(futures_util_poll(gone.as_mut()).is_pending());
                armed_count()
            };
            assert_eq!(dropped, 2, "armed while alive");
            assert_eq!(armed_count(), 1, "a dropped sleep leaves at once");
            WorkerTimer.sleep(Duration::from_millis(10)).await;
            let early_done = start.elapsed();
            assert!(early_done >= Duration::from_millis(10));
            assert!(
                futures_util_poll(late.as_mut()).is_pending(),
                "the later sleep is not due yet"
            );
            late.await;
            assert!(start.elapsed() >= Duration::from_millis(60));
            assert_eq!(armed_count(), 0);
        });
    }

    #[test]
    fn a_reset_sleep_waits_for_its_new_deadline() {
        on_worker(async {
            let start = Instant::now();
            let mut sleep = WorkerTimer.sleep(Duration::from_millis(5));
            assert!(futures_util_poll(sleep.as_mut()).is_pending());
            WorkerTimer.reset(&mut sleep, Instant::now() + Duration::from_millis(40));
            sleep.await;
            assert!(start.elapsed() >= Duration::from_millis(40));
            assert_eq!(armed_count(), 0);
        });
    }

    /// Polls once with a waker that does nothing (the test re-polls by awaiting later).
    fn futures_util_poll<F: Future + ?Sized>(f: Pin<&mut F>) -> Poll<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        f.poll(&mut cx)
    }
}
