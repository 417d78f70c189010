//! The supervisor: owns every camera worker, starts and stops them on command, enforces the cap, and keeps each
//! camera's status (state, rates, totals) current.
//!
//! A [`Supervisor`] is a cheap, cloneable handle. Behind it one thread (`camgate-supervisor`) owns the workers
//! and reacts to three inputs: commands from handles, reports from workers, and a once-a-second tick that turns
//! counters into rates. Nothing on that thread blocks: a stop signals the worker and the reply is sent when the
//! worker's exit report arrives (or the stop deadline passes), so one hung camera cannot delay another.
//!
//! Calls come in two flavours: `async` ones for tokio (or any executor), which never block a runtime thread,
//! and `_blocking` ones for plain threads.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, select};
use tokio::sync::{broadcast, oneshot};
use tracing::{info, warn};

use crate::error::SupervisorError;
use crate::hub::PreviewHub;
use crate::snapshot::{KeyframeCache, SnapshotError};
use crate::spec::{CameraId, OutputTarget, StreamSpec};
use crate::stats::{CameraStatus, Event, RateWindow, Rates, RetryStatus, Totals, ViewerCounts, WorkerState};
use crate::worker::{Report, WorkerHandle};

/// Limits and timings of a [`Supervisor`].
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Most workers alive at once; a start beyond it fails at once with [`SupervisorError::LimitReached`].
    pub max_cameras: usize,
    /// How long a stop may take before the worker is reported [`WorkerState::Stuck`].
    pub stop_timeout: Duration,
    /// How often rates are recomputed and statuses published.
    pub stats_interval: Duration,
    /// The sliding window rates are computed over.
    pub rate_window: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_cameras: 5,
            stop_timeout: Duration::from_secs(5),
            stats_interval: Duration::from_secs(1),
            rate_window: Duration::from_secs(5),
        }
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

/// Each camera's snapshot source, shared between the supervisor thread (which adds and removes) and handles.
type KeyframeCaches = Arc<RwLock<HashMap<CameraId, Arc<KeyframeCache>>>>;

enum Command {
    Start { spec: Box<StreamSpec>, reply: Reply<Result<StartOutcome, SupervisorError>> },
    Stop { id: CameraId, reply: Reply<Result<CameraStatus, SupervisorError>> },
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
    keyframes: KeyframeCaches,
    viewers: Arc<ViewerCounts>,
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
        let hub = Arc::new(PreviewHub::default());
        let keyframes = KeyframeCaches::default();
        let viewers = Arc::new(ViewerCounts::default());
        let thread = {
            let state = SupervisorThread {
                config: config.clone(),
                hub: Arc::clone(&hub),
                keyframes: Arc::clone(&keyframes),
                viewers: Arc::clone(&viewers),
                commands: command_rx,
                reports: crossbeam_channel::unbounded(),
                cameras: BTreeMap::new(),
                statuses: Arc::clone(&statuses),
                events: events.clone(),
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
                keyframes,
                viewers,
                statuses,
                events,
                thread: Mutex::new(Some(thread)),
                config,
            }),
        }
    }

    /// The built-in preview hub: [`PreviewHub::subscribe`] gives a viewer of any camera started with
    /// `preview: true`.
    pub fn preview(&self) -> &PreviewHub {
        &self.inner.hub
    }

    /// A JPEG of the camera's latest picture, at most `max_width` wide. Decodes the frames since the last
    /// keyframe, on the calling thread (tens of milliseconds): from async code call it in `spawn_blocking`.
    pub fn jpeg(&self, id: &CameraId, max_width: Option<u32>) -> Result<Vec<u8>, SnapshotError> {
        let cache = self.inner.keyframes.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
        cache.ok_or(SnapshotError::NoPicture)?.jpeg(max_width)
    }

    /// Viewer counts from the RTMP server's hooks, copied into each camera's status (`viewers`) on every
    /// stats refresh.
    pub fn viewer_counts(&self) -> &Arc<ViewerCounts> {
        &self.inner.viewers
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
    /// [`SupervisorError::StopTimeout`] after `stop_timeout`). A failed camera is simply removed.
    pub async fn stop(&self, id: &CameraId) -> Result<CameraStatus, SupervisorError> {
        self.request_stop(id)?.await.map_err(|_| SupervisorError::ShutDown)?
    }

    /// [`stop`](Self::stop) for non-async callers. Must not be called from inside an async runtime.
    pub fn stop_blocking(&self, id: &CameraId) -> Result<CameraStatus, SupervisorError> {
        self.request_stop(id)?.blocking_recv().map_err(|_| SupervisorError::ShutDown)?
    }

    /// Stops every camera in parallel; returns the results once all have exited.
    pub async fn stop_all(&self) -> Vec<Result<CameraStatus, SupervisorError>> {
        let pending = self.request_stop_all();
        let mut results = Vec::with_capacity(pending.len());
        for reply in pending {
            results.push(reply.await.map_err(|_| SupervisorError::ShutDown).and_then(|r| r));
        }
        results
    }

    /// [`stop_all`](Self::stop_all) for non-async callers.
    pub fn stop_all_blocking(&self) -> Vec<Result<CameraStatus, SupervisorError>> {
        self.request_stop_all()
            .into_iter()
            .map(|reply| reply.blocking_recv().map_err(|_| SupervisorError::ShutDown).and_then(|r| r))
            .collect()
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

    /// Stops every camera and ends the supervisor thread. Other clones of this handle then get
    /// [`SupervisorError::ShutDown`].
    pub async fn shutdown(&self) {
        self.stop_all().await;
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

    fn request_stop_all(&self) -> Vec<oneshot::Receiver<Result<CameraStatus, SupervisorError>>> {
        // Every stop is sent before any is awaited, so the cameras stop in parallel.
        let ids: Vec<CameraId> = self.snapshot().into_iter().map(|s| s.id).collect();
        ids.iter().filter_map(|id| self.request_stop(id).ok()).collect()
    }

    fn send(&self, command: Command) -> Result<(), SupervisorError> {
        self.inner.commands.send(command).map_err(|_| SupervisorError::ShutDown)
    }
}

/// One camera as the supervisor thread knows it.
struct Camera {
    status: CameraStatus,
    /// `None` once the thread has exited and been joined.
    worker: Option<WorkerHandle>,
    started: Instant,
    rates: RateWindow,
    /// Replies owed to `stop` callers, sent when the worker exits.
    stop_replies: Vec<Reply<Result<CameraStatus, SupervisorError>>>,
    stop_deadline: Option<Instant>,
}

struct SupervisorThread {
    config: SupervisorConfig,
    hub: Arc<PreviewHub>,
    keyframes: KeyframeCaches,
    viewers: Arc<ViewerCounts>,
    commands: Receiver<Command>,
    reports: (Sender<Report>, Receiver<Report>),
    cameras: BTreeMap<CameraId, Camera>,
    statuses: Arc<RwLock<BTreeMap<CameraId, CameraStatus>>>,
    events: broadcast::Sender<Event>,
}

impl SupervisorThread {
    fn run(mut self) {
        let ticker = crossbeam_channel::tick(self.config.stats_interval);
        let reports = self.reports.1.clone();
        loop {
            select! {
                recv(self.commands) -> command => match command {
                    Ok(command) => self.handle(command),
                    Err(_) => break,
                },
                recv(reports) -> report => {
                    if let Ok(report) = report {
                        self.on_report(report);
                    }
                },
                recv(ticker) -> _ => self.on_tick(),
            }
        }
        self.shut_down(&reports);
    }

    /// Every handle is gone: stop all workers and wait (bounded) for them.
    fn shut_down(&mut self, reports: &Receiver<Report>) {
        for camera in self.cameras.values() {
            if let Some(worker) = &camera.worker {
                worker.request_stop();
            }
        }
        let deadline = Instant::now() + self.config.stop_timeout;
        while self.cameras.values().any(|c| c.worker.is_some()) {
            match reports.recv_deadline(deadline) {
                Ok(report) => self.on_report(report),
                Err(_) => {
                    let stuck: Vec<String> =
                        self.cameras.iter().filter(|(_, c)| c.worker.is_some()).map(|(id, _)| id.to_string()).collect();
                    warn!(cameras = ?stuck, "camera threads did not stop in time; leaving them behind");
                    break;
                }
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Start { spec, reply } => {
                let _ = reply.send(self.start(*spec));
            }
            Command::Stop { id, reply } => self.stop(id, reply),
        }
    }

    fn start(&mut self, spec: StreamSpec) -> Result<StartOutcome, SupervisorError> {
        if let Some(camera) = self.cameras.get(&spec.id) {
            match camera.status.state {
                WorkerState::Stopping | WorkerState::Stuck => return Err(SupervisorError::Stopping(spec.id)),
                state if state.is_live() => return Ok(StartOutcome::AlreadyRunning(camera.status.clone())),
                _ => {}
            }
        }
        let running = self.cameras.values().filter(|c| c.worker.is_some()).count();
        if running >= self.config.max_cameras {
            return Err(SupervisorError::LimitReached { running, limit: self.config.max_cameras });
        }
        let status = CameraStatus {
            id: spec.id.clone(),
            state: WorkerState::Starting,
            input: spec.input.redacted(),
            output: spec.output.as_ref().map(OutputTarget::redacted),
            started_at_ms: unix_ms(SystemTime::now()),
            uptime_secs: 0.0,
            first_frame_after_ms: None,
            rates: Rates::default(),
            totals: Totals::default(),
            session: None,
            last_error: None,
            warnings: Vec::new(),
            restarts: 0,
            retry: None,
            preview_path: spec.preview.then(|| format!("/live/{}.flv", spec.id)),
            preview_viewers: 0,
            viewers: self.viewers.get(&spec.id),
        };
        let id = spec.id.clone();
        let preview = spec.preview.then(|| self.hub.channel(&spec.id));
        let keyframes = Arc::new(KeyframeCache::default());
        self.keyframes.write().unwrap_or_else(|e| e.into_inner()).insert(spec.id.clone(), Arc::clone(&keyframes));
        let worker = WorkerHandle::spawn(spec, preview, keyframes, self.reports.0.clone())
            .map_err(|source| SupervisorError::Spawn { camera: id.clone(), source })?;
        info!(camera = %id, "camera started");
        let camera = Camera {
            status,
            worker: Some(worker),
            started: Instant::now(),
            rates: RateWindow::new(self.config.rate_window),
            stop_replies: Vec::new(),
            stop_deadline: None,
        };
        self.cameras.insert(id.clone(), camera);
        let status = self.publish(&id).expect("camera inserted just above");
        Ok(StartOutcome::Started(status))
    }

    fn stop(&mut self, id: CameraId, reply: Reply<Result<CameraStatus, SupervisorError>>) {
        let Some(camera) = self.cameras.get_mut(&id) else {
            let _ = reply.send(Err(SupervisorError::NotFound(id)));
            return;
        };
        match &camera.worker {
            None => {
                // Already exited (failed): stopping it just forgets it.
                let status = self.remove(&id);
                let _ = reply.send(status.ok_or(SupervisorError::NotFound(id)));
            }
            Some(worker) => {
                worker.request_stop();
                camera.stop_replies.push(reply);
                if camera.stop_deadline.is_none() {
                    camera.stop_deadline = Some(Instant::now() + self.config.stop_timeout);
                    camera.status.state = WorkerState::Stopping;
                    camera.status.retry = None;
                    self.publish(&id);
                }
            }
        }
    }

    fn on_report(&mut self, report: Report) {
        let id = match &report {
            Report::Session { id, .. }
            | Report::FirstFrame { id, .. }
            | Report::Warning { id, .. }
            | Report::Retrying { id, .. }
            | Report::Exited { id, .. } => id.clone(),
        };
        let Some(camera) = self.cameras.get_mut(&id) else { return };
        let stopping = camera.stop_deadline.is_some();
        let status = &mut camera.status;
        match report {
            Report::Session { info, warnings, .. } => {
                status.session = Some(info);
                status.warnings = warnings;
                status.first_frame_after_ms = None;
                status.retry = None;
            }
            Report::FirstFrame { after, .. } => {
                status.first_frame_after_ms = Some(after.as_millis() as u64);
                if !stopping {
                    status.state = WorkerState::Running;
                }
            }
            Report::Warning { message, .. } => status.warnings.push(message),
            Report::Retrying { error, attempt, retry_in, .. } => {
                status.last_error = Some(error);
                status.restarts += 1;
                if !stopping {
                    status.state = WorkerState::Reconnecting;
                    status.retry = Some(RetryStatus { attempt, at_ms: unix_ms(SystemTime::now() + retry_in) });
                }
            }
            Report::Exited { error, .. } => {
                if let Some(worker) = camera.worker.take() {
                    status.totals = worker.counters.totals();
                    worker.join();
                }
                status.retry = None;
                status.rates = Rates::default();
                match error {
                    Some(error) if !stopping => {
                        status.state = WorkerState::Failed;
                        status.last_error = Some(error);
                    }
                    _ => status.state = WorkerState::Stopped,
                }
                if stopping {
                    self.remove(&id);
                    return;
                }
            }
        }
        self.publish(&id);
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let ids: Vec<CameraId> = self.cameras.keys().cloned().collect();
        for id in ids {
            let camera = self.cameras.get_mut(&id).expect("id taken from the map");
            let Some(worker) = &camera.worker else { continue };
            let totals = worker.counters.totals();
            camera.status.rates = camera.rates.push(now, totals);
            camera.status.totals = totals;
            camera.status.uptime_secs = now.duration_since(camera.started).as_secs_f64();
            camera.status.preview_viewers = self.hub.viewers(&id);
            camera.status.viewers = self.viewers.get(&id);
            if camera.stop_deadline.is_some_and(|deadline| now >= deadline) && camera.status.state != WorkerState::Stuck
            {
                camera.status.state = WorkerState::Stuck;
                warn!(camera = %id, "camera did not stop within {:?}", self.config.stop_timeout);
                for reply in camera.stop_replies.drain(..) {
                    let _ = reply.send(Err(SupervisorError::StopTimeout {
                        camera: id.clone(),
                        after: self.config.stop_timeout,
                    }));
                }
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
    fn remove(&mut self, id: &CameraId) -> Option<CameraStatus> {
        let mut camera = self.cameras.remove(id)?;
        self.hub.remove(id);
        self.keyframes.write().unwrap_or_else(|e| e.into_inner()).remove(id);
        if let Some(worker) = &camera.worker {
            camera.status.totals = worker.counters.totals();
        }
        camera.status.uptime_secs = camera.started.elapsed().as_secs_f64();
        if let Ok(mut statuses) = self.statuses.write() {
            statuses.remove(id);
        }
        let _ = self.events.send(Event::Status(Box::new(camera.status.clone())));
        let _ = self.events.send(Event::Removed { id: id.clone() });
        for reply in camera.stop_replies.drain(..) {
            let _ = reply.send(Ok(camera.status.clone()));
        }
        info!(camera = %id, state = ?camera.status.state, "camera removed");
        Some(camera.status)
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
