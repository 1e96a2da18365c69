//! hyper's runtime hooks on the worker's monoio loop: an executor that spawns HTTP/2
//! streams as worker-local tasks, a timer built on monoio's, and the way an axum handler
//! (whose future must be `Send`) runs worker-local work.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
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
/// entries are thread-local; so a [`WorkerSleep`] holds only its deadline and the waker to
/// call, and a worker-local task sleeps on monoio's timer and wakes it. No `unsafe`, no
/// tokio timer.
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
pub struct WorkerSleep {
    deadline: Instant,
    /// The deadline a wake-up task is armed for, if any.
    armed: Option<Instant>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl WorkerSleep {
    pub(crate) fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            armed: None,
            waker: Arc::default(),
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
            return Poll::Ready(());
        }
        if let Ok(mut w) = this.waker.lock() {
            *w = Some(cx.waker().clone());
        }
        // arm a wake-up unless one is due no later than the deadline and not yet past (a
        // reset to a later deadline is met by re-arming when the early one has fired)
        let now = Instant::now();
        if this.armed.is_none_or(|at| at > this.deadline || at <= now) {
            this.armed = Some(this.deadline);
            let deadline = this.deadline;
            let waker = this.waker.clone();
            monoio::spawn(async move {
                monoio::time::sleep_until(monoio::time::Instant::from_std(deadline)).await;
                let w = waker.lock().ok().and_then(|mut w| w.take());
                if let Some(w) = w {
                    w.wake();
                }
            });
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for WorkerSleep {}

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
