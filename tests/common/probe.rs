//! Reads a stream (RTMP, RTSP or a local file) with libavformat under a hard
//! wall-clock deadline and reports what a viewer would get.

use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;

use ffmpeg::media::Type;

/// What to read and for how long. Build with `ProbeOptions::default()` and the
/// `with_*` methods.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Stop after this much media time of the main stream (video, else audio),
    /// counted from its first packet. `None`: read until EOF or the deadline.
    pub media_seconds: Option<f64>,
    /// Hard wall-clock limit for the whole probe: connect, stream analysis and
    /// reading. Enforced by the interrupt callback, so no I/O can outlast it.
    pub deadline: Duration,
    /// Extra AVOptions for `avformat_open_input` (e.g. `analyzeduration`).
    pub options: Vec<(String, String)>,
    /// Incremented for every packet read, so another thread can tell that this
    /// probe is receiving media (e.g. before it starts a second client).
    pub progress: Option<Arc<AtomicUsize>>,
}

impl Default for ProbeOptions {
    /// 4 s of media within 15 s of wall time.
    fn default() -> Self {
        ProbeOptions {
            media_seconds: Some(4.0),
            deadline: Duration::from_secs(15),
            options: Vec::new(),
            progress: None,
        }
    }
}

impl ProbeOptions {
    pub fn with_media_seconds(mut self, seconds: f64) -> Self {
        self.media_seconds = Some(seconds);
        self
    }

    /// Read until EOF (files) or the deadline.
    pub fn until_eof(mut self) -> Self {
        self.media_seconds = None;
        self
    }

    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn with_option(mut self, key: &str, value: &str) -> Self {
        self.options.push((key.to_string(), value.to_string()));
        self
    }

    pub fn with_progress(mut self, counter: Arc<AtomicUsize>) -> Self {
        self.progress = Some(counter);
        self
    }
}

/// Why reading stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// `media_seconds` of the main stream were read.
    MediaTime,
    /// End of file, or the server closed the stream.
    Eof,
    /// The wall-clock deadline came first.
    Deadline,
    /// `av_read_frame` failed with something else.
    ReadError(String),
}

/// The first place where a stream's dts did not strictly increase.
#[derive(Debug, Clone, PartialEq)]
pub struct DtsViolation {
    /// 0-based index of the offending packet within its stream.
    pub packet: usize,
    pub previous_dts: f64,
    pub dts: f64,
}

/// Packet statistics of one stream. Times are in seconds.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    pub packets: usize,
    pub keyframes: usize,
    pub first_is_key: bool,
    pub first_dts: Option<f64>,
    pub last_dts: Option<f64>,
    /// Smallest and largest pts seen (pts order differs from dts order with B-frames).
    pub min_pts: Option<f64>,
    pub max_pts: Option<f64>,
    /// Packets without a pts. Over RTSP, FFmpeg 5.1 hands out the very first
    /// video keyframe with neither pts nor dts.
    pub packets_without_pts: usize,
    /// Packets without a dts (not counted in the monotonicity check).
    pub packets_without_dts: usize,
    /// `None` means the dts strictly increased over the whole read.
    pub first_dts_violation: Option<DtsViolation>,
    /// The largest step between two consecutive dts, in seconds (a hole in the stream).
    pub max_dts_step: Option<f64>,
    /// Packets whose pts is below the one before: B-frames, decoded after a frame they are shown before.
    pub pts_backsteps: usize,
    /// Packets to be shown before they are decoded (pts < dts): impossible, a muxer's or a demuxer's error.
    pub shown_before_decoded: usize,
    last_pts: Option<f64>,
}

impl StreamStats {
    /// True when every packet's dts was greater than the one before.
    pub fn dts_monotonic(&self) -> bool {
        self.first_dts_violation.is_none()
    }

    /// Media time covered by the packets read, from their dts.
    pub fn dts_span(&self) -> Option<f64> {
        Some(self.last_dts? - self.first_dts?)
    }

    fn record(&mut self, pts: Option<f64>, dts: Option<f64>, key: bool) {
        if self.packets == 0 {
            self.first_is_key = key;
        }
        if key {
            self.keyframes += 1;
        }
        match pts {
            Some(pts) => {
                self.min_pts = Some(self.min_pts.map_or(pts, |m| m.min(pts)));
                self.max_pts = Some(self.max_pts.map_or(pts, |m| m.max(pts)));
            }
            None => self.packets_without_pts += 1,
        }
        if let (Some(pts), Some(dts)) = (pts, dts)
            && pts < dts
        {
            self.shown_before_decoded += 1;
        }
        if let (Some(pts), Some(last)) = (pts, self.last_pts)
            && pts < last
        {
            self.pts_backsteps += 1;
        }
        if pts.is_some() {
            self.last_pts = pts;
        }
        match dts {
            Some(dts) => {
                if let Some(prev) = self.last_dts {
                    self.max_dts_step = Some(self.max_dts_step.map_or(dts - prev, |m| m.max(dts - prev)));
                }
                if let Some(prev) = self.last_dts
                    && dts <= prev
                    && self.first_dts_violation.is_none()
                {
                    self.first_dts_violation = Some(DtsViolation { packet: self.packets, previous_dts: prev, dts });
                }
                self.first_dts.get_or_insert(dts);
                self.last_dts = Some(dts);
            }
            None => self.packets_without_dts += 1,
        }
        self.packets += 1;
    }
}

#[derive(Debug, Clone)]
pub struct VideoReport {
    /// FFmpeg codec name: "h264", "hevc", ...
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// FFmpeg pixel format name, e.g. "yuv420p"; "none" if not known yet.
    pub pix_fmt: String,
    /// Frame rate from timestamps: (n - 1) / (max_pts - min_pts) over the n
    /// packets that have a pts, since n frames span n - 1 frame intervals.
    /// `None` with fewer than 2 such packets.
    pub fps: Option<f64>,
    pub stats: StreamStats,
}

#[derive(Debug, Clone)]
pub struct AudioReport {
    /// FFmpeg codec name: "aac", "pcm_alaw", ...
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u16,
    pub stats: StreamStats,
}

#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Demuxer name, e.g. "flv", "rtsp".
    pub format: String,
    /// The best video stream, if any.
    pub video: Option<VideoReport>,
    /// The best audio stream, if any.
    pub audio: Option<AudioReport>,
    /// Streams of any kind, including ones not reported above.
    pub stream_count: usize,
    pub stopped: StopReason,
    /// Wall time from the start of the probe to a successful open (connect
    /// plus `avformat_find_stream_info`).
    pub open_time: Duration,
    /// Wall time from the start of the probe to the first video packet.
    pub first_video_time: Option<Duration>,
    /// Wall time of the whole probe.
    pub elapsed: Duration,
    /// Largest |last video dts - last audio dts| seen while reading, in
    /// seconds: how far apart the two streams got in the interleaved input.
    pub max_av_dts_gap: Option<f64>,
}

/// Calls `ffmpeg::init()` exactly once per process.
pub fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| ffmpeg::init().expect("ffmpeg::init failed"));
}

/// Opens `url` (rtmp://, rtsp:// or a file path) and reads it as described in
/// [`ProbeOptions`], never taking longer than `opts.deadline` (plus the time
/// FFmpeg needs to notice the interrupt, ~0.1 s).
///
/// Errors when the input cannot be opened before the deadline, or when it
/// opened but not a single packet arrived: `Ok` always means media was read.
pub fn probe(url: &str, opts: ProbeOptions) -> Result<ProbeReport, String> {
    init_ffmpeg();
    let start = Instant::now();
    let deadline = start + opts.deadline;

    let mut dict = ffmpeg::Dictionary::new();
    // Belt and braces: rw_timeout makes a stalled read fail by itself; the
    // interrupt callback below is what bounds connect and stream analysis.
    let micros = opts.deadline.as_micros().to_string();
    dict.set("rw_timeout", &micros);
    if url.starts_with("rtsp://") {
        // TCP: UDP over loopback works too but can drop under load, which
        // would show up as lost frames that are not camgate's fault.
        dict.set("rtsp_transport", "tcp");
        // FFmpeg >= 5: socket I/O timeout of the RTSP demuxer, in µs.
        dict.set("timeout", &micros);
    }
    for (k, v) in &opts.options {
        dict.set(k, v);
    }

    let mut input = ffmpeg::format::input_with_interrupt_and_dictionary(url, move || Instant::now() >= deadline, dict)
        .map_err(|e| format!("cannot open {url} within {:?}: {e}", opts.deadline))?;
    let open_time = start.elapsed();

    let video_idx = input.streams().best(Type::Video).map(|s| s.index());
    let audio_idx = input.streams().best(Type::Audio).map(|s| s.index());
    let stream_count = input.streams().count();
    let main_idx = video_idx.or(audio_idx);
    let time_bases: Vec<f64> = input.streams().map(|s| f64::from(s.time_base())).collect();

    let mut video = video_idx.map(|i| video_report(&input, i)).transpose()?;
    let mut audio = audio_idx.map(|i| audio_report(&input, i)).transpose()?;

    let mut first_video_time = None;
    let mut max_av_dts_gap: Option<f64> = None;
    let mut total_packets = 0usize;
    let mut packet = ffmpeg::Packet::empty();

    let stopped = loop {
        // Packets buffered during stream analysis come back without any I/O,
        // so the interrupt callback alone would not stop us here.
        if Instant::now() >= deadline {
            break StopReason::Deadline;
        }
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                // Demuxers like RTSP over UDP say "try again" when no data is
                // there yet; don't spin.
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(ffmpeg::Error::Eof) => break StopReason::Eof,
            // AVERROR_EXIT: our interrupt callback fired mid-read.
            Err(ffmpeg::Error::Exit) => break StopReason::Deadline,
            Err(e) => {
                if Instant::now() >= deadline {
                    break StopReason::Deadline;
                }
                break StopReason::ReadError(e.to_string());
            }
        }
        total_packets += 1;
        if let Some(counter) = &opts.progress {
            counter.fetch_add(1, Ordering::SeqCst);
        }

        let idx = packet.stream();
        let tb = time_bases.get(idx).copied().unwrap_or(0.0);
        let dts = packet.dts().map(|t| t as f64 * tb);
        let pts = packet.pts().map(|t| t as f64 * tb);
        let key = packet.is_key();

        if Some(idx) == video_idx {
            if let Some(v) = video.as_mut() {
                v.stats.record(pts, dts, key);
            }
            first_video_time.get_or_insert_with(|| start.elapsed());
        } else if Some(idx) == audio_idx
            && let Some(a) = audio.as_mut()
        {
            a.stats.record(pts, dts, key);
        }

        let last_v = video.as_ref().and_then(|v| v.stats.last_dts);
        let last_a = audio.as_ref().and_then(|a| a.stats.last_dts);
        if let (Some(v), Some(a)) = (last_v, last_a) {
            let gap = (v - a).abs();
            max_av_dts_gap = Some(max_av_dts_gap.map_or(gap, |m| m.max(gap)));
        }

        if let (Some(want), Some(main)) = (opts.media_seconds, main_idx) {
            let span = if Some(main) == video_idx {
                video.as_ref().and_then(|v| v.stats.dts_span())
            } else {
                audio.as_ref().and_then(|a| a.stats.dts_span())
            };
            if span.is_some_and(|s| s >= want) {
                break StopReason::MediaTime;
            }
        }
    };

    if total_packets == 0 {
        return Err(format!(
            "{url}: opened in {open_time:?} but no packet arrived (stopped: {stopped:?}, {:?} elapsed)",
            start.elapsed()
        ));
    }

    if let Some(v) = video.as_mut() {
        let timed = v.stats.packets - v.stats.packets_without_pts;
        v.fps = match (v.stats.min_pts, v.stats.max_pts) {
            (Some(lo), Some(hi)) if timed >= 2 && hi > lo => Some((timed - 1) as f64 / (hi - lo)),
            _ => None,
        };
    }

    let report = ProbeReport {
        format: input.format().name().to_string(),
        video,
        audio,
        stream_count,
        stopped,
        open_time,
        first_video_time,
        elapsed: start.elapsed(),
        max_av_dts_gap,
    };
    // Closing an RTSP input sends TEARDOWN and waits for the answer; past the
    // deadline the interrupt callback makes that return at once.
    drop(input);
    Ok(report)
}

fn video_report(input: &ffmpeg::format::context::Input, index: usize) -> Result<VideoReport, String> {
    let stream = input.stream(index).ok_or_else(|| format!("no stream #{index}"))?;
    let params = stream.parameters();
    let codec = params.id().name().to_string();
    // A decoder context is the safe way to read width/height/format out of
    // AVCodecParameters; it is never opened, so no decoder runs.
    let decoder = ffmpeg::codec::context::Context::from_parameters(params)
        .and_then(|c| c.decoder().video())
        .map_err(|e| format!("stream #{index}: cannot read video parameters: {e}"))?;
    let pix_fmt = match decoder.format() {
        ffmpeg::format::Pixel::None => "none".to_string(),
        p => p.descriptor().map_or_else(|| format!("{p:?}"), |d| d.name().to_string()),
    };
    Ok(VideoReport {
        codec,
        width: decoder.width(),
        height: decoder.height(),
        pix_fmt,
        fps: None,
        stats: StreamStats::default(),
    })
}

fn audio_report(input: &ffmpeg::format::context::Input, index: usize) -> Result<AudioReport, String> {
    let stream = input.stream(index).ok_or_else(|| format!("no stream #{index}"))?;
    let params = stream.parameters();
    let codec = params.id().name().to_string();
    let decoder = ffmpeg::codec::context::Context::from_parameters(params)
        .and_then(|c| c.decoder().audio())
        .map_err(|e| format!("stream #{index}: cannot read audio parameters: {e}"))?;
    Ok(AudioReport { codec, sample_rate: decoder.rate(), channels: decoder.channels(), stats: StreamStats::default() })
}

/// Waits at `url` (connected before anything is published, as a player waiting at the RTMP server) for the
/// first video packet, and says when it arrived and whether it was a keyframe. Reads packets straight after
/// `avformat_open_input`, without stream analysis, which would hold the first packets back.
pub fn first_video_packet(url: &str, within: Duration) -> Result<(Instant, bool), String> {
    init_ffmpeg();
    let deadline = Instant::now() + within;
    let mut input = open_raw(url, deadline)?;
    let mut packet = ffmpeg::Packet::empty();
    loop {
        match packet.read(&mut input) {
            Ok(()) => {
                let video = input.stream(packet.stream()).is_some_and(|s| s.parameters().medium() == Type::Video);
                if video {
                    return Ok((Instant::now(), packet.is_key()));
                }
            }
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(format!("reading {url}: {e}")),
        }
    }
}

/// Opens `url` with a deadline and no stream analysis.
fn open_raw(url: &str, deadline: Instant) -> Result<ffmpeg::format::context::Input, String> {
    let c_url = std::ffi::CString::new(url).map_err(|_| "URL with a NUL".to_owned())?;
    let interrupt = ffmpeg::util::interrupt::new(Box::new(move || Instant::now() >= deadline));
    let mut options = ffmpeg::Dictionary::new();
    let micros = deadline.saturating_duration_since(Instant::now()).as_micros().to_string();
    options.set("rw_timeout", &micros);
    // SAFETY: as `ffmpeg_next::format::input_with_interrupt_and_dictionary`, minus the stream analysis: the
    // context is freed by FFmpeg on a failed open; on success `Input` owns it and the interrupt state together.
    unsafe {
        let mut ps = ffmpeg::ffi::avformat_alloc_context();
        if ps.is_null() {
            return Err("out of memory".into());
        }
        (*ps).interrupt_callback = interrupt.interrupt;
        let mut opts = options.disown();
        let ret = ffmpeg::ffi::avformat_open_input(&mut ps, c_url.as_ptr(), std::ptr::null(), &mut opts);
        drop(ffmpeg::Dictionary::own(opts));
        if ret < 0 {
            return Err(format!("cannot open {url}: {}", ffmpeg::Error::from(ret)));
        }
        Ok(ffmpeg::format::context::Input::wrap_with_interrupt(ps, interrupt.guard))
    }
}

/// What a player decoding a stream got: frames, the picture sizes it saw, and decoding errors.
#[derive(Debug, Clone, Default)]
pub struct DecodeReport {
    pub video_frames: usize,
    pub audio_frames: usize,
    /// Every picture size decoded, in order of first appearance.
    pub sizes: Vec<(u32, u32)>,
    /// Packets the decoders refused, and frames they could not produce.
    pub errors: usize,
    /// Seconds of video read (last DTS minus first).
    pub video_seconds: f64,
    /// The largest step between consecutive video DTS, and between consecutive audio DTS (seconds).
    pub max_video_step: f64,
    pub max_audio_step: f64,
    /// Packets whose DTS did not increase over the previous one of their stream.
    pub dts_not_increasing: usize,
}

/// Reads `url` for `media_seconds` of video (within `deadline`) and decodes every packet of its video and
/// audio, as a player would.
pub fn decode(url: &str, media_seconds: f64, deadline: Duration) -> Result<DecodeReport, String> {
    init_ffmpeg();
    let until = Instant::now() + deadline;
    let mut input = ffmpeg::format::input_with_interrupt_and_dictionary(url, move || Instant::now() >= until, {
        let mut d = ffmpeg::Dictionary::new();
        d.set("rw_timeout", &deadline.as_micros().to_string());
        d
    })
    .map_err(|e| format!("cannot open {url}: {e}"))?;
    let video = input.streams().best(Type::Video).ok_or("no video stream")?;
    let (video_index, video_tb) = (video.index(), f64::from(video.time_base()));
    let mut video_decoder = ffmpeg::codec::context::Context::from_parameters(video.parameters())
        .and_then(|c| c.decoder().video())
        .map_err(|e| format!("video decoder: {e}"))?;
    let audio = input.streams().best(Type::Audio).map(|s| (s.index(), s.parameters()));
    let audio_tb = input.streams().best(Type::Audio).map_or(0.0, |s| f64::from(s.time_base()));
    let mut audio_decoder = match audio {
        Some((index, parameters)) => Some((
            index,
            ffmpeg::codec::context::Context::from_parameters(parameters)
                .and_then(|c| c.decoder().audio())
                .map_err(|e| format!("audio decoder: {e}"))?,
        )),
        None => None,
    };
    let mut report = DecodeReport::default();
    let (mut picture, mut sound) = (ffmpeg::frame::Video::empty(), ffmpeg::frame::Audio::empty());
    let mut first_dts = None;
    let (mut last_video, mut last_audio) = (None::<f64>, None::<f64>);
    let step = |last: &mut Option<f64>, dts: f64, max: &mut f64, backwards: &mut usize| {
        if let Some(last) = *last {
            *max = max.max(dts - last);
            if dts <= last {
                *backwards += 1;
            }
        }
        *last = Some(dts);
    };
    let mut packet = ffmpeg::Packet::empty();
    while Instant::now() < until {
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => continue,
            Err(_) => break,
        }
        if packet.stream() == video_index {
            let dts = packet.dts().unwrap_or(0) as f64 * video_tb;
            if dts - *first_dts.get_or_insert(dts) >= media_seconds {
                break;
            }
            report.video_seconds = dts - first_dts.unwrap_or(dts);
            step(&mut last_video, dts, &mut report.max_video_step, &mut report.dts_not_increasing);
            if video_decoder.send_packet(&packet).is_err() {
                report.errors += 1;
            }
            while video_decoder.receive_frame(&mut picture).is_ok() {
                report.video_frames += 1;
                let size = (picture.width(), picture.height());
                if !report.sizes.contains(&size) {
                    report.sizes.push(size);
                }
            }
        } else if let Some((index, decoder)) = audio_decoder.as_mut()
            && packet.stream() == *index
        {
            let dts = packet.dts().unwrap_or(0) as f64 * audio_tb;
            step(&mut last_audio, dts, &mut report.max_audio_step, &mut report.dts_not_increasing);
            if decoder.send_packet(&packet).is_err() {
                report.errors += 1;
            }
            while decoder.receive_frame(&mut sound).is_ok() {
                report.audio_frames += 1;
            }
        }
    }
    if first_dts.is_none() {
        return Err(format!("no video read from {url}"));
    }
    Ok(report)
}
