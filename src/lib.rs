//! # camgate
//!
//! A camera gateway: pulls IP cameras over RTSP and pushes them as H.264/AAC in FLV to an RTMP server (SRS,
//! nginx-rtmp, …), from where browsers watch them over HTTP-FLV, HLS or WebRTC. Everything media runs through
//! FFmpeg's libraries in-process (no `ffmpeg` subprocess); each camera gets one OS thread that owns its whole
//! pipeline.
//!
//! ## Embedding
//!
//! The [`Gateway`] is what the `camgate` binary runs: the desired set of cameras, on-demand viewers, the state
//! file, and the camera threads, with every operation on a camera serialized.
//!
//! ```no_run
//! use camgate::gateway::{Gateway, GatewaySettings, RunMode};
//! use camgate::{StreamSpec, Supervisor, SupervisorConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let supervisor = Supervisor::new(SupervisorConfig { max_cameras: 16, ..Default::default() });
//! let gateway = Gateway::new(supervisor, GatewaySettings::default(), None);
//! let spec = StreamSpec::new("door", "rtsp://user:pass@10.0.0.5/stream1", "rtmp://127.0.0.1/live/door")?;
//! gateway.put(spec, RunMode::Always).await?;
//! for cam in gateway.statuses() {
//!     println!("{} {:?} in {:.1} fps, out {:.1} fps", cam.id, cam.state, cam.rates.fps_in, cam.rates.fps_out);
//! }
//! gateway.remove(&"door".parse()?).await?; // returns once the camera's thread has joined
//! gateway.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! A program that only needs camera threads, without the gateway's policy, can use the [`Supervisor`] alone
//! (it has blocking calls for non-async code; see `examples/relay.rs`). [`api::router`] serves the HTTP API
//! over a gateway.
//!
//! ## Layout
//!
//! The folders are the layers; data flows one way, api → gateway → runtime → pipeline, and statuses flow back.
//!
//! - [`model`]: what a camera is asked to do — ids, strictly parsed URLs, the [`StreamSpec`], errors,
//!   credential redaction. Every other layer speaks in these types.
//! - `pipeline` (private): the data path only — `input` (RTSP open), `video` (copy or decode/scale/x264),
//!   `audio` (copy or decode/resample/AAC), `output` (FLV mux), `timestamps` (monotonic repair), `interrupt`
//!   (cancelling blocking FFmpeg calls), `ffmpeg_log` (FFmpeg's log into `tracing`), `channel_layout` (the
//!   FFmpeg-version-specific bits). Knows nothing of threads or HTTP.
//! - [`preview`]: the built-in HTTP-FLV preview — each camera's GOP cache and fan-out — and snapshots decoded
//!   from the same cache.
//! - [`runtime`]: threads — the [`Supervisor`] (owns the camera threads, the cap, stop deadlines, stats), the
//!   worker (one camera's thread, retries, panics caught), rates and statuses, the injectable clock.
//! - [`gateway`]: policy and state — the [`Gateway`], its desired set, on-demand viewers, the state file,
//!   the configuration.
//! - [`api`]: the HTTP control plane (axum router, handlers, `ApiError`); no media code, no multi-step logic.
//! - `src/bin/camgate.rs`: the `camgate` binary — configuration, logging, serving, graceful shutdown.

pub mod api;
pub mod gateway;
pub mod model;
mod pipeline;
pub mod preview;
pub mod runtime;

// What an embedder touches: the gateway and the supervisor it runs on, the spec a camera is described by,
// the statuses and events they report, and their errors.
pub use gateway::Gateway;
pub use model::{
    AudioEncoding, AudioMode, AudioSpec, CameraId, OutputTarget, PipelineError, RateControl, RetryPolicy, RtmpWriter,
    RtspReader, SourceUrl, SpecError, Stage, StreamSpec, SupervisorError, Timeouts, Transport, VideoEncoding,
    VideoMode, VideoSpec, redact_url,
};
pub use runtime::{CameraStatus, Event, Rates, StartOutcome, Supervisor, SupervisorConfig, WorkerState};

/// Initializes FFmpeg once per process and routes its log into `tracing`; camera threads call it themselves,
/// so a program only needs it to use FFmpeg before the first camera starts.
pub fn init_ffmpeg() {
    pipeline::init();
}

/// Exposed for the benchmark harness and the integration tests only: one pipeline session run on the calling
/// thread, and the timestamp repair, outside the runtime. Not a supported API.
#[doc(hidden)]
pub mod internals {
    pub use crate::model::{Counters, SessionInfo, Totals};
    pub use crate::pipeline::timestamps::TimestampGuard;
    pub use crate::pipeline::{Observer, Taps, run as run_pipeline};
}
