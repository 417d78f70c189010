//! The output gate of a warm on-demand camera: while it is closed the camera stays connected and its current
//! GOP is kept, but nothing is pushed to its RTMP output; when it opens, the output is connected and starts at
//! once with the cached GOP, from its keyframe. The gateway opens it for the first viewer and closes it a
//! linger time after the last; the camera's thread looks at it before every packet.

use std::sync::atomic::{AtomicBool, Ordering};

/// Shared by the gateway (which opens and closes it) and the camera's thread (which follows it).
#[derive(Debug, Default)]
pub struct OutputGate {
    open: AtomicBool,
}

impl OutputGate {
    /// A gate, open or closed.
    pub fn new(open: bool) -> OutputGate {
        OutputGate { open: AtomicBool::new(open) }
    }

    /// Lets the output run (connects it at the next packet).
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
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
