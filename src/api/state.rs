//! What every handler shares: the gateway, the settings the API itself needs, and the request counters.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::gateway::Gateway;
use crate::gateway::config::{Config, CorsConfig};

use super::metrics::HttpCounters;
use super::throttle::AuthThrottle;

/// The router's state; cheap to clone (everything behind `Arc`s).
#[derive(Clone)]
pub struct AppState {
    /// The one owner of every camera's lifecycle; handlers only translate HTTP into its calls.
    pub gateway: Gateway,
    /// Fixed for the process's life.
    pub settings: Arc<ApiSettings>,
    /// Requests answered, by route and status, for `/metrics`.
    pub http: Arc<HttpCounters>,
    /// When the process started, for `/metrics`' uptime.
    pub started: Instant,
    /// Failed authentications per client address.
    pub auth_throttle: Arc<AuthThrottle>,
}

/// The parts of the configuration the HTTP layer itself uses (the gateway has its own).
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Operator bearer tokens; empty means no authentication.
    pub tokens: Vec<String>,
    /// Viewer bearer tokens: watch routes only.
    pub viewer_tokens: Vec<String>,
    /// Hook tokens: the RTMP server's hook routes only.
    pub hook_tokens: Vec<String>,
    /// Failed authentications one address may make per minute.
    pub max_auth_failures_per_minute: u32,
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
    /// Warnings about the configuration, shown by the dashboard (see [`Config::security_warnings`]).
    pub warnings: Vec<String>,
}

impl ApiSettings {
    /// The API's share of a (validated) configuration.
    pub fn from_config(config: &Config) -> ApiSettings {
        ApiSettings {
            tokens: config.auth.tokens.clone(),
            viewer_tokens: config.auth.viewer_tokens.clone(),
            hook_tokens: config.auth.hook_tokens.clone(),
            max_auth_failures_per_minute: config.auth.max_failures_per_minute,
            protect_health: config.auth.protect_health,
            protect_metrics: config.auth.protect_metrics,
            cors: config.cors.clone(),
            body_limit_bytes: config.body_limit_bytes,
            listen_port: config.listen.port(),
            web_dir: config.web_dir.clone(),
            warnings: config.security_warnings(),
        }
    }
}

impl AppState {
    /// State for a router over `gateway`.
    pub fn new(gateway: Gateway, settings: ApiSettings) -> AppState {
        AppState {
            gateway,
            settings: Arc::new(settings),
            http: Arc::new(HttpCounters::default()),
            started: Instant::now(),
            auth_throttle: Arc::default(),
        }
    }
}
