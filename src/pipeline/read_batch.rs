//! Batched reads for copying cameras: after a read that had to wait for the camera, the thread waits a little
//! longer before it reads again, so that one wake-up handles everything that arrived meanwhile. SRS calls the
//! same idea "merged read" (`mr_latency`) on its publishing side, and "merged write" on its playing side.
//!
//! Why: a copied camera costs almost nothing in camgate's own code. Its CPU goes to the kernel, waking the
//! thread for each burst of RTP packets — a video frame, an audio frame, ~100 times a second — and a fifth of
//! a copying camera's time was in `finish_task_switch` under `poll` (BENCHMARKS.md, "Batched reads"). Waiting
//! 100 ms after a wake-up cuts the process's context switches per camera to about a third, and the CPU per
//! frame by about a third. Packets then wait in the socket for up to the window, which is what it costs: at
//! most the window in latency. Transcoding cameras do not batch. Their CPU is the codecs', and a burst of
//! frames would queue behind each other in the decoder and the encoder.
//!
//! What the thread has not read yet waits in the kernel's socket buffer and, once that is full, in the
//! camera's, and a sender whose buffer fills drops frames. Batches longer than 100 ms saved no more CPU (the
//! thread's other wake-ups remain), so `read_batch_ms` is at most 100 (`model::MAX_READ_BATCH_MS`): GStreamer's
//! RTSP server lost none of its 2 Mbit/s cameras' frames even behind 250 ms, but a camera may buffer less
//! (BENCHMARKS.md). A faster camera fills those buffers sooner, so a batch also holds at most [`BATCH_BYTES`]
//! of its data: the window is the shorter of `read_batch_ms` and the time the camera takes to send that much,
//! measured each second. At 2 Mbit/s that is the whole 100 ms; at 8 Mbit/s it is 24 ms. There is no batching
//! in a camera's first second, before its rate is known.
//!
//! A stop (`runtime::worker`) and a warm camera's gate opening (`pipeline::gate`) unpark the thread, so a batch
//! delays neither.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A read that took this long had to wait for the camera (a packet already buffered comes back in
/// microseconds); one preempted on a busy machine may look the same, which only starts a batch early. Only the
/// read is timed, not the handling of its packet after it: a thread whose writes are slow (a loaded machine, a
/// slow RTMP server) would otherwise take every packet for a wait, park after each, and fall behind the camera.
const WAITED: Duration = Duration::from_micros(200);

/// The most of a camera's data a batch lets gather (payload bytes, as libavformat returns them).
const BATCH_BYTES: u64 = 24 * 1024;
/// How often the camera's data rate, and so the window, is measured again.
const RATE_PERIOD: Duration = Duration::from_secs(1);

/// When a camera thread lets packets gather before reading on.
#[derive(Debug)]
pub(crate) struct ReadBatch {
    /// `read_batch_ms`.
    longest: Duration,
    /// The window now: `longest`, or shorter for a camera that sends [`BATCH_BYTES`] sooner.
    window: Duration,
    asked: Instant,
    /// How long the last read took.
    read_took: Duration,
    /// Bytes read since `period_start`.
    bytes: u64,
    period_start: Instant,
}

impl ReadBatch {
    /// Batches of up to `longest` (zero: none).
    pub(crate) fn new(longest: Duration) -> ReadBatch {
        let now = Instant::now();
        ReadBatch {
            longest,
            window: Duration::ZERO,
            asked: now,
            read_took: Duration::ZERO,
            bytes: 0,
            period_start: now,
        }
    }

    /// The window now (zero until the camera's rate has been measured once).
    #[cfg(test)]
    fn window(&self) -> Duration {
        self.window
    }

    /// Call just before each read.
    pub(crate) fn before_read(&mut self) {
        if !self.longest.is_zero() {
            self.asked = Instant::now();
        }
    }

    /// Call as soon as a read has returned a packet.
    pub(crate) fn after_read(&mut self) {
        if !self.longest.is_zero() {
            self.read_took = self.asked.elapsed();
        }
    }

    /// Call once the packet the read returned (`bytes` long) has been handled; `active` says whether this
    /// camera batches now (its first frame is out). If that read waited for the camera, waits for the
    /// window, or until the thread is unparked for a stop.
    pub(crate) fn after_packet(&mut self, bytes: usize, active: bool, stop: &AtomicBool) {
        if self.longest.is_zero() {
            return;
        }
        self.bytes += bytes as u64;
        let period = self.asked.saturating_duration_since(self.period_start);
        if period >= RATE_PERIOD {
            self.window = window_for(self.longest, self.bytes, period);
            (self.bytes, self.period_start) = (0, self.asked);
        }
        if self.window.is_zero() || !active || self.read_took < WAITED || stop.load(Ordering::SeqCst) {
            return;
        }
        // A spurious or stray unpark only ends this batch early.
        std::thread::park_timeout(self.window);
    }
}

/// The window for a camera that sent `bytes` over `period`: the time it takes to send [`BATCH_BYTES`], at
/// most `longest`.
fn window_for(longest: Duration, bytes: u64, period: Duration) -> Duration {
    if bytes == 0 {
        return longest;
    }
    // bytes per second = bytes / period; window = BATCH_BYTES / that.
    let nanos = u128::from(BATCH_BYTES) * period.as_nanos() / u128::from(bytes);
    longest.min(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A batch of up to `longest`, its rate measured (a camera sending a byte a second).
    fn measured(longest: Duration) -> ReadBatch {
        let mut batch = ReadBatch::new(longest);
        batch.period_start -= RATE_PERIOD;
        batch.before_read();
        batch.after_read();
        batch.after_packet(1, false, &AtomicBool::new(false));
        batch
    }

    /// A read that waited for the camera: `before_read`, the wait, `after_read`.
    fn read_that_waited(batch: &mut ReadBatch) {
        batch.before_read();
        std::thread::sleep(WAITED * 2);
        batch.after_read();
    }

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
            let mut batch = measured(window);
            batch.before_read();
            batch.after_read();
            batch.after_packet(100, true, &AtomicBool::new(false)); // the read returned at once
        }));
        assert!(finishes_without_a_batch(move || {
            let mut batch = measured(window);
            batch.before_read();
            batch.after_read();
            std::thread::sleep(WAITED * 2);
            // The read returned at once; handling its packet took long (a slow write): no batch.
            batch.after_packet(100, true, &AtomicBool::new(false));
        }));
        assert!(finishes_without_a_batch(move || {
            let mut batch = measured(window);
            read_that_waited(&mut batch);
            batch.after_packet(100, false, &AtomicBool::new(false)); // before the first frame
        }));
        assert!(finishes_without_a_batch(move || {
            let mut batch = ReadBatch::new(window);
            read_that_waited(&mut batch);
            batch.after_packet(100, true, &AtomicBool::new(false)); // the rate not measured yet
        }));
        assert!(finishes_without_a_batch(move || {
            let mut batch = ReadBatch::new(Duration::ZERO);
            read_that_waited(&mut batch);
            batch.after_packet(100, true, &AtomicBool::new(false)); // batching off (or a transcoding camera)
        }));
        // ...and the test's slow camera would batch the whole 30 s.
        assert_eq!(measured(window).window(), window);
    }

    #[test]
    fn a_stop_ends_a_batch_at_once() {
        let mut batch = measured(Duration::from_secs(30));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                read_that_waited(&mut batch);
                ready_tx.send(()).unwrap();
                batch.after_packet(100, true, &stop);
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

    #[test]
    fn the_window_holds_at_most_batch_bytes_of_the_camera_s_data() {
        let longest = Duration::from_millis(100);
        let second = Duration::from_secs(1);
        // 2 Mbit/s: 24 KiB take 98 ms; 8 Mbit/s: 24.6 ms; a slow camera, or one silent for the period: all 100.
        let mbit = |n: u64| n * 1_000_000 / 8;
        assert_eq!(window_for(longest, mbit(2), second).as_millis(), 98);
        assert_eq!(window_for(longest, mbit(8), second).as_micros(), 24_576);
        assert_eq!(window_for(longest, 10_000, second), longest);
        assert_eq!(window_for(longest, 0, second), longest);
        // Measured over 2.5 s instead of 1: the same rate, the same window.
        assert_eq!(window_for(longest, mbit(8) * 5 / 2, second * 5 / 2).as_micros(), 24_576);
    }
}
