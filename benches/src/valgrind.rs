//! Callgrind client requests (`valgrind/callgrind.h`), without a C compiler or valgrind's
//! headers at build time: the request is valgrind's "special instruction" sequence, a no-op
//! on a real CPU.
//!
//! Why: the `streams` scenario runs a real server worker thread beside the client thread.
//! `--toggle-collect` switches collection per thread, so it cannot count the server's
//! thread; starting and stopping *instrumentation* is global, so with
//! `--instr-atstart=no` every thread is counted between [`start_instrumentation`] and
//! [`stop_instrumentation`].

#[cfg(target_arch = "x86_64")]
fn client_request(request: u64) {
    let args: [u64; 6] = [request, 0, 0, 0, 0, 0];
    let mut result: u64 = 0;
    // SAFETY: the rotate sequence leaves %rdi unchanged (3+13+61+51 = 128 bits) and
    // `xchg %rbx,%rbx` is a no-op; under valgrind the sequence reads `args` (through %rax)
    // and writes %rdx. Nothing else is touched.
    unsafe {
        std::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") args.as_ptr(),
            inout("rdx") result,
            out("rdi") _,
            options(nostack),
        );
    }
    std::hint::black_box(result);
}

#[cfg(not(target_arch = "x86_64"))]
fn client_request(_request: u64) {}

/// `VG_USERREQ_TOOL_BASE('C','T')`, the first of callgrind's requests.
const CALLGRIND_BASE: u64 = ((b'C' as u64) << 24) | ((b'T' as u64) << 16);
const START_INSTRUMENTATION: u64 = CALLGRIND_BASE + 4;
const STOP_INSTRUMENTATION: u64 = CALLGRIND_BASE + 5;

/// `CALLGRIND_START_INSTRUMENTATION`: count every thread from here on.
pub fn start_instrumentation() {
    client_request(START_INSTRUMENTATION);
}

/// `CALLGRIND_STOP_INSTRUMENTATION`.
pub fn stop_instrumentation() {
    client_request(STOP_INSTRUMENTATION);
}
