//! The heap allocator the `alknet` binary ships with: mimalloc, with arenas committed on
//! demand (feature `mimalloc`).
//!
//! Why mimalloc: a request on the packet path allocates and frees a handful of small blocks
//! (stream state, the handler task, `Bytes`), and mimalloc's per-thread free lists make
//! those cheaper than glibc's arenas on a pinned worker (`perf-rr`: about 10 % more
//! requests per server CPU-second; README, "Performance").
//!
//! Why not its defaults: on a system that overcommits, mimalloc commits each 1 GiB arena
//! eagerly, and what it purges from such an arena stays in the process's RSS until the
//! kernel wants it back: after the lossy QUIC interop cases the server's RSS stayed ~16 %
//! above where it started (55 → 64 MB), which their "back within 10 %" check caught. With
//! `arena_eager_commit` off the same cases end within 5 % (34.2 → 35.4 MB), and the
//! server starts smaller than on glibc's malloc.
//!
//! The option has to be set before the first arena exists, i.e. before the process's first
//! allocation (Rust's runtime allocates before `main`).
//! [`mimalloc_allocator!`](crate::mimalloc_allocator!) declares the global allocator
//! together with a constructor in `.init_array` that sets it first.

use std::ffi::c_int;

pub use mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in `mimalloc.h` (index 4 in the 2.x and the 3.x headers
/// alike; libmimalloc-sys builds 3.x by default and its Rust constants lack this one).
const MI_OPTION_ARENA_EAGER_COMMIT: c_int = 4;

/// Sets the options above; runs from `.init_array` before anything allocates (see
/// [`mimalloc_allocator!`](crate::mimalloc_allocator!)). Safe to call more than once.
pub extern "C" fn configure_mimalloc() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table; it does not
    // allocate and may be called before mimalloc is initialised.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) }
}

/// Declares mimalloc as the global allocator of the binary that invokes it, configured by
/// [`configure_mimalloc`] before the first allocation.
#[macro_export]
macro_rules! mimalloc_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::alloc::MiMalloc = $crate::alloc::MiMalloc;

        // Priority 101, the first one free to programs: ahead of every allocation Rust's
        // runtime and any other constructor make.
        #[used]
        #[link_section = ".init_array.00101"]
        static CONFIGURE_MIMALLOC: extern "C" fn() = $crate::alloc::configure_mimalloc;
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_option_index_is_arena_eager_commit() {
        // mimalloc.h's enum: show_errors, show_stats, verbose, (deprecated_)eager_commit,
        // arena_eager_commit, purge_decommits, allow_large_os_pages (the crate's constant 6)
        assert_eq!(
            super::MI_OPTION_ARENA_EAGER_COMMIT + 2,
            libmimalloc_sys::mi_option_large_os_pages
        );
        super::configure_mimalloc();
        // SAFETY: reads mimalloc's option table
        let now = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_ARENA_EAGER_COMMIT) };
        assert_eq!(now, 0);
    }
}
