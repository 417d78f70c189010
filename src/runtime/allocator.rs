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
//! glibc also parks small freed blocks in "fastbins" and, before serving any larger request (a packet is
//! kilobytes), consolidates them — `malloc_consolidate` and `unlink_chunk` were ~5 % of a copying camera's
//! CPU in `perf`. Small blocks still go through the per-thread cache first; without fastbins the rest are
//! merged as they are freed. Measured with 100 copying cameras, four alternating pairs of runs: 0.143 against
//! 0.158 ms per frame (−9 %, lower in every pair), memory the same; transcoding cameras unchanged within the
//! noise (4.57 against 4.54 ms per frame over five pairs).
//!
//! It is a process-wide setting, so the library does not apply it on its own: the `camgate` binary and the
//! benchmark harness call [`tune_for_many_threads`] at start; an embedding program may, if glibc's defaults do
//! not suit it better.

/// Allocator free space kept per heap before it is returned to the system.
const TRIM_THRESHOLD: i32 = 64 * 1024;
/// Largest block size served from fastbins: none.
const MAX_FAST: i32 = 0;

/// Makes glibc return freed memory to the system sooner and skip fastbin consolidation (see the module
/// documentation). Does nothing on other C libraries. Call it at the start of `main`, before threads start.
pub fn tune_for_many_threads() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's tunables; it is called before the program starts its threads, and
    // glibc serialises it against allocations anyway.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_MXFAST, MAX_FAST);
    }
}
