//! Per-worker start hooks: code a component runs once on every worker thread, inside that
//! worker's monoio runtime, before the worker reports itself listening.
//!
//! This is how a component that is not a QUIC or TCP handler keeps to thread-per-core: it
//! binds its own SO_REUSEPORT group up front (one socket per worker, so bind errors surface
//! before the server starts) and, in [`WorkerHook::on_worker_start`], spawns worker `i`'s
//! tasks for socket `i` on worker `i` (e.g. the classic DNS listeners on their own port).
//! The tasks are core-local and end with the worker's runtime at shutdown.

use std::io;
use std::sync::Arc;

/// Which worker is starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStart {
    /// This worker's index, `0..workers`.
    pub index: usize,
    /// How many workers the server runs.
    pub workers: usize,
}

/// Something started on every worker as it starts.
///
/// Shared by all workers (`Send + Sync`); `on_worker_start` runs on the worker's own
/// thread, so what it spawns (`crate::rt::spawn_guarded`, `monoio::spawn`) runs on that
/// worker and need not be `Send`.
pub trait WorkerHook: Send + Sync + 'static {
    /// Called once per worker, on its thread, before it listens. An error stops the
    /// server's start (reported as that worker's failure).
    fn on_worker_start(&self, start: WorkerStart) -> io::Result<()>;
}

/// The hooks of one server, run in order on every worker.
pub type WorkerHooks = Vec<Arc<dyn WorkerHook>>;

/// Runs every hook for `start`; the first error ends the run.
pub(crate) fn run_hooks(hooks: &[Arc<dyn WorkerHook>], start: WorkerStart) -> io::Result<()> {
    hooks.iter().try_for_each(|h| h.on_worker_start(start))
}
