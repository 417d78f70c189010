//! The gateway: the one owner of every camera's lifecycle.
//!
//! A [`Gateway`] holds the desired set (which cameras should exist and how each runs — `desired.rs`), the
//! viewers the RTMP server reports for them, the state file that makes API-made changes survive a restart
//! ([`store`]), and the [`Supervisor`] that runs the camera threads. Every operation on a camera — start,
//! replace, stop, remove, a viewer joining or leaving, a linger expiring, the restore at start — runs whole
//! under that camera's lock (`locks.rs`), in arrival order: it changes the desired set, makes the supervisor
//! match, and saves the result before the next operation on that camera begins. Operations on different
//! cameras never wait for each other.
//!
//! The HTTP API only translates requests into these calls (and the binary's start-up is [`Gateway::restore`]);
//! an embedding program uses the same type. Policy waits (lingers, viewer expiry) run on the supervisor's
//! [`Clock`], so tests drive them without sleeping.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use camgate::gateway::{Gateway, GatewaySettings, RunMode};
//! use camgate::{StreamSpec, Supervisor, SupervisorConfig};
//!
//! let gateway = Gateway::new(Supervisor::new(SupervisorConfig::default()), GatewaySettings::default(), None);
//! let spec = StreamSpec::new("door", "rtsp://10.0.0.5/stream1", "rtmp://127.0.0.1/live/door")?;
//! gateway.put(spec, RunMode::Always).await?;
//! gateway.remove(&"door".parse()?).await?;
//! gateway.shutdown().await;
//! # Ok(()) }
//! ```

pub mod cluster;
pub mod config;
pub mod cost;
mod desired;
mod locks;
pub mod store;
pub mod viewer_urls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tracing::{info, warn};
use utoipa::ToSchema;

use self::config::{CameraConfig, CameraDefaults, Config, Limits, Origin, Templates};
use self::desired::{DesiredSet, Source, stream_key};
pub use self::desired::{OnDemand, OnDemandCamera, OnDemandError, RunMode, ViewerChange};
use self::locks::CameraLocks;
use self::store::{SavedCamera, StateError, StateFile};
use self::viewer_urls::{SignatureError, ViewerSigner, with_query};
use crate::model::host_policy::NameVerdict;
use crate::model::url::UrlHost;
use crate::model::{CameraId, SpecError, StreamSpec, SupervisorError};
use crate::preview::snapshot::{self, SnapshotError};
use crate::preview::{SubscribeError, Viewer};
use crate::runtime::clock::Clock;
use crate::runtime::{CameraStatus, Event, StartOutcome, Supervisor};

/// The gateway's share of the configuration.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Stream and viewer URL templates.
    pub templates: Templates,
    /// Settings for requests that give none.
    pub defaults: CameraDefaults,
    /// How long an on-demand camera runs on after its last viewer left.
    pub on_demand_linger: Duration,
    /// Bounds on what clients can make the gateway hold.
    pub limits: Limits,
    /// Signs viewer URLs, when a viewer secret is configured.
    pub viewer_signer: Option<ViewerSigner>,
    /// How long signed viewer URLs stay valid unless asked otherwise.
    pub viewer_url_ttl: Duration,
    /// Cores the cameras may fill (see [`Config::cpu_capacity`]).
    pub cpu_capacity: f64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings::from_config(&Config::default())
    }
}

impl GatewaySettings {
    /// The gateway's share of a (validated) configuration.
    pub fn from_config(config: &Config) -> GatewaySettings {
        GatewaySettings {
            templates: config.templates(),
            defaults: config.defaults.clone(),
            on_demand_linger: Duration::from_millis(config.on_demand_linger_ms),
            limits: config.limits.clone(),
            viewer_signer: config.viewer_secret.as_deref().map(ViewerSigner::new),
            viewer_url_ttl: Duration::from_millis(config.viewer_url_ttl_ms),
            cpu_capacity: config.cpu_capacity(),
        }
    }
}

/// Why a gateway operation was refused or failed.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// The request's spec is invalid; the error names the field.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The supervisor refused or could not complete it (cap reached, still stopping, stop timed out …).
    #[error(transparent)]
    Camera(#[from] SupervisorError),
    /// An on-demand registration or viewer change that cannot be honoured.
    #[error(transparent)]
    OnDemand(#[from] OnDemandError),
    /// The change was applied but could not be saved, so it will not survive a restart.
    #[error("camera {camera}: applied, but not saved: {source}")]
    NotSaved {
        /// The camera.
        camera: CameraId,
        /// Why.
        #[source]
        source: StateError,
    },
    /// A resource limit was reached; `setting` names it.
    #[error("{what}: the limit is {limit} ({setting})")]
    Limit {
        /// The configuration setting that sets the limit (`limits.snapshot_decodes` …).
        setting: &'static str,
        /// Its value.
        limit: usize,
        /// What was refused.
        what: String,
    },
    /// Starting the camera would take the cameras' CPU past `cpu_budget`.
    #[error(
        "camera {camera} needs about {need:.2} cores; the cameras use {load:.2} of the {capacity:.2} cpu_budget allows"
    )]
    OverBudget {
        /// The camera.
        camera: CameraId,
        /// Its estimated cost, in cores.
        need: f64,
        /// What the running cameras cost now (measured, or estimated until measured).
        load: f64,
        /// Cores the budget allows.
        capacity: f64,
    },
    /// No camera with this id is running or desired.
    #[error("camera {0} is not known")]
    NotFound(CameraId),
    /// No picture to take a snapshot of yet, or making it failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A preview viewer was not admitted.
    #[error(transparent)]
    Preview(#[from] SubscribeError),
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    ShutDown,
    /// The cluster could not do it (etcd unreachable, another node did not answer).
    #[error("cluster: {0}")]
    Cluster(String),
}

/// A change applied to the desired set, with the revision it produced: revisions count every applied change
/// in the order the changes were applied.
#[derive(Debug, Clone)]
pub struct Applied<T> {
    /// This change's place in the order of all applied changes.
    pub revision: u64,
    /// What it did.
    pub outcome: T,
}

/// What [`Gateway::put`] did.
#[derive(Debug, Clone)]
pub enum PutOutcome {
    /// The camera was started.
    Started(CameraStatus),
    /// A running camera was stopped and started again with the new spec.
    Replaced(CameraStatus),
    /// The camera was registered on demand; it runs when viewers come (at once if there are some).
    Registered(OnDemandCamera),
}

/// What [`Gateway::play`] did.
#[derive(Debug, Clone)]
pub enum PlayOutcome {
    /// The camera was started.
    Started(CameraStatus),
    /// It was running already; nothing changed but its run mode (now: always).
    AlreadyRunning(CameraStatus),
}

/// What [`Gateway::remove`] did.
#[derive(Debug, Clone)]
pub enum RemoveOutcome {
    /// It was running and has stopped; its final status.
    Stopped(Box<CameraStatus>),
    /// It was desired (registered or waiting) but not running; now it is neither.
    Forgotten,
}

/// What [`Gateway::viewer_joined`] did.
#[derive(Debug)]
pub struct ViewerJoined {
    /// The viewer count change.
    pub applied: Applied<ViewerChange>,
    /// Completes once an on-demand camera that needed starting for this viewer has been started (or found
    /// not to need it any more).
    pub started: tokio::task::JoinHandle<()>,
}

/// Where a camera can be watched, signed when a viewer secret is configured.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ViewerUrls {
    /// The URL viewers play: the RTMP server's (the viewer URL template) for a camera with an RTMP output,
    /// else camgate's own preview.
    pub url: String,
    /// camgate's own preview of the camera, if it has one.
    pub preview_url: Option<String>,
    /// When the signature expires (Unix milliseconds); `None` when URLs are not signed.
    pub expires_at_ms: Option<u64>,
}

/// The result of stopping several cameras.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoppedAll {
    /// How many cameras were stopped.
    pub stopped: usize,
    /// Their final statuses.
    pub cameras: Vec<CameraStatus>,
}

/// The one owner of every camera's lifecycle. Cheap to clone; all clones are the same gateway.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    supervisor: Supervisor,
    settings: GatewaySettings,
    clock: Arc<dyn Clock>,
    desired: Mutex<DesiredSet>,
    locks: CameraLocks,
    store: Option<Arc<StateFile>>,
    /// Numbers state-file snapshots, so an older one never overwrites a newer one.
    saves: AtomicU64,
    snapshots: Arc<Semaphore>,
    event_clients: Arc<Semaphore>,
    shutdown: watch::Sender<bool>,
    /// This node's cluster membership, in cluster mode (weak: the membership holds this gateway).
    cluster: std::sync::OnceLock<std::sync::Weak<cluster::ClusterNode>>,
}

impl Gateway {
    /// A gateway over `supervisor`, saving API-made changes to `store` if given. Call inside a tokio runtime:
    /// it starts the task that forgets viewers whose `on_stop` never came.
    pub fn new(supervisor: Supervisor, settings: GatewaySettings, store: Option<StateFile>) -> Gateway {
        let clock = Arc::clone(&supervisor.config().clock);
        let limits = &settings.limits;
        let gateway = Gateway {
            inner: Arc::new(Inner {
                snapshots: Arc::new(Semaphore::new(limits.snapshot_decodes)),
                event_clients: Arc::new(Semaphore::new(limits.event_clients)),
                supervisor,
                clock,
                desired: Mutex::default(),
                locks: CameraLocks::default(),
                store: store.map(Arc::new),
                saves: AtomicU64::new(0),
                shutdown: watch::channel(false).0,
                cluster: std::sync::OnceLock::new(),
                settings,
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(expire_viewers(Arc::downgrade(&gateway.inner)));
        }
        gateway
    }

    /// A gateway for a (validated) configuration: its supervisor limits and its settings. Call inside a tokio
    /// runtime.
    pub fn from_config(config: &Config, store: Option<StateFile>) -> Gateway {
        Gateway::new(Supervisor::new(config.supervisor_config()), GatewaySettings::from_config(config), store)
    }

    /// The supervisor running the camera threads (statuses, the preview hub, events).
    pub fn supervisor(&self) -> &Supervisor {
        &self.inner.supervisor
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &GatewaySettings {
        &self.inner.settings
    }

    /// Why the state file found at start was not used, if it was not.
    pub fn state_file_problem(&self) -> Option<String> {
        self.inner.store.as_ref().and_then(|s| s.problem()).map(str::to_owned)
    }

    /// The revision of the desired set's last change.
    pub fn revision(&self) -> u64 {
        self.desired().revision()
    }

    /// A camera's full spec from an API request: the request's settings over the configured defaults and
    /// templates. API callers may only name RTMP outputs.
    pub fn spec_from_request(&self, id: CameraId, request: &CameraConfig) -> Result<StreamSpec, SpecError> {
        let settings = &self.inner.settings;
        request.to_spec(id, &settings.defaults, &settings.templates, Origin::Api)
    }

    /// Starts `spec`'s camera, or replaces the running one (stop, then start with the new spec); with
    /// [`RunMode::OnDemand`] registers it to run while watched. The change is saved. In a cluster the camera
    /// goes to the desired set in etcd and runs on the node that takes it.
    pub async fn put(&self, spec: StreamSpec, mode: RunMode) -> Result<Applied<PutOutcome>, GatewayError> {
        if let Some(cluster) = self.cluster() {
            self.check_camera_host(&spec).await?;
            return cluster.put(&spec.id, CameraConfig::from_spec(&spec, mode)).await;
        }
        self.put_from(spec, mode, Source::Api).await
    }

    /// [`put`](Self::put) from an API request: resolved with this node's templates and defaults here, and in a
    /// cluster kept as requested, so the node that runs it resolves it with its own.
    pub async fn put_request(&self, id: CameraId, request: &CameraConfig) -> Result<Applied<PutOutcome>, GatewayError> {
        let spec = self.spec_from_request(id.clone(), request)?;
        let mode = request.on_demand.mode();
        if let Some(cluster) = self.cluster() {
            spec.validate()?;
            self.check_camera_host(&spec).await?;
            return cluster.put(&id, request.clone()).await;
        }
        self.put_from(spec, mode, Source::Api).await
    }

    /// Runs `spec` on this node: what the cluster agent calls for the cameras this node owns.
    pub(crate) async fn local_put(&self, spec: StreamSpec, mode: RunMode) -> Result<Applied<PutOutcome>, GatewayError> {
        self.put_from(spec, mode, Source::Config).await
    }

    async fn put_from(
        &self,
        spec: StreamSpec,
        mode: RunMode,
        source: Source,
    ) -> Result<Applied<PutOutcome>, GatewayError> {
        self.check_open()?;
        spec.validate()?;
        self.check_camera_host(&spec).await?;
        let id = spec.id.clone();
        let _turn = self.inner.locks.lock(&id).await;
        self.check_open()?;
        {
            let desired = self.desired();
            let limit = self.inner.settings.limits.cameras;
            if desired.get(&id).is_none() && desired.len() >= limit {
                let what = format!("camera {id} cannot be added");
                return Err(GatewayError::Limit { setting: "limits.cameras", limit, what });
            }
            // Checked before anything running is touched: a refused request leaves the camera as it was.
            desired.check(&spec, mode)?;
        }
        if matches!(mode, RunMode::Always | RunMode::Warm) {
            self.check_budget(&spec)?;
        }
        let supervisor = &self.inner.supervisor;
        let was_running = self.is_running(&id);
        if was_running {
            supervisor.stop(&id).await?;
        }
        if mode != RunMode::Warm {
            supervisor.output_gates().remove(&id);
        }
        let (revision, outcome) = match mode {
            RunMode::Always => {
                let status = supervisor.start(spec.clone()).await?.status().clone();
                let revision = self.desired().put(spec, mode, source)?;
                (revision, if was_running { PutOutcome::Replaced(status) } else { PutOutcome::Started(status) })
            }
            RunMode::OnDemand | RunMode::Warm => {
                let (revision, watched) = {
                    let mut desired = self.desired();
                    let revision = desired.put(spec.clone(), mode, source)?;
                    (revision, desired.get(&id).is_some_and(|c| c.viewers() > 0))
                };
                if mode == RunMode::Warm {
                    // Connected now; pushed only while watched.
                    supervisor.output_gates().set(&id, watched);
                    supervisor.start(spec).await?;
                } else if watched {
                    supervisor.start(spec).await?;
                }
                let view = self.desired().on_demand_view(&id).expect("registered just above");
                (revision, PutOutcome::Registered(view))
            }
        };
        info!(camera = %id, ?mode, "camera put");
        self.save(&id).await?;
        Ok(Applied { revision, outcome })
    }

    /// The old service's `play_camera` from an API request (see [`put_request`](Self::put_request)).
    pub async fn play_request(
        &self,
        id: CameraId,
        request: &CameraConfig,
    ) -> Result<Applied<PlayOutcome>, GatewayError> {
        let spec = self.spec_from_request(id.clone(), request)?;
        if let Some(cluster) = self.cluster() {
            spec.validate()?;
            self.check_camera_host(&spec).await?;
            return cluster.play(&id, request.clone()).await;
        }
        self.play(spec).await
    }

    /// The old service's `play_camera`: starts the camera unless it runs already (a running camera keeps its
    /// spec), and from now on it runs all the time. The change is saved.
    pub async fn play(&self, spec: StreamSpec) -> Result<Applied<PlayOutcome>, GatewayError> {
        if let Some(cluster) = self.cluster() {
            self.check_camera_host(&spec).await?;
            return cluster.play(&spec.id.clone(), CameraConfig::from_spec(&spec, RunMode::Always)).await;
        }
        self.check_open()?;
        spec.validate()?;
        self.check_camera_host(&spec).await?;
        let id = spec.id.clone();
        let _turn = self.inner.locks.lock(&id).await;
        self.check_open()?;
        self.desired().check(&spec, RunMode::Always)?;
        if !self.is_running(&id) {
            self.check_budget(&spec)?;
        }
        let (revision, outcome) = match self.inner.supervisor.start(spec.clone()).await? {
            StartOutcome::Started(status) => {
                (self.desired().put(spec, RunMode::Always, Source::Api)?, PlayOutcome::Started(status))
            }
            StartOutcome::AlreadyRunning(status) => {
                let mut desired = self.desired();
                let running_spec = desired.get(&id).map_or(spec, |c| c.spec.clone());
                (desired.put(running_spec, RunMode::Always, Source::Api)?, PlayOutcome::AlreadyRunning(status))
            }
        };
        self.save(&id).await?;
        Ok(Applied { revision, outcome })
    }

    /// Removes a camera from the desired set (and the state file) and stops it; answers once its thread has
    /// exited, or with [`SupervisorError::StopTimeout`] after `stop_timeout` (it is then `stuck`, and gone from
    /// the desired set all the same).
    pub async fn remove(&self, id: &CameraId) -> Result<Applied<RemoveOutcome>, GatewayError> {
        if let Some(cluster) = self.cluster() {
            return cluster.remove(id, self.inner.supervisor.config().stop_timeout).await;
        }
        self.local_remove(id).await
    }

    /// [`remove`](Self::remove) on this node only (the cluster agent's).
    pub(crate) async fn local_remove(&self, id: &CameraId) -> Result<Applied<RemoveOutcome>, GatewayError> {
        let _turn = self.inner.locks.lock(id).await;
        let (removed, revision) = {
            let mut desired = self.desired();
            // Published under the same lock as the change, so counts are never older than the set.
            self.inner.supervisor.viewer_counts().set(id, 0);
            desired.remove(id)
        };
        // Saved before the stop, reported after it: a disk that refuses the write must not leave running a
        // camera that is gone from the desired set.
        let saved = if removed.is_some() { self.save(id).await } else { Ok(()) };
        let stopped = self.inner.supervisor.stop(id).await;
        self.inner.supervisor.output_gates().remove(id);
        saved?;
        let outcome = match stopped {
            Ok(status) => RemoveOutcome::Stopped(Box::new(status)),
            Err(SupervisorError::NotFound(_)) if removed.is_some() => RemoveOutcome::Forgotten,
            Err(SupervisorError::NotFound(_)) => return Err(GatewayError::NotFound(id.clone())),
            Err(error) => return Err(error.into()),
        };
        info!(camera = %id, "camera removed");
        Ok(Applied { revision, outcome })
    }

    /// The old service's `stop_camera`: stops the camera. One that runs all the time leaves the desired set;
    /// one that runs on demand stays registered, and its next viewer starts it again. Answers the final
    /// status, or `None` for a registered camera that was not running.
    pub async fn stop(&self, id: &CameraId) -> Result<Applied<Option<CameraStatus>>, GatewayError> {
        if let Some(cluster) = self.cluster() {
            return cluster.stop(id, self.inner.supervisor.config().stop_timeout).await;
        }
        self.local_stop(id).await
    }

    /// [`stop`](Self::stop) on this node only.
    pub(crate) async fn local_stop(&self, id: &CameraId) -> Result<Applied<Option<CameraStatus>>, GatewayError> {
        let _turn = self.inner.locks.lock(id).await;
        if self.desired().get(id).is_some_and(|c| c.mode == RunMode::Warm) {
            // A warm camera stays connected: stopping it stops what it pushes, until its next viewer.
            self.inner.supervisor.output_gates().set(id, false);
            let revision = self.desired().touch(id);
            return Ok(Applied { revision, outcome: self.status(id) });
        }
        let stopped = self.inner.supervisor.stop(id).await;
        let (forgotten, desired, revision) = {
            let mut desired = self.desired();
            match desired.get(id).map(|c| c.mode) {
                Some(RunMode::Always) => {
                    self.inner.supervisor.viewer_counts().set(id, 0);
                    let (forgotten, revision) = desired.remove(id);
                    (forgotten, true, revision)
                }
                // Cancels a start that an earlier viewer scheduled: this stop is the later wish.
                Some(RunMode::OnDemand | RunMode::Warm) => (None, true, desired.touch(id)),
                None => (None, false, desired.touch(id)),
            }
        };
        if forgotten.is_some() {
            self.save(id).await?;
        }
        let outcome = match stopped {
            Ok(status) => Some(status),
            Err(SupervisorError::NotFound(_)) if desired => None,
            Err(SupervisorError::NotFound(id)) => return Err(GatewayError::NotFound(id)),
            Err(other) => return Err(other.into()),
        };
        Ok(Applied { revision, outcome })
    }

    /// [`stop`](Self::stop) for every running camera, in parallel; `NotFound` (stopped meanwhile by someone
    /// else) is not an error. Each camera's stop takes its turn like any other operation on it.
    pub async fn stop_all(&self) -> Result<StoppedAll, GatewayError> {
        if let Some(cluster) = self.cluster() {
            return cluster.stop_all(self.inner.supervisor.config().stop_timeout).await;
        }
        let ids: Vec<CameraId> = self.inner.supervisor.snapshot().into_iter().map(|s| s.id).collect();
        let results = futures_util::future::join_all(ids.iter().map(|id| self.stop(id))).await;
        let mut cameras = Vec::new();
        let mut first_error = None;
        for result in results {
            match result {
                Ok(applied) => cameras.extend(applied.outcome),
                Err(GatewayError::NotFound(_)) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(StoppedAll { stopped: cameras.len(), cameras }),
        }
    }

    /// The camera of `app/stream`, if a camera of the desired set publishes it.
    pub fn knows_stream(&self, app: &str, stream: &str) -> Result<CameraId, OnDemandError> {
        let key = stream_key(app, stream);
        self.desired().by_stream(&key).map(|c| c.spec.id.clone()).ok_or(OnDemandError::UnknownStream(key))
    }

    /// A player started playing `app/stream` (the RTMP server's `on_play`): counts it now — so hooks count in
    /// the order they arrive — and, for an on-demand camera that is not running, starts it in the background,
    /// in its turn. Await [`ViewerJoined::started`] to know it has been started; a hook answers without.
    pub fn viewer_joined(&self, app: &str, stream: &str, client: &str) -> Result<ViewerJoined, GatewayError> {
        self.check_open()?;
        let limit = self.inner.settings.limits.on_demand_viewers_per_camera;
        let change = {
            let mut desired = self.desired();
            let change = desired.viewer_joined(&stream_key(app, stream), client, self.inner.clock.now(), limit)?;
            self.inner.supervisor.viewer_counts().set(&change.id, change.viewers);
            change
        };
        let started = match change.mode {
            RunMode::OnDemand | RunMode::Warm => {
                if change.mode == RunMode::Warm {
                    // The camera is connected: its output starts at its next packet, from the cached keyframe.
                    self.inner.supervisor.output_gates().set(&change.id, true);
                }
                let gateway = self.clone();
                let (id, generation) = (change.id.clone(), change.generation);
                tokio::spawn(async move { gateway.start_for_viewers(&id, generation).await })
            }
            RunMode::Always => tokio::spawn(async {}),
        };
        Ok(ViewerJoined { applied: Applied { revision: change.revision, outcome: change }, started })
    }

    /// A player stopped (the RTMP server's `on_stop`): uncounts it and, after the last viewer of an on-demand
    /// camera, schedules its stop a linger time later (cancelled by any change to the camera meanwhile).
    pub fn viewer_left(&self, app: &str, stream: &str, client: &str) -> Result<Applied<ViewerChange>, GatewayError> {
        let change = {
            let mut desired = self.desired();
            let change = desired.viewer_left(&stream_key(app, stream), client)?;
            self.inner.supervisor.viewer_counts().set(&change.id, change.viewers);
            change
        };
        if change.mode.is_on_demand() && change.viewers == 0 {
            self.schedule_linger_stop(change.id.clone(), change.generation);
        }
        Ok(Applied { revision: change.revision, outcome: change })
    }

    /// Starts an on-demand camera for its viewers, in its turn, unless the camera changed since `generation`
    /// (stopped, removed, replaced, or its viewers left).
    async fn start_for_viewers(&self, id: &CameraId, generation: u64) {
        let _turn = self.inner.locks.lock(id).await;
        let spec = self.desired().get(id).and_then(|c| {
            (c.mode.is_on_demand() && c.generation() == generation && c.viewers() > 0).then(|| c.spec.clone())
        });
        let Some(spec) = spec else { return };
        if self.is_running(id) || self.is_shutting_down() {
            return;
        }
        if let Err(error) = self.check_budget(&spec) {
            warn!(camera = %id, %error, "on-demand start refused");
            return;
        }
        match self.inner.supervisor.start(spec).await {
            Ok(_) => info!(camera = %id, "started on demand"),
            // The viewer is counted; the camera's status (or its absence) says why it does not run.
            Err(error) => warn!(camera = %id, %error, "on-demand start failed"),
        }
    }

    /// The RTMP server reports `app/stream` published or not (bookkeeping shown in the on-demand list).
    pub fn published(&self, app: &str, stream: &str, published: bool) -> Result<CameraId, OnDemandError> {
        self.desired().published(&stream_key(app, stream), published)
    }

    /// Every on-demand camera, running or not, with its viewers.
    pub fn on_demand(&self) -> Vec<OnDemandCamera> {
        self.desired().on_demand()
    }

    /// Whether a camera is in the desired set.
    pub fn is_desired(&self, id: &CameraId) -> bool {
        self.desired().get(id).is_some()
    }

    /// The cameras of the desired set: (spec, how it runs). Credentials included: not for display.
    pub fn desired_specs(&self) -> Vec<(StreamSpec, RunMode)> {
        self.desired().iter().map(|c| (c.spec.clone(), c.mode)).collect()
    }

    /// Puts the configuration's cameras and the state file's in the desired set and starts them; a saved
    /// camera wins over a configured one of the same id (it is the later wish). A camera that cannot start is
    /// logged, not fatal: the others and the API are still useful.
    pub async fn restore(&self, configured: Vec<(StreamSpec, RunMode)>, saved: Vec<SavedCamera>) {
        let mut wanted: Vec<(StreamSpec, RunMode, Source)> =
            configured.into_iter().map(|(spec, mode)| (spec, mode, Source::Config)).collect();
        for camera in saved {
            wanted.retain(|(spec, _, _)| spec.id != camera.spec.id);
            let mode = camera.on_demand.mode();
            wanted.push((camera.spec, mode, Source::Api));
        }
        for (spec, mode, source) in wanted {
            let id = spec.id.clone();
            let origin = if source == Source::Api { "saved" } else { "config" };
            match self.put_from(spec, mode, source).await {
                Ok(_) => info!(camera = %id, ?mode, origin, "camera restored"),
                Err(error) => warn!(camera = %id, %error, origin, "camera not restored"),
            }
        }
    }

    /// A camera's status on this node.
    pub fn status(&self, id: &CameraId) -> Option<CameraStatus> {
        self.inner.supervisor.status(id)
    }

    /// Every running (or failed) camera's status on this node.
    pub fn statuses(&self) -> Vec<CameraStatus> {
        self.inner.supervisor.snapshot()
    }

    /// Every camera's status — in a cluster, every node's cameras with their node, and `pending` ones.
    pub async fn cameras(&self) -> Vec<CameraStatus> {
        match self.cluster() {
            Some(cluster) => cluster.statuses().await,
            None => self.statuses(),
        }
    }

    /// One camera's status, wherever it runs.
    pub async fn camera(&self, id: &CameraId) -> Option<CameraStatus> {
        match self.cluster() {
            Some(cluster) => cluster.status(id).await,
            None => self.status(id),
        }
    }

    /// This node's cluster membership, in cluster mode.
    pub fn cluster(&self) -> Option<Arc<cluster::ClusterNode>> {
        self.inner.cluster.get().and_then(std::sync::Weak::upgrade)
    }

    pub(crate) fn attach_cluster(&self, node: &Arc<cluster::ClusterNode>) {
        let _ = self.inner.cluster.set(Arc::downgrade(node));
    }

    /// A new viewer of a camera's built-in preview, within the viewer limits.
    pub fn preview_viewer(&self, id: &CameraId) -> Result<Viewer, GatewayError> {
        self.check_open()?;
        Ok(self.inner.supervisor.preview().subscribe(id)?)
    }

    /// A JPEG of the camera's latest picture, at most `max_width` wide, decoded on a blocking thread; at most
    /// `limits.snapshot_decodes` at a time (more are refused at once).
    pub async fn snapshot(&self, id: &CameraId, max_width: Option<u32>) -> Result<Vec<u8>, GatewayError> {
        if self.status(id).is_none() {
            return Err(GatewayError::NotFound(id.clone()));
        }
        let limit = self.inner.settings.limits.snapshot_decodes;
        let permit = Arc::clone(&self.inner.snapshots).try_acquire_owned().map_err(|_| GatewayError::Limit {
            setting: "limits.snapshot_decodes",
            limit,
            what: "too many snapshots are being made".into(),
        })?;
        let gop = self.inner.supervisor.preview().cached_gop(id).ok_or(SnapshotError::NoPicture)?;
        let jpeg = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            snapshot::jpeg(&gop, max_width)
        })
        .await
        .map_err(|_| SnapshotError::Crashed)?;
        Ok(jpeg?)
    }

    /// A place for one more event-stream client, within `limits.event_clients`: the current statuses and the
    /// events after them. The place is given back when the returned value is dropped.
    pub fn event_client(&self) -> Result<EventClient, GatewayError> {
        self.check_open()?;
        let limit = self.inner.settings.limits.event_clients;
        let permit = Arc::clone(&self.inner.event_clients).try_acquire_owned().map_err(|_| GatewayError::Limit {
            setting: "limits.event_clients",
            limit,
            what: "too many event streams are open".into(),
        })?;
        // Subscribe before taking the snapshot, so no change falls between the two.
        let events = self.inner.supervisor.subscribe();
        Ok(EventClient { snapshot: self.statuses(), events, _permit: permit })
    }

    /// Refuses new operations and viewers from now on, and ends event and preview streams (see
    /// [`shutdown_signal`](Self::shutdown_signal)); running cameras keep running until
    /// [`shutdown`](Self::shutdown).
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// A receiver that sees shutdown begin; long-lived streams end on it.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Begins shutdown and stops every camera, each bounded by `stop_timeout`; returns when all have exited
    /// or been reported stuck. The desired set and the state file are left as they are, so the cameras run
    /// again at the next start.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        self.inner.supervisor.shutdown().await;
    }

    fn schedule_linger_stop(&self, id: CameraId, generation: u64) {
        // The deadline is fixed now, whenever the task first runs.
        let linger = self.inner.settings.on_demand_linger;
        let sleep = self.inner.clock.sleep(linger);
        let gateway = self.clone();
        let mut shutdown = self.shutdown_signal();
        tokio::spawn(async move {
            tokio::select! {
                () = sleep => {}
                _ = shutdown.wait_for(|down| *down) => return,
            }
            let _turn = gateway.inner.locks.lock(&id).await;
            let idle = gateway.desired().get(&id).and_then(|c| {
                (c.mode.is_on_demand() && c.generation() == generation && c.viewers() == 0).then_some(c.mode)
            });
            if idle == Some(RunMode::Warm) {
                gateway.inner.supervisor.output_gates().set(&id, false);
                info!(camera = %id, ?linger, "output stopped: no viewers (the camera stays connected)");
                return;
            }
            if idle.is_none() || !gateway.is_running(&id) {
                return;
            }
            match gateway.inner.supervisor.stop(&id).await {
                Ok(_) => info!(camera = %id, ?linger, "stopped: no viewers"),
                Err(error) => warn!(camera = %id, %error, "on-demand stop failed"),
            }
        });
    }

    /// Refuses, with a 400-style error naming `input`, a camera the host policy refuses: an address it denies,
    /// a name it denies, or a name that resolves (now) only to denied addresses. The camera thread checks again
    /// on the addresses it connects to; a name that does not resolve now is left to it.
    async fn check_camera_host(&self, spec: &StreamSpec) -> Result<(), GatewayError> {
        let policy = Arc::clone(&self.inner.supervisor.config().camera_hosts);
        let refuse = |reason: String| GatewayError::Spec(SpecError::new("input", reason));
        let Some((host, port)) = spec.input.host_port() else { return Ok(()) };
        let name = match host {
            UrlHost::V4(ip) => return policy.check_ip(ip.into()).map_err(|r| refuse(r.to_string())),
            UrlHost::V6(ip) => return policy.check_ip(ip.into()).map_err(|r| refuse(r.to_string())),
            UrlHost::Name(name) => name,
        };
        match policy.check_name(&name) {
            NameVerdict::Allowed => return Ok(()),
            NameVerdict::Refused(refusal) => return Err(refuse(refusal.to_string())),
            NameVerdict::ByAddress => {}
        }
        let port = port.unwrap_or(554);
        let lookup = tokio::net::lookup_host((name.as_str(), port));
        let Ok(Ok(addresses)) = tokio::time::timeout(Duration::from_secs(2), lookup).await else { return Ok(()) };
        let addresses: Vec<std::net::IpAddr> = addresses.map(|a| a.ip()).collect();
        let refusals: Vec<String> =
            addresses.iter().filter_map(|ip| policy.check_ip(*ip).err()).map(|r| r.host).collect();
        if !addresses.is_empty() && refusals.len() == addresses.len() {
            return Err(refuse(format!(
                "camera host {name} resolves only to addresses camera_hosts refuses ({})",
                refusals.join(", ")
            )));
        }
        Ok(())
    }

    /// Where `id` can be watched, signed for `ttl` (the configured `viewer_url_ttl_ms` if `None`) when a viewer
    /// secret is configured. `host` is put into the URLs where no public host is configured, `preview_port` is
    /// the port of camgate's own preview.
    pub fn viewer_urls(
        &self,
        id: &CameraId,
        host: Option<&str>,
        preview_port: u16,
        ttl: Option<Duration>,
    ) -> Result<ViewerUrls, GatewayError> {
        let spec = match self.cluster() {
            Some(cluster) => cluster.desired_spec(id),
            None => self.desired().get(id).map(|c| c.spec.clone()),
        };
        let spec = spec.ok_or_else(|| GatewayError::NotFound(id.clone()))?;
        Ok(self.viewer_urls_for(&spec, host, preview_port, ttl))
    }

    /// [`viewer_urls`](Self::viewer_urls) for a spec (of a camera about to be started).
    pub fn viewer_urls_for(
        &self,
        spec: &StreamSpec,
        host: Option<&str>,
        preview_port: u16,
        ttl: Option<Duration>,
    ) -> ViewerUrls {
        if let Some(cluster) = self.cluster() {
            return cluster.viewer_urls(spec, host, ttl);
        }
        self.viewer_urls_with(&self.inner.settings.templates, spec, host, preview_port, ttl)
    }

    /// [`viewer_urls_for`](Self::viewer_urls_for) with given templates (another node's, in a cluster).
    pub(crate) fn viewer_urls_with(
        &self,
        templates: &Templates,
        spec: &StreamSpec,
        host: Option<&str>,
        preview_port: u16,
        ttl: Option<Duration>,
    ) -> ViewerUrls {
        let settings = &self.inner.settings;
        let preview = templates.preview_url(&spec.id, host, preview_port);
        let url = if spec.output.is_some() { templates.viewer_url(&spec.id, host) } else { preview.clone() };
        let preview = spec.preview.then_some(preview);
        let Some(signer) = &settings.viewer_signer else {
            return ViewerUrls { url, preview_url: preview, expires_at_ms: None };
        };
        let now = self.inner.clock.system_time().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let expires = (now + ttl.unwrap_or(settings.viewer_url_ttl).min(viewer_urls::MAX_TTL)).as_secs();
        let query = signer.sign(&spec.id, expires);
        ViewerUrls {
            url: with_query(&url, &query),
            preview_url: preview.map(|p| with_query(&p, &query)),
            expires_at_ms: Some(expires * 1000),
        }
    }

    /// Whether viewer URLs are signed (a viewer secret is configured).
    pub fn signs_viewer_urls(&self) -> bool {
        self.inner.settings.viewer_signer.is_some()
    }

    /// Checks a viewer URL's query for camera `id`. `Ok` when no viewer secret is configured.
    pub fn check_viewer_signature(&self, id: &CameraId, query: &str) -> Result<(), SignatureError> {
        match &self.inner.settings.viewer_signer {
            Some(signer) => signer.verify(id, query, self.inner.clock.system_time()),
            None => Ok(()),
        }
    }

    /// What the cameras cost now, in cores: each live camera's measured CPU, or its estimate until measured.
    /// `except` is left out (a camera about to be replaced).
    pub fn cpu_load(&self, except: Option<&CameraId>) -> f64 {
        let desired = self.desired();
        self.statuses()
            .iter()
            .filter(|s| s.state.is_live() && Some(&s.id) != except)
            .map(|s| {
                s.cpu_cores.unwrap_or_else(|| desired.get(&s.id).map_or(cost::COPY_CORES, |c| cost::estimate(&c.spec)))
            })
            .sum()
    }

    /// How many cameras this gateway may run: `max_cameras`, or `limits.cameras` if lower.
    pub fn camera_slots(&self) -> usize {
        self.inner.supervisor.config().max_cameras.min(self.inner.settings.limits.cameras)
    }

    /// Cores the cameras may fill (`cpu_budget` of the machine's cores).
    pub fn cpu_capacity(&self) -> f64 {
        self.inner.settings.cpu_capacity
    }

    /// Refuses a camera whose estimated cost would take the cameras past `cpu_budget`.
    fn check_budget(&self, spec: &StreamSpec) -> Result<(), GatewayError> {
        let need = cost::estimate(spec);
        let load = self.cpu_load(Some(&spec.id));
        let capacity = self.inner.settings.cpu_capacity;
        if load + need > capacity {
            return Err(GatewayError::OverBudget { camera: spec.id.clone(), need, load, capacity });
        }
        Ok(())
    }

    /// Whether the camera's thread runs and is not on its way out.
    fn is_running(&self, id: &CameraId) -> bool {
        self.inner.supervisor.status(id).is_some_and(|s| s.state.is_live())
    }

    fn check_open(&self) -> Result<(), GatewayError> {
        if self.is_shutting_down() { Err(GatewayError::ShutDown) } else { Ok(()) }
    }

    fn desired(&self) -> MutexGuard<'_, DesiredSet> {
        self.inner.desired.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves the API's part of the desired set after a change to camera `id`. The write happens on a blocking thread; saves are numbered so the file never goes
    /// back to an older snapshot.
    async fn save(&self, id: &CameraId) -> Result<(), GatewayError> {
        let Some(store) = &self.inner.store else { return Ok(()) };
        let (seq, cameras) = {
            let desired = self.desired();
            let cameras: Vec<SavedCamera> = desired
                .iter()
                .filter(|c| c.source == Source::Api)
                .map(|c| SavedCamera { spec: c.spec.clone(), on_demand: c.mode.on_demand() })
                .collect();
            (self.inner.saves.fetch_add(1, Ordering::SeqCst) + 1, cameras)
        };
        let store = Arc::clone(store);
        let saved = tokio::task::spawn_blocking(move || store.save(seq, &cameras)).await;
        match saved {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(GatewayError::NotSaved { camera: id.clone(), source }),
            Err(join) => Err(GatewayError::NotSaved {
                camera: id.clone(),
                source: StateError::ReadOnly(format!("the save task failed: {join}")),
            }),
        }
    }
}

/// One event-stream client: the statuses when it connected, then the supervisor's events. Holds a place under
/// `limits.event_clients` until dropped.
pub struct EventClient {
    /// Every camera's status when the client connected.
    pub snapshot: Vec<CameraStatus>,
    /// What changed since.
    pub events: broadcast::Receiver<Event>,
    _permit: OwnedSemaphorePermit,
}

/// Forgets viewers whose `on_stop` never came, and lets their on-demand cameras linger out. Ends with the
/// gateway.
async fn expire_viewers(inner: std::sync::Weak<Inner>) {
    loop {
        let (sleep, ttl) = {
            let Some(inner) = inner.upgrade() else { return };
            let ttl = Duration::from_millis(inner.settings.limits.on_demand_viewer_ttl_ms);
            (inner.clock.sleep((ttl / 4).min(Duration::from_secs(60))), ttl)
        };
        sleep.await;
        let Some(inner) = inner.upgrade() else { return };
        let gateway = Gateway { inner };
        if gateway.is_shutting_down() {
            return;
        }
        let now = gateway.inner.clock.now();
        let changes = {
            let mut desired = gateway.desired();
            let changes = desired.expire_viewers(now, ttl);
            for change in &changes {
                gateway.inner.supervisor.viewer_counts().set(&change.id, change.viewers);
            }
            changes
        };
        for change in changes {
            warn!(camera = %change.id, viewers = change.viewers, "viewers expired: their on_stop never came");
            if change.mode.is_on_demand() && change.viewers == 0 {
                gateway.schedule_linger_stop(change.id, change.generation);
            }
        }
    }
}
