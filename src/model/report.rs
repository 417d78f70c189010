//! What a camera's data path reports while it runs: lock-free counters bumped per packet ([`Counters`]), a copy
//! of them ([`Totals`]), and what a session found and decided ([`SessionInfo`]). Plain data, shared by the
//! pipeline (which writes it) and the runtime (which samples and publishes it).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::spec::{AudioMode, Transport, VideoMode};

/// Counters a worker bumps as packets flow. Totals since the worker started (across reconnects).
#[derive(Debug, Default)]
pub struct Counters {
    /// Video packets read from the camera.
    pub video_packets_in: AtomicU64,
    /// Audio packets read from the camera.
    pub audio_packets_in: AtomicU64,
    /// Video frames decoded (stays 0 in copy mode).
    pub video_frames_decoded: AtomicU64,
    /// Audio frames decoded (stays 0 when audio is copied or off).
    pub audio_frames_decoded: AtomicU64,
    /// Video packets written to the output.
    pub video_frames_out: AtomicU64,
    /// Audio packets written to the output.
    pub audio_frames_out: AtomicU64,
    /// Video packets or frames dropped (waiting for a keyframe, decode errors, broken timestamps).
    pub video_dropped: AtomicU64,
    /// Audio packets or frames dropped.
    pub audio_dropped: AtomicU64,
    /// Payload bytes written to the output.
    pub bytes_out: AtomicU64,
    /// Jumps in the camera's timestamps re-based to keep the output's streams continuous (a camera's clock
    /// reset or moved, a wrap, a server re-seeking a shared stream), audio and video together: by the main
    /// output, or for a transcoded stream already before its encoder.
    pub timestamp_discontinuities: AtomicU64,
    /// Times one of the main output's streams took the other's shift to stay in step with it after the
    /// camera's clock moved (`pipeline::timestamps::realign`).
    pub timestamp_realignments: AtomicU64,
    /// Video packet latency through camgate (read from the camera → written to the first output's muxer).
    pub latency: super::latency::LatencyHistogram,
}

impl Counters {
    /// Adds `n` to a counter. Relaxed: counters are statistics, not synchronization.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A consistent-enough copy of all counters.
    pub fn totals(&self) -> Totals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            video_packets_in: get(&self.video_packets_in),
            audio_packets_in: get(&self.audio_packets_in),
            video_frames_decoded: get(&self.video_frames_decoded),
            audio_frames_decoded: get(&self.audio_frames_decoded),
            video_frames_out: get(&self.video_frames_out),
            audio_frames_out: get(&self.audio_frames_out),
            video_dropped: get(&self.video_dropped),
            audio_dropped: get(&self.audio_dropped),
            bytes_out: get(&self.bytes_out),
            timestamp_discontinuities: get(&self.timestamp_discontinuities),
            timestamp_realignments: get(&self.timestamp_realignments),
            latency: self.latency.snapshot(),
        }
    }
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Totals {
    /// Video packets read from the camera.
    pub video_packets_in: u64,
    /// Audio packets read from the camera.
    pub audio_packets_in: u64,
    /// Video frames decoded (0 in copy mode).
    pub video_frames_decoded: u64,
    /// Audio frames decoded.
    pub audio_frames_decoded: u64,
    /// Video packets written.
    pub video_frames_out: u64,
    /// Audio packets written.
    pub audio_frames_out: u64,
    /// Video packets or frames dropped.
    pub video_dropped: u64,
    /// Audio packets or frames dropped.
    pub audio_dropped: u64,
    /// Bytes written to the output.
    pub bytes_out: u64,
    /// Jumps in the camera's timestamps that camgate re-based, audio and video together.
    #[serde(default)]
    pub timestamp_discontinuities: u64,
    /// Times the output's audio and video were put back in step after the camera's clock moved.
    #[serde(default)]
    pub timestamp_realignments: u64,
    /// Video packet latency counts (exported by `/metrics`; the status shows p50/p99 in `rates`).
    #[serde(skip)]
    #[schema(ignore)]
    pub latency: super::latency::LatencyCounts,
}

/// A picture's codec and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VideoFormat {
    /// FFmpeg codec name (`h264`, `hevc`, …).
    pub codec: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A sound's codec and shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AudioFormat {
    /// FFmpeg codec name (`aac`, `pcm_alaw`, …).
    pub codec: String,
    /// Samples per second.
    pub sample_rate: u32,
    /// Channel count.
    pub channels: u16,
}

/// What one connection to the camera found and decided; set once per session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// The camera's video.
    pub video_in: VideoFormat,
    /// What is sent.
    pub video_out: VideoFormat,
    /// The video mode in effect (`auto` resolved to `copy` or `transcode`).
    pub video_mode: VideoMode,
    /// The video encoder used when transcoding (`libx264`, or a hardware one).
    pub video_encoder: Option<String>,
    /// The camera's frame rate as announced, if it announced one.
    pub source_fps: Option<f64>,
    /// The camera's audio, if any.
    pub audio_in: Option<AudioFormat>,
    /// What is sent, if any.
    pub audio_out: Option<AudioFormat>,
    /// The audio mode in effect (`auto` resolved; `none` when there is no audio or it failed).
    pub audio_mode: AudioMode,
    /// How RTP reaches camgate (`tcp`, `udp`, `udp_multicast`, `http`; `None` for the demo camera).
    #[serde(default)]
    pub transport: Option<Transport>,
    /// Why that transport, when `auto` had to fall back (`refused interleaved TCP: … (RTSP 461 …); using UDP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_note: Option<String>,
    /// Threads of the video decoder and encoder when transcoding (0: FFmpeg's choice); with `threads = 0` in
    /// the settings camgate chose them from the cores and the transcoding cameras running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_threads: Option<VideoThreads>,
    /// The streams (`video`, `audio`) whose format stream analysis took from the camera's description (its
    /// SDP) without decoding any of them: copied H.264 whose parameter sets rule out reordering, copied
    /// AAC-LC. Such a start costs a fraction of the memory and CPU of one that decodes (BENCHMARKS.md, "First
    /// frames: what the start costs").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub described_by_sdp: Vec<String>,
}

/// Threads of one transcoding camera's video decoder and encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VideoThreads {
    pub decoder: u32,
    pub encoder: u32,
}
