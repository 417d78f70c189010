//! What every handler shares: the supervisor handle, the settings derived from the configuration, the
//! request counters, the shutdown signal, the desired-state store and the on-demand registry.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{CameraDefaults, Config, CorsConfig, Templates};
use crate::desired_state::{DesiredCamera, DesiredState};
use crate::on_demand::OnDemand;
use crate::spec::{CameraId, StreamSpec};
use crate::supervisor::Supervisor;

use super::error::ApiError;

use super::metrics::HttpCounters;

/// The router's state; cheap to clone (everything behind `Arc`s).
#[derive(Clone)]
pub struct AppState {
    /// Starts, stops and reports the cameras.
    pub supervisor: Supervisor,
    /// Fixed for the process's life.
    pub settings: Arc<ApiSettings>,
    /// Requests answered, by route and status, for `/metrics`.
    pub http: Arc<HttpCounters>,
    /// When the process started, for `/metrics`' uptime.
    pub started: Instant,
    /// Where API-started cameras are saved for the next start; `None` when no data directory is configured.
    pub desired: Option<Arc<DesiredState>>,
    /// On-demand cameras, driven by the RTMP server's hooks.
    pub on_demand: Arc<OnDemand>,
    /// Flipped to `true` when the gateway begins shutting down: `/readyz` fails and event streams end, so the
    /// server's graceful drain is not held up by dashboards that never disconnect.
    shutdown: Arc<watch::Sender<bool>>,
}

/// The parts of the configuration the API uses.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Stream and viewer URL templates.
    pub templates: Templates,
    /// Encoder settings for requests that give none.
    pub defaults: CameraDefaults,
    /// Accepted bearer tokens; empty means no authentication.
    pub tokens: Vec<String>,
    /// Whether health routes need a token.
    pub protect_health: bool,
    /// Whether `/metrics` needs a token.
    pub protect_metrics: bool,
    /// Browser origins allowed.
    pub cors: CorsConfig,
    /// Largest request body, in bytes.
    pub body_limit_bytes: usize,
    /// The port the API (and the built-in preview) listens on, for preview URLs.
    pub listen_port: u16,
    /// Where the dashboard's files are read from at each request (see [`Config::web_dir`]).
    pub web_dir: PathBuf,
    /// How long on-demand cameras run on after their last viewer.
    pub on_demand_linger: Duration,
}

impl ApiSettings {
    /// The API's share of a (validated) configuration.
    pub fn from_config(config: &Config) -> ApiSettings {
        ApiSettings {
            templates: config.templates(),
            defaults: config.defaults.clone(),
            tokens: config.auth.tokens.clone(),
            protect_health: config.auth.protect_health,
            protect_metrics: config.auth.protect_metrics,
            cors: config.cors.clone(),
            body_limit_bytes: config.body_limit_bytes,
            listen_port: config.listen.port(),
            web_dir: config.web_dir.clone(),
            on_demand_linger: Duration::from_millis(config.on_demand_linger_ms),
        }
    }
}

impl AppState {
    /// State for a router over `supervisor`.
    pub fn new(supervisor: Supervisor, settings: ApiSettings) -> AppState {
        AppState {
            on_demand: OnDemand::new(supervisor.clone(), settings.on_demand_linger),
            desired: None,
            supervisor,
            settings: Arc::new(settings),
            http: Arc::new(HttpCounters::default()),
            started: Instant::now(),
            shutdown: Arc::new(watch::channel(false).0),
        }
    }

    /// Saves API-started cameras to `store` from now on.
    pub fn with_desired_state(mut self, store: Arc<DesiredState>) -> AppState {
        self.desired = Some(store);
        self
    }

    /// Saves a camera the API started or registered, so it runs again after a restart. A camera that runs
    /// but could not be saved is answered with a 500 (and logged), so the caller knows it will not survive
    /// a restart.
    pub(crate) fn remember(&self, spec: &StreamSpec, on_demand: bool) -> Result<(), ApiError> {
        match &self.desired {
            Some(store) => {
                store.put(DesiredCamera { spec: spec.clone(), on_demand }).map_err(|e| ApiError::internal(&e))
            }
            None => Ok(()),
        }
    }

    /// Drops a stopped camera from the saved state; returns whether it was there.
    pub(crate) fn forget(&self, id: &CameraId) -> Result<bool, ApiError> {
        match &self.desired {
            Some(store) => store.remove(id).map_err(|e| ApiError::internal(&e)),
            None => Ok(false),
        }
    }

    /// After a stop of all cameras: drops the stopped ones from the saved state, except on-demand cameras,
    /// which stay registered for their next viewer.
    pub(crate) fn forget_stopped(&self, ids: impl IntoIterator<Item = CameraId>) -> Result<(), ApiError> {
        for id in ids {
            if !self.on_demand.is_registered(&id) {
                self.forget(&id)?;
            }
        }
        Ok(())
    }

    /// Marks the gateway as shutting down (see [`AppState::shutdown`'s field doc](AppState)).
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A receiver that sees the shutdown flag flip.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}
