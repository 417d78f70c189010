//! The output gate of a warm on-demand camera: while it is closed the camera stays connected and its current
//! GOP is kept, but nothing is pushed to its RTMP output; when it opens, the output is connected and starts at
//! once with the cached GOP, from its keyframe. The gateway opens it for the first viewer and closes it a
//! linger time after the last; the camera's thread looks at it before every packet.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Thread;

/// Shared by the gateway (which opens and closes it) and the camera's thread (which follows it).
#[derive(Debug, Default)]
pub struct OutputGate {
    open: AtomicBool,
    /// The camera thread following the gate, woken when it opens: it may be letting packets gather
    /// (`pipeline::read_batch`), and the first viewer should not wait for that.
    follower: Mutex<Option<Thread>>,
}

impl OutputGate {
    /// A gate, open or closed.
    pub fn new(open: bool) -> OutputGate {
        OutputGate { open: AtomicBool::new(open), follower: Mutex::default() }
    }

    /// Lets the output run (connects it at the next packet).
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        if let Some(follower) = self.follower.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            follower.unpark();
        }
    }

    /// Makes the calling thread the one [`open`](Self::open) wakes.
    pub(crate) fn follow_from_this_thread(&self) {
        *self.follower.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
    }

    /// Stops the output (disconnects it at the next packet); the camera stays connected.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
    }

    /// Whether the output should run.
    #[inline]
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }
}
