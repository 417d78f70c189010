//! One camera's thread: runs pipeline sessions, reports what happens, and stops when told.
//!
//! The thread is named `cam-<id>` (visible in `top -H`, `perf`, panics and core dumps). It owns every FFmpeg
//! context of its camera; the rest of the process only sees [`WorkerHandle`] (stop flag, command channel,
//! counters) and the [`Report`]s it sends. A stop raises the flag — which libavformat's interrupt callback
//! sees within milliseconds even in a blocking read — and sends [`Command::Stop`], which wakes a worker waiting
//! between attempts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tracing::{info, warn};

use crate::error::PipelineError;
use crate::hub::Channel;
use crate::pipeline::{self, Observer, Taps};
use crate::snapshot::KeyframeCache;
use crate::spec::{CameraId, RetryPolicy, StreamSpec};
use crate::stats::{Counters, SessionInfo};
use crate::wake;

/// What a worker can be told.
#[derive(Debug)]
pub(crate) enum Command {
    /// Finish the current session cleanly and exit.
    Stop,
}

/// What a worker tells the supervisor.
#[derive(Debug)]
pub(crate) enum Report {
    /// A session opened: what it found and decided.
    Session { id: CameraId, info: SessionInfo, warnings: Vec<String> },
    /// The first frame of a session reached the output.
    FirstFrame { id: CameraId, after: Duration },
    /// Something degraded without stopping the camera.
    Warning { id: CameraId, message: String },
    /// A session failed; the worker will try again at `retry_at`.
    Retrying { id: CameraId, error: String, attempt: u32, retry_in: Duration },
    /// The thread is about to exit; `error` is `None` after a requested stop.
    Exited { id: CameraId, error: Option<String> },
}

/// The supervisor's grip on a running worker.
pub(crate) struct WorkerHandle {
    stop: Arc<AtomicBool>,
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
    /// Shared with the thread, which bumps them per packet; the supervisor samples them for rates.
    pub(crate) counters: Arc<Counters>,
}

impl WorkerHandle {
    /// Starts `spec`'s worker on a new thread. Reports go to `reports`; FLV also to `preview` if given; the
    /// current GOP to `keyframes`.
    pub(crate) fn spawn(
        spec: StreamSpec,
        preview: Option<Arc<Channel>>,
        keyframes: Arc<KeyframeCache>,
        reports: Sender<Report>,
    ) -> std::io::Result<WorkerHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (commands, command_rx) = crossbeam_channel::bounded(4);
        // Before the thread can block anywhere, so a stop can always wake it.
        wake::enabled();
        let thread = {
            let stop = Arc::clone(&stop);
            let counters = Arc::clone(&counters);
            thread::Builder::new().name(format!("cam-{}", spec.id)).spawn(move || {
                Worker { spec, preview, keyframes, stop, counters, commands: command_rx, reports }.run()
            })?
        };
        Ok(WorkerHandle { stop, commands, thread: Some(thread), counters })
    }

    /// Asks the worker to stop; returns at once. The worker reports [`Report::Exited`] when it is done.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Full or disconnected both mean the worker already has (or no longer needs) the message.
        let _ = self.commands.try_send(Command::Stop);
        // A worker blocked in a socket wait sees the flag at once instead of after FFmpeg's next 100 ms poll.
        if let Some(thread) = &self.thread {
            wake::interrupt(thread);
        }
    }

    /// Joins the thread; call after its [`Report::Exited`] arrived, when this cannot block for long.
    pub(crate) fn join(mut self) {
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("a camera thread panicked");
        }
    }
}

struct Worker {
    spec: StreamSpec,
    preview: Option<Arc<Channel>>,
    keyframes: Arc<KeyframeCache>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    commands: Receiver<Command>,
    reports: Sender<Report>,
}

impl Worker {
    /// The thread's body: sessions until a stop, or until the retry policy gives up.
    fn run(self) {
        let id = self.spec.id.clone();
        info!(camera = %id, input = %self.spec.input, output = %self.spec.outputs_redacted(), "worker started");
        let error = self.run_sessions().err().map(|e| e.to_string());
        match &error {
            None => info!(camera = %id, "worker stopped"),
            Some(error) => warn!(camera = %id, "worker failed: {error}"),
        }
        let _ = self.reports.send(Report::Exited { id, error });
    }

    fn run_sessions(&self) -> Result<(), PipelineError> {
        let policy = &self.spec.retry;
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let mut observer = ReportingObserver { id: &self.spec.id, reports: &self.reports, started };
            let error = match pipeline::run(
                &self.spec,
                &self.stop,
                &self.counters,
                &mut observer,
                Taps { preview: self.preview.as_ref(), keyframes: Some(&self.keyframes) },
            ) {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            // A session that ran healthily for a while starts the backoff over.
            if started.elapsed() >= policy.healthy_after() {
                attempt = 0;
            }
            attempt += 1;
            if policy.max_retries.is_some_and(|max| attempt > max) {
                return Err(error);
            }
            let retry_in = policy.backoff(attempt, jitter_seed(&self.spec.id, attempt));
            warn!(camera = %self.spec.id, attempt, retry_in_ms = retry_in.as_millis() as u64, "{error}");
            let _ = self.reports.send(Report::Retrying {
                id: self.spec.id.clone(),
                error: error.to_string(),
                attempt,
                retry_in,
            });
            match self.commands.recv_timeout(retry_in) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    }
}

/// A number that differs between cameras and attempts, so cameras that failed together do not retry together.
fn jitter_seed(id: &CameraId, attempt: u32) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one((id, attempt))
}

struct ReportingObserver<'a> {
    id: &'a CameraId,
    reports: &'a Sender<Report>,
    started: Instant,
}

impl Observer for ReportingObserver<'_> {
    fn session(&mut self, info: SessionInfo, warnings: Vec<String>) {
        let _ = self.reports.send(Report::Session { id: self.id.clone(), info, warnings });
    }

    fn first_frame(&mut self) {
        let _ = self.reports.send(Report::FirstFrame { id: self.id.clone(), after: self.started.elapsed() });
    }

    fn warning(&mut self, message: String) {
        let _ = self.reports.send(Report::Warning { id: self.id.clone(), message });
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt` (1-based): exponential from `initial`, capped at `max`, with up to
    /// ±20 % jitter drawn from `seed`.
    pub fn backoff(&self, attempt: u32, seed: u64) -> Duration {
        let base = self.initial_backoff_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(30));
        let base = base.min(self.max_backoff_ms) as f64;
        let jitter = (seed % 401) as f64 / 1000.0 - 0.2;
        Duration::from_millis((base * (1.0 + jitter)).max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            max_retries: None,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            healthy_after_ms: 60_000,
        };
        let no_jitter = 200; // seed % 401 == 200 → factor 1.0
        let waits: Vec<u64> = (1..=9).map(|a| policy.backoff(a, no_jitter).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(policy.backoff(1000, no_jitter).as_millis(), 30_000, "huge attempt counts do not overflow");
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let policy =
            RetryPolicy { max_retries: None, initial_backoff_ms: 1000, max_backoff_ms: 1000, healthy_after_ms: 0 };
        for seed in 0..2000 {
            let ms = policy.backoff(1, seed).as_millis();
            assert!((800..=1200).contains(&ms), "{ms}");
        }
    }
}
