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
//! Where the thread waits depends on the reader. With libavformat's, a read that took long had waited for the
//! camera, and the thread parks after handling its packet: two wake-ups a batch, one for that packet and one at
//! the end of the park. camgate's own reader (`pipeline::rtsp`) knows when it has emptied the socket, and
//! parks there, before waiting for the next packet ([`Waits::InReader`]): one wake-up a batch.
//!
//! A batch's end need not be punctual, so a batching thread gives the kernel leave to wake it up to a twentieth
//! of the window late ([`TimerSlack`], 5 ms at 100 ms): the timers of many cameras then expire together, and
//! the threads they wake run one after another instead of each preempting another camera's thread mid-batch.
//! At 100 cameras parking in the reader, the slack took the camera threads' involuntary context switches from
//! about 2700 to 1500 a second (BENCHMARKS.md, "one wake-up a batch").
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

/// Where a batch's wait happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waits {
    /// In [`ReadBatch::after_packet`], after a read that waited for the camera (libavformat's reader).
    AfterPacket,
    /// In the reader, when it finds the socket empty: [`ReadBatch::after_packet`] says how long to let it wait.
    InReader,
}

/// The calling thread's timer slack widened for as long as this lives; the previous slack is put back on drop.
/// Must be dropped on the thread that made it (it is neither `Send` nor `Sync`).
#[derive(Debug)]
struct TimerSlack {
    previous: libc::c_ulong,
    _this_thread: std::marker::PhantomData<*const ()>,
}

impl TimerSlack {
    /// Lets the kernel end this thread's timed waits up to `slack` late; `None` if it cannot.
    fn widen(slack: Duration) -> Option<TimerSlack> {
        let nanos = libc::c_ulong::try_from(slack.as_nanos()).ok()?;
        // SAFETY: PR_GET_TIMERSLACK takes no pointer and returns the calling thread's slack (or -1).
        let previous = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
        let previous = libc::c_ulong::try_from(previous).ok()?;
        // SAFETY: PR_SET_TIMERSLACK takes the slack by value and changes only the calling thread.
        (unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, nanos, 0, 0, 0) } == 0)
            .then_some(TimerSlack { previous, _this_thread: std::marker::PhantomData })
    }
}

impl Drop for TimerSlack {
    fn drop(&mut self) {
        // SAFETY: as in `widen`; this runs on the thread that widened its slack (`TimerSlack` is not `Send`).
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, self.previous, 0, 0, 0) };
    }
}

/// When a camera thread lets packets gather before reading on.
#[derive(Debug)]
pub(crate) struct ReadBatch {
    /// `read_batch_ms`.
    longest: Duration,
    waits: Waits,
    /// With [`Waits::InReader`], the wait the reader was last given.
    lingering: Duration,
    /// The window now: `longest`, or shorter for a camera that sends [`BATCH_BYTES`] sooner.
    window: Duration,
    asked: Instant,
    /// How long the last read took.
    read_took: Duration,
    /// Bytes read since `period_start`.
    bytes: u64,
    period_start: Instant,
    /// While batching: a twentieth of `longest`.
    _slack: Option<TimerSlack>,
}

impl ReadBatch {
    /// Batches of up to `longest` (zero: none), waited for where `waits` says.
    pub(crate) fn new(longest: Duration, waits: Waits) -> ReadBatch {
        let now = Instant::now();
        ReadBatch {
            longest,
            waits,
            lingering: Duration::ZERO,
            window: Duration::ZERO,
            asked: now,
            read_took: Duration::ZERO,
            bytes: 0,
            period_start: now,
            _slack: if longest.is_zero() { None } else { TimerSlack::widen(longest / 20) },
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
    /// camera batches now (its first frame is out). With [`Waits::AfterPacket`]: if that read waited for the
    /// camera, waits for the window, or until the thread is unparked for a stop. With [`Waits::InReader`]:
    /// returns how long the reader should now let packets gather, when that changed.
    #[must_use = "with `Waits::InReader`, the reader needs the new wait"]
    pub(crate) fn after_packet(&mut self, bytes: usize, active: bool, stop: &AtomicBool) -> Option<Duration> {
        if self.longest.is_zero() {
            return None;
        }
        self.bytes += bytes as u64;
        let period = self.asked.saturating_duration_since(self.period_start);
        if period >= RATE_PERIOD {
            self.window = window_for(self.longest, self.bytes, period);
            (self.bytes, self.period_start) = (0, self.asked);
        }
        let window = if active { self.window } else { Duration::ZERO };
        if self.waits == Waits::InReader {
            return (window != self.lingering).then(|| {
                self.lingering = window;
                window
            });
        }
        if window.is_zero() || self.read_took < WAITED || stop.load(Ordering::SeqCst) {
            return None;
        }
        // A spurious or stray unpark only ends this batch early.
        std::thread::park_timeout(window);
        None
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
        measured_waiting(longest, Waits::AfterPacket)
    }

    fn measured_waiting(longest: Duration, waits: Waits) -> ReadBatch {
        let mut batch = ReadBatch::new(longest, waits);
        batch.period_start -= RATE_PERIOD;
        batch.before_read();
        batch.after_read();
        assert_eq!(batch.after_packet(1, false, &AtomicBool::new(false)), None);
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
            assert_eq!(batch.after_packet(100, true, &AtomicBool::new(false)), None); // the read returned at once
        }));
        assert!(finishes_without_a_batch(move || {
            let mut batch = measured(window);
            batch.before_read();
            batch.after_read();
            std::thread::sleep(WAITED * 2);
            // The read returned at once; handling its packet took long (a slow write): no batch.
            assert_eq!(batch.after_packet(100, true, &AtomicBool::new(false)), None);
        }));
        assert!(finishes_without_a_batch(move || {
            let mut batch = measured(window);
            read_that_waited(&mut batch);
            assert_eq!(batch.after_packet(100, false, &AtomicBool::new(false)), None); // before the first frame
        }));
        assert!(finishes_without_a_batch(move || {
            let mut batch = ReadBatch::new(window, Waits::AfterPacket);
            read_that_waited(&mut batch);
            assert_eq!(batch.after_packet(100, true, &AtomicBool::new(false)), None); // the rate not measured yet
        }));
        assert!(finishes_without_a_batch(move || {
            let mut batch = ReadBatch::new(Duration::ZERO, Waits::AfterPacket);
            read_that_waited(&mut batch);
            assert_eq!(batch.after_packet(100, true, &AtomicBool::new(false)), None); // batching off (or a transcoding camera)
        }));
        // ...and the test's slow camera would batch the whole 30 s.
        assert_eq!(measured(window).window(), window);
    }

    #[test]
    fn a_stop_ends_a_batch_at_once() {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut batch = measured(Duration::from_secs(30));
                read_that_waited(&mut batch);
                ready_tx.send(()).unwrap();
                assert_eq!(batch.after_packet(100, true, &stop), None);
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
    fn a_reader_that_waits_itself_is_told_the_window_when_it_changes_and_nothing_parks_here() {
        let window = Duration::from_secs(30);
        assert!(finishes_without_a_batch(move || {
            let mut batch = measured_waiting(window, Waits::InReader);
            read_that_waited(&mut batch);
            assert_eq!(batch.after_packet(100, false, &AtomicBool::new(false)), None, "before the first frame");
            read_that_waited(&mut batch);
            assert_eq!(batch.after_packet(100, true, &AtomicBool::new(false)), Some(window));
            read_that_waited(&mut batch);
            assert_eq!(batch.after_packet(100, true, &AtomicBool::new(false)), None, "told once");
            assert_eq!(batch.after_packet(100, false, &AtomicBool::new(false)), Some(Duration::ZERO));
        }));
        assert!(finishes_without_a_batch(move || {
            let mut batch = ReadBatch::new(window, Waits::InReader);
            read_that_waited(&mut batch);
            assert_eq!(batch.after_packet(100, true, &AtomicBool::new(false)), None, "the rate not measured yet");
        }));
    }

    #[test]
    fn a_batching_thread_widens_its_timer_slack_until_the_batches_end() {
        std::thread::spawn(|| {
            // SAFETY: reads the calling thread's slack; no pointer involved.
            let slack = || unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
            let before = slack();
            assert!(before > 0, "a thread's slack is readable");
            let batch = ReadBatch::new(Duration::from_millis(100), Waits::InReader);
            assert_eq!(slack(), 5_000_000, "a twentieth of the window");
            drop(batch);
            assert_eq!(slack(), before, "put back");
            let _unbatched = ReadBatch::new(Duration::ZERO, Waits::AfterPacket);
            assert_eq!(slack(), before, "no batches, no change");
        })
        .join()
        .unwrap();
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
