//! The library's error types. Each carries what is needed to act on it: the camera, the stage, FFmpeg's own
//! message; URLs in them are always redacted.

use std::time::Duration;

use thiserror::Error;

use super::id::CameraId;

/// A camera spec that cannot be run; `field` names the offending field (`id`, `input`,
/// `video.encoding.preset` …) so an API can point at it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    field: String,
    reason: String,
}

impl SpecError {
    /// A new error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
        SpecError { field: field.into(), reason: reason.into() }
    }

    /// The offending field, as a dotted path.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The step of the data path where something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Stage {
    /// Connecting to the camera and probing its streams.
    #[error("opening the input")]
    OpenInput,
    /// Reading packets from the camera.
    #[error("reading from the input")]
    ReadInput,
    /// Opening or feeding the video decoder.
    #[error("decoding video")]
    DecodeVideo,
    /// Scaling or converting decoded pictures.
    #[error("scaling video")]
    ScaleVideo,
    /// Opening or feeding the H.264 encoder.
    #[error("encoding video")]
    EncodeVideo,
    /// Decoding, resampling or encoding audio.
    #[error("processing audio")]
    Audio,
    /// Connecting to the output and writing the FLV header.
    #[error("opening the output")]
    OpenOutput,
    /// Writing packets to the output.
    #[error("writing to the output")]
    WriteOutput,
}

/// Why a camera's pipeline ended other than by a stop request.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// An FFmpeg call failed; `source` carries FFmpeg's error code and text, `detail` what FFmpeg logged about
    /// it (an RTSP status line, a codec parser's complaint), which its error codes alone do not say.
    #[error("camera {camera}: {stage} ({target}) failed: {}{source}{}", advice_prefix(.advice), detail_suffix(.detail))]
    Ffmpeg {
        /// The camera.
        camera: CameraId,
        /// Where it failed.
        stage: Stage,
        /// The redacted URL or path involved.
        target: String,
        /// FFmpeg's error.
        #[source]
        source: ffmpeg_next::Error,
        /// FFmpeg's last error-level log line on the camera's thread, credentials hidden.
        detail: Option<String>,
        /// The RTSP status the camera answered (401, 404, 461, 503 …), if it answered one.
        rtsp_status: Option<u16>,
        /// What the failure means and what to check, when camgate can tell (see `pipeline::diagnosis`).
        advice: Option<String>,
    },
    /// A blocking open, read or write took longer than its timeout.
    #[error("camera {camera}: {stage} ({target}) timed out after {after:?}")]
    Timeout {
        /// The camera.
        camera: CameraId,
        /// What was waited for.
        stage: Stage,
        /// The redacted URL or path involved.
        target: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The camera closed the stream.
    #[error("camera {camera}: the input ({target}) ended")]
    InputEnded {
        /// The camera.
        camera: CameraId,
        /// The redacted URL.
        target: String,
    },
    /// The input has no video stream.
    #[error("camera {camera}: the input ({target}) has no video stream")]
    NoVideo {
        /// The camera.
        camera: CameraId,
        /// The redacted URL.
        target: String,
    },
    /// The node's cluster lease may have expired: it stopped publishing so that no camera runs twice.
    #[error("camera {camera}: stopped: this node's cluster lease was not confirmed in time (fenced)")]
    Fenced {
        /// The camera.
        camera: CameraId,
    },
    /// The camera's host name does not resolve.
    #[error("camera {camera}: cannot resolve {host}: {reason}")]
    Resolve {
        /// The camera.
        camera: CameraId,
        /// The host name.
        host: String,
        /// The resolver's answer.
        reason: String,
    },
    /// The camera's host, or every address it resolves to, is refused by the host policy.
    #[error("camera {camera}: {reason}")]
    HostRefused {
        /// The camera.
        camera: CameraId,
        /// Which host or address, and the rule.
        reason: String,
    },
    /// The requested mode cannot handle the input (copy mode on a codec FLV cannot carry, …).
    #[error("camera {camera}: {reason}")]
    Unsupported {
        /// The camera.
        camera: CameraId,
        /// What is unsupported.
        reason: String,
    },
}

impl PipelineError {
    /// The RTSP status the camera answered, if the failure was one.
    pub fn rtsp_status(&self) -> Option<u16> {
        match self {
            PipelineError::Ffmpeg { rtsp_status, .. } => *rtsp_status,
            _ => None,
        }
    }
}

fn advice_prefix(advice: &Option<String>) -> String {
    advice.as_deref().map_or_else(String::new, |a| format!("{a}; FFmpeg: "))
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail.as_deref().map_or_else(String::new, |d| format!(" (FFmpeg: {d})"))
}

/// A request the [`Supervisor`](crate::Supervisor) refused or could not complete.
#[derive(Debug, Error)]
pub enum SupervisorError {
    /// The spec did not validate.
    #[error("invalid camera spec: {0}")]
    InvalidSpec(#[from] SpecError),
    /// As many workers as allowed are running already.
    #[error("camera limit reached: {running} of {limit} cameras are running")]
    LimitReached {
        /// Workers running now.
        running: usize,
        /// The configured cap.
        limit: usize,
    },
    /// No camera with this id.
    #[error("camera {0} is not known")]
    NotFound(CameraId),
    /// The camera is still stopping; try again when it has.
    #[error("camera {0} is still stopping")]
    Stopping(CameraId),
    /// The worker did not exit within the stop deadline; it is reported as stuck.
    #[error("camera {camera} did not stop within {after:?}")]
    StopTimeout {
        /// The camera.
        camera: CameraId,
        /// The deadline that passed.
        after: Duration,
    },
    /// The OS refused a thread.
    #[error("camera {camera}: cannot spawn its thread: {source}")]
    Spawn {
        /// The camera.
        camera: CameraId,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor has shut down, or is shutting down.
    #[error("the gateway is shutting down")]
    ShutDown,
}
