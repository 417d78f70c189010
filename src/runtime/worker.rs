//! One camera's thread: runs pipeline sessions, reports what happens, and stops when told.
//!
//! The thread is named `cam-<id>` (visible in `top -H`, `perf`, panics and core dumps). It owns every FFmpeg
//! context of its camera; the rest of the process only sees [`WorkerHandle`] (stop flag, command channel,
//! counters) and the [`Report`]s it sends. A stop raises the flag — which libavformat's interrupt callback
//! sees within milliseconds even in a blocking read — and sends [`Command::Stop`], which wakes a worker waiting
//! between attempts.
//!
//! A panic is a bug, but it must never cost more than the camera it happened on: a panicking session is
//! caught, reported with its message and retried by the camera's retry policy like any failed session, and a
//! panic anywhere else on the thread still ends in a [`Report::Exited`] so the supervisor frees the slot.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use tracing::{info, warn};

use super::clock::Clock;
use super::supervisor::Faults;
use super::wake;
use crate::model::{CameraId, Counters, HostPolicy, PipelineError, SessionInfo, StreamSpec};
use crate::pipeline::fence::Fence;
use crate::pipeline::{self, Observer, Taps};
use crate::preview::Channel;

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
    Session { id: CameraId, info: Box<SessionInfo>, warnings: Vec<String> },
    /// The first frame of a session reached the output.
    FirstFrame { id: CameraId, after: Duration },
    /// Something degraded without stopping the camera.
    Warning { id: CameraId, message: String },
    /// The camera went away and the offline slate now stands in for it on its outputs.
    Slate { id: CameraId },
    /// A session failed (or panicked); the worker will try again after `retry_in`.
    Retrying { id: CameraId, error: String, rtsp_status: Option<u16>, attempt: u32, retry_in: Duration, panicked: bool },
    /// The thread is about to exit; `error` is `None` after a requested stop.
    Exited { id: CameraId, error: Option<String>, rtsp_status: Option<u16>, panicked: bool },
}

/// Why a session or a worker ended, for its status.
struct Failure {
    message: String,
    rtsp_status: Option<u16>,
}

impl From<&PipelineError> for Failure {
    fn from(error: &PipelineError) -> Failure {
        Failure { message: error.to_string(), rtsp_status: error.rtsp_status() }
    }
}

/// What a worker needs besides its spec.
pub(crate) struct WorkerContext {
    /// Where its FLV also goes: the camera's preview channel, which is also its GOP cache for snapshots.
    pub channel: Arc<Channel>,
    pub reports: Sender<Report>,
    pub clock: Arc<dyn Clock>,
    /// Where the camera may be: checked on the addresses it resolves to, at every connection.
    pub hosts: Arc<HostPolicy>,
    /// Until when this node may publish (cluster); checked before every write.
    pub fence: Fence,
    /// A warm camera's output gate (`None`: the output runs whenever the camera does).
    pub gate: Option<Arc<crate::pipeline::gate::OutputGate>>,
    pub faults: Faults,
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
    /// Starts `spec`'s worker on a new thread.
    pub(crate) fn spawn(spec: StreamSpec, context: WorkerContext) -> std::io::Result<WorkerHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (commands, command_rx) = crossbeam_channel::bounded(4);
        // Before the thread can block anywhere, so a stop can always wake it.
        wake::enabled();
        let thread = {
            let stop = Arc::clone(&stop);
            let counters = Arc::clone(&counters);
            thread::Builder::new().name(format!("cam-{}", spec.id)).spawn(move || {
                let id = spec.id.clone();
                let reports = context.reports.clone();
                let worker = Worker { spec, context, stop, counters, commands: command_rx };
                // The last line of defence: whatever panics on this thread, the supervisor hears of it.
                let (error, rtsp_status, panicked) = match catch_unwind(AssertUnwindSafe(|| worker.run())) {
                    Ok(Some(failure)) => (Some(failure.message), failure.rtsp_status, false),
                    Ok(None) => (None, None, false),
                    Err(payload) => {
                        let message = format!("camera thread panicked: {}", panic_message(payload.as_ref()));
                        warn!(camera = %id, "{message}");
                        (Some(message), None, true)
                    }
                };
                let _ = reports.send(Report::Exited { id, error, rtsp_status, panicked });
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
            // A copying camera letting packets gather (`pipeline::read_batch`) waits parked.
            thread.thread().unpark();
        }
    }

    /// Joins the thread; call after its [`Report::Exited`] arrived, when this cannot block for long.
    pub(crate) fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            // A panic was caught and reported on the thread; a join error here would be a panic in the
            // reporting itself.
            let _ = thread.join();
        }
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

struct Worker {
    spec: StreamSpec,
    context: WorkerContext,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    commands: Receiver<Command>,
}

/// How one session ended, from the retry loop's point of view.
enum SessionEnd {
    Stopped,
    Failed { error: PipelineError },
    Panicked { message: String },
}

impl Worker {
    /// The thread's body: sessions until a stop, or until the retry policy gives up. Returns the final error.
    fn run(&self) -> Option<Failure> {
        let id = &self.spec.id;
        pipeline::ffmpeg_log::set_thread_camera(Some(id.clone()));
        pipeline::ffmpeg_log::set_thread_secrets(self.spec.secrets());
        info!(camera = %id, input = %self.spec.input, output = %self.spec.outputs_redacted(), "worker started");
        let error = self.run_sessions();
        match &error {
            None => info!(camera = %id, "worker stopped"),
            Some(failure) => warn!(camera = %id, "worker failed: {}", failure.message),
        }
        error
    }

    fn run_sessions(&self) -> Option<Failure> {
        let policy = &self.spec.retry;
        let mut attempt = 0u32;
        let mut session = 0u32;
        // The offline slate between sessions, if one stands in for the camera; dropped (its outputs finished)
        // when the worker exits.
        let mut slate = None;
        loop {
            let started = Instant::now();
            session += 1;
            let (failure, panicked) = match self.run_session(session, &mut slate) {
                SessionEnd::Stopped => return None,
                // Not retried: the cluster agent decides whether this node may run the camera again.
                SessionEnd::Failed { error: error @ PipelineError::Fenced { .. } } => {
                    return Some(Failure::from(&error));
                }
                SessionEnd::Failed { error } => (Failure::from(&error), false),
                SessionEnd::Panicked { message } => {
                    (Failure { message: format!("camera thread panicked: {message}"), rtsp_status: None }, true)
                }
            };
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            // A session that ran healthily for a while starts the backoff over.
            if started.elapsed() >= policy.healthy_after() {
                attempt = 0;
            }
            attempt += 1;
            if policy.max_retries.is_some_and(|max| attempt > max) {
                return Some(failure);
            }
            let retry_in = policy.backoff(attempt, jitter_seed(&self.spec.id, attempt));
            warn!(camera = %self.spec.id, attempt, retry_in_ms = retry_in.as_millis() as u64, rtsp_status = ?failure.rtsp_status,
                  "{}", failure.message);
            let _ = self.context.reports.send(Report::Retrying {
                id: self.spec.id.clone(),
                error: failure.message,
                rtsp_status: failure.rtsp_status,
                attempt,
                retry_in,
                panicked,
            });
            let timer = self.context.clock.after(retry_in);
            select! {
                recv(timer) -> _ => {}
                recv(self.commands) -> _ => return None,
            }
        }
    }

    /// One session, with a panic in it caught and turned into a failure like any other.
    fn run_session(&self, session: u32, slate: &mut Option<pipeline::slate::Slate>) -> SessionEnd {
        let mut observer =
            ReportingObserver { id: &self.spec.id, reports: &self.context.reports, started: Instant::now() };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if let Some(fault) = &self.context.faults.on_session {
                fault(&self.spec.id, session);
            }
            pipeline::run(
                &self.spec,
                &self.context.hosts,
                &self.context.fence,
                &self.stop,
                &self.counters,
                &mut observer,
                Taps { preview: Some(&self.context.channel), gate: self.context.gate.as_deref() },
                slate,
            )
        }));
        match outcome {
            Ok(Ok(())) => SessionEnd::Stopped,
            Ok(Err(error)) => SessionEnd::Failed { error },
            Err(payload) => SessionEnd::Panicked { message: panic_message(payload.as_ref()) },
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
        let _ = self.reports.send(Report::Session { id: self.id.clone(), info: Box::new(info), warnings });
    }

    fn first_frame(&mut self) {
        let _ = self.reports.send(Report::FirstFrame { id: self.id.clone(), after: self.started.elapsed() });
    }

    fn warning(&mut self, message: String) {
        let _ = self.reports.send(Report::Warning { id: self.id.clone(), message });
    }

    fn offline_slate(&mut self) {
        let _ = self.reports.send(Report::Slate { id: self.id.clone() });
    }
}
