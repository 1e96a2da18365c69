//! Building a monoio runtime on the current thread (io_uring, or the legacy epoll driver
//! where io_uring is refused) and spawning tasks whose panics stay inside them.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

mod inline;

/// Which monoio driver a thread runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    IoUring,
    Legacy,
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Legacy => "legacy (epoll)",
        })
    }
}

/// Environment variable that forces the legacy driver (`ALKNET_DRIVER=legacy`), to test the
/// fallback or to work around a kernel whose io_uring misbehaves.
pub const DRIVER_ENV: &str = "ALKNET_DRIVER";

/// Size of each thread's io_uring submission queue.
pub const URING_ENTRIES: u32 = 1024;

thread_local! {
    static CURRENT_DRIVER: Cell<Option<DriverKind>> = const { Cell::new(None) };
}

/// The driver of the monoio runtime [`run_local`] runs on this thread, `None` on a thread
/// without one (a tokio thread, say). Code that may run on either asks before it uses
/// monoio's IO: a task polled on a worker (an SSH session's, inside the bridge runtime's
/// context) may use io_uring operations; the same code on a tokio thread may not.
pub fn current_driver() -> Option<DriverKind> {
    CURRENT_DRIVER.with(Cell::get)
}

/// Sets [`current_driver`] for the life of a runtime, and clears it after, unwinding too.
struct DriverMark(Option<DriverKind>);

impl DriverMark {
    fn set(kind: DriverKind) -> Self {
        DriverMark(CURRENT_DRIVER.with(|c| c.replace(Some(kind))))
    }
}

impl Drop for DriverMark {
    fn drop(&mut self) {
        CURRENT_DRIVER.with(|c| c.set(self.0));
    }
}

/// Runs the future made by `make` to completion on a new monoio runtime on this thread.
pub fn run_local<Fut, F>(make: F) -> io::Result<Fut::Output>
where
    F: FnOnce(DriverKind) -> Fut,
    Fut: Future,
{
    let forced_legacy = std::env::var(DRIVER_ENV).is_ok_and(|v| v == "legacy");
    if !forced_legacy && monoio::utils::detect_uring() {
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build()
        {
            Ok(mut rt) => {
                let _mark = DriverMark::set(DriverKind::IoUring);
                return Ok(rt.block_on(make(DriverKind::IoUring)));
            }
            Err(e) => tracing::warn!("io_uring runtime refused ({e}); using the legacy driver"),
        }
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()?;
    let _mark = DriverMark::set(DriverKind::Legacy);
    Ok(rt.block_on(make(DriverKind::Legacy)))
}

/// A readable message from a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

thread_local! {
    static DROPPING_PANICKED: Cell<bool> = const { Cell::new(false) };
}

/// True while the state of a task that panicked is being dropped. A panic unwinds only
/// the poll's stack: what the future holds across awaits (streams, say) is dropped
/// afterwards, when `std::thread::panicking()` is already false. Streams check this too,
/// so a panicked task resets its streams instead of finishing them cleanly.
pub fn dropping_panicked_task() -> bool {
    std::thread::panicking() || DROPPING_PANICKED.with(Cell::get)
}

pin_project_lite::pin_project! {
    /// A future that turns a panic into an error, and drops the panicked future's state
    /// with [`dropping_panicked_task`] set. The future is held in place, not boxed: every
    /// handler task and every stream task is wrapped in one.
    pub struct CatchPanic<F> {
        #[pin]
        inner: Option<F>,
    }
}

/// Runs `fut`, returning `Err(payload)` if it panics.
pub fn catch_panic<F: Future>(fut: F) -> CatchPanic<F> {
    CatchPanic { inner: Some(fut) }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.project().inner;
        let Some(fut) = inner.as_mut().as_pin_mut() else {
            return Poll::Pending; // polled after completion
        };
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => {
                inner.set(None);
                Poll::Ready(Ok(v))
            }
            Err(payload) => {
                DROPPING_PANICKED.with(|d| d.set(true));
                // drops the panicked future's state in place
                inner.set(None);
                DROPPING_PANICKED.with(|d| d.set(false));
                Poll::Ready(Err(payload))
            }
        }
    }
}

/// Spawns a task on this worker. A panic in it is logged and ends only that task (monoio
/// itself would unwind through the whole worker); its streams are reset.
pub fn spawn_guarded<F>(what: &'static str, fut: F)
where
    F: Future<Output = ()> + 'static,
{
    // A named future rather than an `async` block around `catch_panic(fut)`: the block
    // would move `fut` once more (a copy of the whole future) on its first poll, on every
    // stream task.
    monoio::spawn(Guarded {
        inner: catch_panic(fut),
        what,
    });
}

pin_project_lite::pin_project! {
    /// The task [`spawn_guarded`] runs: `inner`, with a panic logged as `what`'s.
    struct Guarded<F> {
        #[pin]
        inner: CatchPanic<F>,
        what: &'static str,
    }
}

impl<F: Future<Output = ()>> Future for Guarded<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Ready(Err(p)) => {
                tracing::error!(task = *this.what, panic = %panic_message(&*p), "task panicked");
                Poll::Ready(())
            }
        }
    }
}

/// Accepts every stream the peer opens on `conn` until the connection ends, running
/// `on_bi`/`on_uni` for each, inline until it first waits and then as its own guarded task
/// ([`run_or_spawn_guarded`]; a panic resets only that stream).
/// Returns when the connection is closed, which is how most handlers end.
pub async fn serve_streams<B, BF, U, UF>(
    conn: &crate::Connection,
    what: &'static str,
    on_bi: B,
    on_uni: U,
) where
    B: Fn(crate::BiStream) -> BF + 'static,
    BF: Future<Output = ()> + 'static,
    U: Fn(crate::RecvStream) -> UF + 'static,
    UF: Future<Output = ()> + 'static,
{
    let uni = conn.clone();
    spawn_guarded(what, async move {
        while let Ok(recv) = uni.accept_uni().await {
            run_or_spawn_guarded(what, on_uni(recv));
        }
    });
    while let Ok(stream) = conn.accept_bi().await {
        run_or_spawn_guarded(what, on_bi(stream));
    }
}

/// Polls `fut` once right here and spawns it as its own guarded task only if it is not
/// done (see `inline`): a small request is served in that one poll, with no task
/// allocated, queued and polled for it. A panic is caught as in [`spawn_guarded`].
pub fn run_or_spawn_guarded<F>(what: &'static str, fut: F)
where
    F: Future<Output = ()> + 'static,
{
    // written into its allocation, not built on the stack and then moved there: one copy
    // of the (often large) future fewer
    let task = Box::into_pin(Box::write(
        Box::new_uninit(),
        Guarded {
            inner: catch_panic(fut),
            what,
        },
    ));
    if let inline::FirstOutcome::Waits(task) = inline::poll_first(task) {
        monoio::spawn(task);
    }
}

/// A deadline that passed (see [`timeout_if_pending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

/// Like `monoio::time::timeout`, but the timer is armed only if `fut` is not ready at its
/// first poll. Per-request timeouts (a DoQ query, an HTTP/3 request's headers) usually
/// guard something that has already arrived: then no timer is inserted into the wheel and
/// removed again. The deadline counts from that first poll.
pub async fn timeout_if_pending<F: Future>(
    after: std::time::Duration,
    fut: F,
) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut sleep: Option<Pin<Box<monoio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let sleep = sleep.get_or_insert_with(|| Box::pin(monoio::time::sleep(after)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_current_driver_is_known_inside_a_runtime_only() {
        assert_eq!(current_driver(), None);
        let inside = run_local(|kind| async move { (kind, current_driver()) }).expect("runtime");
        assert_eq!(Some(inside.0), inside.1);
        assert_eq!(current_driver(), None);
    }

    #[test]
    fn run_or_spawn_guarded_finishes_ready_work_inline_and_spawns_the_rest() {
        use std::rc::Rc;
        let out = run_local(|_| async {
            let log = Rc::new(std::cell::RefCell::new(Vec::new()));
            // ready at its first poll: done before run_or_spawn_guarded returns
            let l = log.clone();
            run_or_spawn_guarded("inline", async move { l.borrow_mut().push("inline") });
            log.borrow_mut().push("after inline");
            // waits: its first part runs inline, the rest on a task of its own
            let l = log.clone();
            run_or_spawn_guarded("spawned", async move {
                l.borrow_mut().push("spawned: first poll");
                monoio::time::sleep(Duration::from_millis(5)).await;
                l.borrow_mut().push("spawned: done");
            });
            log.borrow_mut().push("after spawned");
            // panics, at the first poll and after waiting: caught, the caller goes on
            run_or_spawn_guarded("panics inline", async { panic!("inline panic") });
            run_or_spawn_guarded("panics later", async {
                monoio::time::sleep(Duration::from_millis(1)).await;
                panic!("later panic")
            });
            monoio::time::sleep(Duration::from_millis(30)).await;
            log.borrow_mut().push("end");
            Rc::try_unwrap(log).expect("tasks done").into_inner()
        })
        .expect("runtime");
        assert_eq!(
            out,
            [
                "inline",
                "after inline",
                "spawned: first poll",
                "after spawned",
                "spawned: done",
                "end"
            ]
        );
    }

    #[test]
    fn timeout_if_pending_passes_ready_and_late_results_and_ends_the_rest() {
        let out = run_local(|_| async {
            let ready = timeout_if_pending(Duration::from_millis(1), async { 7 }).await;
            // ready later, well inside its deadline
            let later = timeout_if_pending(Duration::from_secs(30), async {
                monoio::time::sleep(Duration::from_millis(5)).await;
                8
            })
            .await;
            let never =
                timeout_if_pending(Duration::from_millis(20), std::future::pending::<()>()).await;
            (ready, later, never)
        })
        .expect("runtime");
        assert_eq!(out, (Ok(7), Ok(8), Err(Elapsed)));
    }
}
