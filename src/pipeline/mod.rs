//! The data path of one camera: input → (decode → encode) → FLV output, run to completion on the calling
//! thread.
//!
//! [`run`] knows nothing of threads, channels or HTTP: it is given a spec, a stop flag, counters to bump and an
//! observer to tell what it found, and returns when the stop flag is raised (`Ok`) or something fails (`Err`).
//! The worker (see `crate::runtime`) decides what happens next.
//!
//! Per packet the work reads as the ffmpeg-next transcoding examples do — read, send to decoder, receive
//! frames, send to encoder, receive packets, write — with every FFmpeg status matched explicitly.

mod audio;
mod channel_layout;
pub mod diagnosis;
pub mod fence;
pub mod ffmpeg_log;
pub mod gate;
mod gop_cache;
mod h264_sps;
mod held_sends;
mod input;
mod interleave;
pub mod interrupt;
mod net;
mod output;
mod probe;
mod read_batch;
mod rtmp;
mod rtsp;
mod silence;
pub mod slate;
mod slate_picture;
pub mod threading;
pub mod timestamps;
mod video;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use ffmpeg_next::{Packet, Rational, media};
use tracing::{debug, info, warn};

use self::audio::{AudioPath, AudioSetup};
use self::fence::Fence;
use self::gate::OutputGate;
pub(crate) use self::gop_cache::GopCache;
use self::input::TargetError;
use self::interrupt::{Interrupter, Interruption};
pub(crate) use self::output::Track;
use self::output::{FlvOutput, Measure, StreamSource, WriteError, Written};
use self::read_batch::{ReadBatch, Waits};
use self::silence::SilenceFiller;
use self::slate::{HeldAudio, HeldOutputs, Slate};
use self::video::{VideoPath, VideoSetup, VideoSetupError};
use crate::model::{
    AudioMode, Counters, HostPolicy, PipelineError, SessionInfo, Stage, StreamSpec, Transport, VideoMode,
};
use crate::preview::Channel;

/// How long the FLV trailer and encoder flush may take after a stop, all outputs together.
const FINISH_WITHIN: Duration = Duration::from_millis(1000);
/// How long to wait before reading again when a demuxer has nothing yet (`EAGAIN`).
const EAGAIN_WAIT: Duration = Duration::from_millis(5);
/// How long the preview's muxer keeps running after its last viewer left (a page reload comes back within it).
const PREVIEW_LINGER: Duration = Duration::from_secs(5);

/// What a running pipeline tells its owner.
pub trait Observer {
    /// The input is open and the output connected: what was found and decided.
    fn session(&mut self, info: SessionInfo, warnings: Vec<String>);
    /// The first video frame of this session reached the output.
    fn first_frame(&mut self);
    /// Something degraded without stopping the camera (audio dropped, …).
    fn warning(&mut self, message: String);
    /// The camera went away and the offline slate stands in for it on the outputs.
    fn offline_slate(&mut self);
}

/// Why the loop stopped, before it is given the camera's name.
#[derive(Debug)]
pub(crate) enum Halt {
    Stop,
    Ffmpeg {
        stage: Stage,
        source: ffmpeg_next::Error,
    },
    /// Opening the camera failed on `transport`, after `auto` tried what `tried` says.
    InputFailed {
        source: ffmpeg_next::Error,
        transport: Transport,
        tried: Vec<String>,
    },
    Timeout {
        stage: Stage,
        after: Duration,
    },
    InputEnded,
    NoVideo,
    Unsupported(String),
    Resolve {
        host: String,
        reason: String,
    },
    HostRefused(String),
    Fenced,
}

impl Halt {
    pub(crate) fn ffmpeg(stage: Stage, source: ffmpeg_next::Error) -> Halt {
        Halt::Ffmpeg { stage, source }
    }

    /// An FFmpeg error from a call guarded by `interrupter`. If the callback is firing, the error is its doing
    /// whatever code FFmpeg chose (the RTSP demuxer turns an interrupted open into "invalid data"), so it is
    /// reported as our stop or our timeout.
    fn from_interruptible(stage: Stage, e: ffmpeg_next::Error, interrupter: &Interrupter) -> Halt {
        match (e, interrupter.check()) {
            (_, Some(Interruption::Stop)) => Halt::Stop,
            (_, Some(Interruption::Fenced)) => Halt::Fenced,
            (_, Some(Interruption::Deadline)) | (ffmpeg_next::Error::Exit, None) => {
                Halt::Timeout { stage, after: interrupter.armed_for() }
            }
            (source, None) => Halt::Ffmpeg { stage, source },
        }
    }

    fn into_error(self, spec: &StreamSpec) -> Option<PipelineError> {
        let camera = spec.id.clone();
        let target = |stage: Stage| match stage {
            Stage::OpenOutput | Stage::WriteOutput => {
                spec.output.as_ref().map_or_else(|| "preview".to_owned(), |o| o.redacted())
            }
            _ => spec.input.redacted(),
        };
        let explain = |stage: Stage, source: &ffmpeg_next::Error, detail: Option<&str>, transport: Transport| {
            let host_port = spec.input.host_port();
            let (host, port) =
                host_port.as_ref().map_or((String::new(), 554), |(h, p)| (h.to_string(), p.unwrap_or(554)));
            let path = spec.input.path();
            let camera = diagnosis::CameraAddress { host: &host, port, path: &path };
            diagnosis::diagnose(stage, source, detail, &camera, transport)
        };
        Some(match self {
            Halt::Stop => return None,
            Halt::Ffmpeg { stage, source } => {
                let detail = ffmpeg_log::take_last_error();
                let found = explain(stage, &source, detail.as_deref(), spec.transport);
                PipelineError::Ffmpeg {
                    camera,
                    stage,
                    target: target(stage),
                    source,
                    detail,
                    rtsp_status: found.rtsp_status,
                    advice: found.advice,
                }
            }
            Halt::InputFailed { source, transport, tried } => {
                let detail = ffmpeg_log::take_last_error();
                let found = explain(Stage::OpenInput, &source, detail.as_deref(), transport);
                let advice = match (found.advice, tried.is_empty()) {
                    (advice, true) => advice,
                    (advice, false) => Some(format!(
                        "{}; tried before: {}",
                        advice.unwrap_or_else(|| format!("{} failed", diagnosis::transport_words(transport))),
                        tried.join("; ")
                    )),
                };
                // A camera that refused TCP and everything after it: 461 is what it answered first.
                let rtsp_status = found.rtsp_status.or_else(|| (!tried.is_empty()).then_some(461));
                PipelineError::Ffmpeg {
                    camera,
                    stage: Stage::OpenInput,
                    target: target(Stage::OpenInput),
                    source,
                    detail,
                    rtsp_status,
                    advice,
                }
            }
            Halt::Timeout { stage, after } => PipelineError::Timeout { camera, stage, target: target(stage), after },
            Halt::InputEnded => PipelineError::InputEnded { camera, target: spec.input.redacted() },
            Halt::NoVideo => PipelineError::NoVideo { camera, target: spec.input.redacted() },
            Halt::Unsupported(reason) => PipelineError::Unsupported { camera, reason },
            Halt::Resolve { host, reason } => PipelineError::Resolve { camera, host, reason },
            Halt::HostRefused(reason) => PipelineError::HostRefused { camera, reason },
            Halt::Fenced => PipelineError::Fenced { camera },
        })
    }
}

/// Initializes FFmpeg's libraries once per process and routes their log into `tracing` (see [`ffmpeg_log`]).
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Err(e) = ffmpeg_next::init() {
            warn!("FFmpeg initialization reported: {e}");
        }
        ffmpeg_log::install();
    });
}

/// Moves `spec`'s camera to its output until `stop` is raised (`Ok`) or something fails (`Err`).
///
/// One call is one session: one connection to the camera and one to the output. Retrying is the caller's
/// business. With `spec.offline_slate`, a session that loses its camera leaves its outputs showing the slate in
/// `slate`, and the next session (given the same `slate`) takes them back: the caller keeps it between calls
/// and drops it to end the slate.
#[allow(clippy::too_many_arguments)]
pub fn run(
    spec: &StreamSpec,
    hosts: &HostPolicy,
    fence: &Fence,
    stop: &Arc<AtomicBool>,
    counters: &Counters,
    observer: &mut dyn Observer,
    taps: Taps<'_>,
    slate: &mut Option<Slate>,
) -> Result<(), PipelineError> {
    init();
    ffmpeg_log::clear_last_error();
    match Session::open(spec, hosts, fence, stop, observer, taps, slate)
        .and_then(|mut session| session.pump(counters, observer, slate))
    {
        Ok(()) => Ok(()),
        Err(halt) => match halt.into_error(spec) {
            None => Ok(()),
            Some(error) => Err(error),
        },
    }
}

/// Where, besides the output, a session's video goes.
#[derive(Clone, Copy, Default)]
pub struct Taps<'a> {
    /// The camera's preview channel: its GOP cache (for snapshots and warm starts) and, while someone watches,
    /// the same FLV as the output.
    pub preview: Option<&'a Arc<Channel>>,
    /// A warm camera's gate: the RTMP output runs only while it is open (see `pipeline::gate`).
    pub gate: Option<&'a OutputGate>,
}

/// One connection to the camera and one to the output, with the paths between them.
struct Session<'a> {
    spec: &'a StreamSpec,
    // `outputs` are declared before `input` so the muxers are closed first: its trailer must not wait on a camera.
    /// RTMP/file outputs and/or the preview's muxer; empty once finished. The RTMP/file outputs (the output
    /// and the extra outputs), when connected, come first; the preview's, while it runs, last (see
    /// [`Session::preview_running`]).
    outputs: Vec<FlvOutput>,
    /// How many of `outputs` are RTMP/file outputs (a warm camera's are connected only while its gate is open).
    mains: usize,
    /// Since when the running preview has had no viewer.
    unwatched_since: Option<Instant>,
    /// A warm camera's gate.
    gate: Option<&'a OutputGate>,
    /// Where the session's GOP is kept (see [`gop_cache`]) and its preview viewers are: the camera's preview
    /// channel, or a private one for a warm camera run without a preview. `None`: no GOP is needed.
    channel: Option<Arc<Channel>>,
    /// What a warm camera's output, connected later, is interrupted by (each connection gets a fresh
    /// interrupter: a finished output's finishing deadline must not cut the next one short).
    stop: Arc<AtomicBool>,
    fence: Fence,
    /// Silence for the gaps in the camera's audio, when the output carries audio (see [`silence`]).
    silence: Option<SilenceFiller>,
    input: ffmpeg_next::format::context::Input,
    /// camgate's own RTSP session feeding `input`, if it reads the camera; declared after `input` so that it
    /// outlives the demuxer reading from it.
    rtsp_session: Option<rtsp::Attached>,
    input_interrupter: Arc<Interrupter>,
    video_index: usize,
    video_time_base: Rational,
    video: VideoPath,
    audio_index: Option<usize>,
    audio_time_base: Rational,
    audio: Option<AudioPath>,
    audio_auto: bool,
    first_frame_sent: bool,
    /// SPS/PPS to attach to the next video packet as new extradata: the outputs were taken over from the
    /// offline slate, whose sequence header the players have now.
    announce: Option<Vec<u8>>,
    /// Whether this session's outputs go to the offline slate when the camera goes away.
    slate_on_loss: bool,
    /// The output's audio, as the slate must match it (`None`: no audio track).
    held_audio: Option<HeldAudio>,
    /// When the last video packet was read from the camera, for its latency through camgate.
    video_read_at: Instant,
}

impl<'a> Session<'a> {
    fn open(
        spec: &'a StreamSpec,
        hosts: &HostPolicy,
        fence: &Fence,
        stop: &Arc<AtomicBool>,
        observer: &mut dyn Observer,
        taps: Taps<'a>,
        slate: &mut Option<Slate>,
    ) -> Result<Self, Halt> {
        if !fence.is_open() {
            return Err(Halt::Fenced);
        }
        let input_interrupter = Interrupter::fenced(Arc::clone(stop), fence.clone());
        input_interrupter.arm(spec.timeouts.open());
        let target = input::settle_target(&spec.input, hosts, &input_interrupter).map_err(|e| match e {
            TargetError::Stop => Halt::Stop,
            TargetError::Timeout => Halt::Timeout { stage: Stage::OpenInput, after: spec.timeouts.open() },
            TargetError::Resolve { host, reason } => Halt::Resolve { host, reason },
            TargetError::Refused(reason) => Halt::HostRefused(reason),
        })?;
        let copies = probe::VideoAudio {
            video: match spec.video.mode {
                VideoMode::Copy => true,
                VideoMode::Auto => spec.video.encoding.width.is_none() && spec.video.encoding.height.is_none(),
                VideoMode::Transcode => false,
            },
            audio: matches!(spec.audio.mode, AudioMode::Copy | AudioMode::Auto),
        };
        let opened = input::open_camera(
            &spec.input,
            target.as_deref(),
            spec.transport,
            &spec.timeouts,
            spec.rtsp_reader,
            copies,
            &input_interrupter,
        )
        .map_err(|failure| {
            match Halt::from_interruptible(Stage::OpenInput, failure.error, &input_interrupter) {
                Halt::Ffmpeg { source, .. } => {
                    Halt::InputFailed { source, transport: failure.transport, tried: failure.tried }
                }
                other => other,
            }
        })?;
        // Bound in this order so that, on any early return below, `input` (declared last) is dropped first:
        // camgate's RTSP session must outlive the demuxer reading from it.
        let mut rtsp_session = opened.session;
        let input::Opened { input, transport, note: transport_note, described, .. } = opened;
        if let Some(note) = &transport_note {
            info!(camera = %spec.id, "{note}");
        }
        if let Some(target) = &target {
            input::check_redirect(&input, target, hosts).map_err(|e| match e {
                TargetError::Refused(reason) => Halt::HostRefused(reason),
                TargetError::Resolve { host, reason } => Halt::Resolve { host, reason },
                TargetError::Stop => Halt::Stop,
                TargetError::Timeout => Halt::Timeout { stage: Stage::OpenInput, after: spec.timeouts.open() },
            })?;
        }
        debug!(camera = %spec.id, input = %spec.input, "input open");

        let video_stream = input.streams().best(media::Type::Video).ok_or(Halt::NoVideo)?;
        let video = VideoSetup::new(&video_stream, spec.video.mode, &spec.video.encoding).map_err(|e| match e {
            VideoSetupError::NotCopyable(reason) => Halt::Unsupported(reason),
            VideoSetupError::Ffmpeg(source, stage) => Halt::Ffmpeg { stage, source },
        })?;
        let mut warnings = video.warnings;
        let (video_index, video_time_base) = (video_stream.index(), video_stream.time_base());

        let audio_stream =
            if spec.audio.mode == AudioMode::None { None } else { input.streams().best(media::Type::Audio) };
        let (audio_index, audio_time_base) =
            audio_stream.as_ref().map_or((None, Rational(1, 1)), |s| (Some(s.index()), s.time_base()));
        let audio = match audio_stream.map(|s| AudioSetup::new(&s, spec.audio.mode, &spec.audio.encoding)) {
            None => None,
            Some(Ok(setup)) => Some(setup),
            Some(Err(reason)) if spec.audio.mode == AudioMode::Auto => {
                warnings.push(format!("audio dropped: {reason}"));
                None
            }
            Some(Err(reason)) => return Err(Halt::Unsupported(reason)),
        };

        let audio_path = audio.as_ref().map(|a| &a.path);
        // The slate can stand in only with the output's exact audio format: silent AAC-LC.
        let held_audio = match &audio {
            Some(a) if a.silence_fits => Some(HeldAudio {
                rate: a.output.sample_rate,
                channels: a.output.channels,
                extradata: extradata(&audio_parameters(&a.path)).to_vec(),
            }),
            _ => None,
        };
        let slate_on_loss = spec.offline_slate && taps.gate.is_none() && (audio.is_none() || held_audio.is_some());
        // Outputs the offline slate kept connected carry on with this session, if its streams fit them.
        let (mut outputs, announce, held_mains) = match slate.take().and_then(Slate::take) {
            Some(held) if held.audio == held_audio && audio.is_some() == held.audio.is_some() => {
                let held_mains = held.mains;
                let mut outputs = held.outputs;
                for output in &mut outputs {
                    output.rejoin();
                }
                info!(camera = %spec.id, "camera back: its outputs leave the offline slate");
                (outputs, Some(extradata(&video_parameters(&video.path)).to_vec()), held_mains)
            }
            other => {
                if let Some(held) = other {
                    info!(camera = %spec.id, "camera back with another audio format: its outputs reconnect");
                    held.finish(&spec.id);
                }
                (Vec::with_capacity(2), None, 0)
            }
        };
        let reused = announce.is_some();
        let mains = if reused {
            held_mains
        } else {
            // A warm camera with its gate closed connects only to the camera (and the preview).
            if taps.gate.is_none_or(OutputGate::is_open) {
                let interrupter = Interrupter::fenced(Arc::clone(stop), fence.clone());
                interrupter.arm(spec.timeouts.open());
                outputs = open_mains(spec, &video.path, audio_path, &interrupter)?;
            }
            outputs.len()
        };
        hold_sends(rtsp_session.as_mut(), &video.path, &outputs[..mains]);
        // The preview's muxer starts when someone watches (`follow_viewers`); one the offline slate kept running
        // for its viewers carries on.
        let preview_running = outputs.len() > mains;
        let gate = taps.gate.filter(|_| spec.output.is_some());
        let channel = taps.preview.cloned().or_else(|| gate.map(|_| Arc::new(Channel::default())));
        if let Some(channel) = &channel {
            if !preview_running {
                // Viewers of an earlier session's muxer: their stream ended with it.
                channel.end_flv();
            }
            channel.restart_gop(extradata(&video_parameters(&video.path)).to_vec());
        }

        let silence = match audio.as_ref().filter(|a| a.silence_fits) {
            Some(audio) => match SilenceFiller::new(audio.output.sample_rate, audio.output.channels) {
                Ok(filler) => Some(filler),
                Err(e) => {
                    warnings.push(format!("gaps in the audio will not be filled with silence: {e}"));
                    None
                }
            },
            None => None,
        };
        let info = SessionInfo {
            video_in: video.input,
            video_out: video.output,
            video_mode: video.mode,
            video_encoder: video.encoder_name,
            source_fps: video.source_fps,
            audio_in: audio.as_ref().map(|a| a.input.clone()),
            audio_out: audio.as_ref().map(|a| a.output.clone()),
            audio_mode: audio.as_ref().map_or(AudioMode::None, |a| a.mode),
            transport,
            transport_note,
            video_threads: video
                .threads
                .map(|t| crate::model::VideoThreads { decoder: t.decoder as u32, encoder: t.encoder as u32 }),
            described_by_sdp: [(described.video, "video"), (described.audio, "audio")]
                .into_iter()
                .filter(|&(yes, _)| yes)
                .map(|(_, stream)| stream.to_owned())
                .collect(),
        };
        info!(camera = %spec.id, video_mode = %info.video_mode, audio_mode = %info.audio_mode,
              video_in = %info.video_in.codec, "session started");
        for warning in &warnings {
            warn!(camera = %spec.id, "{warning}");
        }
        observer.session(info, warnings);
        Ok(Session {
            spec,
            outputs,
            mains,
            unwatched_since: None,
            gate,
            channel,
            stop: Arc::clone(stop),
            fence: fence.clone(),
            silence,
            input,
            rtsp_session,
            input_interrupter,
            video_index,
            video_time_base,
            video: video.path,
            audio_index,
            audio_time_base,
            audio: audio.map(|a| a.path),
            audio_auto: spec.audio.mode == AudioMode::Auto,
            first_frame_sent: false,
            announce,
            slate_on_loss,
            held_audio,
            video_read_at: Instant::now(),
        })
    }

    /// Reads and forwards packets until a stop or an error, then closes the output as cleanly as it can.
    fn pump(
        &mut self,
        counters: &Counters,
        observer: &mut dyn Observer,
        slate: &mut Option<Slate>,
    ) -> Result<(), Halt> {
        let result = self.pump_packets(counters, observer);
        let camera_lost = matches!(
            result,
            Err(Halt::InputEnded
                | Halt::Timeout { stage: Stage::ReadInput, .. }
                | Halt::Ffmpeg { stage: Stage::ReadInput, .. })
        );
        if camera_lost && self.slate_on_loss && self.mains > 0 && self.first_frame_sent {
            // Preview viewers arriving while the camera is away see the slate too: it gets a preview muxer to
            // write to (stopped again after the camera's return once nobody watches).
            if self.spec.preview {
                if let Err(e) = self.start_preview(false) {
                    debug!(camera = %self.spec.id, "no preview during the slate: {e:?}");
                }
            }
            for output in &self.outputs {
                output.stop_holding();
            }
            let size = self.output_size();
            let held = HeldOutputs {
                outputs: std::mem::take(&mut self.outputs),
                mains: self.mains,
                size,
                audio: self.held_audio.clone(),
            };
            match Slate::start(&self.spec.id, held, self.spec.secrets()) {
                Ok(started) => {
                    *slate = Some(started);
                    observer.offline_slate();
                }
                Err(e) => warn!(camera = %self.spec.id, "the offline slate could not start: {e}"),
            }
            return result;
        }
        // A broken output cannot be finished; a fenced one must not be: another node may own the stream now.
        let output_broken = matches!(
            result,
            Err(Halt::Ffmpeg { stage: Stage::WriteOutput, .. }
                | Halt::Timeout { stage: Stage::WriteOutput, .. }
                | Halt::Fenced)
        );
        let preview_was_running = self.preview_running();
        if !output_broken {
            // From here the stop flag no longer cuts writes: only the finishing deadline does, and no write
            // can push it back.
            for output in &self.outputs {
                output.interrupter().finish_within(FINISH_WITHIN);
            }
            if matches!(result, Err(Halt::Stop)) {
                let _ = self.flush(counters);
            }
            for output in self.outputs.drain(..) {
                if let Err(e) = output.finish(FINISH_WITHIN) {
                    debug!(camera = %self.spec.id, "trailer not written: {e:?}");
                }
            }
        }
        if let Some(channel) = self.channel.as_ref().filter(|_| preview_was_running) {
            channel.end_flv();
        }
        result
    }

    fn pump_packets(&mut self, counters: &Counters, observer: &mut dyn Observer) -> Result<(), Halt> {
        let read_timeout = self.spec.timeouts.read();
        // The watchdog runs from the last packet received, not from the last attempt: a demuxer answering
        // EAGAIN again and again must not keep re-arming it.
        let mut armed = false;
        // Only copied video batches (see `read_batch`); the path does not change within a session.
        let batch_ms = if matches!(self.video, VideoPath::Copy { .. }) { self.spec.read_batch_ms } else { 0 };
        let waits = if self.rtsp_session.is_some() { Waits::InReader } else { Waits::AfterPacket };
        let mut batch = ReadBatch::new(Duration::from_millis(batch_ms), waits);
        if let Some(gate) = self.gate {
            gate.follow_from_this_thread();
        }
        loop {
            if self.input_interrupter.check() == Some(Interruption::Stop) {
                return Err(Halt::Stop);
            }
            let mut packet = Packet::empty();
            if !armed {
                self.input_interrupter.arm(read_timeout);
                armed = true;
            }
            batch.before_read();
            match packet.read(&mut self.input) {
                Ok(()) => {
                    batch.after_read();
                    armed = false;
                    drop_reference_time(&mut packet);
                }
                Err(_) if self.input_interrupter.check() == Some(Interruption::Fenced) => return Err(Halt::Fenced),
                Err(ffmpeg_next::Error::Other { errno: ffmpeg_next::error::EAGAIN }) => {
                    if self.input_interrupter.expired() {
                        return Err(Halt::Timeout { stage: Stage::ReadInput, after: read_timeout });
                    }
                    // Nothing to read yet (non-blocking demuxers): wait a little instead of spinning a core.
                    std::thread::sleep(EAGAIN_WAIT);
                    continue;
                }
                Err(ffmpeg_next::Error::Eof) => return Err(Halt::InputEnded),
                Err(e) => {
                    if let Some(error) = self.rtsp_session.as_mut().and_then(rtsp::Attached::take_error)
                        && !matches!(error, rtsp::RtspError::Interrupted)
                    {
                        ffmpeg_log::reader_error(&error.to_string());
                    }
                    return Err(Halt::from_interruptible(Stage::ReadInput, e, &self.input_interrupter));
                }
            }
            if self.gate.is_some() {
                self.follow_gate()?;
            }
            self.follow_viewers()?;
            let index = packet.stream();
            if index == self.video_index
                && let Some(reader) = self.rtsp_session.as_mut()
            {
                reader.restore_parameter_sets(&mut packet);
            }
            let bytes = packet.size();
            if index == self.video_index {
                Counters::add(&counters.video_packets_in, 1);
                self.video_read_at = Instant::now();
                self.forward_video(packet, counters, observer)?;
            } else if Some(index) == self.audio_index {
                Counters::add(&counters.audio_packets_in, 1);
                self.forward_audio(packet, counters, observer)?;
            }
            if let Some(linger) = batch.after_packet(bytes, self.first_frame_sent, &self.stop)
                && let Some(session) = self.rtsp_session.as_mut()
            {
                session.set_linger(linger);
            }
        }
    }

    /// Connects a warm camera's RTMP output when its gate has opened — and sends it the cached GOP at once, so
    /// the first viewer's player gets a keyframe now instead of at the camera's next one — or finishes the
    /// output when the gate has closed.
    fn follow_gate(&mut self) -> Result<(), Halt> {
        let Some(gate) = self.gate else { return Ok(()) };
        match (gate.is_open(), self.mains > 0) {
            (true, false) => {
                let interrupter = Interrupter::fenced(Arc::clone(&self.stop), self.fence.clone());
                interrupter.arm(self.spec.timeouts.open());
                let mut mains = open_mains(self.spec, &self.video, self.audio.as_ref(), &interrupter)?;
                let (cached, age) = self.channel.as_ref().map(|c| c.gop_packets()).unwrap_or_default();
                let replayed = cached.len();
                for output in &mut mains {
                    for (track, packet, time_base) in &cached {
                        let mut packet = share(packet);
                        output
                            .write(*track, &mut packet, *time_base, Measure::NONE)
                            .map_err(|e| write_halt(Stage::WriteOutput, e, &interrupter))?;
                    }
                }
                hold_sends(self.rtsp_session.as_mut(), &self.video, &mains);
                self.mains = mains.len();
                self.outputs.splice(0..0, mains);
                info!(camera = %self.spec.id, replayed, gop_age_ms = age.map(|a| a.as_millis() as u64),
                      "output connected for a viewer, starting from the cached keyframe");
            }
            (false, true) => {
                for output in self.outputs.drain(..self.mains) {
                    if let Err(e) = output.finish(FINISH_WITHIN) {
                        debug!(camera = %self.spec.id, "trailer not written: {e:?}");
                    }
                }
                self.mains = 0;
                info!(camera = %self.spec.id, "output disconnected: no viewers; the camera stays connected");
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the preview's muxer runs: it is the output after the RTMP/file outputs.
    fn preview_running(&self) -> bool {
        self.outputs.len() > self.mains
    }

    /// Runs the preview's muxer while someone watches: started for the first viewer — from the cached GOP, so
    /// the viewer's first frame is a keyframe at once — and finished once the last has been gone for
    /// [`PREVIEW_LINGER`]. A camera nobody watches pays for no muxer.
    fn follow_viewers(&mut self) -> Result<(), Halt> {
        let Some(channel) = &self.channel else { return Ok(()) };
        // While no muxer runs, nothing prunes viewers that left: count them (under the lock) before starting.
        if channel.watched() && (self.preview_running() || channel.viewers() > 0) {
            self.unwatched_since = None;
            self.start_preview(true)?;
        } else if self.preview_running() {
            let since = *self.unwatched_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= PREVIEW_LINGER && channel.end_flv_if_unwatched() {
                if let Some(output) = self.outputs.pop() {
                    if let Err(e) = output.finish(FINISH_WITHIN) {
                        debug!(camera = %self.spec.id, "preview trailer not written: {e:?}");
                    }
                }
                self.unwatched_since = None;
                debug!(camera = %self.spec.id, "preview muxer stopped: no viewers");
            }
        }
        Ok(())
    }

    /// Starts the preview's muxer, unless it runs already or the camera has no preview channel; `replay`: from
    /// the cached GOP (for a viewer of the camera; not for the offline slate, which starts with its own keyframe).
    fn start_preview(&mut self, replay: bool) -> Result<(), Halt> {
        let Some(channel) = self.channel.as_ref().filter(|_| !self.preview_running()) else { return Ok(()) };
        // An interrupter of its own: finishing this muxer when its viewers have gone sets a finishing deadline,
        // which must not cap the RTMP outputs' writes.
        let interrupter = Interrupter::fenced(Arc::clone(&self.stop), self.fence.clone());
        let mut output =
            FlvOutput::open_preview(Arc::clone(channel), Arc::clone(&interrupter), self.spec.timeouts.write())
                .map_err(|e| Halt::ffmpeg(Stage::OpenOutput, e))?;
        add_streams(&mut output, &self.video, self.audio.as_ref())?;
        output.write_header().map_err(|e| write_halt(Stage::OpenOutput, e, &interrupter))?;
        let (cached, _) = if replay { channel.gop_packets() } else { Default::default() };
        for (track, mut packet, time_base) in cached {
            output
                .write(track, &mut packet, time_base, Measure::NONE)
                .map_err(|e| write_halt(Stage::WriteOutput, e, &interrupter))?;
        }
        self.outputs.push(output);
        debug!(camera = %self.spec.id, replay, "preview muxer started");
        Ok(())
    }

    fn forward_video(
        &mut self,
        mut packet: Packet,
        counters: &Counters,
        observer: &mut dyn Observer,
    ) -> Result<(), Halt> {
        let outputs = &mut self.outputs;
        let first_frame_sent = &mut self.first_frame_sent;
        let channel = self.channel.as_deref();
        let mut silence = self.silence.as_mut();
        let announce = &mut self.announce;
        // `read`: when the camera's packet this one comes from was read (a transcoder's output may come from
        // an earlier packet than the one just read; `None` when it cannot tell).
        let mut emit = |packet: &mut Packet, time_base: Rational, read: Option<Instant>| -> Result<(), Halt> {
            if let Some(extradata) = announce.take() {
                attach_new_extradata(packet, &extradata);
            }
            // Taken before delivery, which rescales the packet to the output's time base.
            let at = packet.dts().or(packet.pts()).map(|t| t as f64 * f64::from(time_base));
            if let Some(channel) = channel {
                channel.remember(Track::Video, packet, time_base);
            }
            let delivery = deliver(outputs, counters, Track::Video, packet, time_base, read)?;
            if delivery != Delivery::Dropped && !*first_frame_sent {
                *first_frame_sent = true;
                observer.first_frame();
            }
            if let (Some(filler), Some(at)) = (silence.as_deref_mut(), at) {
                filler.fill_to(at, &mut |packet, time_base| {
                    if let Some(channel) = channel {
                        channel.remember(Track::Audio, packet, time_base);
                    }
                    deliver(outputs, counters, Track::Audio, packet, time_base, None).map(|_| ())
                })?;
            }
            Ok(())
        };
        let read_at = self.video_read_at;
        match &mut self.video {
            VideoPath::Copy { seen_keyframe, .. } => {
                if !*seen_keyframe && !packet.is_key() {
                    Counters::add(&counters.video_dropped, 1);
                    return Ok(());
                }
                *seen_keyframe = true;
                emit(&mut packet, self.video_time_base, Some(read_at))
            }
            VideoPath::Transcode(transcoder) => {
                let time_base = transcoder.time_base();
                let discontinuities = transcoder.timestamp_discontinuities();
                let outcome = transcoder.decode(&packet, read_at, &mut |p, read| emit(p, time_base, read))?;
                Counters::add(&counters.video_frames_decoded, outcome.frames);
                count_rebased(counters, transcoder.timestamp_discontinuities() - discontinuities);
                if outcome.rejected {
                    Counters::add(&counters.video_dropped, 1);
                }
                Ok(())
            }
        }
    }

    fn forward_audio(
        &mut self,
        mut packet: Packet,
        counters: &Counters,
        observer: &mut dyn Observer,
    ) -> Result<(), Halt> {
        let outputs = &mut self.outputs;
        let channel = self.channel.as_deref();
        let mut silence = self.silence.as_mut();
        let mut emit = |packet: &mut Packet, time_base: Rational| {
            if let (Some(filler), Some(pts)) = (silence.as_deref_mut(), packet.pts().or(packet.dts())) {
                let seconds = f64::from(time_base);
                let duration =
                    if packet.duration() > 0 { packet.duration() as f64 * seconds } else { filler.frame_secs() };
                if !filler.admit(pts as f64 * seconds, duration) {
                    // Silence already covers this moment.
                    Counters::add(&counters.audio_dropped, 1);
                    return Ok(());
                }
            }
            if let Some(channel) = channel {
                channel.remember(Track::Audio, packet, time_base);
            }
            deliver(outputs, counters, Track::Audio, packet, time_base, None).map(|_| ())
        };
        let result = match &mut self.audio {
            None => return Ok(()),
            Some(AudioPath::Copy { .. }) => emit(&mut packet, self.audio_time_base),
            Some(AudioPath::Transcode(transcoder)) => {
                let time_base = transcoder.time_base();
                let discontinuities = transcoder.timestamp_discontinuities();
                let decoded = transcoder.decode(&packet, &mut |p| emit(p, time_base));
                count_rebased(counters, transcoder.timestamp_discontinuities() - discontinuities);
                match decoded {
                    Ok(Some(frames)) => {
                        Counters::add(&counters.audio_frames_decoded, frames);
                        Ok(())
                    }
                    Ok(None) => {
                        Counters::add(&counters.audio_dropped, 1);
                        Ok(())
                    }
                    Err(halt) => Err(halt),
                }
            }
        };
        match result {
            // In auto mode a failing audio path costs the audio, not the camera.
            Err(Halt::Ffmpeg { stage: Stage::Audio, source }) if self.audio_auto => {
                let message = format!("audio dropped after an error: {source}");
                warn!(camera = %self.spec.id, "{message}");
                observer.warning(message);
                self.audio = None;
                Ok(())
            }
            other => other,
        }
    }

    /// The picture size the outputs announced.
    fn output_size(&self) -> (u32, u32) {
        self.outputs.first().map_or((0, 0), FlvOutput::video_size)
    }

    /// Pushes out what the encoders still hold, after a stop.
    fn flush(&mut self, counters: &Counters) -> Result<(), Halt> {
        let outputs = &mut self.outputs;
        if let VideoPath::Transcode(transcoder) = &mut self.video {
            let time_base = transcoder.time_base();
            transcoder.flush(&mut |p, _| deliver(outputs, counters, Track::Video, p, time_base, None).map(|_| ()))?;
        }
        if let Some(AudioPath::Transcode(transcoder)) = &mut self.audio {
            let time_base = transcoder.time_base();
            transcoder.flush(&mut |p| deliver(outputs, counters, Track::Audio, p, time_base, None).map(|_| ()))?;
        }
        Ok(())
    }
}

/// What became of a packet at the end of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Written to every output.
    Written,
    /// No output runs (a warm camera without viewers, a preview-only camera nobody watches): only the GOP
    /// cache has it.
    Kept,
    /// The muxer side dropped it (all outputs decide alike: they see the same packets).
    Dropped,
}

/// Counts timestamp jumps re-based while one packet was handled, by a transcoder or an output's guard (rarely
/// any: no atomic add then).
fn count_rebased(counters: &Counters, rebased: u64) {
    if rebased > 0 {
        Counters::add(&counters.timestamp_discontinuities, rebased);
    }
}

/// Writes one packet to every output and counts it once (as out when no output runs: it reached the end of
/// the pipeline, the camera's GOP cache).
fn deliver(
    outputs: &mut [FlvOutput],
    counters: &Counters,
    track: Track,
    packet: &mut Packet,
    time_base: Rational,
    read: Option<Instant>,
) -> Result<Delivery, Halt> {
    let (written, dropped) = match track {
        Track::Video => (&counters.video_frames_out, &counters.video_dropped),
        Track::Audio => (&counters.audio_frames_out, &counters.audio_dropped),
    };
    let Some((last, others)) = outputs.split_last_mut() else {
        Counters::add(written, 1);
        return Ok(Delivery::Kept);
    };
    // The first output (the RTMP output, when connected) counts the latency; audio writes too carry the
    // histogram, as video waiting for audio leaves with them.
    let measure = Measure { read, into: Some(counters) };
    let last_measure = if others.is_empty() { measure } else { Measure::NONE };
    // A failed write is explained by the failing output's own interrupter (a warm camera's output and the
    // preview's muxer each have one).
    for (n, output) in others.iter_mut().enumerate() {
        // The output takes the packet it is given: each output gets its own reference to the same data.
        let mut copy = share(packet);
        output
            .write(track, &mut copy, time_base, if n == 0 { measure } else { Measure::NONE })
            .map_err(|e| write_halt(Stage::WriteOutput, e, output.interrupter()))?;
    }
    match last.write(track, packet, time_base, last_measure) {
        Ok(Written::Yes(bytes)) => {
            Counters::add(written, 1);
            Counters::add(&counters.bytes_out, bytes as u64);
            Ok(Delivery::Written)
        }
        Ok(Written::Dropped) => {
            Counters::add(dropped, 1);
            Ok(Delivery::Dropped)
        }
        Err(e) => Err(write_halt(Stage::WriteOutput, e, last.interrupter())),
    }
}

/// Opens the RTMP/file output and the extra outputs with the session's streams and writes their headers.
fn open_mains(
    spec: &StreamSpec,
    video: &VideoPath,
    audio: Option<&AudioPath>,
    interrupter: &Arc<Interrupter>,
) -> Result<Vec<FlvOutput>, Halt> {
    let mut outputs = Vec::with_capacity(1 + spec.extra_outputs.len());
    for target in spec.output.iter().chain(&spec.extra_outputs) {
        let mut output = FlvOutput::open(target, spec.rtmp_writer, Arc::clone(interrupter), spec.timeouts.write())
            .map_err(|e| Halt::from_interruptible(Stage::OpenOutput, e, interrupter))?;
        add_streams(&mut output, video, audio)?;
        output.write_header().map_err(|e| write_halt(Stage::OpenOutput, e, interrupter))?;
        outputs.push(output);
    }
    Ok(outputs)
}

/// Lets camgate's RTSP reader hold what `outputs` send until it is about to wait (see [`held_sends`]), when the
/// video is copied: a packet then waits only while the others read with it are handled, in microseconds.
fn hold_sends(reader: Option<&mut rtsp::Attached>, video: &VideoPath, outputs: &[FlvOutput]) {
    let Some(reader) = reader.filter(|_| matches!(video, VideoPath::Copy { .. })) else { return };
    for outbox in outputs.iter().filter_map(FlvOutput::outbox) {
        reader.hold_sends(outbox);
    }
}

/// Declares the session's video and audio on `output`.
fn add_streams(output: &mut FlvOutput, video: &VideoPath, audio: Option<&AudioPath>) -> Result<(), Halt> {
    let mut add = |track, source| output.add_stream(track, source).map_err(|e| Halt::ffmpeg(Stage::OpenOutput, e));
    match video {
        VideoPath::Copy { parameters, .. } => add(Track::Video, StreamSource::Copy(parameters))?,
        VideoPath::Transcode(t) => add(Track::Video, StreamSource::Encoder(t.parameters()))?,
    }
    match audio {
        Some(AudioPath::Copy { parameters }) => add(Track::Audio, StreamSource::Copy(parameters))?,
        Some(AudioPath::Transcode(t)) => add(Track::Audio, StreamSource::Encoder(t.parameters()))?,
        None => {}
    }
    Ok(())
}

/// The codec parameters the output declares for the session's video.
fn video_parameters(video: &VideoPath) -> ffmpeg_next::codec::Parameters {
    match video {
        VideoPath::Copy { parameters, .. } => parameters.clone(),
        VideoPath::Transcode(t) => t.parameters(),
    }
}

/// The codec parameters the output declares for the session's audio.
fn audio_parameters(audio: &AudioPath) -> ffmpeg_next::codec::Parameters {
    match audio {
        AudioPath::Copy { parameters } => parameters.clone(),
        AudioPath::Transcode(t) => t.parameters(),
    }
}

/// A stream's extradata (H.264: SPS/PPS; AAC: AudioSpecificConfig); empty if it has none.
pub(crate) fn extradata(parameters: &ffmpeg_next::codec::Parameters) -> &[u8] {
    // SAFETY: the parameters are valid; `extradata` points to `extradata_size` readable bytes when non-null,
    // owned by the parameters, which the returned slice borrows.
    unsafe {
        let par = &*parameters.as_ptr();
        if par.extradata.is_null() || par.extradata_size <= 0 {
            return &[];
        }
        std::slice::from_raw_parts(par.extradata, par.extradata_size as usize)
    }
}

/// Marks `packet` as the first of a source with new codec configuration: the FLV muxer then writes a new
/// sequence header with `extradata` before it, so players reconfigure their decoder.
fn attach_new_extradata(packet: &mut Packet, extradata: &[u8]) {
    use ffmpeg_next::packet::Mut;
    if extradata.is_empty() {
        return;
    }
    // SAFETY: the packet is a valid AVPacket; av_packet_new_side_data allocates `len` bytes owned by the packet
    // (freed with it) and returns null on failure, checked before the copy of exactly `len` bytes.
    unsafe {
        let side = ffmpeg_next::ffi::av_packet_new_side_data(
            packet.as_mut_ptr(),
            ffmpeg_next::ffi::AVPacketSideDataType::AV_PKT_DATA_NEW_EXTRADATA,
            extradata.len(),
        );
        if !side.is_null() {
            std::ptr::copy_nonoverlapping(extradata.as_ptr(), side, extradata.len());
        }
    }
}

/// Drops the producer reference time libavformat's RTP demuxer attaches to every packet once the camera's first
/// RTCP report has come (`AV_PKT_DATA_PRFT`): no output of camgate's uses it, and each reference to the packet
/// (the GOP cache, the preview, a second output) and each `av_write_frame` would copy it, an allocation and a
/// free each time. A packet with other side data too (a new extradata, say) keeps all of it.
fn drop_reference_time(packet: &mut Packet) {
    use ffmpeg_next::packet::{Mut, side_data::Type};
    let mut kinds = packet.side_data().map(|side| side.kind()).peekable();
    if kinds.peek().is_none() || !kinds.all(|kind| kind == Type::PRFT) {
        return;
    }
    // SAFETY: the packet is a valid AVPacket that owns its side data; av_packet_free_side_data frees it and
    // leaves the packet without any, and nothing borrows it (the iterator above is gone).
    unsafe { ffmpeg_next::ffi::av_packet_free_side_data(packet.as_mut_ptr()) };
}

/// A new reference to `packet`'s data: a pointer and a reference count, not a copy. (ffmpeg-next's `Clone`
/// also calls `av_packet_make_writable`, which copies the payload.)
fn share(packet: &Packet) -> Packet {
    use ffmpeg_next::packet::{Mut, Ref};
    let mut shared = Packet::empty();
    // SAFETY: both packets are valid, initialized AVPackets; av_packet_ref takes a new reference to the
    // source's buffer (copying the data only if the source is not reference-counted) and copies its fields
    // and side data into the empty destination, which owns the reference and unrefs it on drop.
    let ret = unsafe { ffmpeg_next::ffi::av_packet_ref(shared.as_mut_ptr(), packet.as_ptr()) };
    if ret < 0 {
        // Out of memory: the deep copy allocates as well, but is the only other way to get a packet.
        return packet.clone();
    }
    shared
}

fn write_halt(stage: Stage, e: WriteError, interrupter: &Interrupter) -> Halt {
    match e {
        WriteError::Interrupted => Halt::from_interruptible(stage, ffmpeg_next::Error::Exit, interrupter),
        WriteError::Ffmpeg(source) => Halt::from_interruptible(stage, source, interrupter),
    }
}

#[cfg(test)]
mod tests {
    use ffmpeg_next::Packet;
    use ffmpeg_next::ffi::AVPacketSideDataType as Kind;
    use ffmpeg_next::packet::{Mut, side_data::Type};

    use super::drop_reference_time;

    fn packet_with(kinds: &[Kind]) -> Packet {
        let mut packet = Packet::new(16);
        for &kind in kinds {
            // SAFETY: a valid packet; av_packet_new_side_data allocates 8 bytes the packet owns, or returns null.
            let side = unsafe { ffmpeg_next::ffi::av_packet_new_side_data(packet.as_mut_ptr(), kind, 8) };
            assert!(!side.is_null(), "out of memory");
        }
        packet
    }

    fn kinds(packet: &Packet) -> Vec<Type> {
        packet.side_data().map(|side| side.kind()).collect()
    }

    #[test]
    fn a_packet_loses_its_reference_time_only_when_it_carries_nothing_else() {
        let mut stamped = packet_with(&[Kind::AV_PKT_DATA_PRFT]);
        drop_reference_time(&mut stamped);
        assert_eq!(kinds(&stamped), []);
        assert_eq!(stamped.size(), 16, "the payload stays");

        let mut new_config = packet_with(&[Kind::AV_PKT_DATA_PRFT, Kind::AV_PKT_DATA_NEW_EXTRADATA]);
        drop_reference_time(&mut new_config);
        assert_eq!(kinds(&new_config), [Type::PRFT, Type::NewExtraData], "a new extradata is never lost");

        let mut plain = packet_with(&[]);
        drop_reference_time(&mut plain);
        assert_eq!(kinds(&plain), []);
    }
}
