//! The clock the gateway's policy runs on: retry backoffs, on-demand lingers, viewer expiry.
//!
//! Everything that *waits* by policy asks a [`Clock`] instead of the OS, as moonfire-nvr does, so tests can
//! drive hours of backoffs and lingers without sleeping through them: [`ManualClock`] only moves when the
//! test calls [`ManualClock::advance`], and fires every timer that falls due. The data path keeps using the
//! real clock: media timing is not policy.
//!
//! Timers come in the two shapes the runtime needs: a crossbeam channel for camera threads (selected
//! together with their command channel) and a future for async tasks.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;

/// A future that completes when a clock's timer fires.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of time and timers. Shared as `Arc<dyn Clock>`.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Monotonic now.
    fn now(&self) -> Instant;
    /// Wall-clock now, for timestamps shown to people.
    fn system_time(&self) -> SystemTime;
    /// A channel that receives once, `after` from now (for threads: `select!` it with other channels).
    fn after(&self, after: Duration) -> Receiver<Instant>;
    /// A future that completes `after` from now. The deadline is fixed when this is called, not when the
    /// future is first polled.
    fn sleep(&self, after: Duration) -> Sleep;
}

/// The operating system's clocks and timers.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn system_time(&self) -> SystemTime {
        SystemTime::now()
    }

    fn after(&self, after: Duration) -> Receiver<Instant> {
        crossbeam_channel::after(after)
    }

    fn sleep(&self, after: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(after))
    }
}

/// A clock that stands still until told to move; for tests.
///
/// ```
/// use std::time::Duration;
/// use camgate::runtime::clock::{Clock, ManualClock};
/// let clock = ManualClock::new();
/// let timer = clock.after(Duration::from_secs(60));
/// assert!(timer.try_recv().is_err());
/// clock.advance(Duration::from_secs(60));
/// assert!(timer.try_recv().is_ok());
/// ```
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    start_wall: SystemTime,
    state: Mutex<ManualState>,
}

#[derive(Debug, Default)]
struct ManualState {
    elapsed: Duration,
    timers: Vec<(Duration, Timer)>,
}

#[derive(Debug)]
enum Timer {
    Channel(crossbeam_channel::Sender<Instant>),
    Future(tokio::sync::oneshot::Sender<()>),
}

impl ManualClock {
    /// A clock at the real present, standing still.
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            start: Instant::now(),
            start_wall: SystemTime::now(),
            state: Mutex::new(ManualState::default()),
        })
    }

    /// Moves time forward and fires every timer that falls due.
    pub fn advance(&self, by: Duration) {
        let due = {
            let mut state = self.lock();
            state.elapsed += by;
            let now = state.elapsed;
            let (due, pending): (Vec<_>, Vec<_>) = state.timers.drain(..).partition(|(at, _)| *at <= now);
            state.timers = pending;
            due
        };
        let now = self.now();
        for (_, timer) in due {
            match timer {
                Timer::Channel(tx) => {
                    let _ = tx.try_send(now);
                }
                Timer::Future(tx) => {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// Timers set and not yet fired (for tests to know that a wait has begun). A timer whose waiter gave up
    /// early still counts until its time comes.
    pub fn pending_timers(&self) -> usize {
        self.lock().timers.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.lock().elapsed
    }

    fn system_time(&self) -> SystemTime {
        self.start_wall + self.lock().elapsed
    }

    fn after(&self, after: Duration) -> Receiver<Instant> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut state = self.lock();
        if after.is_zero() {
            let _ = tx.try_send(self.start + state.elapsed);
        } else {
            let at = state.elapsed + after;
            state.timers.push((at, Timer::Channel(tx)));
        }
        rx
    }

    fn sleep(&self, after: Duration) -> Sleep {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut state = self.lock();
            if after.is_zero() {
                let _ = tx.send(());
            } else {
                let at = state.elapsed + after;
                state.timers.push((at, Timer::Future(tx)));
            }
        }
        Box::pin(async move {
            // A dropped clock never fires: the sleeper waits for ever, as it would for a very long timer.
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_fires_only_due_timers() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        let short = clock.after(Duration::from_secs(1));
        let long = clock.after(Duration::from_secs(10));
        let sleep = clock.sleep(Duration::from_secs(5));
        assert_eq!(clock.pending_timers(), 3);
        clock.advance(Duration::from_secs(5));
        assert!(short.try_recv().is_ok());
        assert!(long.try_recv().is_err());
        tokio::time::timeout(Duration::from_secs(5), sleep).await.expect("the 5 s sleep fired");
        assert_eq!(clock.now() - t0, Duration::from_secs(5));
        assert_eq!(clock.pending_timers(), 1);
        clock.advance(Duration::from_secs(5));
        assert!(long.try_recv().is_ok());
        assert_eq!(clock.pending_timers(), 0);
    }
}
