//! Making FFmpeg's blocking calls abandonable: the state behind libavformat's interrupt callback.
//!
//! libavformat polls `AVIOInterruptCB` while it waits on a socket (every few tens of milliseconds), and gives
//! up with `AVERROR_EXIT` when the callback says so. Each format context gets one [`Interrupter`]: it fires
//! when the worker's stop flag is raised or when the deadline of the current operation has passed. The
//! deadline is re-armed before every blocking call, which makes it a per-operation timeout and, for reads, the
//! watchdog for a camera that stops sending without closing the socket.
//!
//! After a stop, what is left (flushing encoders, the FLV trailer) runs under a *finishing* deadline set once
//! by [`Interrupter::finish_within`]: a cap that later `arm` calls can only bring closer, never push back. So
//! the bound on a stop holds by construction, however many packets are still written against a stalled
//! RTMP server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::fence::Fence;

/// Why an interrupted call was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The worker was asked to stop.
    Stop,
    /// The operation's deadline passed.
    Deadline,
    /// The cluster fence closed: this node may no longer publish (see [`super::fence`]).
    Fenced,
}

/// Stop flag + per-operation deadline, shared with the callback FFmpeg calls.
#[derive(Debug)]
pub struct Interrupter {
    stop: Arc<AtomicBool>,
    fence: Fence,
    /// Whether the stop flag counts; off while writing the trailer after a stop, which must still complete.
    honor_stop: AtomicBool,
    epoch: Instant,
    /// Milliseconds after `epoch`; `u64::MAX` for no deadline.
    deadline_ms: AtomicU64,
    /// Milliseconds after `epoch` no deadline may pass once finishing; `u64::MAX` before.
    cap_ms: AtomicU64,
    /// The timeout the deadline was last armed with, for error messages.
    armed_for_ms: AtomicU64,
}

impl Interrupter {
    /// An interrupter that watches `stop` and has no deadline yet.
    #[cfg(test)]
    pub fn new(stop: Arc<AtomicBool>) -> Arc<Interrupter> {
        Interrupter::fenced(stop, Fence::open())
    }

    /// An interrupter that also fires when `fence` closes — even while finishing: a fenced node must not
    /// write another byte.
    pub fn fenced(stop: Arc<AtomicBool>, fence: Fence) -> Arc<Interrupter> {
        Arc::new(Interrupter {
            stop,
            fence,
            honor_stop: AtomicBool::new(true),
            epoch: Instant::now(),
            deadline_ms: AtomicU64::new(u64::MAX),
            cap_ms: AtomicU64::new(u64::MAX),
            armed_for_ms: AtomicU64::new(0),
        })
    }

    /// Allows the next blocking call `timeout` from now — or until the finishing cap, if that is sooner.
    #[inline]
    pub fn arm(&self, timeout: Duration) {
        let now = self.now_ms();
        let deadline = now.saturating_add(timeout.as_millis() as u64).min(self.cap_ms.load(Ordering::Relaxed));
        self.deadline_ms.store(deadline, Ordering::Relaxed);
        self.armed_for_ms.store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// From now on the stop flag no longer interrupts, and nothing may run past `within` from now: used to
    /// finish the output cleanly after a stop, in bounded time. A second call can only shorten the bound.
    pub fn finish_within(&self, within: Duration) {
        self.honor_stop.store(false, Ordering::Relaxed);
        let cap = self.now_ms().saturating_add(within.as_millis() as u64);
        self.cap_ms.fetch_min(cap, Ordering::Relaxed);
        self.deadline_ms.fetch_min(cap, Ordering::Relaxed);
        self.armed_for_ms.store(within.as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the current deadline has passed (a wait on `EAGAIN` must give up then too).
    pub fn expired(&self) -> bool {
        self.now_ms() > self.deadline_ms.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The timeout the deadline was last armed with.
    pub fn armed_for(&self) -> Duration {
        Duration::from_millis(self.armed_for_ms.load(Ordering::Relaxed))
    }

    /// Whether a blocking call should give up now, and why.
    pub fn check(&self) -> Option<Interruption> {
        if !self.fence.is_open() {
            return Some(Interruption::Fenced);
        }
        if self.honor_stop.load(Ordering::Relaxed) && self.stop.load(Ordering::Relaxed) {
            return Some(Interruption::Stop);
        }
        self.expired().then_some(Interruption::Deadline)
    }

    /// The closure handed to FFmpeg's interrupt callback.
    pub fn callback(self: &Arc<Self>) -> impl FnMut() -> bool + Send + 'static {
        let me = Arc::clone(self);
        move || me.check().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_on_stop_and_deadline() {
        let stop = Arc::new(AtomicBool::new(false));
        let i = Interrupter::new(stop.clone());
        assert_eq!(i.check(), None, "no deadline armed yet");
        i.arm(Duration::from_secs(60));
        assert_eq!(i.check(), None);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(i.check(), Some(Interruption::Stop));
        i.finish_within(Duration::from_secs(30));
        assert_eq!(i.check(), None, "finishing ignores the stop flag");
        i.arm(Duration::ZERO);
        // Millisecond resolution: wait until the clock has moved past the deadline.
        let until = Instant::now() + Duration::from_millis(5);
        while Instant::now() < until {}
        assert_eq!(i.check(), Some(Interruption::Deadline));
        assert_eq!(i.armed_for(), Duration::ZERO);
    }

    #[test]
    fn arming_cannot_extend_the_finishing_deadline() {
        let i = Interrupter::new(Arc::new(AtomicBool::new(true)));
        i.arm(Duration::from_secs(60));
        i.finish_within(Duration::from_millis(1));
        // A write re-arms with its full write timeout; the finishing cap still wins.
        i.arm(Duration::from_secs(10));
        let until = Instant::now() + Duration::from_millis(5);
        while Instant::now() < until {}
        assert_eq!(i.check(), Some(Interruption::Deadline));
        // A later, longer finishing bound does not move it either.
        i.finish_within(Duration::from_secs(60));
        i.arm(Duration::from_secs(10));
        assert_eq!(i.check(), Some(Interruption::Deadline));
    }
}
