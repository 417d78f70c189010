//! What a camera worker is asked to do — the [`StreamSpec`] — and the checks that make a request safe to run.
//!
//! A [`StreamSpec`] names the camera ([`CameraId`]), where to pull from ([`SourceUrl`]), where to push to
//! ([`OutputTarget`]) and how to treat video ([`VideoSpec`]) and audio ([`AudioSpec`]). Every type here is
//! `serde`-friendly so the HTTP API and config files can carry it, and every check fails with a
//! [`SpecError`] that names the offending field.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::SpecError;
use super::id::CameraId;
use super::output::OutputTarget;
use super::source::SourceUrl;

/// Most RTMP servers one camera pushes to besides its `output`.
pub const MAX_EXTRA_OUTPUTS: usize = 4;

/// How RTP reaches camgate from an RTSP camera.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, ToSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Interleaved over the RTSP TCP connection; when the camera refuses that (RTSP 461 Unsupported
    /// Transport, as some cameras and NVR channels do), UDP; when UDP cannot be set up either, RTSP tunnelled
    /// over HTTP.
    #[default]
    Auto,
    /// Interleaved over the RTSP TCP connection only: one socket, through NAT and firewalls, no loss.
    Tcp,
    /// RTP over UDP (unicast): what cameras that refuse TCP need; loses packets on a lossy network.
    Udp,
    /// RTP over UDP multicast, for cameras that stream to a multicast group.
    UdpMulticast,
    /// RTSP and RTP tunnelled over HTTP, through proxies that pass only HTTP.
    Http,
}

impl Transport {
    /// The value of FFmpeg's `rtsp_transport` option for this (forced) transport; `Auto` starts with TCP.
    pub fn ffmpeg_name(self) -> &'static str {
        match self {
            Transport::Auto | Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::UdpMulticast => "udp_multicast",
            Transport::Http => "http",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Auto => "auto",
            other => other.ffmpeg_name(),
        })
    }
}

/// Which RTSP client reads a camera that is reached over interleaved TCP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspReader {
    /// libavformat's RTSP demuxer, for every transport.
    #[default]
    Ffmpeg,
    /// camgate's own reader over interleaved TCP (`pipeline::rtsp`): the same depacketizing, about a tenth of
    /// the system calls per packet. Cameras it cannot read (RTSPS, redirects, UDP or HTTP transports) are read
    /// by libavformat's as before.
    Buffered,
}

/// Which RTMP client publishes to an `rtmp://` output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtmpWriter {
    /// libavformat's RTMP client, for every output.
    #[default]
    Ffmpeg,
    /// camgate's own writer over plain RTMP (`pipeline::rtmp`): the same messages, one `send` per packet
    /// instead of about four system calls, and one per read batch for copied video read by camgate's own
    /// reader. Outputs it cannot write (RTMPS, credentials in the URL, `mp4:` stream names) are written by
    /// libavformat's as before.
    Buffered,
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
    /// Encoder threads. 0 (the default): camgate chooses the decoder's and the encoder's threads per camera
    /// from the cores and the transcoding cameras running — one each once they reach the core count, where
    /// more threads only add wake-ups, latency and memory (see `pipeline::threading`). N: the encoder gets N
    /// and the decoder FFmpeg's default.
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
    /// Output sample rate. `None`: keep the input rate when AAC supports it and it is at least 32 kHz, else
    /// 48 kHz (G.711's 8 kHz is poorly supported by browser players, and at low rates AAC's frames are long
    /// enough to delay the video, which waits for audio as late as itself).
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

    /// The wait before attempt `attempt` (1-based): exponential from `initial`, capped at `max`, with up to
    /// ±20 % jitter drawn from `seed`.
    pub fn backoff(&self, attempt: u32, seed: u64) -> Duration {
        let base = self.initial_backoff_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(30));
        let base = base.min(self.max_backoff_ms) as f64;
        let jitter = (seed % 401) as f64 / 1000.0 - 0.2;
        Duration::from_millis((base * (1.0 + jitter)).max(1.0) as u64)
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
    /// More RTMP servers to push the same FLV to (a second SRS origin, say), over the same single session with
    /// the camera: cameras allow few RTSP sessions, so camgate never opens a second one for a second output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_outputs: Vec<OutputTarget>,
    /// Also (or only) serve the FLV through camgate's built-in preview hub.
    #[serde(default)]
    pub preview: bool,
    /// Video handling.
    #[serde(default)]
    pub video: VideoSpec,
    /// Audio handling.
    #[serde(default)]
    pub audio: AudioSpec,
    /// How RTP reaches camgate from an RTSP camera.
    #[serde(default)]
    pub transport: Transport,
    /// While the camera is away, keep its outputs published with a generated "camera offline" picture and
    /// silence, and switch back to the camera when it returns (see `pipeline::slate`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline_slate: bool,
    /// Network timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// What to do when a session fails.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Copied video only: after a read that had to wait for the camera, wait up to this long (milliseconds)
    /// before reading again, so that one wake-up of the camera's thread handles everything that arrived
    /// meanwhile. This is SRS's "merged read": packets wait at most this long in the socket, and the thread
    /// wakes about 20 instead of ~100 times a second. A batch also holds at most 24 KiB of the camera's data,
    /// so a camera above 2 Mbit/s batches for less. 0 reads each packet as soon as it arrives. See
    /// [`DEFAULT_READ_BATCH_MS`] and [`MAX_READ_BATCH_MS`].
    #[serde(default = "default_read_batch_ms")]
    pub read_batch_ms: u64,
    /// Which RTSP client reads the camera over interleaved TCP (see [`RtspReader`]).
    #[serde(default, skip_serializing_if = "RtspReader::is_ffmpeg")]
    pub rtsp_reader: RtspReader,
    /// Which RTMP client publishes to the `rtmp://` outputs (see [`RtmpWriter`]).
    #[serde(default, skip_serializing_if = "RtmpWriter::is_ffmpeg")]
    pub rtmp_writer: RtmpWriter,
}

impl RtmpWriter {
    /// Whether this is the default, libavformat's client.
    pub fn is_ffmpeg(&self) -> bool {
        *self == RtmpWriter::Ffmpeg
    }
}

impl RtspReader {
    /// Whether this is the default, libavformat's reader.
    pub fn is_ffmpeg(&self) -> bool {
        *self == RtspReader::Ffmpeg
    }
}

/// The default [`StreamSpec::read_batch_ms`]. At 100 ms a copying camera costs about a third less CPU than
/// reading each packet as it arrives (BENCHMARKS.md, "Batched reads"). That is a tenth of a second more
/// latency on a path whose players buffer one second or more (HTTP-FLV, HLS). Set 0 for WebRTC playback
/// where every frame of latency counts.
pub const DEFAULT_READ_BATCH_MS: u64 = 100;
/// The largest [`StreamSpec::read_batch_ms`] accepted. Longer batches gained no CPU (the thread's other
/// wake-ups remain), only latency, and what a batch leaves unread fills the camera's send buffer, which a
/// camera may keep small (BENCHMARKS.md, "Batched reads").
pub const MAX_READ_BATCH_MS: u64 = 100;

fn default_read_batch_ms() -> u64 {
    DEFAULT_READ_BATCH_MS
}

impl StreamSpec {
    /// A spec with default video/audio handling, parsing and checking the three strings.
    pub fn new(id: &str, input: &str, output: &str) -> Result<StreamSpec, SpecError> {
        Ok(StreamSpec {
            id: id.parse()?,
            input: input.parse()?,
            output: Some(output.parse()?),
            extra_outputs: Vec::new(),
            preview: false,
            video: VideoSpec::default(),
            audio: AudioSpec::default(),
            transport: Transport::default(),
            offline_slate: false,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            read_batch_ms: DEFAULT_READ_BATCH_MS,
            rtsp_reader: RtspReader::default(),
            rtmp_writer: RtmpWriter::default(),
        })
    }

    /// Where the FLV goes, for people: the redacted output, `preview`, or both.
    pub fn outputs_redacted(&self) -> String {
        let mut outputs: Vec<String> =
            self.output.iter().chain(&self.extra_outputs).map(|o| o.redacted_for(&self.id)).collect();
        if self.preview || outputs.is_empty() {
            outputs.push("preview".to_owned());
        }
        outputs.join(" + ")
    }

    /// The strings of this spec that must never be shown: the camera's user name and password (as written and
    /// decoded), the output's credentials, secret query values, and its stream name when that may be a stream
    /// key (see [`OutputTarget::redacted_for`]).
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        let mut add_url = |raw: &str| {
            let Ok(url) = ::url::Url::parse(raw) else { return };
            for part in [url.username(), url.password().unwrap_or("")] {
                secrets.push(part.to_owned());
                secrets.push(percent_decode(part));
            }
            for (key, value) in url.query_pairs() {
                if super::redact::is_secret_param(&key) {
                    secrets.push(value.into_owned());
                }
            }
        };
        add_url(self.input.expose());
        for output in self.output.iter().chain(&self.extra_outputs) {
            add_url(&output.expose());
        }
        for output in self.output.iter().chain(&self.extra_outputs) {
            if let Some(stream) = output.stream()
                && let Some(name) = stream.rsplit('/').next()
                && !output.redacted_for(&self.id).contains(&format!("/{name}"))
            {
                secrets.push(name.to_owned());
            }
        }
        secrets.retain(|s| !s.is_empty());
        secrets.sort();
        secrets.dedup();
        secrets
    }

    /// A spec for a camera that only feeds the built-in preview (no RTMP server needed).
    pub fn preview_only(id: &str, input: &str) -> Result<StreamSpec, SpecError> {
        Ok(StreamSpec {
            id: id.parse()?,
            input: input.parse()?,
            output: None,
            extra_outputs: Vec::new(),
            preview: true,
            video: VideoSpec::default(),
            audio: AudioSpec::default(),
            transport: Transport::default(),
            offline_slate: false,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            read_batch_ms: DEFAULT_READ_BATCH_MS,
            rtsp_reader: RtspReader::default(),
            rtmp_writer: RtmpWriter::default(),
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
        if !self.extra_outputs.is_empty() && self.output.is_none() {
            return Err(SpecError::new("extra_outputs", "extra outputs need an output"));
        }
        if self.extra_outputs.len() > MAX_EXTRA_OUTPUTS {
            return Err(SpecError::new("extra_outputs", format!("at most {MAX_EXTRA_OUTPUTS}")));
        }
        if self.extra_outputs.iter().any(|o| !matches!(o, OutputTarget::Rtmp(_))) {
            return Err(SpecError::new("extra_outputs", "each must be an rtmp:// or rtmps:// URL"));
        }
        if self.input.scheme() == "rtsps" && !matches!(self.transport, Transport::Auto | Transport::Tcp) {
            return Err(SpecError::new("transport", "rtsps:// cameras are reached over TLS on TCP: use auto or tcp"));
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
        if self.read_batch_ms > MAX_READ_BATCH_MS {
            return Err(SpecError::new("read_batch_ms", format!("must be 0 to {MAX_READ_BATCH_MS} ms")));
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

/// `%XX` escapes decoded (as FFmpeg decodes credentials before sending them); invalid ones kept as they are.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
            ("read_batch_ms", Box::new(|s| s.read_batch_ms = MAX_READ_BATCH_MS + 1)),
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
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            max_retries: None,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            healthy_after_ms: 60_000,
        };
        let no_jitter = 200; // seed % 401 == 200 → factor 1.0
        let waits: Vec<u64> = (1..=9).map(|a| policy.backoff(a, no_jitter).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(policy.backoff(1000, no_jitter).as_millis(), 30_000, "huge attempt counts do not overflow");
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let policy =
            RetryPolicy { max_retries: None, initial_backoff_ms: 1000, max_backoff_ms: 1000, healthy_after_ms: 0 };
        for seed in 0..2000 {
            let ms = policy.backoff(1, seed).as_millis();
            assert!((800..=1200).contains(&ms), "{ms}");
        }
    }

    #[test]
    fn secrets_of_a_spec() {
        let spec =
            StreamSpec::new("door", "rtsp://adm%40in:p%2Bw@cam/s?pwd=k3y", "rtmp://srs/live2/abcd-efgh?token=t0k")
                .unwrap();
        assert_eq!(spec.secrets(), ["abcd-efgh", "adm%40in", "adm@in", "k3y", "p%2Bw", "p+w", "t0k"]);
        let public = StreamSpec::new("door", "rtsp://cam/s", "rtmp://srs/live/livestreamdoor").unwrap();
        assert!(public.secrets().is_empty(), "{:?}", public.secrets());
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
