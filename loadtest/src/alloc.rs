//! The heap allocator of each process the harness runs, chosen per process at start-up.
//!
//! By default each server child runs on the allocator its binary ships with: alknet on
//! mimalloc configured as the `alknet` binary configures it
//! (`alknet_runtime::alloc`), the quinn baseline on the system allocator, as
//! `quinn-perf server` runs. The harness (the client) keeps the system allocator. For an
//! A/B of the allocator alone, the harness reads [`SERVER_ALLOCATOR_ENV`] and
//! [`BASELINE_ALLOCATOR_ENV`] (`system` | `mimalloc`) and passes the choice to each child
//! in [`CHILD_ALLOCATOR_ENV`], which this allocator reads at the process's first
//! allocation (before `main`, when only one thread exists) and never changes afterwards,
//! so every block is freed by the allocator that made it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CStr;
use std::sync::atomic::{AtomicU8, Ordering};

/// The allocator of the alknet server child (default `mimalloc`, as shipped).
pub const SERVER_ALLOCATOR_ENV: &str = "ALKNET_ALLOCATOR";
/// The allocator of the quinn baseline children (default `system`, as quinn-perf runs).
pub const BASELINE_ALLOCATOR_ENV: &str = "ALKNET_BASELINE_ALLOCATOR";
/// What a child process reads (set by the harness, not by hand).
pub const CHILD_ALLOCATOR_ENV: &str = "ALKNET_LOADTEST_ALLOCATOR";

const UNDECIDED: u8 = 0;
const SYSTEM: u8 = 1;
const MIMALLOC: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// Which allocator a child gets: the one its server ships with unless the operator asks
/// for the other.
pub fn for_child(alknet: bool) -> &'static str {
    let (var, shipped) = if alknet {
        (SERVER_ALLOCATOR_ENV, "mimalloc")
    } else {
        (BASELINE_ALLOCATOR_ENV, "system")
    };
    match std::env::var(var).as_deref() {
        Ok("mimalloc") => "mimalloc",
        Ok("system") => "system",
        _ => shipped,
    }
}

/// The allocator this process runs on.
#[cfg(test)]
fn current() -> &'static str {
    match choice() {
        MIMALLOC => "mimalloc",
        _ => "system",
    }
}

fn choice() -> u8 {
    let c = CHOICE.load(Ordering::Relaxed);
    if c != UNDECIDED {
        return c;
    }
    // SAFETY: getenv with a NUL-terminated name; it does not allocate. The returned
    // pointer is read at once, before anything could change the environment.
    let value = unsafe { libc::getenv(c"ALKNET_LOADTEST_ALLOCATOR".as_ptr()) };
    let c = if !value.is_null() && unsafe { CStr::from_ptr(value) }.to_bytes() == b"mimalloc" {
        // the same options as the `alknet` binary's, before mimalloc's first arena
        alknet_runtime::alloc::configure_mimalloc();
        MIMALLOC
    } else {
        SYSTEM
    };
    CHOICE.store(c, Ordering::Relaxed);
    c
}

/// The global allocator of `alknet-loadtest`: the system's or mimalloc, per process.
pub struct SwitchedAllocator;

// SAFETY: every call goes to one allocator, fixed for the life of the process.
unsafe impl GlobalAlloc for SwitchedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match choice() {
            MIMALLOC => unsafe { alknet_runtime::alloc::MiMalloc.alloc(layout) },
            _ => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match choice() {
            MIMALLOC => unsafe { alknet_runtime::alloc::MiMalloc.alloc_zeroed(layout) },
            _ => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match choice() {
            MIMALLOC => unsafe { alknet_runtime::alloc::MiMalloc.dealloc(ptr, layout) },
            _ => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match choice() {
            MIMALLOC => unsafe { alknet_runtime::alloc::MiMalloc.realloc(ptr, layout, new_size) },
            _ => unsafe { System.realloc(ptr, layout, new_size) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_what_each_server_ships_with() {
        // the test process itself was started without the child variable
        assert_eq!(current(), "system");
        if std::env::var_os(SERVER_ALLOCATOR_ENV).is_none() {
            assert_eq!(for_child(true), "mimalloc");
        }
        if std::env::var_os(BASELINE_ALLOCATOR_ENV).is_none() {
            assert_eq!(for_child(false), "system");
        }
    }
}
