//! # camgate
//!
//! A camera gateway: pulls IP cameras over RTSP and pushes them as H.264/AAC in FLV to an RTMP server (SRS,
//! nginx-rtmp, …), from where browsers watch them over HTTP-FLV, HLS or WebRTC. Everything media runs through
//! FFmpeg's libraries in-process (no `ffmpeg` subprocess); each camera gets one OS thread that owns its whole
//! pipeline.
//!
//! ## Embedding
//!
//! ```no_run
//! use camgate::{StreamSpec, Supervisor, SupervisorConfig, VideoMode};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let supervisor = Supervisor::new(SupervisorConfig { max_cameras: 16, ..Default::default() });
//! let mut spec = StreamSpec::new("door", "rtsp://user:pass@10.0.0.5/stream1", "rtmp://127.0.0.1/live/door")?;
//! spec.video.mode = VideoMode::Auto; // copy H.264, transcode H.265/MJPEG
//! supervisor.start_blocking(spec)?;
//! std::thread::sleep(std::time::Duration::from_secs(10));
//! for cam in supervisor.snapshot() {
//!     println!("{} {:?} in {:.1} fps, out {:.1} fps", cam.id, cam.state, cam.rates.fps_in, cam.rates.fps_out);
//! }
//! supervisor.stop_blocking(&"door".parse()?)?; // returns once the thread has joined
//! # Ok(()) }
//! ```
//!
//! From async code use [`Supervisor::start`], [`Supervisor::stop`] and [`Supervisor::subscribe`]: they never
//! block the runtime.
//!
//! ## Layout
//!
//! - [`spec`]: what a camera is asked to do ([`StreamSpec`]) and its validation; errors name the field.
//! - `pipeline` (private): the data path only — `input` (RTSP open), `video` (copy or decode/scale/x264),
//!   `audio` (copy or decode/resample/AAC), `output` (FLV mux), `timestamps` (monotonic repair),
//!   `interrupt` (cancelling blocking FFmpeg calls), `channel_layout` (the FFmpeg-version-specific bits).
//! - `worker` (private): one camera's thread — sessions, retry with backoff, reports; `wake` (private)
//!   interrupts a worker's blocking socket wait when it is stopped.
//! - [`supervisor`]: owns the workers — start/stop/list, the cap, stats sampling, events.
//! - [`hub`]: the built-in HTTP-FLV preview — per-camera fan-out with a GOP cache, fed by the pipeline.
//! - [`snapshot`]: JPEG stills decoded on request from the cached GOP (also in copy mode).
//! - [`stats`]: counters, rates and the [`CameraStatus`] the supervisor reports.
//! - [`error`]: error types carrying the camera id, the stage and FFmpeg's message, URLs redacted.
//! - [`desired_state`]: the cameras the API asked for, saved atomically to `<data_dir>/cameras.json` and
//!   started again after a restart.
//! - [`on_demand`]: cameras started by the RTMP server's `on_play` hook and stopped a linger time after the
//!   last `on_stop`.
//! - [`config`]: the gateway's TOML configuration, its checks, and the URL templates and defaults it yields.
//! - [`api`]: the HTTP control plane (axum router, handlers, `ApiError`); no media code.
//! - `src/bin/camgate.rs`: the `camgate` binary — configuration, logging, serving, graceful shutdown.
//!
//! Data flows one way: api → supervisor → worker → pipeline; reports and counters flow back.

pub mod api;
pub mod config;
pub mod desired_state;
pub mod error;
pub mod hub;
pub mod on_demand;
mod pipeline;
mod redact;
pub mod snapshot;
pub mod spec;
pub mod stats;
pub mod supervisor;
mod wake;
mod worker;

pub use error::{PipelineError, SpecError, Stage, SupervisorError};
pub use pipeline::timestamps::TimestampGuard;
pub use pipeline::{Observer, Taps, init as init_ffmpeg, run as run_pipeline};
pub use redact::redact_url;
pub use snapshot::SnapshotError;
pub use spec::{
    AudioEncoding, AudioMode, AudioSpec, CameraId, DemoPreset, OutputTarget, RateControl, RetryPolicy, SourceUrl,
    StreamSpec, Timeouts, VideoEncoding, VideoMode, VideoSpec,
};
pub use stats::{CameraStatus, Counters, Event, Rates, SessionInfo, Totals, ViewerCounts, WorkerState};
pub use supervisor::{StartOutcome, Supervisor, SupervisorConfig};
