//! The supervisor: owns every camera worker, starts and stops them on command, enforces the cap, and keeps each
//! camera's status (state, rates, totals) current.
//!
//! A [`Supervisor`] is a cheap, cloneable handle. Behind it one thread (`camgate-supervisor`) owns the workers
//! and reacts to three inputs: commands from handles, reports from workers, and a once-a-second tick that turns
//! counters into rates. Nothing on that thread blocks: a stop signals the worker and the reply is sent when the
//! worker's exit report arrives, or when that stop's own deadline passes — whichever comes first — so one hung
//! camera delays no other, and no stop request, the first or the tenth, waits longer than `stop_timeout`.
//!
//! Calls come in two flavours: `async` ones for tokio (or any executor), which never block a runtime thread,
//! and `_blocking` ones for plain threads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, select};
use tokio::sync::{broadcast, oneshot};
use tracing::{info, warn};

use super::clock::{Clock, SystemClock};
use super::cpu::{CpuMeter, thread_name};
use super::gates::OutputGates;
use super::stats::{CameraStatus, Event, RateWindow, Rates, RetryStatus, ViewerCounts, WorkerState};
use super::worker::{Report, WorkerContext, WorkerHandle};
use crate::model::{CameraId, HostPolicy, StreamSpec, SupervisorError};
use crate::pipeline::fence::Fence;
use crate::preview::snapshot::{self, SnapshotError};
use crate::preview::{PreviewHub, PreviewLimits};

/// Limits and timings of a [`Supervisor`].
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Most workers alive at once; a start beyond it fails at once with [`SupervisorError::LimitReached`].
    pub max_cameras: usize,
    /// How long a stop may take before the worker is reported [`WorkerState::Stuck`] and the stop answered
    /// with [`SupervisorError::StopTimeout`].
    pub stop_timeout: Duration,
    /// How often rates are recomputed and statuses published.
    pub stats_interval: Duration,
    /// The sliding window rates are computed over.
    pub rate_window: Duration,
    /// Viewers the built-in preview serves.
    pub preview: PreviewLimits,
    /// The clock retry backoffs wait on.
    pub clock: Arc<dyn Clock>,
    /// Where cameras may be (by default: not on loopback, link-local or cloud metadata addresses); checked on
    /// the addresses a camera resolves to, at every connection.
    pub camera_hosts: Arc<HostPolicy>,
    /// Until when cameras may publish: always on a single box; moved by the cluster agent in a cluster.
    pub fence: Fence,
    #[doc(hidden)]
    pub faults: Faults,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_cameras: 5,
            stop_timeout: Duration::from_secs(5),
            stats_interval: Duration::from_secs(1),
            rate_window: Duration::from_secs(5),
            preview: PreviewLimits::default(),
            clock: Arc::new(SystemClock),
            camera_hosts: Arc::new(HostPolicy::default()),
            fence: Fence::open(),
            faults: Faults::default(),
        }
    }
}

/// Faults injected into camera threads, for tests of what happens when a camera's code misbehaves. Not part of
/// the supported API (hidden from the docs); empty by default.
#[doc(hidden)]
#[derive(Clone, Default)]
pub struct Faults {
    /// Called on the camera thread at the start of each session (camera, 1-based session number); a panic in
    /// it is a panicking worker.
    pub on_session: Option<SessionFault>,
}

/// See [`Faults::on_session`].
#[doc(hidden)]
pub type SessionFault = Arc<dyn Fn(&CameraId, u32) + Send + Sync>;

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").field("on_session", &self.on_session.is_some()).finish()
    }
}

/// What [`Supervisor::start`] did.
#[derive(Debug, Clone)]
pub enum StartOutcome {
    /// A new worker was started.
    Started(CameraStatus),
    /// A worker with this id was running already; nothing was changed.
    AlreadyRunning(CameraStatus),
}

impl StartOutcome {
    /// The camera's status, whichever way it went.
    pub fn status(&self) -> &CameraStatus {
        match self {
            StartOutcome::Started(s) | StartOutcome::AlreadyRunning(s) => s,
        }
    }
}

type Reply<T> = oneshot::Sender<T>;
type StopReply = Reply<Result<CameraStatus, SupervisorError>>;

enum Command {
    Start { spec: Box<StreamSpec>, reply: Reply<Result<StartOutcome, SupervisorError>> },
    Stop { id: CameraId, reply: StopReply },
    StopAll { reply: Reply<Vec<Result<CameraStatus, SupervisorError>>> },
    Shutdown { reply: Reply<()> },
}

/// A handle to the supervisor thread. Clone it freely; when the last clone is dropped (or
/// [`shutdown`](Supervisor::shutdown) is called) every camera is stopped and the thread exits.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use camgate::{StreamSpec, Supervisor, SupervisorConfig};
/// let supervisor = Supervisor::new(SupervisorConfig::default());
/// let spec = StreamSpec::new("door", "rtsp://10.0.0.5/stream1", "rtmp://127.0.0.1/live/door")?;
/// supervisor.start(spec).await?;
/// for camera in supervisor.snapshot() {
///     println!("{} {:?} {:.1} fps", camera.id, camera.state, camera.rates.fps_out);
/// }
/// supervisor.stop(&"door".parse()?).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    commands: Sender<Command>,
    hub: Arc<PreviewHub>,
    viewers: Arc<ViewerCounts>,
    gates: Arc<OutputGates>,
    statuses: Arc<RwLock<BTreeMap<CameraId, CameraStatus>>>,
    events: broadcast::Sender<Event>,
    thread: Mutex<Option<JoinHandle<()>>>,
    config: SupervisorConfig,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping `commands` (after this body) tells the thread to stop every worker; wait for it so no camera
        // thread outlives the last handle.
        let (dead, _) = crossbeam_channel::bounded(0);
        drop(std::mem::replace(&mut self.commands, dead));
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

impl Supervisor {
    /// Starts the supervisor thread.
    pub fn new(config: SupervisorConfig) -> Supervisor {
        let (commands, command_rx) = crossbeam_channel::unbounded();
        let statuses = Arc::new(RwLock::new(BTreeMap::new()));
        let (events, _) = broadcast::channel(1024);
        let hub = Arc::new(PreviewHub::new(config.preview));
        let viewers = Arc::new(ViewerCounts::default());
        let gates = Arc::new(OutputGates::default());
        let thread = {
            let state = SupervisorThread {
                config: config.clone(),
                hub: Arc::clone(&hub),
                viewers: Arc::clone(&viewers),
                gates: Arc::clone(&gates),
                commands: command_rx,
                reports: crossbeam_channel::unbounded(),
                cameras: BTreeMap::new(),
                statuses: Arc::clone(&statuses),
                events: events.clone(),
                shutting_down: false,
                cpu: CpuMeter::default(),
                ticks: 0,
            };
            thread::Builder::new()
                .name("camgate-supervisor".into())
                .spawn(move || state.run())
                .expect("the OS refused the supervisor thread")
        };
        Supervisor {
            inner: Arc::new(Inner {
                commands,
                hub,
                viewers,
                gates,
                statuses,
                events,
                thread: Mutex::new(Some(thread)),
                config,
            }),
        }
    }

    /// The built-in preview hub: every camera's FLV from its latest keyframe, for viewers and snapshots.
    pub fn preview(&self) -> &PreviewHub {
        &self.inner.hub
    }

    /// A JPEG of the camera's latest picture, at most `max_width` wide, decoded from the preview channel's GOP
    /// on the calling thread (tens of milliseconds of CPU; from async code use
    /// [`Gateway::snapshot`](crate::Gateway::snapshot), which bounds how many run at once).
    pub fn jpeg(&self, id: &CameraId, max_width: Option<u32>) -> Result<Vec<u8>, SnapshotError> {
        let gop = self.inner.hub.cached_gop(id).ok_or(SnapshotError::NoPicture)?;
        snapshot::jpeg(&gop, max_width)
    }

    /// Viewer counts from the RTMP server's hooks, copied into each camera's status (`viewers`) on every
    /// stats refresh.
    pub fn viewer_counts(&self) -> &Arc<ViewerCounts> {
        &self.inner.viewers
    }

    /// The output gates of warm on-demand cameras: set a camera's gate before starting it to make it warm.
    pub fn output_gates(&self) -> &Arc<OutputGates> {
        &self.inner.gates
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SupervisorConfig {
        &self.inner.config
    }

    /// Validates `spec` and starts its worker; returns as soon as the thread runs (not when video flows).
    ///
    /// A camera already running under the same id is left alone and reported as
    /// [`StartOutcome::AlreadyRunning`]. A camera that failed or stopped is started afresh.
    pub async fn start(&self, spec: StreamSpec) -> Result<StartOutcome, SupervisorError> {
        self.request_start(spec)?.await.map_err(|_| SupervisorError::ShutDown)?
    }

    /// [`start`](Self::start) for non-async callers. Must not be called from inside an async runtime.
    pub fn start_blocking(&self, spec: StreamSpec) -> Result<StartOutcome, SupervisorError> {
        self.request_start(spec)?.blocking_recv().map_err(|_| SupervisorError::ShutDown)?
    }

    /// Stops one camera and returns its final status once its thread has exited (normally within ~100 ms;
    /// [`SupervisorError::StopTimeout`] after `stop_timeout`, also for a second stop of a stuck camera). A
    /// failed camera is simply removed.
    pub async fn stop(&self, id: &CameraId) -> Result<CameraStatus, SupervisorError> {
        self.request_stop(id)?.await.map_err(|_| SupervisorError::ShutDown)?
    }

    /// [`stop`](Self::stop) for non-async callers. Must not be called from inside an async runtime.
    pub fn stop_blocking(&self, id: &CameraId) -> Result<CameraStatus, SupervisorError> {
        self.request_stop(id)?.blocking_recv().map_err(|_| SupervisorError::ShutDown)?
    }

    /// Stops every camera in parallel; returns the results once all have exited (or timed out).
    pub async fn stop_all(&self) -> Vec<Result<CameraStatus, SupervisorError>> {
        match self.request_stop_all() {
            Ok(reply) => reply.await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// [`stop_all`](Self::stop_all) for non-async callers.
    pub fn stop_all_blocking(&self) -> Vec<Result<CameraStatus, SupervisorError>> {
        match self.request_stop_all() {
            Ok(reply) => reply.blocking_recv().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Every known camera's status (running ones, and failed ones until they are stopped or restarted).
    /// Never blocks for long: it reads a copy the supervisor keeps current.
    pub fn snapshot(&self) -> Vec<CameraStatus> {
        self.inner.statuses.read().map(|s| s.values().cloned().collect()).unwrap_or_default()
    }

    /// One camera's status.
    pub fn status(&self, id: &CameraId) -> Option<CameraStatus> {
        self.inner.statuses.read().ok().and_then(|s| s.get(id).cloned())
    }

    /// Status changes and periodic stats refreshes, for dashboards. A receiver that falls behind by more than
    /// 1024 events gets [`broadcast::error::RecvError::Lagged`] and continues with newer ones.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Stops every camera — whoever started it — and refuses further starts with
    /// [`SupervisorError::ShutDown`], from this handle and every clone. Returns once every camera thread has
    /// exited or been reported stuck.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
    }

    fn request_start(
        &self,
        spec: StreamSpec,
    ) -> Result<oneshot::Receiver<Result<StartOutcome, SupervisorError>>, SupervisorError> {
        spec.validate()?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Start { spec: Box::new(spec), reply })?;
        Ok(rx)
    }

    fn request_stop(
        &self,
        id: &CameraId,
    ) -> Result<oneshot::Receiver<Result<CameraStatus, SupervisorError>>, SupervisorError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Stop { id: id.clone(), reply })?;
        Ok(rx)
    }

    fn request_stop_all(
        &self,
    ) -> Result<oneshot::Receiver<Vec<Result<CameraStatus, SupervisorError>>>, SupervisorError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::StopAll { reply })?;
        Ok(rx)
    }

    fn send(&self, command: Command) -> Result<(), SupervisorError> {
        self.inner.commands.send(command).map_err(|_| SupervisorError::ShutDown)
    }
}

/// A stop request waiting for its camera's thread to exit.
struct PendingStop {
    reply: StopReply,
    deadline: Instant,
}

/// Several cameras' stops answered together (`stop_all`, `shutdown`).
struct Batch {
    waiting: usize,
    results: Vec<Result<CameraStatus, SupervisorError>>,
    done: Option<Reply<Vec<Result<CameraStatus, SupervisorError>>>>,
}

/// One camera as the supervisor thread knows it.
struct Camera {
    status: CameraStatus,
    /// `None` once the thread has exited and been joined.
    worker: Option<WorkerHandle>,
    started: Instant,
    rates: RateWindow,
    /// Replies owed to `stop` callers, each with its own deadline.
    stops: Vec<PendingStop>,
    /// Batches (stop-all, shutdown) waiting for this camera, with their deadline.
    batches: Vec<(usize, Instant)>,
    /// When the first stop was asked for; the camera is `Stuck` once `stop_timeout` has passed since.
    stopping_since: Option<Instant>,
}

struct SupervisorThread {
    config: SupervisorConfig,
    hub: Arc<PreviewHub>,
    viewers: Arc<ViewerCounts>,
    gates: Arc<OutputGates>,
    commands: Receiver<Command>,
    reports: (Sender<Report>, Receiver<Report>),
    cameras: BTreeMap<CameraId, Camera>,
    statuses: Arc<RwLock<BTreeMap<CameraId, CameraStatus>>>,
    events: broadcast::Sender<Event>,
    shutting_down: bool,
    cpu: CpuMeter,
    ticks: u64,
}

/// Every how many stats ticks the cameras' CPU is measured.
const CPU_EVERY_TICKS: u64 = 5;

impl SupervisorThread {
    fn run(mut self) {
        let ticker = crossbeam_channel::tick(self.config.stats_interval);
        let reports = self.reports.1.clone();
        let mut batches: Vec<Option<Batch>> = Vec::new();
        let mut shutdown_replies: Vec<Reply<()>> = Vec::new();
        loop {
            // Wake for the earliest stop deadline too, so every stop is answered on time to the millisecond.
            let wake = self.next_deadline().map_or_else(crossbeam_channel::never, crossbeam_channel::at);
            select! {
                recv(self.commands) -> command => match command {
                    Ok(Command::Start { spec, reply }) => {
                        let _ = reply.send(self.start(*spec));
                    }
                    Ok(Command::Stop { id, reply }) => self.stop(id, reply),
                    Ok(Command::StopAll { reply }) => self.stop_everything(&mut batches, reply),
                    Ok(Command::Shutdown { reply }) => {
                        self.shutting_down = true;
                        shutdown_replies.push(reply);
                        let (done, rx) = oneshot::channel();
                        self.stop_everything(&mut batches, done);
                        drop(rx);
                    }
                    Err(_) => break,
                },
                recv(reports) -> report => {
                    if let Ok(report) = report {
                        self.on_report(report, &mut batches);
                    }
                },
                recv(ticker) -> _ => self.on_tick(),
                recv(wake) -> _ => {}
            }
            self.answer_overdue(&mut batches);
            if self.shutting_down
                && self.cameras.values().all(|c| c.worker.is_none() || c.status.state == WorkerState::Stuck)
            {
                for reply in shutdown_replies.drain(..) {
                    let _ = reply.send(());
                }
            }
        }
        self.shut_down(&reports, &mut batches);
    }

    /// Every handle is gone: stop all workers and wait (bounded) for them.
    fn shut_down(&mut self, reports: &Receiver<Report>, batches: &mut Vec<Option<Batch>>) {
        self.shutting_down = true;
        for camera in self.cameras.values() {
            if let Some(worker) = &camera.worker {
                worker.request_stop();
            }
        }
        let deadline = Instant::now() + self.config.stop_timeout;
        while self.cameras.values().any(|c| c.worker.is_some()) {
            match reports.recv_deadline(deadline) {
                Ok(report) => self.on_report(report, batches),
                Err(_) => {
                    let stuck: Vec<String> =
                        self.cameras.iter().filter(|(_, c)| c.worker.is_some()).map(|(id, _)| id.to_string()).collect();
                    warn!(cameras = ?stuck, "camera threads did not stop in time; leaving them behind");
                    break;
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.cameras
            .values()
            .flat_map(|c| c.stops.iter().map(|s| s.deadline).chain(c.batches.iter().map(|(_, d)| *d)))
            .min()
    }

    fn start(&mut self, spec: StreamSpec) -> Result<StartOutcome, SupervisorError> {
        if self.shutting_down {
            return Err(SupervisorError::ShutDown);
        }
        if let Some(camera) = self.cameras.get(&spec.id) {
            match camera.status.state {
                WorkerState::Stopping | WorkerState::Stuck => return Err(SupervisorError::Stopping(spec.id)),
                _ if camera.worker.is_some() => return Ok(StartOutcome::AlreadyRunning(camera.status.clone())),
                _ => {}
            }
        }
        let running = self.cameras.values().filter(|c| c.worker.is_some()).count();
        if running >= self.config.max_cameras {
            return Err(SupervisorError::LimitReached { running, limit: self.config.max_cameras });
        }
        let status = CameraStatus::new(&spec, unix_ms(SystemTime::now()), self.viewers.get(&spec.id));
        let id = spec.id.clone();
        let channel = self.hub.open(&spec.id, spec.preview);
        let context = WorkerContext {
            channel,
            reports: self.reports.0.clone(),
            clock: Arc::clone(&self.config.clock),
            hosts: Arc::clone(&self.config.camera_hosts),
            fence: self.config.fence.clone(),
            faults: self.config.faults.clone(),
            gate: self.gates.get(&spec.id),
        };
        let worker = WorkerHandle::spawn(spec, context).map_err(|source| {
            self.hub.remove(&id);
            SupervisorError::Spawn { camera: id.clone(), source }
        })?;
        info!(camera = %id, "camera started");
        let camera = Camera {
            status,
            worker: Some(worker),
            started: Instant::now(),
            rates: RateWindow::new(self.config.rate_window),
            stops: Vec::new(),
            batches: Vec::new(),
            stopping_since: None,
        };
        self.cameras.insert(id.clone(), camera);
        let status = self.publish(&id).expect("camera inserted just above");
        Ok(StartOutcome::Started(status))
    }

    fn stop(&mut self, id: CameraId, reply: StopReply) {
        let deadline = Instant::now() + self.config.stop_timeout;
        let Some(camera) = self.cameras.get_mut(&id) else {
            let _ = reply.send(Err(SupervisorError::NotFound(id)));
            return;
        };
        if camera.worker.is_none() {
            // Already exited (failed): stopping it just forgets it.
            let status = self.remove(&id, &mut Vec::new());
            let _ = reply.send(status.ok_or(SupervisorError::NotFound(id)));
            return;
        }
        camera.stops.push(PendingStop { reply, deadline });
        self.begin_stop(&id);
    }

    /// Signals the worker (again: a repeated signal is harmless and re-sends the wake-up) and marks it stopping.
    fn begin_stop(&mut self, id: &CameraId) {
        let Some(camera) = self.cameras.get_mut(id) else { return };
        if let Some(worker) = &camera.worker {
            worker.request_stop();
        }
        if camera.stopping_since.is_none() {
            camera.stopping_since = Some(Instant::now());
            camera.status.state = WorkerState::Stopping;
            camera.status.retry = None;
            self.publish(id);
        }
    }

    fn stop_everything(
        &mut self,
        batches: &mut Vec<Option<Batch>>,
        reply: Reply<Vec<Result<CameraStatus, SupervisorError>>>,
    ) {
        let deadline = Instant::now() + self.config.stop_timeout;
        // In place before any camera refers to it; `waiting` counts up as cameras are signalled.
        let index = batches.len();
        batches.push(Some(Batch { waiting: 0, results: Vec::new(), done: Some(reply) }));
        let ids: Vec<CameraId> = self.cameras.keys().cloned().collect();
        for id in ids {
            let camera = self.cameras.get_mut(&id).expect("id taken from the map");
            if camera.worker.is_none() {
                if let Some(status) = self.remove(&id, batches)
                    && let Some(batch) = batches[index].as_mut()
                {
                    batch.results.push(Ok(status));
                }
                continue;
            }
            camera.batches.push((index, deadline));
            if let Some(batch) = batches[index].as_mut() {
                batch.waiting += 1;
            }
            self.begin_stop(&id);
        }
        finish_batch(batches, index);
    }

    /// Answers every stop whose deadline has passed, and marks their cameras stuck.
    fn answer_overdue(&mut self, batches: &mut Vec<Option<Batch>>) {
        let now = Instant::now();
        let timeout = self.config.stop_timeout;
        let ids: Vec<CameraId> = self.cameras.keys().cloned().collect();
        for id in ids {
            let camera = self.cameras.get_mut(&id).expect("id taken from the map");
            let overdue = |deadline: Instant| now >= deadline;
            let (late, waiting): (Vec<_>, Vec<_>) = camera.stops.drain(..).partition(|s| overdue(s.deadline));
            camera.stops = waiting;
            let (late_batches, waiting): (Vec<_>, Vec<_>) = camera.batches.drain(..).partition(|(_, d)| overdue(*d));
            camera.batches = waiting;
            let timed_out = !late.is_empty()
                || !late_batches.is_empty()
                || camera.stopping_since.is_some_and(|since| now >= since + timeout);
            // Whoever is told the stop timed out finds the camera reported stuck.
            let stuck = timed_out && camera.worker.is_some() && camera.status.state != WorkerState::Stuck;
            if stuck {
                camera.status.state = WorkerState::Stuck;
                warn!(camera = %id, "camera did not stop within {timeout:?}");
                self.publish(&id);
            }
            for stop in late {
                let _ = stop.reply.send(Err(SupervisorError::StopTimeout { camera: id.clone(), after: timeout }));
            }
            for (index, _) in late_batches {
                if let Some(batch) = batches.get_mut(index).and_then(Option::as_mut) {
                    batch.waiting -= 1;
                    batch.results.push(Err(SupervisorError::StopTimeout { camera: id.clone(), after: timeout }));
                }
                finish_batch(batches, index);
            }
        }
    }

    fn on_report(&mut self, report: Report, batches: &mut Vec<Option<Batch>>) {
        let id = match &report {
            Report::Session { id, .. }
            | Report::FirstFrame { id, .. }
            | Report::Warning { id, .. }
            | Report::Slate { id }
            | Report::Retrying { id, .. }
            | Report::Exited { id, .. } => id.clone(),
        };
        let Some(camera) = self.cameras.get_mut(&id) else { return };
        let stopping = camera.stopping_since.is_some();
        let status = &mut camera.status;
        match report {
            Report::Session { info, warnings, .. } => {
                status.session = Some(*info);
                status.warnings = warnings;
                status.first_frame_after_ms = None;
                status.retry = None;
                // Connected: an RTSP refusal of an earlier attempt is history (`last_error` keeps its words).
                status.rtsp_status = None;
                status.offline_slate_since_ms = None;
            }
            Report::Slate { .. } => status.offline_slate_since_ms = Some(unix_ms(SystemTime::now())),
            Report::FirstFrame { after, .. } => {
                status.first_frame_after_ms = Some(after.as_millis() as u64);
                if !stopping {
                    status.state = WorkerState::Running;
                }
            }
            Report::Warning { message, .. } => {
                // Bounded: a camera that keeps degrading must not grow its status for ever.
                if status.warnings.len() < 32 {
                    status.warnings.push(message);
                }
            }
            Report::Retrying { error, rtsp_status, attempt, retry_in, panicked, .. } => {
                status.last_error = Some(error);
                status.rtsp_status = rtsp_status;
                status.restarts += 1;
                if !stopping {
                    // A panic is a bug, not a network hiccup: it shows as failed while the retry is pending.
                    status.state = if panicked { WorkerState::Failed } else { WorkerState::Reconnecting };
                    status.retry = Some(RetryStatus { attempt, at_ms: unix_ms(SystemTime::now() + retry_in) });
                }
            }
            Report::Exited { error, rtsp_status, panicked, .. } => {
                if let Some(worker) = camera.worker.take() {
                    status.totals = worker.counters.totals();
                    worker.join();
                }
                status.retry = None;
                status.offline_slate_since_ms = None;
                status.rates = Rates::default();
                match error {
                    Some(error) if !stopping || panicked => {
                        status.state = WorkerState::Failed;
                        status.last_error = Some(error);
                        status.rtsp_status = rtsp_status;
                    }
                    _ => status.state = WorkerState::Stopped,
                }
                if stopping {
                    self.remove(&id, batches);
                    return;
                }
            }
        }
        self.publish(&id);
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        // Thread CPU is read from /proc every few ticks: it costs a file read per thread.
        self.ticks += 1;
        let cpu = (self.ticks % CPU_EVERY_TICKS == 0).then(|| self.cpu.sample());
        let ids: Vec<CameraId> = self.cameras.keys().cloned().collect();
        for id in ids {
            let camera = self.cameras.get_mut(&id).expect("id taken from the map");
            let Some(worker) = &camera.worker else { continue };
            let totals = worker.counters.totals();
            camera.status.rates = camera.rates.push(now, totals);
            camera.status.totals = totals;
            camera.status.uptime_secs = now.duration_since(camera.started).as_secs_f64();
            let (viewers, dropped) = self.hub.viewer_stats(&id);
            camera.status.preview_viewers = viewers;
            camera.status.preview_viewers_dropped = dropped;
            camera.status.viewers = self.viewers.get(&id);
            // Measured only over a window the camera spent running: a window that holds its start (connecting,
            // probing, waiting for a keyframe) would say a transcode costs nearly nothing, and admission and
            // placement would let too much in on that word. Until then the estimate stands.
            let window = self.config.stats_interval * CPU_EVERY_TICKS as u32;
            let running_for = camera.status.first_frame_after_ms.map_or(Duration::ZERO, |first| {
                now.duration_since(camera.started).saturating_sub(Duration::from_millis(first))
            });
            if let Some(cpu) =
                cpu.as_ref().filter(|_| camera.status.state == WorkerState::Running && running_for >= window)
            {
                let name = thread_name(&id);
                let sharing = self.cameras.keys().filter(|other| thread_name(other) == name).count().max(1);
                let camera = self.cameras.get_mut(&id).expect("id taken from the map");
                camera.status.cpu_cores = cpu.get(&name).map(|cores| cores / sharing as f64);
            }
            self.publish(&id);
        }
    }

    /// Copies a camera's status to the shared map and announces it.
    fn publish(&mut self, id: &CameraId) -> Option<CameraStatus> {
        let status = self.cameras.get(id)?.status.clone();
        if let Ok(mut statuses) = self.statuses.write() {
            statuses.insert(id.clone(), status.clone());
        }
        // No subscribers is fine.
        let _ = self.events.send(Event::Status(Box::new(status.clone())));
        Some(status)
    }

    /// Forgets an exited camera, answering whoever waited for its stop.
    fn remove(&mut self, id: &CameraId, batches: &mut Vec<Option<Batch>>) -> Option<CameraStatus> {
        let mut camera = self.cameras.remove(id)?;
        self.hub.remove(id);
        if let Some(worker) = &camera.worker {
            camera.status.totals = worker.counters.totals();
        }
        camera.status.uptime_secs = camera.started.elapsed().as_secs_f64();
        if let Ok(mut statuses) = self.statuses.write() {
            statuses.remove(id);
        }
        let _ = self.events.send(Event::Status(Box::new(camera.status.clone())));
        let _ = self.events.send(Event::Removed { id: id.clone() });
        for stop in camera.stops.drain(..) {
            let _ = stop.reply.send(Ok(camera.status.clone()));
        }
        for (index, _) in camera.batches.drain(..) {
            if let Some(batch) = batches.get_mut(index).and_then(Option::as_mut) {
                batch.waiting -= 1;
                batch.results.push(Ok(camera.status.clone()));
            }
            finish_batch(batches, index);
        }
        info!(camera = %id, state = ?camera.status.state, "camera removed");
        Some(camera.status)
    }
}

/// Sends a batch's results once nothing is left waiting, and frees its slot.
fn finish_batch(batches: &mut Vec<Option<Batch>>, index: usize) {
    let Some(slot) = batches.get_mut(index) else { return };
    if slot.as_ref().is_some_and(|b| b.waiting == 0)
        && let Some(mut batch) = slot.take()
        && let Some(done) = batch.done.take()
    {
        let _ = done.send(batch.results);
    }
    while batches.last().is_some_and(Option::is_none) {
        batches.pop();
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
