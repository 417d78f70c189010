//! How many threads a transcoding camera's decoder and encoder get when its settings say `threads = 0`
//! ("camgate chooses").
//!
//! FFmpeg's own default — as many threads as cores, and more — is right for one camera on a big machine and
//! wrong for many cameras on few cores: every extra x264 thread splits the frame into more slices or adds a
//! frame of lookahead, every extra decoder frame thread adds a frame of latency and a frame of memory, and all
//! of them wake and synchronise per frame, which costs CPU when the cores are shared anyway (measured in
//! BENCHMARKS.md: one x264 thread per camera is cheaper per frame than the default once cameras reach the core
//! count). So the choice is made per camera, when its session opens, from the cores the process may use and the
//! transcoding cameras running at that moment (this one included):
//!
//! | transcoding cameras | decoder threads | encoder threads |
//! |---|---|---|
//! | ≥ cores | 1 | 1 |
//! | fewer | cores ÷ cameras (at most 4) | cores ÷ cameras (at most 8) |
//!
//! A camera keeps its choice for its session: cameras that start later do not re-thread the ones running (an
//! encoder's threads are fixed when it opens), and the next session of each chooses again. An explicit
//! `threads = N` gives the encoder N threads and leaves the decoder to FFmpeg, as before.

use std::sync::atomic::{AtomicUsize, Ordering};

static TRANSCODING: AtomicUsize = AtomicUsize::new(0);

/// Most decoder threads camgate gives one camera: past this, frame threads only add latency.
const MAX_DECODER: usize = 4;
/// Most encoder threads camgate gives one camera.
const MAX_ENCODER: usize = 8;

/// Threads for one transcoding session; 0 leaves the choice to FFmpeg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads {
    pub decoder: usize,
    pub encoder: usize,
}

/// Counts one running transcoder while it lives (see [`TranscodingSlot::take`]).
#[derive(Debug)]
pub struct TranscodingSlot(());

impl TranscodingSlot {
    /// Counts this session among the transcoding cameras and chooses its threads: `requested` is the camera's
    /// `threads` setting (0: camgate chooses).
    pub fn take(requested: u32) -> (TranscodingSlot, Threads) {
        let cameras = TRANSCODING.fetch_add(1, Ordering::SeqCst) + 1;
        let threads =
            if requested == 0 { choose(cores(), cameras) } else { Threads { decoder: 0, encoder: requested as usize } };
        (TranscodingSlot(()), threads)
    }
}

impl Drop for TranscodingSlot {
    fn drop(&mut self) {
        TRANSCODING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Transcoding sessions running now.
#[cfg(test)]
fn transcoding() -> usize {
    TRANSCODING.load(Ordering::SeqCst)
}

/// The cores this process may run on (its CPU affinity and cgroup quota, as the standard library sees them).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The table in the module documentation.
pub fn choose(cores: usize, cameras: usize) -> Threads {
    let (cores, cameras) = (cores.max(1), cameras.max(1));
    if cameras >= cores {
        return Threads { decoder: 1, encoder: 1 };
    }
    let share = cores / cameras;
    Threads { decoder: share.min(MAX_DECODER), encoder: share.min(MAX_ENCODER) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_each_once_cameras_reach_the_cores() {
        assert_eq!(choose(2, 2), Threads { decoder: 1, encoder: 1 });
        assert_eq!(choose(2, 200), Threads { decoder: 1, encoder: 1 });
        assert_eq!(choose(2, 1), Threads { decoder: 2, encoder: 2 });
        assert_eq!(choose(16, 2), Threads { decoder: 4, encoder: 8 });
        assert_eq!(choose(16, 5), Threads { decoder: 3, encoder: 3 });
        assert_eq!(choose(0, 0), Threads { decoder: 1, encoder: 1 });
    }

    #[test]
    fn slots_count_running_transcoders_and_explicit_settings_win() {
        let (slot, threads) = TranscodingSlot::take(3);
        assert_eq!(threads, Threads { decoder: 0, encoder: 3 });
        assert!(transcoding() >= 1, "this one counts while it lives");
        drop(slot);
    }
}
