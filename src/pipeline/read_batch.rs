//! Batched reads for copying cameras: after a read that had to wait for the camera, the thread waits a little
//! longer before it reads again, so that one wake-up handles everything that arrived meanwhile. SRS calls the
//! same idea "merged read" (`mr_latency`) on its publishing side, and "merged write" on its playing side.
//!
//! Why: a copied camera costs almost nothing in camgate's own code. Its CPU goes to the kernel, waking the
//! thread for each burst of RTP packets — a video frame, an audio frame, ~100 times a second — and a fifth of
//! a copying camera's time was in `finish_task_switch` under `poll` (BENCHMARKS.md, "Batched reads"). Waiting
//! 100 ms after a wake-up cuts the wake-ups to ~25 a second, and the CPU per frame by about a third. Packets
//! then wait in the socket for up to the window, which is what it costs: at most the window in latency.
//! Transcoding cameras do not batch. Their CPU is the codecs', and a burst of frames would queue behind
//! each other in the decoder and the encoder.
//!
//! A stop (`runtime::worker`) and a warm camera's gate opening (`pipeline::gate`) unpark the thread, so a batch
//! delays neither.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A read that took this long had to wait for the camera (a packet already buffered comes back in
/// microseconds); one preempted on a busy machine may look the same, which only starts a batch early.
const WAITED: Duration = Duration::from_micros(200);

/// When a camera thread lets packets gather before reading on.
#[derive(Debug)]
pub(crate) struct ReadBatch {
    window: Duration,
    asked: Instant,
}

impl ReadBatch {
    /// Batches of `window` (zero: none).
    pub(crate) fn new(window: Duration) -> ReadBatch {
        ReadBatch { window, asked: Instant::now() }
    }

    /// Call just before each read.
    pub(crate) fn before_read(&mut self) {
        if !self.window.is_zero() {
            self.asked = Instant::now();
        }
    }

    /// Call once the packet the read returned has been handled; `active` says whether this camera batches
    /// now (it copies its video and its first frame is out). If that read waited for the camera, waits for
    /// the window, or until the thread is unparked for a stop.
    pub(crate) fn after_packet(&self, active: bool, stop: &AtomicBool) {
        if self.window.is_zero() || !active || self.asked.elapsed() < WAITED || stop.load(Ordering::SeqCst) {
            return;
        }
        // A spurious or stray unpark only ends this batch early.
        std::thread::park_timeout(self.window);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Runs `body` on a thread; whether it finished within 10 s (a batch here is 30 s).
    fn finishes_without_a_batch(body: impl FnOnce() + Send + 'static) -> bool {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            body();
            let _ = done_tx.send(());
        });
        done_rx.recv_timeout(Duration::from_secs(10)).is_ok()
    }

    #[test]
    fn only_a_read_that_waited_starts_a_batch_and_only_when_active() {
        let window = Duration::from_secs(30);
        assert!(finishes_without_a_batch(move || {
            let mut batch = ReadBatch::new(window);
            batch.before_read();
            batch.after_packet(true, &AtomicBool::new(false)); // the read returned at once
        }));
        assert!(finishes_without_a_batch(move || {
            let mut batch = ReadBatch::new(window);
            batch.before_read();
            std::thread::sleep(WAITED * 2);
            batch.after_packet(false, &AtomicBool::new(false)); // transcoding, or before the first frame
        }));
        assert!(finishes_without_a_batch(move || {
            let mut batch = ReadBatch::new(Duration::ZERO);
            batch.before_read();
            std::thread::sleep(WAITED * 2);
            batch.after_packet(true, &AtomicBool::new(false)); // batching off
        }));
    }

    #[test]
    fn a_stop_ends_a_batch_at_once() {
        let mut batch = ReadBatch::new(Duration::from_secs(30));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                batch.before_read();
                std::thread::sleep(WAITED * 2); // the read waited for the camera
                ready_tx.send(()).unwrap();
                batch.after_packet(true, &stop);
                done_tx.send(()).unwrap();
            })
        };
        ready_rx.recv().unwrap();
        // Still in its batch, with 30 s to go, until the stop: flag first, then unpark, as the worker does.
        assert!(done_rx.recv_timeout(Duration::from_millis(100)).is_err(), "the batch did not wait");
        stop.store(true, Ordering::SeqCst);
        thread.thread().unpark();
        done_rx.recv_timeout(Duration::from_secs(10)).expect("the stop ended the batch");
        thread.join().unwrap();
    }
}
