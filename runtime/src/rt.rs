//! Building a monoio runtime on the current thread (io_uring, or the legacy epoll driver
//! where io_uring is refused) and spawning tasks whose panics stay inside them.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

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
            Ok(mut rt) => return Ok(rt.block_on(make(DriverKind::IoUring))),
            Err(e) => tracing::warn!("io_uring runtime refused ({e}); using the legacy driver"),
        }
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()?;
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

/// Spawns a task on this worker. A panic in it is logged and ends only that task (monoio
/// itself would unwind through the whole worker).
pub fn spawn_guarded<F>(what: &'static str, fut: F)
where
    F: Future<Output = ()> + 'static,
{
    monoio::spawn(async move {
        if let Err(p) = AssertUnwindSafe(fut).catch_unwind().await {
            tracing::error!(task = what, panic = %panic_message(&*p), "task panicked");
        }
    });
}
