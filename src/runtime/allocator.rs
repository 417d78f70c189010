//! glibc's allocator settings for a process that runs hundreds of camera threads.
//!
//! glibc gives busy threads arenas of their own and keeps what they free at the top of each arena's heap until
//! more than `M_TRIM_THRESHOLD` (128 KiB, raised dynamically up to 32 MiB once large blocks are freed) is
//! free there. Every camera frees a packet-sized block per packet, so with hundreds of cameras megabytes per
//! arena stay resident for nothing. A 64 KiB threshold (and no dynamic raise) gives them back: measured with
//! 100 copying cameras with the preview on, 0.9 MB per camera instead of 1.7–2.8 MB, at the same CPU
//! (BENCHMARKS.md, "Memory per copying camera"). Limiting the number of arenas also saves memory but makes
//! threads wait on each other's allocator locks (p99 packet latency ×2.5), so that is not done.
//!
//! It is a process-wide setting, so the library does not apply it on its own: the `camgate` binary and the
//! benchmark harness call [`tune_for_many_threads`] at start; an embedding program may, if glibc's defaults do
//! not suit it better.

/// Allocator free space kept per heap before it is returned to the system.
const TRIM_THRESHOLD: i32 = 64 * 1024;

/// Makes glibc return freed memory to the system sooner (see the module documentation). Does nothing on
/// other C libraries. Call it at the start of `main`, before threads start.
pub fn tune_for_many_threads() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's tunables; it is called before the program starts its threads, and
    // glibc serialises it against allocations anyway.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
