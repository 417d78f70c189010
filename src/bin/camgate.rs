//! The `camgate` binary: reads the configuration, starts the supervisor and the boot cameras, serves the HTTP
//! API, and on SIGTERM/SIGINT drains requests and stops every camera within bounded time.
//!
//! Everything it serves is in the library (`camgate::api`); this file only wires configuration, logging,
//! the listener and signals together.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use camgate::api::{ApiSettings, AppState, router};
use camgate::gateway::cluster::ClusterNode;
use camgate::gateway::config::{Config, LogFormat};
use camgate::gateway::store::StateFile;
use camgate::gateway::{Gateway, GatewaySettings};
use camgate::{AudioMode, RateControl, Supervisor, VideoMode};
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// Camera gateway: pulls RTSP cameras and pushes them as H.264/AAC FLV to an RTMP server, controlled over HTTP.
///
/// Settings come from the TOML file (see camgate.example.toml), then environment variables, then flags; later
/// ones win. Log verbosity follows RUST_LOG (default: info).
#[derive(Parser, Debug)]
#[command(name = "camgate", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP API (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Check the configuration and print it as it takes effect (tokens hidden), then exit.
    CheckConfig(ServeArgs),
}

/// Overrides for the configuration file's settings.
#[derive(Args, Debug, Clone, Default)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "CAMGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Address the HTTP API listens on [default: 0.0.0.0:7000].
    #[arg(long, env = "CAMGATE_LISTEN")]
    listen: Option<SocketAddr>,
    /// RTMP server streams are pushed to [default: rtmp://127.0.0.1:1935].
    #[arg(long, env = "CAMGATE_RTMP_BASE")]
    rtmp_base: Option<String>,
    /// Stream URL for cameras whose request names none; {rtmp_base} and {id} are replaced
    /// [default: {rtmp_base}/live/livestream{id}].
    #[arg(long, env = "CAMGATE_OUTPUT_TEMPLATE")]
    output_template: Option<String>,
    /// Viewer URL returned by play_camera as flv_data; {host} and {id} are replaced
    /// [default: http://{host}:8080/live/livestream{id}.flv].
    #[arg(long, env = "CAMGATE_VIEWER_URL_TEMPLATE")]
    viewer_url_template: Option<String>,
    /// Host for {host} in viewer URLs [default: the host part of each request's Host header].
    #[arg(long, env = "CAMGATE_PUBLIC_HOST")]
    public_host: Option<String>,
    /// Most cameras running at once; more get 429 [default: 5].
    #[arg(long, env = "CAMGATE_MAX_CAMERAS")]
    max_cameras: Option<usize>,
    /// Share of the cores camgate may fill with cameras (0.05 to 1) [default: 0.9].
    #[arg(long, env = "CAMGATE_CPU_BUDGET")]
    cpu_budget: Option<f64>,
    /// Accepted operator bearer token; repeat the flag, or comma-separate in the variable. Replaces the file's
    /// list.
    #[arg(long = "token", env = "CAMGATE_TOKENS", value_delimiter = ',', hide_env_values = true)]
    tokens: Vec<String>,
    /// Accepted viewer bearer token (watch only: preview and snapshots); repeat the flag, or comma-separate in
    /// the variable. Replaces the file's list.
    #[arg(long = "viewer-token", env = "CAMGATE_VIEWER_TOKENS", value_delimiter = ',', hide_env_values = true)]
    viewer_tokens: Vec<String>,
    /// Accepted hook token (only the RTMP server's hooks, /api/v1/srs/on_*: the token for SRS's hook URLs, which
    /// SRS logs); repeat the flag, or comma-separate in the variable. Replaces the file's list.
    #[arg(long = "hook-token", env = "CAMGATE_HOOK_TOKENS", value_delimiter = ',', hide_env_values = true)]
    hook_tokens: Vec<String>,
    /// Refuse to start without an operator token.
    #[arg(long, env = "CAMGATE_REQUIRE_TOKENS")]
    require_tokens: bool,
    /// Secret viewer URLs are signed with (32+ characters): viewer URLs then expire, and watching needs a signed
    /// URL or a token.
    #[arg(long, env = "CAMGATE_VIEWER_SECRET", hide_env_values = true)]
    viewer_secret: Option<String>,
    /// Require a token for /healthz and /readyz too.
    #[arg(long, env = "CAMGATE_PROTECT_HEALTH")]
    protect_health: bool,
    /// Require a token for /metrics too.
    #[arg(long, env = "CAMGATE_PROTECT_METRICS")]
    protect_metrics: bool,
    /// Allowed CORS origin, or * for any; repeat the flag, or comma-separate in the variable [default: *].
    #[arg(long = "cors-origin", env = "CAMGATE_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// Let browsers send credentials cross-origin (not with origin *).
    #[arg(long, env = "CAMGATE_CORS_CREDENTIALS")]
    cors_credentials: bool,
    /// Largest request body in bytes [default: 65536].
    #[arg(long, env = "CAMGATE_BODY_LIMIT_BYTES")]
    body_limit_bytes: Option<usize>,
    /// How long one camera may take to stop, in ms [default: 5000].
    #[arg(long, env = "CAMGATE_STOP_TIMEOUT_MS")]
    stop_timeout_ms: Option<u64>,
    /// Directory for the cameras started through the API (cameras.json), restarted from there on the next
    /// start [default: none, not kept].
    #[arg(long, env = "CAMGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How long an on-demand camera runs on after its last viewer left, in ms [default: 30000].
    #[arg(long, env = "CAMGATE_ON_DEMAND_LINGER_MS")]
    on_demand_linger_ms: Option<u64>,
    /// How long open requests may drain on SIGTERM, in ms [default: 5000].
    #[arg(long, env = "CAMGATE_DRAIN_TIMEOUT_MS")]
    drain_timeout_ms: Option<u64>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "CAMGATE_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Default video mode: auto, copy or transcode [default: auto].
    #[arg(long, env = "CAMGATE_VIDEO_MODE")]
    video_mode: Option<VideoMode>,
    /// Default audio mode: auto, aac, copy or none [default: auto].
    #[arg(long, env = "CAMGATE_AUDIO_MODE")]
    audio_mode: Option<AudioMode>,
    /// Default x264 preset [default: veryfast].
    #[arg(long, env = "CAMGATE_PRESET")]
    preset: Option<String>,
    /// Default video bitrate in kbit/s, instead of CRF 23.
    #[arg(long, env = "CAMGATE_VIDEO_BITRATE_KBPS")]
    video_bitrate_kbps: Option<u32>,
    /// Default encoder threads per camera; 0 lets the encoder decide [default: 0].
    #[arg(long, env = "CAMGATE_ENCODER_THREADS")]
    encoder_threads: Option<u32>,
    /// Camera hosts to allow besides the configured ones (CIDRs, addresses or host names); repeat the flag, or
    /// comma-separate in the variable. Test rigs with cameras on loopback use 127.0.0.0/8.
    #[arg(long = "allow-camera-hosts", env = "CAMGATE_ALLOW_CAMERA_HOSTS", value_delimiter = ',')]
    allow_camera_hosts: Vec<String>,
    /// etcd client URLs of a camgate cluster (comma-separated in the variable); turns cluster mode on (see
    /// docs/CLUSTER.md).
    #[arg(long = "cluster-etcd", env = "CAMGATE_CLUSTER_ETCD", value_delimiter = ',')]
    cluster_etcd: Vec<String>,
    /// This node's name in the cluster [default: the host name].
    #[arg(long, env = "CAMGATE_NODE")]
    node: Option<String>,
    /// Where other nodes and clients reach this node's API [default: http://<host name>:<listen port>].
    #[arg(long, env = "CAMGATE_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// The node's etcd lease in ms: a dead node's cameras move this long after its last renewal
    /// [default: 10000].
    #[arg(long, env = "CAMGATE_LEASE_TTL_MS")]
    lease_ttl_ms: Option<u64>,
    /// etcd password, for etcd with authentication (with `etcd_user` in the file).
    #[arg(long, env = "CAMGATE_ETCD_PASSWORD", hide_env_values = true)]
    etcd_password: Option<String>,
    /// Folder of the web dashboard served at / (run `npm ci` in it for the player) [default: web].
    #[arg(long, env = "CAMGATE_WEB_DIR")]
    web_dir: Option<PathBuf>,
}

impl ServeArgs {
    /// The file's configuration with these overrides applied, validated.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let set = |target: &mut String, value: &Option<String>| {
            if let Some(value) = value {
                target.clone_from(value);
            }
        };
        set(&mut config.rtmp_base, &self.rtmp_base);
        set(&mut config.output_template, &self.output_template);
        set(&mut config.viewer_url_template, &self.viewer_url_template);
        config.listen = self.listen.unwrap_or(config.listen);
        config.public_host = self.public_host.clone().or(config.public_host);
        config.max_cameras = self.max_cameras.unwrap_or(config.max_cameras);
        config.cpu_budget = self.cpu_budget.unwrap_or(config.cpu_budget);
        config.body_limit_bytes = self.body_limit_bytes.unwrap_or(config.body_limit_bytes);
        config.stop_timeout_ms = self.stop_timeout_ms.unwrap_or(config.stop_timeout_ms);
        config.drain_timeout_ms = self.drain_timeout_ms.unwrap_or(config.drain_timeout_ms);
        config.web_dir = self.web_dir.clone().unwrap_or(config.web_dir);
        config.data_dir = self.data_dir.clone().or(config.data_dir);
        config.on_demand_linger_ms = self.on_demand_linger_ms.unwrap_or(config.on_demand_linger_ms);
        if !self.tokens.is_empty() {
            config.auth.tokens = self.tokens.iter().filter(|t| !t.is_empty()).cloned().collect();
        }
        if !self.viewer_tokens.is_empty() {
            config.auth.viewer_tokens = self.viewer_tokens.iter().filter(|t| !t.is_empty()).cloned().collect();
        }
        if !self.hook_tokens.is_empty() {
            config.auth.hook_tokens = self.hook_tokens.iter().filter(|t| !t.is_empty()).cloned().collect();
        }
        config.auth.require_tokens |= self.require_tokens;
        config.viewer_secret = self.viewer_secret.clone().filter(|s| !s.is_empty()).or(config.viewer_secret);
        config.auth.protect_health |= self.protect_health;
        config.auth.protect_metrics |= self.protect_metrics;
        if !self.cors_origins.is_empty() {
            config.cors.allowed_origins.clone_from(&self.cors_origins);
        }
        config.cors.allow_credentials |= self.cors_credentials;
        config.camera_hosts.allow.extend(self.allow_camera_hosts.iter().filter(|h| !h.trim().is_empty()).cloned());
        let endpoints: Vec<String> = self.cluster_etcd.iter().filter(|e| !e.trim().is_empty()).cloned().collect();
        let cluster_flags = !endpoints.is_empty()
            || self.node.is_some()
            || self.advertise_url.is_some()
            || self.lease_ttl_ms.is_some()
            || self.etcd_password.is_some();
        if cluster_flags {
            let cluster = config.cluster.get_or_insert_with(Default::default);
            if !endpoints.is_empty() {
                cluster.etcd_endpoints = endpoints;
            }
            cluster.node = self.node.clone().or(cluster.node.take());
            cluster.advertise_url = self.advertise_url.clone().or(cluster.advertise_url.take());
            cluster.lease_ttl_ms = self.lease_ttl_ms.unwrap_or(cluster.lease_ttl_ms);
            cluster.etcd_password =
                self.etcd_password.clone().filter(|p| !p.is_empty()).or(cluster.etcd_password.take());
        }
        if let Some(format) = &self.log_format {
            config.log_format = if format == "json" { LogFormat::Json } else { LogFormat::Text };
        }
        let defaults = &mut config.defaults;
        defaults.video.mode = self.video_mode.unwrap_or(defaults.video.mode);
        defaults.audio.mode = self.audio_mode.unwrap_or(defaults.audio.mode);
        set(&mut defaults.video.encoding.preset, &self.preset);
        if let Some(kbps) = self.video_bitrate_kbps {
            defaults.video.encoding.rate = RateControl::Bitrate(kbps);
        }
        defaults.video.encoding.threads = self.encoder_threads.unwrap_or(defaults.video.encoding.threads);
        config.validate()?;
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::CheckConfig(args)) => {
            let mut config = args.config()?;
            let auth = &mut config.auth;
            for token in auth.tokens.iter_mut().chain(auth.viewer_tokens.iter_mut()).chain(auth.hook_tokens.iter_mut())
            {
                *token = "***".into();
            }
            if let Some(secret) = &mut config.viewer_secret {
                *secret = "***".into();
            }
            if let Some(password) = config.cluster.as_mut().and_then(|c| c.etcd_password.as_mut()) {
                *password = "***".into();
            }
            for camera in config.cameras.values_mut() {
                camera.input = camgate::redact_url(&camera.input);
                if let Some(output) = &mut camera.output {
                    *output = output.parse::<camgate::OutputTarget>().map_or_else(|_| "***".into(), |o| o.redacted());
                }
            }
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    init_logging(config.log_format);
    camgate::runtime::allocator::tune_for_many_threads();
    camgate::init_ffmpeg();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("camgate-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(config))
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let supervisor = Supervisor::new(config.supervisor_config());
    let fence = supervisor.config().fence.clone();
    let (store, saved) = match &config.data_dir {
        // In a cluster the desired set lives in etcd.
        Some(dir) if config.cluster.is_some() => {
            warn!(data_dir = %dir.display(), "cluster mode: the data directory is not used, the cameras are kept in etcd");
            (None, Vec::new())
        }
        Some(dir) => {
            let (store, saved) =
                StateFile::open(dir).with_context(|| format!("cannot use data directory {}", dir.display()))?;
            if let Some(problem) = store.problem() {
                warn!("saved cameras not restored: {problem}");
            }
            (Some(store), saved)
        }
        None => {
            info!("no data directory: cameras started through the API are not kept across restarts");
            (None, Vec::new())
        }
    };
    let gateway = Gateway::new(supervisor, GatewaySettings::from_config(&config), store);
    let state = AppState::new(gateway.clone(), ApiSettings::from_config(&config));
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    info!(address = %listener.local_addr()?, max_cameras = config.max_cameras, "camgate listening");
    for warning in config.security_warnings() {
        warn!("SECURITY: {warning}");
    }
    let cluster = match &config.cluster {
        Some(_) => {
            let node = ClusterNode::start(&config, gateway.clone(), fence).await.context("cannot join the cluster")?;
            if !config.cameras.is_empty() {
                warn!("cluster mode: [cameras] of the file are not started; put them through the API of any node");
            }
            Some(node)
        }
        None => {
            gateway.restore(config.boot_cameras()?, saved).await;
            None
        }
    };

    // The peer address reaches the handlers for the failed-authentication throttle.
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let gateway = gateway.clone();
        async move {
            let signal = shutdown_signal().await;
            info!(signal, "shutting down: no new connections, draining requests");
            gateway.begin_shutdown();
        }
    });
    let drain = Duration::from_millis(config.drain_timeout_ms);
    let mut shutting_down = gateway.shutdown_signal();
    tokio::select! {
        served = server.into_future() => served.context("the HTTP server failed")?,
        _ = async {
            let _ = shutting_down.wait_for(|down| *down).await;
            tokio::time::sleep(drain).await;
        } => warn!(?drain, "requests still open after the drain timeout; closing them"),
    }

    let cameras = gateway.statuses().len();
    info!(cameras, "stopping cameras");
    // Each stop is bounded by stop_timeout in the supervisor; this bound only guards against the unforeseen.
    let bound = Duration::from_millis(config.stop_timeout_ms) + Duration::from_secs(2);
    let stopped = async {
        match &cluster {
            // Stops the cameras, then gives the lease back so the other nodes take them at once.
            Some(node) => node.leave().await,
            None => gateway.shutdown().await,
        }
    };
    if tokio::time::timeout(bound, stopped).await.is_err() {
        warn!("cameras did not all stop in time; exiting anyway");
    }
    info!("camgate stopped");
    Ok(())
}

/// Waits for SIGTERM or SIGINT and names it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        warn!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
