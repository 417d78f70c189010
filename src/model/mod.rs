//! What a camera is asked to do, and nothing about how: identifiers, URLs, the [`StreamSpec`] with its
//! checks, the library's error types, and credential redaction. Every other layer speaks in these types.
//!
//! - `id`: [`CameraId`], the one name of a camera everywhere.
//! - `url`: strict, canonical parsing of the URLs handed to FFmpeg.
//! - `host_policy`: where cameras may be ([`HostPolicy`]: allow/deny networks and names).
//! - `source`: [`SourceUrl`], where a camera is (RTSP or the built-in demo camera).
//! - `output`: [`OutputTarget`], where its FLV goes.
//! - `spec`: [`StreamSpec`] and its parts (video, audio, timeouts, retry).
//! - `error`: errors that carry the camera, the stage and FFmpeg's text.
//! - `report`: what a running data path reports (counters, what a session found).
//! - `redact`: hiding credentials in anything shown to people.

pub mod error;
pub mod host_policy;
pub mod id;
pub mod latency;
pub mod output;
pub mod redact;
pub mod report;
pub mod source;
pub mod spec;
pub mod url;

pub use error::{PipelineError, SpecError, Stage, SupervisorError};
pub use host_policy::HostPolicy;
pub use id::CameraId;
pub use output::OutputTarget;
pub use redact::redact_url;
pub use report::{AudioFormat, Counters, SessionInfo, Totals, VideoFormat, VideoThreads};
pub use source::{DemoPreset, SourceUrl};
pub(crate) use spec::percent_decode;
pub use spec::{
    AAC_SAMPLE_RATES, AudioEncoding, AudioMode, AudioSpec, DEFAULT_READ_BATCH_MS, H264_PROFILES, HARDWARE_ENCODERS,
    MAX_EXTRA_OUTPUTS, MAX_READ_BATCH_MS, RateControl, RetryPolicy, RtmpWriter, RtspReader, StreamSpec, Timeouts,
    Transport, VideoEncoding, VideoMode, VideoSpec, X264_PRESETS, X264_TUNES,
};
