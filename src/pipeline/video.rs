//! The video leg: H.264 passed through untouched, or decoded → scaled to YUV 4:2:0 → encoded with libx264 (or
//! a hardware encoder when one opens).

use ffmpeg_next::codec::{self, Id};
use ffmpeg_next::format::{Pixel, stream::Stream};
use ffmpeg_next::software::scaling;
use ffmpeg_next::{Dictionary, Packet, Rational, decoder, encoder, frame, picture};

use std::collections::VecDeque;
use std::time::Instant;

use super::threading::{Threads, TranscodingSlot};
use super::timestamps::TimestampGuard;
use crate::model::{RateControl, Stage, VideoEncoding, VideoFormat, VideoMode};

/// Frame rate assumed when the camera announces none.
const FALLBACK_FPS: Rational = Rational(25, 1);

/// What to do with the camera's video.
pub enum VideoPath {
    /// Packets go to the muxer as they are; nothing is decoded.
    Copy {
        /// The input stream's parameters, for the output stream.
        parameters: codec::Parameters,
        /// Packets are dropped until the first keyframe, so a viewer's first picture decodes.
        seen_keyframe: bool,
    },
    /// Packets are decoded and re-encoded.
    Transcode(Box<Transcoder>),
}

/// Where a transcoder hands its encoded packets, with when the camera packet each comes from was read.
pub type Emit<'a> = &'a mut dyn FnMut(&mut Packet, Option<Instant>) -> Result<(), super::Halt>;

/// Decoder, scaler and encoder for one camera.
pub struct Transcoder {
    decoder: decoder::Video,
    /// Built on the first frame and rebuilt when the camera changes resolution or pixel format.
    scaler: Option<(ScalerKey, scaling::Context)>,
    encoder: encoder::video::Encoder,
    /// The time base of decoded frames and of the encoder: the input stream's.
    time_base: Rational,
    /// x264 must see strictly increasing PTS.
    frame_guard: TimestampGuard,
    decoded: frame::Video,
    scaled: frame::Video,
    encoded: Packet,
    /// Counts this camera among the transcoding ones while it runs (see [`threading`](super::threading)).
    _slot: TranscodingSlot,
    /// When the packets inside the decoder were read, by their PTS; then the same for the frames inside the
    /// encoder, by the PTS they were given: each output packet's latency is measured from the read of the
    /// camera packet it comes from, across the codecs' delays and reordering.
    in_decoder: VecDeque<(Option<i64>, Instant)>,
    in_encoder: VecDeque<(Option<i64>, Instant)>,
}

/// Most read times remembered per codec: more than any decoder's or encoder's delay in frames; older entries
/// belong to packets that produced nothing (before the first keyframe, broken ones).
const MAX_IN_FLIGHT: usize = 64;

/// Remembers that what has `pts` was read at `read`.
fn enter(queue: &mut VecDeque<(Option<i64>, Instant)>, pts: Option<i64>, read: Instant) {
    if queue.len() == MAX_IN_FLIGHT {
        queue.pop_front();
    }
    queue.push_back((pts, read));
}

/// When what has `pts` was read, forgetting it; `None` if it is not known.
fn leave(queue: &mut VecDeque<(Option<i64>, Instant)>, pts: Option<i64>) -> Option<Instant> {
    let at = queue.iter().position(|(p, _)| pts.is_some() && *p == pts)?;
    queue.remove(at).map(|(_, read)| read)
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct ScalerKey {
    format: Pixel,
    width: u32,
    height: u32,
}

/// What setting up the video leg decided.
pub struct VideoSetup {
    /// The path.
    pub path: VideoPath,
    /// `Copy` or `Transcode`, never `Auto`.
    pub mode: VideoMode,
    /// The camera's format.
    pub input: VideoFormat,
    /// What is sent.
    pub output: VideoFormat,
    /// The encoder, when transcoding.
    pub encoder_name: Option<String>,
    /// The frame rate the camera announces, if any.
    pub source_fps: Option<f64>,
    /// Things that did not go as asked.
    pub warnings: Vec<String>,
    /// The decoder's and encoder's threads, when transcoding.
    pub threads: Option<Threads>,
}

/// Why the video leg could not be set up.
pub enum VideoSetupError {
    /// Copy was asked for a codec FLV/browsers cannot take as is.
    NotCopyable(String),
    /// FFmpeg failed opening the decoder (`Stage::DecodeVideo`) or the encoder (`Stage::EncodeVideo`).
    Ffmpeg(ffmpeg_next::Error, Stage),
}

impl VideoSetup {
    /// Chooses and prepares the video path for `stream`.
    pub fn new(stream: &Stream, mode: VideoMode, settings: &VideoEncoding) -> Result<VideoSetup, VideoSetupError> {
        let parameters = stream.parameters();
        let codec_id = parameters.id();
        let codec_name = codec_name(codec_id);
        let source_fps = announced_fps(stream);
        let wants_scaling = settings.width.is_some() || settings.height.is_some();
        // SAFETY: `parameters` owns a valid AVCodecParameters; only its extradata size is read.
        let has_config = unsafe { (*parameters.as_ptr()).extradata_size > 0 };
        let mut warnings = Vec::new();
        let mode = match mode {
            VideoMode::Auto if codec_id == Id::H264 && !wants_scaling && has_config => VideoMode::Copy,
            VideoMode::Auto if codec_id == Id::H264 && !wants_scaling => {
                // Without SPS/PPS (neither in the SDP nor seen while probing) FLV gets no sequence header and
                // players show nothing; the encoder makes its own.
                warnings.push("the camera announced no SPS/PPS: transcoding instead of copying".to_owned());
                VideoMode::Transcode
            }
            VideoMode::Auto => VideoMode::Transcode,
            other => other,
        };
        if mode == VideoMode::Copy {
            if codec_id != Id::H264 {
                return Err(VideoSetupError::NotCopyable(format!(
                    "video mode copy needs H.264, the camera sends {codec_name}; use auto or transcode"
                )));
            }
            // The picture size as probing found it. No decoder is opened for it: an H.264 decoder's context
            // is some 750 KiB that glibc maps and zero-fills afresh for each session (see
            // `silence::silent_frame` for why that matters when many cameras start at once).
            // SAFETY: `parameters` owns a valid AVCodecParameters; only two of its fields are read.
            let (width, height) = unsafe { ((*parameters.as_ptr()).width, (*parameters.as_ptr()).height) };
            let size = |n: i32| u32::try_from(n).unwrap_or(0);
            let input = VideoFormat { codec: codec_name.clone(), width: size(width), height: size(height) };
            return Ok(VideoSetup {
                path: VideoPath::Copy { parameters, seen_keyframe: false },
                mode,
                output: input.clone(),
                input,
                encoder_name: None,
                source_fps,
                warnings,
                threads: None,
            });
        }
        let mut context = codec::context::Context::from_parameters(parameters.clone())
            .map_err(|e| VideoSetupError::Ffmpeg(e, Stage::DecodeVideo))?;
        // Threads must be chosen before the decoder opens.
        let (slot, threads) = TranscodingSlot::take(settings.threads);
        context.set_threading(codec::threading::Config::count(threads.decoder));
        let decoder = context.decoder().video().map_err(|e| VideoSetupError::Ffmpeg(e, Stage::DecodeVideo))?;
        let input = VideoFormat { codec: codec_name.clone(), width: decoder.width(), height: decoder.height() };
        let (width, height) = output_size(decoder.width(), decoder.height(), settings.width, settings.height);
        let fps = source_fps.map_or(FALLBACK_FPS, |f| Rational::from(f).reduce());
        let (encoder, encoder_name) =
            open_encoder(stream.time_base(), fps, width, height, settings, threads.encoder, &mut warnings)
                .map_err(|e| VideoSetupError::Ffmpeg(e, Stage::EncodeVideo))?;
        let time_base = stream.time_base();
        let per_second = i64::from(time_base.denominator()) / i64::from(time_base.numerator().max(1));
        Ok(VideoSetup {
            path: VideoPath::Transcode(Box::new(Transcoder {
                decoder,
                scaler: None,
                encoder,
                time_base,
                frame_guard: TimestampGuard::new(10 * per_second, (per_second / 25).max(1)),
                decoded: frame::Video::empty(),
                scaled: frame::Video::empty(),
                encoded: Packet::empty(),
                _slot: slot,
                in_decoder: VecDeque::with_capacity(MAX_IN_FLIGHT),
                in_encoder: VecDeque::with_capacity(MAX_IN_FLIGHT),
            })),
            mode,
            input,
            output: VideoFormat { codec: "h264".into(), width, height },
            encoder_name: Some(encoder_name),
            source_fps,
            warnings,
            threads: Some(threads),
        })
    }
}

impl Transcoder {
    /// The time base of packets coming out of [`Transcoder::decode`]'s callback.
    pub fn time_base(&self) -> Rational {
        self.time_base
    }

    /// Jumps in the decoded frames' timestamps re-based before the encoder so far (beyond what the output's
    /// own repair would see: the encoder's timestamps are continuous).
    pub fn timestamp_discontinuities(&self) -> u64 {
        self.frame_guard.discontinuities()
    }

    /// The encoder's parameters, for the output stream.
    pub fn parameters(&self) -> codec::Parameters {
        codec::Parameters::from(&self.encoder)
    }

    /// Feeds one packet, read from the camera at `read`, to the decoder. Returns how many frames were decoded;
    /// encoded packets go to `emit`, with when the camera packet each comes from was read. A packet the decoder
    /// rejects is not fatal (cameras send broken ones); the caller counts it as dropped.
    pub fn decode(&mut self, packet: &Packet, read: Instant, emit: Emit<'_>) -> Result<DecodeOutcome, super::Halt> {
        if self.decoder.send_packet(packet).is_err() {
            return Ok(DecodeOutcome { frames: 0, rejected: true });
        }
        enter(&mut self.in_decoder, packet.pts(), read);
        self.drain_decoder(emit)
    }

    /// Drains decoder and encoder at the end of a session.
    pub fn flush(&mut self, emit: Emit<'_>) -> Result<(), super::Halt> {
        let _ = self.decoder.send_eof();
        self.drain_decoder(emit)?;
        let _ = self.encoder.send_eof();
        self.drain_encoder(emit)
    }

    fn drain_decoder(&mut self, emit: Emit<'_>) -> Result<DecodeOutcome, super::Halt> {
        let mut frames = 0;
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Other { errno: ffmpeg_next::error::EAGAIN }) | Err(ffmpeg_next::Error::Eof) => {
                    return Ok(DecodeOutcome { frames, rejected: false });
                }
                // A broken frame: skip it, the next keyframe recovers.
                Err(_) => return Ok(DecodeOutcome { frames, rejected: true }),
            }
            frames += 1;
            let pts = self.decoded.timestamp().or(self.decoded.pts());
            let read = leave(&mut self.in_decoder, self.decoded.pts().or(pts));
            let pts = self.frame_guard.repair(pts, pts, 0).pts;
            if let Some(read) = read {
                enter(&mut self.in_encoder, Some(pts), read);
            }
            self.encode_decoded(pts, emit)?;
        }
    }

    fn encode_decoded(&mut self, pts: i64, emit: Emit<'_>) -> Result<(), super::Halt> {
        let want = ScalerKey { format: Pixel::YUV420P, width: self.encoder.width(), height: self.encoder.height() };
        let have =
            ScalerKey { format: self.decoded.format(), width: self.decoded.width(), height: self.decoded.height() };
        let frame = if have == want {
            &mut self.decoded
        } else {
            if self.scaler.as_ref().is_none_or(|(key, _)| *key != have) {
                let ctx = scaling::Context::get(
                    have.format,
                    have.width,
                    have.height,
                    want.format,
                    want.width,
                    want.height,
                    scaling::Flags::BILINEAR,
                )
                .map_err(|e| super::Halt::ffmpeg(Stage::ScaleVideo, e))?;
                self.scaler = Some((have, ctx));
                self.scaled = frame::Video::empty();
            }
            let (_, scaler) = self.scaler.as_mut().expect("scaler set just above");
            scaler.run(&self.decoded, &mut self.scaled).map_err(|e| super::Halt::ffmpeg(Stage::ScaleVideo, e))?;
            &mut self.scaled
        };
        frame.set_pts(Some(pts));
        // The camera's own I-frames must not force ours: the GOP is the encoder's to choose.
        frame.set_kind(picture::Type::None);
        self.encoder.send_frame(frame).map_err(|e| super::Halt::ffmpeg(Stage::EncodeVideo, e))?;
        self.drain_encoder(emit)
    }

    fn drain_encoder(&mut self, emit: Emit<'_>) -> Result<(), super::Halt> {
        loop {
            match self.encoder.receive_packet(&mut self.encoded) {
                Ok(()) => {
                    let read = leave(&mut self.in_encoder, self.encoded.pts());
                    emit(&mut self.encoded, read)?
                }
                Err(ffmpeg_next::Error::Other { errno: ffmpeg_next::error::EAGAIN }) | Err(ffmpeg_next::Error::Eof) => {
                    return Ok(());
                }
                Err(e) => return Err(super::Halt::ffmpeg(Stage::EncodeVideo, e)),
            }
        }
    }
}

/// The result of feeding one packet to the decoder.
pub struct DecodeOutcome {
    /// Frames decoded (and handed to the encoder).
    pub frames: u64,
    /// Whether the decoder rejected the packet or a frame.
    pub rejected: bool,
}

fn codec_name(id: Id) -> String {
    decoder::find(id).map_or_else(|| format!("{id:?}").to_lowercase(), |c| c.name().to_owned())
}

/// The frame rate the stream announces, if it is plausible.
fn announced_fps(stream: &Stream) -> Option<f64> {
    [stream.avg_frame_rate(), stream.rate()].into_iter().find_map(|r| {
        let fps = f64::from(r);
        (r.numerator() > 0 && r.denominator() > 0 && (1.0..=240.0).contains(&fps)).then_some(fps)
    })
}

/// The encoded size: the requested one, the other side following the aspect ratio, both even.
fn output_size(in_w: u32, in_h: u32, want_w: Option<u32>, want_h: Option<u32>) -> (u32, u32) {
    let even = |x: u64| (x.max(2) & !1) as u32;
    match (want_w, want_h) {
        (Some(w), Some(h)) => (w, h),
        (Some(w), None) if in_w > 0 => (w, even(u64::from(w) * u64::from(in_h) / u64::from(in_w))),
        (None, Some(h)) if in_h > 0 => (even(u64::from(h) * u64::from(in_w) / u64::from(in_h)), h),
        _ => (even(u64::from(in_w)), even(u64::from(in_h))),
    }
}

/// Opens the requested hardware encoder if any, falling back to libx264 with a warning.
fn open_encoder(
    time_base: Rational,
    fps: Rational,
    width: u32,
    height: u32,
    settings: &VideoEncoding,
    threads: usize,
    warnings: &mut Vec<String>,
) -> Result<(encoder::video::Encoder, String), ffmpeg_next::Error> {
    if let Some(name) = settings.encoder.as_deref().filter(|n| *n != "libx264") {
        match configure(name, time_base, fps, width, height, settings, threads) {
            Ok(opened) => return Ok((opened, name.to_owned())),
            Err(e) => warnings.push(format!("encoder {name} could not be opened ({e}); using libx264")),
        }
    }
    Ok((configure("libx264", time_base, fps, width, height, settings, threads)?, "libx264".to_owned()))
}

fn configure(
    name: &str,
    time_base: Rational,
    fps: Rational,
    width: u32,
    height: u32,
    settings: &VideoEncoding,
    threads: usize,
) -> Result<encoder::video::Encoder, ffmpeg_next::Error> {
    let codec = encoder::find_by_name(name).ok_or(ffmpeg_next::Error::EncoderNotFound)?;
    let mut ctx = codec::context::Context::new_with_codec(codec);
    ctx.set_threading(codec::threading::Config::count(threads));
    let mut enc = ctx.encoder().video()?;
    enc.set_width(width);
    enc.set_height(height);
    enc.set_format(Pixel::YUV420P);
    enc.set_time_base(time_base);
    // x264's rate control and VUI take the frame rate from here; left unset it would use 1/time_base.
    enc.set_frame_rate(Some(fps));
    let gop = (f64::from(fps) * f64::from(settings.gop_seconds)).round().max(1.0) as u32;
    enc.set_gop(gop);
    enc.set_max_b_frames(0);
    // FLV carries SPS/PPS once in its sequence header, not in every keyframe.
    enc.set_flags(codec::Flags::GLOBAL_HEADER);
    let mut options = Dictionary::new();
    match settings.rate {
        RateControl::Crf(crf) if name == "libx264" => options.set("crf", &crf.to_string()),
        RateControl::Crf(_) => {}
        RateControl::Bitrate(kbps) => {
            let bps = kbps as usize * 1000;
            enc.set_bit_rate(bps);
            enc.set_max_bit_rate(bps);
            options.set("bufsize", &bps.to_string());
        }
    }
    if name == "libx264" {
        options.set("preset", &settings.preset);
        if let Some(tune) = &settings.tune {
            options.set("tune", tune);
        }
        // Keyframes exactly every GOP, so a new viewer's wait is bounded.
        options.set("sc_threshold", "0");
    }
    if let Some(profile) = &settings.profile {
        options.set("profile", profile);
    }
    enc.open_with(options)
}

#[cfg(test)]
mod tests {
    use super::output_size;

    #[test]
    fn sizes_keep_aspect_and_stay_even() {
        assert_eq!(output_size(1920, 1080, None, None), (1920, 1080));
        assert_eq!(output_size(1920, 1080, Some(1280), None), (1280, 720));
        assert_eq!(output_size(1920, 1080, None, Some(360)), (640, 360));
        assert_eq!(output_size(704, 576, Some(640), None), (640, 522));
        assert_eq!(output_size(641, 481, None, None), (640, 480));
        assert_eq!(output_size(1280, 720, Some(320), Some(240)), (320, 240));
    }
}
