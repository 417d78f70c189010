//! What a camera worker is asked to do, and the checks that make a request safe to run.
//!
//! A [`StreamSpec`] names the camera ([`CameraId`]), where to pull from ([`SourceUrl`]), where to push to
//! ([`OutputTarget`]) and how to treat video ([`VideoSpec`]) and audio ([`AudioSpec`]). Every type here is
//! `serde`-friendly so the HTTP API and config files can carry it, and every check fails with a
//! [`SpecError`] that names the offending field.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::SpecError;
use crate::redact::redact_url;

/// A camera's identifier: 1–64 characters of `A–Z a–z 0–9 _ -`.
///
/// Ids become part of RTMP paths and thread names; the narrow alphabet keeps them from changing meaning there
/// (SRS, for one, cuts a stream name at `?`).
///
/// ```
/// use camgate::CameraId;
/// assert!("front-door_1".parse::<CameraId>().is_ok());
/// assert!("a?b".parse::<CameraId>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, ToSchema, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CameraId(String);

impl CameraId {
    /// Longest accepted id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CameraId {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(SpecError::new("id", format!("must be 1 to {} characters long", Self::MAX_LEN)));
        }
        if let Some(bad) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
            return Err(SpecError::new(
                "id",
                format!("character {bad:?} is not allowed (use A-Z, a-z, 0-9, '_' and '-')"),
            ));
        }
        Ok(CameraId(s.to_owned()))
    }
}

impl TryFrom<String> for CameraId {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        s.parse()
    }
}

impl From<CameraId> for String {
    fn from(id: CameraId) -> String {
        id.0
    }
}

impl fmt::Display for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A camera URL: `rtsp://` or `rtsps://`, with a host.
///
/// Only these schemes are accepted so that no request can make FFmpeg read local files or reach other
/// protocols (`file:`, `concat:`, `pipe:`, `subfile:`, lavfi …). `Display` and `Debug` hide credentials; the
/// full URL is only handed to FFmpeg.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceUrl(String);

impl SourceUrl {
    /// Network schemes a camera may be reached by (besides the built-in `demo://` camera).
    pub const SCHEMES: [&'static str; 2] = ["rtsp", "rtsps"];

    /// The built-in synthetic camera this URL names, if it is a `demo://` URL.
    pub fn demo(&self) -> Option<DemoPreset> {
        self.0.strip_prefix("demo://").and_then(DemoPreset::from_name)
    }

    /// The full URL, credentials included: only for opening the camera.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL scheme (`rtsp` or `rtsps`).
    pub fn scheme(&self) -> &str {
        self.0.split_once("://").map_or("", |(scheme, _)| scheme)
    }

    /// The URL with credentials hidden, for logs and status.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl FromStr for SourceUrl {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        if let Some(preset) = s.strip_prefix("demo://") {
            DemoPreset::from_name(preset).ok_or_else(|| {
                SpecError::new("input", "unknown demo camera (use demo://, demo://360p, demo://720p or demo://1080p)")
            })?;
            return Ok(SourceUrl(s.to_owned()));
        }
        let url = parse_url("input", s)?;
        if !Self::SCHEMES.contains(&url.scheme()) {
            return Err(SpecError::new(
                "input",
                format!("scheme {:?} is not allowed (use rtsp:// or rtsps://)", url.scheme()),
            ));
        }
        Ok(SourceUrl(s.to_owned()))
    }
}

impl TryFrom<String> for SourceUrl {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        s.parse()
    }
}

impl From<SourceUrl> for String {
    fn from(url: SourceUrl) -> String {
        url.0
    }
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceUrl({:?})", self.redacted())
    }
}

/// The built-in synthetic camera (`demo://`, `demo://720p` …): a moving test pattern with a clock and a tone,
/// generated by FFmpeg's libraries, so camgate can be tried with no camera at all.
///
/// Only these fixed presets exist: the API never passes filter graphs of its callers to FFmpeg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoPreset {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

impl DemoPreset {
    /// `""` (the default, 360p), `360p`, `720p` or `1080p`, all at 25 fps.
    pub fn from_name(name: &str) -> Option<DemoPreset> {
        let (width, height) = match name.trim_end_matches('/') {
            "" | "360p" => (640, 360),
            "720p" => (1280, 720),
            "1080p" => (1920, 1080),
            _ => return None,
        };
        Some(DemoPreset { width, height, fps: 25 })
    }
}

/// Where a camera's FLV goes: an RTMP server (production) or a local `.flv` file (recording, tests).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum OutputTarget {
    /// `rtmp://host[:port]/app/stream` or `rtmps://…`.
    Rtmp(String),
    /// A path ending in `.flv`.
    File(PathBuf),
}

impl OutputTarget {
    /// The URL or path handed to FFmpeg.
    pub fn expose(&self) -> String {
        match self {
            OutputTarget::Rtmp(url) => url.clone(),
            OutputTarget::File(path) => path.display().to_string(),
        }
    }

    /// The target with credentials hidden (RTMP URLs can carry them too).
    pub fn redacted(&self) -> String {
        redact_url(&self.expose())
    }
}

impl FromStr for OutputTarget {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        if s.contains("://") {
            let url = parse_url("output", s)?;
            return match url.scheme() {
                "rtmp" | "rtmps" => Ok(OutputTarget::Rtmp(s.to_owned())),
                other => Err(SpecError::new(
                    "output",
                    format!("scheme {other:?} is not allowed (use rtmp://, rtmps:// or a .flv path)"),
                )),
            };
        }
        // A bare `name:` prefix would be read by FFmpeg as a protocol (`pipe:`, `concat:` …).
        if s.is_empty() || s.split('/').next().is_some_and(|first| first.contains(':')) {
            return Err(SpecError::new("output", "must be an rtmp:// URL or a path ending in .flv"));
        }
        if !s.ends_with(".flv") {
            return Err(SpecError::new("output", "a file output must end in .flv"));
        }
        Ok(OutputTarget::File(PathBuf::from(s)))
    }
}

impl TryFrom<String> for OutputTarget {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        s.parse()
    }
}

impl From<OutputTarget> for String {
    fn from(target: OutputTarget) -> String {
        target.expose()
    }
}

impl fmt::Display for OutputTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for OutputTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutputTarget({:?})", self.redacted())
    }
}

fn parse_url(field: &'static str, s: &str) -> Result<url::Url, SpecError> {
    let url = url::Url::parse(s).map_err(|e| SpecError::new(field, format!("not a valid URL: {e}")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(SpecError::new(field, "URL has no host"));
    }
    Ok(url)
}

/// How the video stream is treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoMode {
    /// Copy H.264 untouched, transcode anything else (H.265, MJPEG, …).
    #[default]
    Auto,
    /// Pass H.264 packets through without decoding; fails on other codecs.
    Copy,
    /// Decode, optionally scale, and encode to H.264.
    Transcode,
}

/// How the audio stream is treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioMode {
    /// Copy AAC, transcode anything else to AAC; if audio fails, keep video going without it.
    #[default]
    Auto,
    /// Always decode and encode to AAC.
    Aac,
    /// Pass AAC through; fails on other codecs.
    Copy,
    /// Drop audio.
    None,
}

macro_rules! text_enum {
    ($($ty:ty => [$($variant:ident),+ $(,)?]),+ $(,)?) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let text = match self { $(<$ty>::$variant => stringify!($variant),)+ };
                f.write_str(&text.to_ascii_lowercase())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $(if s.eq_ignore_ascii_case(stringify!($variant)) { return Ok(<$ty>::$variant); })+
                Err(format!("unknown value {s:?} (expected one of: {})",
                    [$(stringify!($variant)),+].map(|v| v.to_ascii_lowercase()).join(", ")))
            }
        }
    )+};
}
text_enum!(VideoMode => [Auto, Copy, Transcode], AudioMode => [Auto, Aac, Copy, None]);

/// x264 presets, fastest first.
pub const X264_PRESETS: [&str; 10] =
    ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"];
/// x264 tunes.
pub const X264_TUNES: [&str; 8] =
    ["film", "animation", "grain", "stillimage", "psnr", "ssim", "fastdecode", "zerolatency"];
/// H.264 profiles a browser plays.
pub const H264_PROFILES: [&str; 3] = ["baseline", "main", "high"];
/// Hardware encoders that may be tried before libx264.
pub const HARDWARE_ENCODERS: [&str; 3] = ["h264_nvenc", "h264_vaapi", "h264_qsv"];

/// Rate control for the H.264 encoder.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateControl {
    /// Constant quality (x264 CRF, 0–51; 23 is x264's default).
    Crf(u8),
    /// Average bitrate in kbit/s, with a VBV buffer of one second so the stream stays watchable live.
    Bitrate(u32),
}

/// Settings for the H.264 encoder, used when video is transcoded.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VideoEncoding {
    /// x264 preset; `veryfast` keeps a 720p camera well under a core.
    pub preset: String,
    /// x264 tune; `zerolatency` (no lookahead, no B-frames) keeps the delay to a frame. `None` for no tune.
    pub tune: Option<String>,
    /// CRF or bitrate.
    pub rate: RateControl,
    /// Keyframe interval in seconds: a new viewer waits up to this long for a picture.
    pub gop_seconds: f32,
    /// H.264 profile (`baseline`, `main`, `high`); `None` lets x264 choose.
    pub profile: Option<String>,
    /// Output width; with only one of width/height set the other keeps the aspect ratio.
    pub width: Option<u32>,
    /// Output height.
    pub height: Option<u32>,
    /// Encoder threads; 0 lets the encoder choose (one per core and more). Many cameras on few cores do
    /// better with 1–2 each.
    pub threads: u32,
    /// A hardware encoder to try first (`h264_nvenc`, `h264_vaapi`, `h264_qsv`); falls back to libx264.
    pub encoder: Option<String>,
}

impl Default for VideoEncoding {
    fn default() -> Self {
        VideoEncoding {
            preset: "veryfast".into(),
            tune: Some("zerolatency".into()),
            rate: RateControl::Crf(23),
            gop_seconds: 2.0,
            profile: None,
            width: None,
            height: None,
            threads: 0,
            encoder: None,
        }
    }
}

/// Video handling: the mode and, for transcoding, the encoder settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, ToSchema, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VideoSpec {
    /// Copy, transcode, or decide by the input codec.
    pub mode: VideoMode,
    /// Encoder settings, used when transcoding.
    pub encoding: VideoEncoding,
}

/// Settings for the AAC encoder.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioEncoding {
    /// AAC bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Output sample rate. `None`: keep the input rate when AAC supports it and it is at least 16 kHz,
    /// else 16 kHz (G.711's 8 kHz is poorly supported by browser players).
    pub sample_rate: Option<u32>,
}

impl Default for AudioEncoding {
    fn default() -> Self {
        AudioEncoding { bitrate_kbps: 64, sample_rate: None }
    }
}

/// Audio handling: the mode and, for transcoding, the encoder settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, ToSchema, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioSpec {
    /// AAC, copy, none, or decide by the input codec.
    pub mode: AudioMode,
    /// Encoder settings, used when transcoding.
    pub encoding: AudioEncoding,
}

/// Sample rates FFmpeg's AAC encoder accepts.
pub const AAC_SAMPLE_RATES: [u32; 13] =
    [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/// How long blocking network operations may take before the worker gives up on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Connecting to the camera and probing its streams, in milliseconds.
    pub open_ms: u64,
    /// Longest silence from the camera before the read is abandoned (the watchdog), in milliseconds.
    pub read_ms: u64,
    /// Longest a single write to the output may block (RTMP server stalled), in milliseconds.
    pub write_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { open_ms: 10_000, read_ms: 10_000, write_ms: 10_000 }
    }
}

impl Timeouts {
    /// [`Timeouts::open_ms`] as a duration.
    pub fn open(&self) -> Duration {
        Duration::from_millis(self.open_ms)
    }
    /// [`Timeouts::read_ms`] as a duration.
    pub fn read(&self) -> Duration {
        Duration::from_millis(self.read_ms)
    }
    /// [`Timeouts::write_ms`] as a duration.
    pub fn write(&self) -> Duration {
        Duration::from_millis(self.write_ms)
    }
}

/// What a worker does when a session fails (camera unreachable, stream ended, RTMP server gone …).
///
/// Waits grow exponentially from `initial_backoff_ms` to `max_backoff_ms` with ±20 % jitter, and start over
/// after a session that stayed up for `healthy_after_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries before the worker gives up and reports `failed`; `None` retries for ever.
    pub max_retries: Option<u32>,
    /// First wait, in milliseconds.
    pub initial_backoff_ms: u64,
    /// Longest wait, in milliseconds.
    pub max_backoff_ms: u64,
    /// A session that ran this long resets the backoff, in milliseconds.
    pub healthy_after_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: None, initial_backoff_ms: 500, max_backoff_ms: 30_000, healthy_after_ms: 60_000 }
    }
}

impl RetryPolicy {
    /// A policy that never retries: the first failure is final.
    pub fn never() -> RetryPolicy {
        RetryPolicy { max_retries: Some(0), ..RetryPolicy::default() }
    }

    /// [`RetryPolicy::healthy_after_ms`] as a duration.
    pub fn healthy_after(&self) -> Duration {
        Duration::from_millis(self.healthy_after_ms)
    }
}

/// Everything a worker needs to move one camera to one output.
///
/// ```
/// use camgate::StreamSpec;
/// let spec = StreamSpec::new("door", "rtsp://cam.local/stream1", "rtmp://127.0.0.1/live/door").unwrap();
/// assert_eq!(spec.id.as_str(), "door");
/// spec.validate().unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// The camera's id.
    pub id: CameraId,
    /// Where the camera is.
    pub input: SourceUrl,
    /// Where its FLV goes: an RTMP server or a file. `None` when the camera only feeds the preview.
    #[serde(default)]
    pub output: Option<OutputTarget>,
    /// Also (or only) serve the FLV through camgate's built-in preview hub.
    #[serde(default)]
    pub preview: bool,
    /// Video handling.
    #[serde(default)]
    pub video: VideoSpec,
    /// Audio handling.
    #[serde(default)]
    pub audio: AudioSpec,
    /// Network timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// What to do when a session fails.
    #[serde(default)]
    pub retry: RetryPolicy,
}

impl StreamSpec {
    /// A spec with default video/audio handling, parsing and checking the three strings.
    pub fn new(id: &str, input: &str, output: &str) -> Result<StreamSpec, SpecError> {
        Ok(StreamSpec {
            id: id.parse()?,
            input: input.parse()?,
            output: Some(output.parse()?),
            preview: false,
            video: VideoSpec::default(),
            audio: AudioSpec::default(),
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
        })
    }

    /// Where the FLV goes, for people: the redacted output, `preview`, or both.
    pub fn outputs_redacted(&self) -> String {
        match (&self.output, self.preview) {
            (Some(output), true) => format!("{} + preview", output.redacted()),
            (Some(output), false) => output.redacted(),
            (None, _) => "preview".to_owned(),
        }
    }

    /// A spec for a camera that only feeds the built-in preview (no RTMP server needed).
    pub fn preview_only(id: &str, input: &str) -> Result<StreamSpec, SpecError> {
        Ok(StreamSpec {
            id: id.parse()?,
            input: input.parse()?,
            output: None,
            preview: true,
            video: VideoSpec::default(),
            audio: AudioSpec::default(),
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
        })
    }

    /// Checks the settings that types alone cannot (ranges, names of presets …).
    ///
    /// Ids and URLs are checked when they are parsed; this checks the rest and is what the supervisor calls
    /// before starting a worker.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.output.is_none() && !self.preview {
            return Err(SpecError::new("output", "a camera needs an output, the preview, or both"));
        }
        let v = &self.video.encoding;
        if !X264_PRESETS.contains(&v.preset.as_str()) {
            return Err(SpecError::new("video.encoding.preset", one_of(&v.preset, &X264_PRESETS)));
        }
        if let Some(tune) = &v.tune
            && !X264_TUNES.contains(&tune.as_str())
        {
            return Err(SpecError::new("video.encoding.tune", one_of(tune, &X264_TUNES)));
        }
        if let Some(profile) = &v.profile
            && !H264_PROFILES.contains(&profile.as_str())
        {
            return Err(SpecError::new("video.encoding.profile", one_of(profile, &H264_PROFILES)));
        }
        if let Some(encoder) = &v.encoder
            && encoder != "libx264"
            && !HARDWARE_ENCODERS.contains(&encoder.as_str())
        {
            return Err(SpecError::new("video.encoding.encoder", one_of(encoder, &HARDWARE_ENCODERS)));
        }
        match v.rate {
            RateControl::Crf(crf) if crf > 51 => {
                return Err(SpecError::new("video.encoding.rate.crf", "must be 0 to 51"));
            }
            RateControl::Bitrate(kbps) if !(50..=50_000).contains(&kbps) => {
                return Err(SpecError::new("video.encoding.rate.bitrate", "must be 50 to 50000 kbit/s"));
            }
            _ => {}
        }
        if !(0.1..=20.0).contains(&v.gop_seconds) {
            return Err(SpecError::new("video.encoding.gop_seconds", "must be 0.1 to 20 seconds"));
        }
        for (field, value) in [("video.encoding.width", v.width), ("video.encoding.height", v.height)] {
            if let Some(value) = value
                && (!(16..=7680).contains(&value) || value % 2 != 0)
            {
                return Err(SpecError::new(field, "must be an even number from 16 to 7680"));
            }
        }
        if v.threads > 64 {
            return Err(SpecError::new("video.encoding.threads", "must be 0 (auto) to 64"));
        }
        let a = &self.audio.encoding;
        if !(16..=320).contains(&a.bitrate_kbps) {
            return Err(SpecError::new("audio.encoding.bitrate_kbps", "must be 16 to 320"));
        }
        if let Some(rate) = a.sample_rate
            && !AAC_SAMPLE_RATES.contains(&rate)
        {
            return Err(SpecError::new(
                "audio.encoding.sample_rate",
                format!("{rate} Hz is not an AAC sample rate ({AAC_SAMPLE_RATES:?})"),
            ));
        }
        let t = &self.timeouts;
        for (field, value) in
            [("timeouts.open_ms", t.open_ms), ("timeouts.read_ms", t.read_ms), ("timeouts.write_ms", t.write_ms)]
        {
            if !(100..=300_000).contains(&value) {
                return Err(SpecError::new(field, "must be 100 to 300000 ms"));
            }
        }
        let r = &self.retry;
        if !(10..=600_000).contains(&r.initial_backoff_ms) {
            return Err(SpecError::new("retry.initial_backoff_ms", "must be 10 to 600000 ms"));
        }
        if !(r.initial_backoff_ms..=3_600_000).contains(&r.max_backoff_ms) {
            return Err(SpecError::new("retry.max_backoff_ms", "must be initial_backoff_ms to 3600000 ms"));
        }
        Ok(())
    }
}

fn one_of(value: &str, allowed: &[&str]) -> String {
    format!("unknown value {value:?} (expected one of: {})", allowed.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of<T: fmt::Debug>(r: Result<T, SpecError>) -> String {
        r.expect_err("should be rejected").field().to_owned()
    }

    #[test]
    fn camera_ids() {
        for ok in ["a", "A-1_b", &"x".repeat(64)] {
            assert!(ok.parse::<CameraId>().is_ok(), "{ok}");
        }
        for bad in ["", "a?b", "a/b", "a b", "é", "a.b", &"x".repeat(65), "../x"] {
            assert_eq!(field_of(bad.parse::<CameraId>()), "id", "{bad}");
        }
    }

    #[test]
    fn source_urls_only_rtsp() {
        assert!("rtsp://10.0.0.5:554/s".parse::<SourceUrl>().is_ok());
        assert!("rtsps://u:p@cam/s".parse::<SourceUrl>().is_ok());
        for bad in [
            "file:///etc/passwd",
            "/etc/passwd",
            "concat:a|b",
            "pipe:0",
            "subfile:,,start,0,end,0,,:/etc/passwd",
            "http://x/y",
            "rtmp://x/y",
            "rtsp://",
            "lavfi:testsrc",
            "",
        ] {
            assert_eq!(field_of(bad.parse::<SourceUrl>()), "input", "{bad}");
        }
    }

    #[test]
    fn demo_cameras_are_fixed_presets() {
        let url: SourceUrl = "demo://720p".parse().unwrap();
        assert_eq!(url.demo(), Some(DemoPreset { width: 1280, height: 720, fps: 25 }));
        assert_eq!("demo://".parse::<SourceUrl>().unwrap().demo().unwrap().width, 640);
        assert!("rtsp://h/s".parse::<SourceUrl>().unwrap().demo().is_none());
        for bad in ["demo://testsrc", "demo://720p,drawtext=x", "demo:720p"] {
            assert_eq!(field_of(bad.parse::<SourceUrl>()), "input", "{bad}");
        }
    }

    #[test]
    fn source_url_display_hides_password() {
        let url: SourceUrl = "rtsp://admin:hunter2@cam/s".parse().unwrap();
        assert!(!format!("{url} {url:?}").contains("hunter2"));
        assert_eq!(url.expose(), "rtsp://admin:hunter2@cam/s");
    }

    #[test]
    fn output_targets() {
        assert!(matches!("rtmp://127.0.0.1:1935/live/a".parse(), Ok(OutputTarget::Rtmp(_))));
        assert!(matches!("out/cam.flv".parse(), Ok(OutputTarget::File(_))));
        for bad in ["pipe:1", "file:x.flv", "out.mp4", "http://x/y.flv", "", "tcp://x:1"] {
            assert_eq!(field_of(bad.parse::<OutputTarget>()), "output", "{bad}");
        }
    }

    #[test]
    fn encoder_settings_are_range_checked() {
        let base = StreamSpec::new("a", "rtsp://h/s", "x.flv").unwrap();
        base.validate().unwrap();
        type Mutation = Box<dyn Fn(&mut StreamSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("video.encoding.preset", Box::new(|s| s.video.encoding.preset = "warp".into())),
            ("video.encoding.tune", Box::new(|s| s.video.encoding.tune = Some("x".into()))),
            ("video.encoding.profile", Box::new(|s| s.video.encoding.profile = Some("high10".into()))),
            ("video.encoding.encoder", Box::new(|s| s.video.encoding.encoder = Some("libx265".into()))),
            ("video.encoding.rate.crf", Box::new(|s| s.video.encoding.rate = RateControl::Crf(52))),
            ("video.encoding.rate.bitrate", Box::new(|s| s.video.encoding.rate = RateControl::Bitrate(1))),
            ("video.encoding.gop_seconds", Box::new(|s| s.video.encoding.gop_seconds = 0.0)),
            ("video.encoding.width", Box::new(|s| s.video.encoding.width = Some(641))),
            ("video.encoding.height", Box::new(|s| s.video.encoding.height = Some(10_000))),
            ("video.encoding.threads", Box::new(|s| s.video.encoding.threads = 65)),
            ("audio.encoding.bitrate_kbps", Box::new(|s| s.audio.encoding.bitrate_kbps = 1000)),
            ("audio.encoding.sample_rate", Box::new(|s| s.audio.encoding.sample_rate = Some(44000))),
            ("timeouts.read_ms", Box::new(|s| s.timeouts.read_ms = 0)),
            ("retry.initial_backoff_ms", Box::new(|s| s.retry.initial_backoff_ms = 1)),
            ("retry.max_backoff_ms", Box::new(|s| s.retry.max_backoff_ms = 10)),
            ("output", Box::new(|s| s.output = None)),
        ];
        for (field, mutate) in cases {
            let mut spec = base.clone();
            mutate(&mut spec);
            assert_eq!(field_of(spec.validate()), field);
        }
    }

    #[test]
    fn spec_from_json_with_defaults() {
        let spec: StreamSpec =
            serde_json_like(r#"{"id":"c1","input":"rtsp://h/s","output":"rtmp://h/live/c1","video":{"mode":"copy"}}"#);
        assert_eq!(spec.video.mode, VideoMode::Copy);
        assert_eq!(spec.audio.mode, AudioMode::Auto);
        assert_eq!(spec.video.encoding.preset, "veryfast");
    }

    #[test]
    fn modes_parse_and_print() {
        assert_eq!("Transcode".parse::<VideoMode>().unwrap(), VideoMode::Transcode);
        assert_eq!(AudioMode::None.to_string(), "none");
        assert!("fast".parse::<VideoMode>().unwrap_err().contains("auto, copy, transcode"));
    }

    fn serde_json_like(text: &str) -> StreamSpec {
        serde_json::from_str(text).expect("valid spec json")
    }
}
