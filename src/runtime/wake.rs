//! Waking a camera thread out of FFmpeg's socket wait the moment it is asked to stop.
//!
//! libavformat checks the interrupt callback only between `poll()` calls of 100 ms each, so a worker blocked on a
//! silent camera would notice its stop flag up to 100 ms late. A signal cuts that short: `poll()` returns
//! `EINTR` (Linux never restarts it), libavformat's I/O loop retries only after consulting the callback, and the
//! callback sees the flag. camgate uses `SIGURG` (ignored by default, so a stray one is harmless) with a handler
//! that does nothing, and only if the process has no `SIGURG` handler of its own: an application embedding the
//! library keeps its signals, and stops then simply take up to the 100 ms poll.

use std::os::unix::thread::JoinHandleExt;
use std::sync::OnceLock;
use std::thread::JoinHandle;

extern "C" fn do_nothing(_: libc::c_int) {}

/// Installs the no-op handler once; `true` if camgate owns `SIGURG` and may send it.
pub(crate) fn enabled() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: sigaction is called with valid, zero-initialised structs; the handler is async-signal-safe
        // (it does nothing). The current disposition is read first so a handler of the application's is left
        // in place.
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGURG, std::ptr::null(), &mut current) != 0 {
                return false;
            }
            if current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN {
                return false;
            }
            let mut ours: libc::sigaction = std::mem::zeroed();
            ours.sa_sigaction = do_nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut ours.sa_mask);
            libc::sigaction(libc::SIGURG, &ours, std::ptr::null_mut()) == 0
        }
    })
}

/// Interrupts whatever blocking system call `thread` is in. The caller has raised the thread's stop flag first.
pub(crate) fn interrupt(thread: &JoinHandle<()>) {
    if enabled() {
        // SAFETY: the handle has not been joined yet (the caller owns it), so its pthread_t is still valid even
        // if the thread has already returned; SIGURG has our no-op handler.
        unsafe {
            libc::pthread_kill(thread.as_pthread_t(), libc::SIGURG);
        }
    }
}
