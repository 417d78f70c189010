//! The audio leg: AAC passed through, or any codec (G.711 A-law/µ-law, PCM, AAC …) decoded → resampled to the
//! AAC encoder's planar float at the output rate → cut into exactly `frame_size` samples → encoded to AAC.
//!
//! Resampling and re-chunking run in a small libavfilter graph (`abuffer → [aresample] → abuffersink` with a
//! fixed frame size), which is FFmpeg's own tested FIFO rather than a hand-written one.

use ffmpeg_next::codec::{self, Id};
use ffmpeg_next::format::stream::Stream;
use ffmpeg_next::format::{Sample, sample};
use ffmpeg_next::util::option::Settable;
use ffmpeg_next::{Packet, Rational, Rescale, decoder, encoder, filter, frame};

use super::channel_layout;
use super::timestamps::TimestampGuard;
use crate::model::{AAC_SAMPLE_RATES, AudioEncoding, AudioFormat, AudioMode, Stage};

/// What to do with the camera's audio.
pub enum AudioPath {
    /// AAC packets go to the muxer as they are.
    Copy {
        /// The input stream's parameters, for the output stream.
        parameters: codec::Parameters,
    },
    /// Packets are decoded, resampled and encoded to AAC.
    Transcode(Box<AudioTranscoder>),
}

/// What setting up the audio leg decided.
pub struct AudioSetup {
    /// The path.
    pub path: AudioPath,
    /// `Copy` or `Aac`.
    pub mode: AudioMode,
    /// The camera's audio.
    pub input: AudioFormat,
    /// What is sent.
    pub output: AudioFormat,
    /// Whether silence of the output's format can stand in for missing audio (AAC-LC: what camgate's own
    /// encoder makes, and what most cameras send; not HE-AAC, whose frames silence of LC would not match).
    pub silence_fits: bool,
}

/// Decoder, resampling graph and AAC encoder.
pub struct AudioTranscoder {
    decoder: decoder::Audio,
    input_time_base: Rational,
    /// Built from the first decoded frame: decoders only know their exact output format once they decode.
    graph: Option<filter::Graph>,
    encoder: encoder::audio::Encoder,
    guard: TimestampGuard,
    decoded: frame::Audio,
    resampled: frame::Audio,
    encoded: Packet,
}

type Emit<'a> = dyn FnMut(&mut Packet) -> Result<(), super::Halt> + 'a;

impl AudioSetup {
    /// Prepares the audio path for `stream` in `mode` (`Auto` resolved here). Errors carry FFmpeg's message.
    pub fn new(stream: &Stream, mode: AudioMode, settings: &AudioEncoding) -> Result<AudioSetup, String> {
        let parameters = stream.parameters();
        let codec_id = parameters.id();
        let codec_name = || decoder::find(codec_id).map_or_else(|| format!("{codec_id:?}"), |c| c.name().to_owned());
        let mode = match mode {
            AudioMode::Auto if codec_id == Id::AAC => AudioMode::Copy,
            AudioMode::Auto => AudioMode::Aac,
            other => other,
        };
        if mode == AudioMode::Copy {
            if codec_id != Id::AAC {
                return Err(format!("audio mode copy needs AAC, the camera sends {}", codec_name()));
            }
            // Copied audio needs no decoder, only its format for the report, which probing already put in the
            // stream's parameters. Opening an AAC decoder to read it zero-filled about 1.3 MiB per session (see
            // `silence::silent_frame` for why that matters when many cameras start at once). Only when probing
            // left the format out does a decoder find it.
            let (sample_rate, channels) = match rate_and_channels(&parameters) {
                Some(format) => format,
                None => open_decoder(&parameters).map(|d| (d.rate(), d.channels()))?,
            };
            let input = AudioFormat { codec: codec_name(), sample_rate, channels };
            let silence_fits = is_aac_lc(&parameters);
            return Ok(AudioSetup {
                path: AudioPath::Copy { parameters },
                mode,
                output: input.clone(),
                input,
                silence_fits,
            });
        }
        let decoder = open_decoder(&parameters)?;
        let input = AudioFormat { codec: codec_name(), sample_rate: decoder.rate(), channels: decoder.channels() };
        let rate = settings.sample_rate.unwrap_or_else(|| output_rate(decoder.rate()));
        let layout = channel_layout::for_output(i32::from(decoder.channels()));
        let encoder = open_encoder(rate, layout, settings.bitrate_kbps)
            .map_err(|e| format!("cannot open the AAC encoder: {e}"))?;
        let output = AudioFormat { codec: "aac".into(), sample_rate: rate, channels: layout.channels() as u16 };
        let input_time_base = stream.time_base();
        let per_second = i64::from(input_time_base.denominator()) / i64::from(input_time_base.numerator().max(1));
        Ok(AudioSetup {
            path: AudioPath::Transcode(Box::new(AudioTranscoder {
                decoder,
                input_time_base,
                graph: None,
                encoder,
                guard: TimestampGuard::new(10 * per_second, 1),
                decoded: frame::Audio::empty(),
                resampled: frame::Audio::empty(),
                encoded: Packet::empty(),
            })),
            mode,
            input,
            output,
            silence_fits: true,
        })
    }
}

impl AudioTranscoder {
    /// The encoder's parameters, for the output stream.
    pub fn parameters(&self) -> codec::Parameters {
        codec::Parameters::from(&self.encoder)
    }

    /// The time base of the packets handed to `emit`.
    pub fn time_base(&self) -> Rational {
        self.encoder.time_base()
    }

    /// Jumps in the decoded frames' timestamps re-based before the encoder so far.
    pub fn timestamp_discontinuities(&self) -> u64 {
        self.guard.discontinuities()
    }

    /// Feeds one packet. Returns the number of decoded frames, or `None` if the decoder rejected the packet.
    pub fn decode(&mut self, packet: &Packet, emit: &mut Emit<'_>) -> Result<Option<u64>, super::Halt> {
        if self.decoder.send_packet(packet).is_err() {
            return Ok(None);
        }
        self.drain_decoder(emit).map(Some)
    }

    /// Drains decoder, graph and encoder at the end of a session.
    pub fn flush(&mut self, emit: &mut Emit<'_>) -> Result<(), super::Halt> {
        let _ = self.decoder.send_eof();
        self.drain_decoder(emit)?;
        if let Some(graph) = self.graph.as_mut()
            && let Some(mut source) = graph.get("in")
        {
            let _ = source.source().flush();
        }
        self.drain_graph(emit)?;
        let _ = self.encoder.send_eof();
        self.drain_encoder(emit)
    }

    fn drain_decoder(&mut self, emit: &mut Emit<'_>) -> Result<u64, super::Halt> {
        let mut frames = 0;
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Other { errno: ffmpeg_next::error::EAGAIN }) | Err(ffmpeg_next::Error::Eof) => {
                    return Ok(frames);
                }
                Err(_) => return Ok(frames),
            }
            frames += 1;
            let pts = self.decoded.timestamp().or(self.decoded.pts());
            let duration = self.decoded.samples() as i64 * i64::from(self.input_time_base.denominator())
                / (i64::from(self.decoded.rate().max(1)) * i64::from(self.input_time_base.numerator().max(1)));
            let pts = self.guard.repair(pts, pts, duration).pts;
            self.decoded.set_pts(Some(pts));
            if self.graph.is_none() {
                self.graph = Some(self.build_graph().map_err(|e| super::Halt::ffmpeg(Stage::Audio, e))?);
            }
            let graph = self.graph.as_mut().expect("graph built just above");
            graph
                .get("in")
                .expect("the graph has an 'in' filter")
                .source()
                .add(&self.decoded)
                .map_err(|e| super::Halt::ffmpeg(Stage::Audio, e))?;
            self.drain_graph(emit)?;
        }
    }

    fn drain_graph(&mut self, emit: &mut Emit<'_>) -> Result<(), super::Halt> {
        let Some(graph) = self.graph.as_mut() else { return Ok(()) };
        let mut sink = graph.get("out").expect("the graph has an 'out' filter");
        let sink_time_base = sink.sink().time_base();
        loop {
            match sink.sink().frame(&mut self.resampled) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Other { errno: ffmpeg_next::error::EAGAIN }) | Err(ffmpeg_next::Error::Eof) => {
                    return Ok(());
                }
                Err(e) => return Err(super::Halt::ffmpeg(Stage::Audio, e)),
            }
            let pts = self.resampled.pts().map(|p| p.rescale(sink_time_base, self.encoder.time_base()));
            self.resampled.set_pts(pts);
            self.encoder.send_frame(&self.resampled).map_err(|e| super::Halt::ffmpeg(Stage::Audio, e))?;
            self.drain_encoder(emit)?;
        }
    }

    fn drain_encoder(&mut self, emit: &mut Emit<'_>) -> Result<(), super::Halt> {
        loop {
            match self.encoder.receive_packet(&mut self.encoded) {
                Ok(()) => emit(&mut self.encoded)?,
                Err(ffmpeg_next::Error::Other { errno: ffmpeg_next::error::EAGAIN }) | Err(ffmpeg_next::Error::Eof) => {
                    return Ok(());
                }
                Err(e) => return Err(super::Halt::ffmpeg(Stage::Audio, e)),
            }
        }
    }

    fn build_graph(&self) -> Result<filter::Graph, ffmpeg_next::Error> {
        let frame = &self.decoded;
        let layout = {
            let layout = frame.channel_layout();
            if layout.is_empty() { channel_layout::of_decoder(&self.decoder) } else { layout }
        };
        let args = format!(
            "time_base={}/{}:sample_rate={}:sample_fmt={}:channel_layout={}",
            self.input_time_base.numerator(),
            self.input_time_base.denominator(),
            frame.rate(),
            frame.format().name(),
            channel_layout::filter_arg(&layout),
        );
        let mut graph = filter::Graph::new();
        graph.add(&filter::find("abuffer").ok_or(ffmpeg_next::Error::FilterNotFound)?, "in", &args)?;
        graph.add(&filter::find("abuffersink").ok_or(ffmpeg_next::Error::FilterNotFound)?, "out", "")?;
        {
            let mut out = graph.get("out").expect("just added");
            out.set_sample_format(self.encoder.format());
            out.set_channel_layout(self.encoder.channel_layout());
            // Not `set_sample_rate`: ffmpeg-next writes that list as one 64-bit value, which the sink reads as
            // two C ints, the rate and 0. FFmpeg then resamples to whichever is nearer the input's rate, so
            // 8 kHz G.711 went to 0 Hz (and its audio was dropped) for any chosen rate above 16 kHz. One int.
            let rate = std::ffi::c_int::try_from(self.encoder.rate()).map_err(|_| ffmpeg_next::Error::InvalidData)?;
            Settable::set(&mut out, "sample_rates", &rate)?;
        }
        graph.output("in", 0)?.input("out", 0)?.parse("anull")?;
        graph.validate()?;
        let frame_size = self.encoder.frame_size();
        if frame_size > 0 {
            graph.get("out").expect("just added").sink().set_frame_size(frame_size);
        }
        Ok(graph)
    }
}

/// Opens a decoder for `parameters`, its error in words.
fn open_decoder(parameters: &codec::Parameters) -> Result<decoder::Audio, String> {
    codec::context::Context::from_parameters(parameters.clone())
        .and_then(|ctx| ctx.decoder().audio())
        .map_err(|e| format!("cannot open the audio decoder: {e}"))
}

/// The sample rate and channel count in `parameters`, when both are known.
fn rate_and_channels(parameters: &codec::Parameters) -> Option<(u32, u16)> {
    // SAFETY: `parameters` owns a valid AVCodecParameters; two plain fields are read (`ch_layout` exists in
    // FFmpeg 5.1 and 7, the versions camgate builds against).
    let (rate, channels) =
        unsafe { ((*parameters.as_ptr()).sample_rate, (*parameters.as_ptr()).ch_layout.nb_channels) };
    Some((u32::try_from(rate).ok().filter(|&r| r > 0)?, u16::try_from(channels).ok().filter(|&c| c > 0)?))
}

/// Whether the AAC of `parameters` is AAC-LC, by its AudioSpecificConfig (the first 5 bits are the audio
/// object type, 2 for LC): what the RTSP demuxer fills in, where the profile field often stays unknown.
fn is_aac_lc(parameters: &codec::Parameters) -> bool {
    super::extradata(parameters).first().is_some_and(|config| config >> 3 == 2)
}

/// Keeps AAC rates of 32 kHz and up; lower or odd rates (G.711's 8 kHz) become 48 kHz. An AAC frame is 1024
/// samples, and the encoder holds about one frame back, so audio leaves the encoder two frames after it came
/// in: 43 ms at 48 kHz, 128 ms at 16 kHz. FLV interleaving holds each video packet until audio as late has
/// been written, so that delay is the video's too: a G.711 camera's video packets waited 142–164 ms (p50) at
/// 16 kHz against under 1 ms at 48 kHz, for the same CPU (BENCHMARKS.md, "G.711 cameras: the AAC rate").
fn output_rate(input: u32) -> u32 {
    if input >= 32_000 && AAC_SAMPLE_RATES.contains(&input) { input } else { 48_000 }
}

fn open_encoder(
    rate: u32,
    layout: ffmpeg_next::ChannelLayout,
    bitrate_kbps: u32,
) -> Result<encoder::audio::Encoder, ffmpeg_next::Error> {
    let codec = encoder::find(Id::AAC).ok_or(ffmpeg_next::Error::EncoderNotFound)?;
    let mut enc = codec::context::Context::new_with_codec(codec).encoder().audio()?;
    enc.set_rate(rate as i32);
    channel_layout::set_on_encoder(&mut enc, layout);
    enc.set_format(Sample::F32(sample::Type::Planar));
    enc.set_bit_rate(bitrate_kbps as usize * 1000);
    enc.set_time_base(Rational(1, rate as i32));
    enc.set_flags(codec::Flags::GLOBAL_HEADER);
    enc.open_as(codec)
}

#[cfg(test)]
mod tests {
    use super::output_rate;

    #[test]
    fn low_rates_are_raised() {
        assert_eq!(output_rate(8000), 48_000);
        assert_eq!(output_rate(16_000), 48_000);
        assert_eq!(output_rate(32_000), 32_000);
        assert_eq!(output_rate(44_100), 44_100);
        assert_eq!(output_rate(48_000), 48_000);
        assert_eq!(output_rate(11_025), 48_000);
        assert_eq!(output_rate(47_000), 48_000);
    }
}
