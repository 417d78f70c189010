//! The gateway's configuration: one TOML file, checked as a whole before anything starts.
//!
//! The binary reads the file (if any), lets environment variables and command-line flags override single
//! settings, then calls [`Config::validate`]. Everything the HTTP API needs at run time is derived from it:
//! the stream and viewer URL templates ([`Templates`]), the encoder settings a request does not give
//! ([`CameraDefaults`]), and the cameras to start at boot ([`CameraConfig`]).
//!
//! `camgate.example.toml` at the top of the repository shows every setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use utoipa::ToSchema;

use super::desired::OnDemand;
use crate::model::{
    AudioSpec, CameraId, HostPolicy, OutputTarget, RetryPolicy, RtmpWriter, RtspReader, SpecError, StreamSpec,
    Timeouts, Transport, VideoSpec,
};
use crate::preview::PreviewLimits;
use crate::runtime::{Fence, SupervisorConfig};

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped settings.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the line.
        #[source]
        source: toml::de::Error,
    },
    /// A setting is out of range; `field` is its dotted name.
    #[error("invalid setting {field}: {reason}")]
    Invalid {
        /// The offending setting.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { field: field.into(), reason: reason.into() }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The whole configuration file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on; the service we replace used port 7000 and front ends expect it.
    pub listen: SocketAddr,
    /// Log line format.
    pub log_format: LogFormat,
    /// Where streams are pushed: `{rtmp_base}` in [`Config::output_template`].
    pub rtmp_base: String,
    /// The RTMP URL a camera is pushed to when a request names none; `{rtmp_base}` and `{id}` are replaced.
    pub output_template: String,
    /// The URL viewers play, returned as `flv_data`; `{host}` (the public host) and `{id}` are replaced.
    pub viewer_url_template: String,
    /// The host put into viewer URLs; unset, the host part of each request's `Host` header is used, which is
    /// what the front ends reached and so usually what their viewers can reach too.
    pub public_host: Option<String>,
    /// Most cameras running at once; more are refused with 429 (the old service allowed 5).
    pub max_cameras: usize,
    /// Share of the machine's cores camgate may fill with cameras (0.05 to 1): a camera whose estimated cost
    /// would take the running cameras' cost (measured while they run) past it is refused with 429, and in a
    /// cluster a node claims only cameras that fit.
    pub cpu_budget: f64,
    /// Cores to count for `cpu_budget`; unset, the CPUs this process may run on.
    pub cpu_cores: Option<usize>,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// How long one camera may take to stop before it is reported stuck, in milliseconds.
    pub stop_timeout_ms: u64,
    /// How long open requests may take to finish after SIGTERM before the server stops waiting, in
    /// milliseconds. Cameras are stopped after that (each bounded by `stop_timeout_ms`).
    pub drain_timeout_ms: u64,
    /// Where camgate keeps the cameras started through the API (`cameras.json`), so they run again after a
    /// restart; unset, they are not kept.
    pub data_dir: Option<PathBuf>,
    /// How long an on-demand camera keeps running after its last viewer left, in milliseconds.
    pub on_demand_linger_ms: u64,
    /// The secret viewer URLs are signed with (HMAC-SHA256; 32+ characters). Set, every viewer URL camgate
    /// hands out expires, and the preview, snapshots and the RTMP server's `on_play` hook demand a valid one
    /// (or a token). Prefer `CAMGATE_VIEWER_SECRET` over writing it here.
    pub viewer_secret: Option<String>,
    /// How long the viewer URLs camgate hands out stay valid when signed, in milliseconds.
    pub viewer_url_ttl_ms: u64,
    /// Several nodes acting as one, coordinated through etcd; absent, camgate is a single box.
    pub cluster: Option<ClusterConfig>,
    /// Where cameras may be.
    pub camera_hosts: CameraHosts,
    /// How much of each resource clients may take.
    pub limits: Limits,
    /// Who may call the API.
    pub auth: AuthConfig,
    /// Which browser origins may call the API.
    pub cors: CorsConfig,
    /// Encoder settings for cameras whose request gives none.
    pub defaults: CameraDefaults,
    /// Cameras started at boot, by id.
    pub cameras: BTreeMap<String, CameraConfig>,
    /// The web dashboard's folder (`index.html` and the player installed by `npm ci` under `node_modules/`);
    /// relative paths are taken from the working directory, so running from the repository finds `web/`.
    pub web_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 7000)),
            log_format: LogFormat::Text,
            rtmp_base: "rtmp://127.0.0.1:1935".into(),
            output_template: "{rtmp_base}/live/livestream{id}".into(),
            viewer_url_template: "http://{host}:8080/live/livestream{id}.flv".into(),
            public_host: None,
            max_cameras: 5,
            cpu_budget: 0.9,
            cpu_cores: None,
            body_limit_bytes: 64 * 1024,
            stop_timeout_ms: 5_000,
            drain_timeout_ms: 5_000,
            data_dir: None,
            on_demand_linger_ms: 30_000,
            viewer_secret: None,
            viewer_url_ttl_ms: 6 * 3_600_000,
            cluster: None,
            camera_hosts: CameraHosts::default(),
            limits: Limits::default(),
            auth: AuthConfig::default(),
            cors: CorsConfig::default(),
            defaults: CameraDefaults::default(),
            cameras: BTreeMap::new(),
            web_dir: PathBuf::from("web"),
        }
    }
}

/// A cluster of camgate nodes coordinated through etcd (see docs/CLUSTER.md). Every node of a cluster has the
/// same `etcd_endpoints` and `prefix`, and its own `node` name and `advertise_url`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd's client URLs (`http://10.0.0.1:2379`, `https://…` with TLS, or `host:port`).
    pub etcd_endpoints: Vec<String>,
    /// This node's name, unique in the cluster; unset: the host name.
    pub node: Option<String>,
    /// Where other nodes and clients reach this node's API; unset: `http://<host name>:<listen port>`.
    pub advertise_url: Option<String>,
    /// The node's etcd lease, in milliseconds: a node that dies loses its cameras this long after its last
    /// confirmed renewal, and a node that cannot renew stops publishing before that.
    pub lease_ttl_ms: u64,
    /// The prefix of every key camgate writes, so several clusters can share one etcd.
    pub prefix: String,
    /// This node's RTMP server (its nearest SRS origin); unset: the top-level `rtmp_base`.
    pub rtmp_base: Option<String>,
    /// The viewer URL of cameras this node runs; unset: the top-level `viewer_url_template`.
    pub viewer_url_template: Option<String>,
    /// etcd user name, for etcd with authentication.
    pub etcd_user: Option<String>,
    /// etcd password (prefer `CAMGATE_ETCD_PASSWORD`).
    pub etcd_password: Option<String>,
    /// PEM file of the CA that signed etcd's certificate (TLS).
    pub etcd_ca_file: Option<PathBuf>,
    /// PEM files of this node's client certificate and key, for etcd that demands client certificates.
    pub etcd_cert_file: Option<PathBuf>,
    /// See `etcd_cert_file`.
    pub etcd_key_file: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            etcd_endpoints: Vec::new(),
            node: None,
            advertise_url: None,
            lease_ttl_ms: 10_000,
            prefix: "/camgate".into(),
            rtmp_base: None,
            viewer_url_template: None,
            etcd_user: None,
            etcd_password: None,
            etcd_ca_file: None,
            etcd_cert_file: None,
            etcd_key_file: None,
        }
    }
}

impl ClusterConfig {
    /// This node's name: `node`, or the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(host_name)
    }

    /// Where this node is reached: `advertise_url`, or `http://<host name>:<port>`.
    pub fn advertise_url(&self, port: u16) -> String {
        self.advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{}:{port}", host_name()))
            .trim_end_matches('/')
            .to_owned()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: &str| Err(ConfigError::invalid(format!("cluster.{field}"), reason));
        if self.etcd_endpoints.is_empty() {
            return invalid("etcd_endpoints", "needs at least one etcd client URL");
        }
        for endpoint in &self.etcd_endpoints {
            let url = if endpoint.contains("://") { endpoint.clone() } else { format!("http://{endpoint}") };
            if !url::Url::parse(&url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some()) {
                return invalid("etcd_endpoints", "each must be http(s)://host:port or host:port");
            }
        }
        let node = self.node_name();
        if node.is_empty() || node.len() > 64 || !node.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return invalid("node", "must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
        }
        if let Some(url) = &self.advertise_url
            && !url::Url::parse(url).is_ok_and(|u| u.scheme() == "http" && u.host_str().is_some())
        {
            return invalid("advertise_url", "must be an http:// URL other nodes can reach");
        }
        if !(2_000..=300_000).contains(&self.lease_ttl_ms) {
            return invalid("lease_ttl_ms", "must be 2000 to 300000");
        }
        let prefix_ok = self.prefix.starts_with('/')
            && !self.prefix.ends_with('/')
            && self.prefix.len() <= 128
            && self.prefix.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
        if !prefix_ok {
            return invalid("prefix", "must start with / and not end with one, of A-Z a-z 0-9 / . _ -");
        }
        if self.etcd_cert_file.is_some() != self.etcd_key_file.is_some() {
            return invalid("etcd_cert_file", "etcd_cert_file and etcd_key_file go together");
        }
        if self.etcd_user.is_some() != self.etcd_password.is_some() {
            return invalid("etcd_user", "etcd_user and etcd_password go together");
        }
        Ok(())
    }
}

/// The machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "camgate".into())
}

/// Where cameras may be: networks (CIDRs, addresses) and host names (`cam.example.com`, `*.cams.example.com`).
/// See [`HostPolicy`] for how rules combine. By default loopback, link-local and cloud metadata addresses are
/// refused; test rigs and a camera on the gateway's own host need `allow = ["127.0.0.0/8"]`
/// (`CAMGATE_ALLOW_CAMERA_HOSTS=127.0.0.0/8`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CameraHosts {
    /// Allowed even where a less specific deny rule matches.
    pub allow: Vec<String>,
    /// Refused unless a more specific allow rule matches.
    pub deny: Vec<String>,
}

impl Default for CameraHosts {
    fn default() -> Self {
        CameraHosts { allow: Vec::new(), deny: HostPolicy::DEFAULT_DENY.iter().map(|s| (*s).to_owned()).collect() }
    }
}

/// Bounds on what clients can make the gateway hold. Each has a default; a client beyond one is refused
/// with a JSON error naming the setting (`limits.preview_viewers` …), and nothing running is disturbed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Built-in preview (HTTP-FLV) viewers of all cameras together.
    pub preview_viewers: usize,
    /// Built-in preview viewers of one camera.
    pub preview_viewers_per_camera: usize,
    /// Open event streams (`/api/v1/events`).
    pub event_clients: usize,
    /// Snapshots decoded at the same time (each decodes up to a GOP on a blocking thread).
    pub snapshot_decodes: usize,
    /// Viewers the RTMP server's hooks may report for one camera.
    pub on_demand_viewers_per_camera: usize,
    /// A viewer not reported again (by a repeated `on_play`) within this long is forgotten, in milliseconds, so
    /// a lost `on_stop` cannot keep an on-demand camera running for ever.
    pub on_demand_viewer_ttl_ms: u64,
    /// Cameras in the desired set (running, registered on demand, or waiting to be retried).
    pub cameras: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            preview_viewers: 100,
            preview_viewers_per_camera: 20,
            event_clients: 32,
            snapshot_decodes: 2,
            on_demand_viewers_per_camera: 1000,
            on_demand_viewer_ttl_ms: 24 * 3_600_000,
            cameras: 1024,
        }
    }
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        let counts = [
            ("limits.preview_viewers", self.preview_viewers, 100_000),
            ("limits.preview_viewers_per_camera", self.preview_viewers_per_camera, 100_000),
            ("limits.event_clients", self.event_clients, 10_000),
            ("limits.snapshot_decodes", self.snapshot_decodes, 64),
            ("limits.on_demand_viewers_per_camera", self.on_demand_viewers_per_camera, 1_000_000),
            ("limits.cameras", self.cameras, 100_000),
        ];
        for (field, value, max) in counts {
            if !(1..=max).contains(&value) {
                return Err(ConfigError::invalid(field, format!("must be 1 to {max}")));
            }
        }
        if !(60_000..=30 * 86_400_000).contains(&self.on_demand_viewer_ttl_ms) {
            return Err(ConfigError::invalid("limits.on_demand_viewer_ttl_ms", "must be 60000 to 2592000000"));
        }
        Ok(())
    }
}

/// Who may call the API: operators control, viewers only watch.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Operator bearer tokens: every route. Empty leaves the API open (as the old service was).
    pub tokens: Vec<String>,
    /// Viewer bearer tokens: only the built-in preview and snapshots. Needs operator tokens too.
    pub viewer_tokens: Vec<String>,
    /// Hook tokens: only the RTMP server's hook routes (`/api/v1/srs/on_*`), for the `?token=` of SRS's hook
    /// URLs, which SRS writes into its log at every call. Needs operator tokens too.
    pub hook_tokens: Vec<String>,
    /// Refuse to start without operator tokens (the one line that locks the API down).
    pub require_tokens: bool,
    /// Whether `/healthz` and `/readyz` need a token too (probes usually cannot send one).
    pub protect_health: bool,
    /// Whether `/metrics` needs a token too.
    pub protect_metrics: bool,
    /// Failed authentications one client address may make per minute; after that it is answered 429 until
    /// the minute is over, so tokens cannot be guessed at line rate.
    pub max_failures_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            tokens: Vec::new(),
            viewer_tokens: Vec::new(),
            hook_tokens: Vec::new(),
            require_tokens: false,
            protect_health: false,
            protect_metrics: false,
            max_failures_per_minute: 10,
        }
    }
}

/// Cross-origin access for browser front ends.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins (`https://ops.example.com`), or `["*"]` for any (the old service's behaviour).
    pub allowed_origins: Vec<String>,
    /// Whether browsers may send cookies and `Authorization`; never together with `*`.
    pub allow_credentials: bool,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig { allowed_origins: vec!["*".into()], allow_credentials: false }
    }
}

/// Encoder, timeout, retry and preview settings used when a camera's request leaves them out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CameraDefaults {
    /// Serve each camera through the built-in HTTP-FLV preview (`/live/<id>.flv`) as well.
    pub preview: bool,
    /// Video handling.
    pub video: VideoSpec,
    /// Audio handling.
    pub audio: AudioSpec,
    /// How RTP reaches camgate from RTSP cameras: `auto`, `tcp`, `udp`, `udp_multicast` or `http`.
    pub transport: Transport,
    /// Keep each camera's stream published with a "camera offline" picture while the camera is away.
    pub offline_slate: bool,
    /// Network timeouts.
    pub timeouts: Timeouts,
    /// Reconnect policy.
    pub retry: RetryPolicy,
    /// Copied video: how long to let packets gather before reading them (see `StreamSpec::read_batch_ms`).
    pub read_batch_ms: u64,
    /// Which RTSP client reads cameras over interleaved TCP: `ffmpeg` (libavformat's) or `buffered`
    /// (camgate's own, fewer system calls; see `StreamSpec::rtsp_reader`).
    pub rtsp_reader: RtspReader,
    /// Which RTMP client publishes to `rtmp://` outputs: `ffmpeg` (libavformat's) or `buffered` (camgate's own,
    /// fewer system calls; see `StreamSpec::rtmp_writer`).
    pub rtmp_writer: RtmpWriter,
}

impl Default for CameraDefaults {
    fn default() -> Self {
        CameraDefaults {
            preview: true,
            video: VideoSpec::default(),
            audio: AudioSpec::default(),
            transport: Transport::default(),
            offline_slate: false,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            read_batch_ms: crate::model::DEFAULT_READ_BATCH_MS,
            rtsp_reader: RtspReader::default(),
            rtmp_writer: RtmpWriter::default(),
        }
    }
}

/// One camera as a config file or a `PUT /api/v1/cameras/{id}` body describes it; the id comes from the
/// table name or the path.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// The camera's `rtsp://` or `rtsps://` URL.
    pub input: String,
    /// Where to push; unset uses the output template, `"none"` pushes nowhere (preview only). From the API only
    /// `rtmp://` and `rtmps://` are allowed.
    #[serde(default)]
    pub output: Option<String>,
    /// More RTMP servers to push the same stream to (a second SRS origin …), from the same single session with
    /// the camera; at most 4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_outputs: Vec<String>,
    /// Serve through the built-in preview too; unset uses the configured default.
    #[serde(default)]
    pub preview: Option<bool>,
    /// Video handling; unset uses the configured defaults.
    #[serde(default)]
    pub video: Option<VideoSpec>,
    /// Audio handling; unset uses the configured defaults.
    #[serde(default)]
    pub audio: Option<AudioSpec>,
    /// How RTP reaches camgate (`auto`, `tcp`, `udp`, `udp_multicast`, `http`); unset uses the configured
    /// default (`auto`: TCP, then UDP when the camera refuses TCP, then HTTP).
    #[serde(default)]
    pub transport: Option<Transport>,
    /// While the camera is away, keep its RTMP stream (and preview) published with a generated "camera
    /// offline" picture and silence, so players stay attached and resume when it returns; unset uses the
    /// configured default (off). Applies once the camera has been seen: before that nothing is published.
    #[serde(default)]
    pub offline_slate: Option<bool>,
    /// Network timeouts; unset uses the configured defaults.
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    /// Reconnect policy; unset uses the configured defaults.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Copied video: after a read that waited for the camera, let packets gather this many milliseconds (0 to
    /// 100) before reading on: fewer wake-ups, at most this much more latency; unset uses the configured
    /// default (100; 0 for WebRTC playback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_batch_ms: Option<u64>,
    /// Which RTSP client reads the camera over interleaved TCP: `ffmpeg` (libavformat's) or `buffered`
    /// (camgate's own: about a tenth of the system calls per packet; cameras it cannot read fall back to
    /// libavformat's); unset uses the configured default (`ffmpeg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtsp_reader: Option<RtspReader>,
    /// Which RTMP client publishes to the camera's `rtmp://` outputs: `ffmpeg` (libavformat's) or `buffered`
    /// (camgate's own: one system call per packet instead of about four; outputs it cannot write fall back to
    /// libavformat's); unset uses the configured default (`ffmpeg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmp_writer: Option<RtmpWriter>,
    /// `true`: run only while the RTMP server reports viewers (SRS `on_play`/`on_stop` hooks) instead of all the
    /// time. `"warm"`: stay connected to the camera, its current GOP cached, and push to the RTMP server only
    /// while viewers are reported — the first viewer's stream starts at once from the cached keyframe. Both need
    /// an RTMP output.
    #[serde(default, skip_serializing_if = "OnDemand::is_off")]
    #[schema(value_type = Object, example = json!("warm"))]
    pub on_demand: OnDemand,
}

/// The output value (per camera, or as the output template) that means "no RTMP output, preview only".
pub const NO_OUTPUT: &str = "none";

/// Where a camera request came from, which decides what outputs it may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The operator's config file: any output, local `.flv` files included.
    ConfigFile,
    /// An HTTP caller: RTMP outputs only, so no request can make the gateway write local files.
    Api,
}

impl CameraConfig {
    /// The request that gives exactly `spec` (every setting explicit), as a cluster stores it.
    pub fn from_spec(spec: &StreamSpec, mode: super::RunMode) -> CameraConfig {
        CameraConfig {
            input: spec.input.expose().to_owned(),
            output: Some(spec.output.as_ref().map_or_else(|| NO_OUTPUT.to_owned(), OutputTarget::expose)),
            extra_outputs: spec.extra_outputs.iter().map(OutputTarget::expose).collect(),
            preview: Some(spec.preview),
            video: Some(spec.video.clone()),
            audio: Some(spec.audio.clone()),
            transport: Some(spec.transport),
            offline_slate: Some(spec.offline_slate),
            timeouts: Some(spec.timeouts),
            retry: Some(spec.retry),
            read_batch_ms: Some(spec.read_batch_ms),
            rtsp_reader: Some(spec.rtsp_reader),
            rtmp_writer: Some(spec.rtmp_writer),
            on_demand: mode.on_demand(),
        }
    }

    /// The full, validated spec for camera `id`.
    pub fn to_spec(
        &self,
        id: CameraId,
        defaults: &CameraDefaults,
        templates: &Templates,
        origin: Origin,
    ) -> Result<StreamSpec, SpecError> {
        let output = match self.output.as_deref() {
            Some(NO_OUTPUT) => None,
            Some(output) => Some(output.parse()?),
            None => templates.output_for(&id)?,
        };
        if origin == Origin::Api && matches!(output, Some(OutputTarget::File(_))) {
            return Err(SpecError::new("output", "must be an rtmp:// or rtmps:// URL"));
        }
        let spec = StreamSpec {
            id,
            input: self.input.parse()?,
            output,
            extra_outputs: self
                .extra_outputs
                .iter()
                .map(|o| o.parse().map_err(|e: SpecError| SpecError::new("extra_outputs", e.reason())))
                .collect::<Result<_, _>>()?,
            preview: self.preview.unwrap_or(defaults.preview),
            video: self.video.clone().unwrap_or_else(|| defaults.video.clone()),
            audio: self.audio.clone().unwrap_or_else(|| defaults.audio.clone()),
            transport: self.transport.unwrap_or(defaults.transport),
            offline_slate: self.offline_slate.unwrap_or(defaults.offline_slate),
            timeouts: self.timeouts.unwrap_or(defaults.timeouts),
            retry: self.retry.unwrap_or(defaults.retry),
            read_batch_ms: self.read_batch_ms.unwrap_or(defaults.read_batch_ms),
            rtsp_reader: self.rtsp_reader.unwrap_or(defaults.rtsp_reader),
            rtmp_writer: self.rtmp_writer.unwrap_or(defaults.rtmp_writer),
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// The URL templates, with `{rtmp_base}` already filled in.
#[derive(Clone, Debug)]
pub struct Templates {
    output: String,
    viewer: String,
    public_host: Option<String>,
}

impl Templates {
    /// Templates from raw strings: `output` may use `{rtmp_base}` and `{id}`, `viewer` `{host}` and `{id}`.
    pub fn new(rtmp_base: &str, output: &str, viewer: &str, public_host: Option<String>) -> Templates {
        let rtmp_base = rtmp_base.trim_end_matches('/');
        Templates { output: output.replace("{rtmp_base}", rtmp_base), viewer: viewer.to_owned(), public_host }
    }

    /// The viewer URL template (`{host}` and `{id}` not yet replaced).
    pub fn viewer_template(&self) -> &str {
        &self.viewer
    }

    /// The configured public host, if any.
    pub fn public_host(&self) -> Option<&str> {
        self.public_host.as_deref()
    }

    /// Where camera `id` is pushed when its request names no output; `None` when the template is `"none"`.
    pub fn output_for(&self, id: &CameraId) -> Result<Option<OutputTarget>, SpecError> {
        if self.output == NO_OUTPUT {
            return Ok(None);
        }
        self.output.replace("{id}", id.as_str()).parse().map(Some)
    }

    /// The built-in preview's URL for camera `id`, on the host and port the caller reached us by.
    pub fn preview_url(&self, id: &CameraId, request_host: Option<&str>, port: u16) -> String {
        let host = self.public_host.as_deref().or(request_host).unwrap_or("127.0.0.1");
        format!("http://{host}:{port}/live/{id}.flv")
    }

    /// The URL a viewer plays camera `id` at; `request_host` is the host the caller reached us by, used when
    /// no public host is configured.
    pub fn viewer_url(&self, id: &CameraId, request_host: Option<&str>) -> String {
        let host = self.public_host.as_deref().or(request_host).unwrap_or("127.0.0.1");
        self.viewer.replace("{host}", host).replace("{id}", id.as_str())
    }
}

impl Config {
    /// Reads and parses a TOML file (not yet validated: overrides come first).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::from_toml(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The URL templates (a cluster node's own `rtmp_base` and viewer URL template win).
    pub fn templates(&self) -> Templates {
        let cluster = self.cluster.as_ref();
        let rtmp_base = cluster.and_then(|c| c.rtmp_base.as_deref()).unwrap_or(&self.rtmp_base);
        let viewer = cluster.and_then(|c| c.viewer_url_template.as_deref()).unwrap_or(&self.viewer_url_template);
        Templates::new(rtmp_base, &self.output_template, viewer, self.public_host.clone())
    }

    /// The supervisor's limits and timings.
    pub fn supervisor_config(&self) -> SupervisorConfig {
        SupervisorConfig {
            camera_hosts: std::sync::Arc::new(self.host_policy().unwrap_or_default()),
            max_cameras: self.max_cameras,
            stop_timeout: Duration::from_millis(self.stop_timeout_ms),
            // A cluster node's cameras may write only while it holds its lease: the cluster agent opens it.
            fence: if self.cluster.is_some() { Fence::closed() } else { Fence::open() },
            preview: PreviewLimits {
                max_viewers: self.limits.preview_viewers,
                max_viewers_per_camera: self.limits.preview_viewers_per_camera,
            },
            ..SupervisorConfig::default()
        }
    }

    /// What an operator should know about this configuration's exposure: an API that needs no token while it
    /// listens beyond loopback (any web page a visitor opens can then start cameras pointing anywhere the
    /// gateway reaches, or stop them all), and viewers that need nothing to watch.
    pub fn security_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.auth.tokens.is_empty() && !self.listen.ip().is_loopback() {
            let browsers = if self.cors.allowed_origins.iter().any(|o| o == "*") {
                " and any web page opened by someone on this network can drive it (CORS allows every origin)"
            } else {
                ""
            };
            warnings.push(format!(
                "the control API needs no token and listens on {}: anyone who reaches it can start and stop \
                 cameras{browsers}. Set auth.tokens (CAMGATE_TOKENS) and auth.require_tokens, see docs/SECURITY.md",
                self.listen
            ));
        }
        if self.viewer_secret.is_none() && !self.listen.ip().is_loopback() {
            warnings.push(
                "viewer URLs are not signed: anyone who learns a stream name can watch it. Set viewer_secret \
                 (CAMGATE_VIEWER_SECRET)"
                    .to_owned(),
            );
        }
        warnings
    }

    /// Cores camgate may fill with cameras: `cpu_cores` (or the CPUs available) × `cpu_budget`.
    pub fn cpu_capacity(&self) -> f64 {
        super::cost::capacity(self.cpu_cores.unwrap_or_else(super::cost::available_cores), self.cpu_budget)
    }

    /// The camera host policy of `[camera_hosts]` (checked by [`validate`](Self::validate)).
    pub fn host_policy(&self) -> Result<HostPolicy, ConfigError> {
        HostPolicy::new(&self.camera_hosts.allow, &self.camera_hosts.deny)
            .map_err(|reason| ConfigError::invalid("camera_hosts", reason))
    }

    /// The cameras of the file, with how each runs (for [`Gateway::restore`](super::Gateway::restore)).
    pub fn boot_cameras(&self) -> Result<Vec<(StreamSpec, super::RunMode)>, ConfigError> {
        use super::RunMode;
        Ok(self
            .boot_specs()?
            .into_iter()
            .map(|spec| {
                let mode = self.cameras.get(spec.id.as_str()).map_or(RunMode::Always, |c| c.on_demand.mode());
                (spec, mode)
            })
            .collect())
    }

    /// The cameras to start at boot, as specs.
    pub fn boot_specs(&self) -> Result<Vec<StreamSpec>, ConfigError> {
        let templates = self.templates();
        self.cameras
            .iter()
            .map(|(id, camera)| {
                let at = |e: SpecError| ConfigError::invalid(format!("cameras.{id}.{}", e.field()), e.reason());
                let id: CameraId = id.parse().map_err(at)?;
                camera.to_spec(id, &self.defaults, &templates, Origin::ConfigFile).map_err(at)
            })
            .collect()
    }

    /// Checks every setting, so a bad file fails at start and not on the first request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1024).contains(&self.max_cameras) {
            return Err(ConfigError::invalid("max_cameras", "must be 1 to 1024"));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.body_limit_bytes) {
            return Err(ConfigError::invalid("body_limit_bytes", "must be 1 KiB to 16 MiB"));
        }
        if !(100..=300_000).contains(&self.stop_timeout_ms) {
            return Err(ConfigError::invalid("stop_timeout_ms", "must be 100 to 300000"));
        }
        if !(100..=86_400_000).contains(&self.on_demand_linger_ms) {
            return Err(ConfigError::invalid("on_demand_linger_ms", "must be 100 to 86400000"));
        }
        self.limits.validate()?;
        self.host_policy()?;
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if !(0.05..=1.0).contains(&self.cpu_budget) {
            return Err(ConfigError::invalid("cpu_budget", "must be 0.05 to 1 (a share of the cores)"));
        }
        if self.cpu_cores.is_some_and(|c| !(1..=4096).contains(&c)) {
            return Err(ConfigError::invalid("cpu_cores", "must be 1 to 4096"));
        }
        if self.drain_timeout_ms > 300_000 {
            return Err(ConfigError::invalid("drain_timeout_ms", "must be at most 300000"));
        }
        if self.output_template != NO_OUTPUT && !self.output_template.contains("{id}") {
            return Err(ConfigError::invalid("output_template", "must contain {id} (or be \"none\")"));
        }
        let sample: CameraId = "sample".parse().expect("a valid id");
        match self.templates().output_for(&sample) {
            Ok(Some(OutputTarget::Rtmp(_))) | Ok(None) => {}
            Ok(Some(OutputTarget::File(_))) => {
                return Err(ConfigError::invalid("output_template", "must give an rtmp:// or rtmps:// URL"));
            }
            Err(e) => return Err(ConfigError::invalid("output_template", e.reason())),
        }
        if !self.viewer_url_template.contains("{id}") {
            return Err(ConfigError::invalid("viewer_url_template", "must contain {id}"));
        }
        if let Some(host) = &self.public_host
            && !is_host(host)
        {
            return Err(ConfigError::invalid("public_host", "must be a host name or IP address"));
        }
        let weak = |t: &String| t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control());
        if self.auth.tokens.iter().any(weak) {
            return Err(ConfigError::invalid("auth.tokens", "each token needs 16 or more printable characters"));
        }
        // Viewer and hook tokens each open a few routes only: they need operator tokens (without those the whole
        // API is open anyway), and a token is of one kind.
        let limited = [
            ("auth.viewer_tokens", "viewer", &self.auth.viewer_tokens),
            ("auth.hook_tokens", "hook", &self.auth.hook_tokens),
        ];
        for (i, &(field, kind, tokens)) in limited.iter().enumerate() {
            if tokens.iter().any(weak) {
                return Err(ConfigError::invalid(field, "each token needs 16 or more printable characters"));
            }
            if !tokens.is_empty() && self.auth.tokens.is_empty() {
                return Err(ConfigError::invalid(
                    field,
                    format!("{kind} tokens need operator tokens (auth.tokens): without them the whole API is open"),
                ));
            }
            let mut others = self.auth.tokens.iter().chain(limited[..i].iter().flat_map(|(_, _, t)| t.iter()));
            if others.any(|other| tokens.contains(other)) {
                return Err(ConfigError::invalid(
                    field,
                    format!("a {kind} token cannot also be a token of another kind"),
                ));
            }
        }
        if self.auth.require_tokens && self.auth.tokens.is_empty() {
            return Err(ConfigError::invalid(
                "auth.require_tokens",
                "no operator token is configured (auth.tokens, CAMGATE_TOKENS or --token)",
            ));
        }
        if !(1..=10_000).contains(&self.auth.max_failures_per_minute) {
            return Err(ConfigError::invalid("auth.max_failures_per_minute", "must be 1 to 10000"));
        }
        if let Some(secret) = &self.viewer_secret
            && (secret.len() < super::viewer_urls::MIN_SECRET_LEN
                || secret.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(ConfigError::invalid("viewer_secret", "needs 32 or more printable characters"));
        }
        if !(60_000..=super::viewer_urls::MAX_TTL.as_millis() as u64).contains(&self.viewer_url_ttl_ms) {
            return Err(ConfigError::invalid("viewer_url_ttl_ms", "must be 60000 (a minute) to 604800000 (a week)"));
        }
        let any_origin = self.cors.allowed_origins.iter().any(|o| o == "*");
        if any_origin && self.cors.allowed_origins.len() > 1 {
            return Err(ConfigError::invalid("cors.allowed_origins", "\"*\" cannot be combined with other origins"));
        }
        if any_origin && self.cors.allow_credentials {
            return Err(ConfigError::invalid(
                "cors.allow_credentials",
                "cannot be true while any origin (\"*\") is allowed",
            ));
        }
        for origin in self.cors.allowed_origins.iter().filter(|o| *o != "*") {
            let ok = url::Url::parse(origin)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some() && u.path() == "/")
                && !origin.ends_with('/');
            if !ok {
                return Err(ConfigError::invalid(
                    "cors.allowed_origins",
                    format!("{origin:?} is not an origin like https://example.com"),
                ));
            }
        }
        let defaults = StreamSpec {
            video: self.defaults.video.clone(),
            audio: self.defaults.audio.clone(),
            timeouts: self.defaults.timeouts,
            retry: self.defaults.retry,
            read_batch_ms: self.defaults.read_batch_ms,
            ..StreamSpec::new("defaults", "rtsp://camera/", "rtmp://server/live/x").expect("valid literals")
        };
        defaults.validate().map_err(|e| ConfigError::invalid(format!("defaults.{}", e.field()), e.reason()))?;
        if self.cameras.len() > self.max_cameras {
            return Err(ConfigError::invalid("cameras", "more boot cameras than max_cameras"));
        }
        for spec in self.boot_specs()? {
            let on_demand = self.cameras.get(spec.id.as_str()).is_some_and(|c| !c.on_demand.is_off());
            if on_demand && spec.output.as_ref().and_then(OutputTarget::stream).is_none() {
                return Err(ConfigError::invalid(
                    format!("cameras.{}.on_demand", spec.id),
                    "needs an RTMP output (rtmp://host/app/stream)",
                ));
            }
        }
        Ok(())
    }
}

/// Whether `s` can stand as the host part of a URL: a name, an IPv4 address, or a bracketed IPv6 address.
/// Guards viewer URLs against whatever a client put in its `Host` header.
pub fn is_host(s: &str) -> bool {
    if let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !s.is_empty() && s.len() <= 253 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_old_service() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.max_cameras, 5);
        let id: CameraId = "7".parse().unwrap();
        let templates = config.templates();
        assert_eq!(templates.output_for(&id).unwrap().unwrap().expose(), "rtmp://127.0.0.1:1935/live/livestream7");
        assert_eq!(templates.viewer_url(&id, Some("10.1.2.3")), "http://10.1.2.3:8080/live/livestream7.flv");
    }

    #[test]
    fn example_file_parses_and_validates() {
        let text = include_str!("../../camgate.example.toml");
        let config = Config::from_toml(text).unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn unknown_settings_are_rejected() {
        assert!(Config::from_toml("listn = \"0.0.0.0:1\"").is_err());
    }

    #[test]
    fn settings_are_checked() {
        let cases: Vec<(&str, &str)> = vec![
            ("max_cameras = 0", "max_cameras"),
            ("output_template = \"rtmp://h/live/x\"", "output_template"),
            ("output_template = \"/tmp/{id}.flv\"", "output_template"),
            ("public_host = \"a/b\"", "public_host"),
            ("[auth]\ntokens = [\"short\"]", "auth.tokens"),
            ("[auth]\ntokens = [\"operator-token-0123456789\"]\nhook_tokens = [\"short\"]", "auth.hook_tokens"),
            ("[auth]\nhook_tokens = [\"hook-token-0123456789abcd\"]", "auth.hook_tokens"),
            (
                "[auth]\ntokens = [\"operator-token-0123456789\"]\nviewer_tokens = [\"operator-token-0123456789\"]",
                "auth.viewer_tokens",
            ),
            (
                "[auth]\ntokens = [\"operator-token-0123456789\"]\nhook_tokens = [\"operator-token-0123456789\"]",
                "auth.hook_tokens",
            ),
            (
                "[auth]\ntokens = [\"operator-token-0123456789\"]\nviewer_tokens = [\"viewer-token-0123456789ab\"]\n\
                 hook_tokens = [\"viewer-token-0123456789ab\"]",
                "auth.hook_tokens",
            ),
            ("[cors]\nallow_credentials = true", "cors.allow_credentials"),
            ("[cors]\nallowed_origins = [\"*\", \"https://a.b\"]", "cors.allowed_origins"),
            ("[cors]\nallowed_origins = [\"https://a.b/x\"]", "cors.allowed_origins"),
            ("[defaults.video.encoding]\npreset = \"warp\"", "defaults.video.encoding.preset"),
            ("[cameras.a]\ninput = \"file:///etc/passwd\"", "cameras.a.input"),
            ("[cameras.\"a b\"]\ninput = \"rtsp://h/s\"", "cameras.a b.id"),
            ("on_demand_linger_ms = 0", "on_demand_linger_ms"),
            ("[cameras.a]\ninput = \"rtsp://h/s\"\noutput = \"a.flv\"\non_demand = true", "cameras.a.on_demand"),
        ];
        for (text, field) in cases {
            let err = Config::from_toml(text).unwrap().validate().expect_err(text);
            match err {
                ConfigError::Invalid { field: f, .. } => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: {other}"),
            }
        }
    }

    #[test]
    fn api_requests_cannot_write_files() {
        let config = Config::default();
        let camera = CameraConfig { input: "rtsp://h/s".into(), output: Some("x.flv".into()), ..Default::default() };
        let id: CameraId = "a".parse().unwrap();
        let err = camera.to_spec(id.clone(), &config.defaults, &config.templates(), Origin::Api).unwrap_err();
        assert_eq!(err.field(), "output");
        camera.to_spec(id, &config.defaults, &config.templates(), Origin::ConfigFile).unwrap();
    }

    #[test]
    fn hosts() {
        for ok in ["example.com", "10.0.0.1", "[::1]", "cam-gw"] {
            assert!(is_host(ok), "{ok}");
        }
        for bad in ["", "a/b", "a b", "[zz]", "a@b", "a\"b"] {
            assert!(!is_host(bad), "{bad}");
        }
    }
}
