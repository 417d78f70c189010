//! Silence where the camera's audio is missing. An FLV stream that announced an audio track and then carries
//! none — a camera whose audio starts seconds after its video, or stops for a while — makes browser players
//! (flv.js, mpegts.js) wait for audio and stall the picture. So while the video runs ahead of the last audio
//! by more than [`GAP`], silent AAC frames in the output's exact format fill the hole, and the camera's own
//! audio takes over again when it returns (its packets that would overlap the silence already sent are
//! dropped, so audio timestamps only go forward).
//!
//! The silent frame is encoded once per output format in the process, by FFmpeg's AAC encoder with the
//! output's sample rate and channels, and repeated with advancing timestamps: AAC-LC frames of silence decode on
//! their own. Every session with that format shares the one frame ([`silent_frame`]).

use std::sync::Mutex;

use ffmpeg_next::codec::{self, Id};
use ffmpeg_next::format::{Sample, sample};
use ffmpeg_next::{ChannelLayout, Packet, Rational, encoder, frame};

use super::channel_layout;

/// How far the video may run ahead of the last audio before silence fills the gap. Larger than the usual
/// interleaving distance of a camera's two streams, so ordinary jitter never triggers it.
pub const GAP: f64 = 1.0;
/// How far behind the video the filled audio stays, so real audio arriving a little late still fits.
const BEHIND: f64 = 0.2;
/// AAC's frame size.
const SAMPLES: i64 = 1024;
/// Video this far behind the last video seen is the camera's clock jumping back (a reboot, a re-seek).
const JUMP_BACK: f64 = 1.0;
/// Video this far ahead of the audio is not a gap to fill but the two streams' clocks disagreeing.
const MAX_FILL: f64 = 10.0;

/// Fills gaps in one session's audio with silence.
pub struct SilenceFiller {
    frame: Packet,
    rate: i64,
    /// Where the audio sent so far ends, in seconds of the session's timeline; `None` before the first video.
    end: Option<f64>,
    /// The last video time seen.
    last_video: Option<f64>,
    /// Set for good once the camera's clock has jumped: audio and video timelines may then disagree, and
    /// silence placed by the video's clock would land in the middle of the camera's own audio. The output's
    /// timestamp guards repair such a session; the filler stays out of it.
    off: bool,
    /// Silent frames sent.
    pub filled: u64,
}

impl SilenceFiller {
    /// A filler producing AAC-LC at `rate` Hz with `channels` channels.
    pub fn new(rate: u32, channels: u16) -> Result<SilenceFiller, ffmpeg_next::Error> {
        let layout = channel_layout::for_output(i32::from(channels));
        let frame = silent_frame(rate, channels, layout)?;
        Ok(SilenceFiller { frame, rate: i64::from(rate.max(1)), end: None, last_video: None, off: false, filled: 0 })
    }

    /// How long one AAC frame lasts, in seconds.
    pub fn frame_secs(&self) -> f64 {
        SAMPLES as f64 / self.rate as f64
    }

    /// The time base of the packets it emits.
    pub fn time_base(&self) -> Rational {
        Rational(1, self.rate as i32)
    }

    /// The camera's own audio packet at `pts` (seconds) lasting `duration` seconds: `false` if it overlaps the
    /// silence already sent and must be dropped.
    pub fn admit(&mut self, pts: f64, duration: f64) -> bool {
        if self.off {
            return true;
        }
        if let Some(end) = self.end
            && self.filled > 0
            && pts + 1e-3 < end
        {
            return false;
        }
        self.end = Some(self.end.map_or(pts + duration, |end| end.max(pts + duration)));
        true
    }

    /// The video has reached `video` (seconds): emits silent frames until the audio is [`BEHIND`] it, if it
    /// fell more than [`GAP`] behind.
    pub fn fill_to(
        &mut self,
        video: f64,
        emit: &mut dyn FnMut(&mut Packet, Rational) -> Result<(), super::Halt>,
    ) -> Result<(), super::Halt> {
        self.fill(video, GAP, BEHIND, emit)
    }

    /// Silence is all there is (the offline slate): emits silent frames up to `video` (seconds), however
    /// small the gap.
    pub fn fill_all_to(
        &mut self,
        video: f64,
        emit: &mut dyn FnMut(&mut Packet, Rational) -> Result<(), super::Halt>,
    ) -> Result<(), super::Halt> {
        self.fill(video, 0.0, 0.0, emit)
    }

    fn fill(
        &mut self,
        video: f64,
        gap: f64,
        behind: f64,
        emit: &mut dyn FnMut(&mut Packet, Rational) -> Result<(), super::Halt>,
    ) -> Result<(), super::Halt> {
        let jumped = self.last_video.is_some_and(|last| video < last - JUMP_BACK);
        self.last_video = Some(video);
        if jumped || self.end.is_some_and(|end| video - end > MAX_FILL) {
            self.off = true;
        }
        if self.off {
            return Ok(());
        }
        let Some(end) = self.end else {
            // The first video frame: audio is measured from here.
            self.end = Some(video);
            return Ok(());
        };
        if video - end <= gap {
            return Ok(());
        }
        let time_base = self.time_base();
        let mut pts = (end * self.rate as f64).round() as i64;
        let until = ((video - behind) * self.rate as f64).round() as i64;
        while pts + SAMPLES <= until {
            let mut packet = super::share(&self.frame);
            packet.set_pts(Some(pts));
            packet.set_dts(Some(pts));
            packet.set_duration(SAMPLES);
            emit(&mut packet, time_base)?;
            pts += SAMPLES;
            self.filled += 1;
        }
        self.end = Some(pts as f64 / self.rate as f64);
        Ok(())
    }
}

/// Silent frames encoded so far, by sample rate and channel count. A handful of formats in practice; a
/// camera announcing unusual ones cannot grow it past [`MAX_ENCODED`].
static ENCODED: Mutex<Vec<(u32, u16, Packet)>> = Mutex::new(Vec::new());
/// The most output formats whose silent frame is kept.
const MAX_ENCODED: usize = 16;

/// One AAC frame of silence in the output's format, shared with every other session of that format.
///
/// Why shared: making it opens an AAC encoder, whose context and tables are about 1 MiB that glibc maps,
/// zero-fills and unmaps again (blocks that large are not kept in the heap). A session opening did that
/// every time, and with hundreds of cameras starting at once those page faults and unmaps, which serialise
/// the process's threads on its address space, delayed the first frames of cameras already streaming
/// (BENCHMARKS.md, "First frames: the allocator"). The frame's data is reference-counted and never written
/// to, so handing out references to one buffer is safe across threads.
fn silent_frame(rate: u32, channels: u16, layout: ChannelLayout) -> Result<Packet, ffmpeg_next::Error> {
    let known = |encoded: &[(u32, u16, Packet)]| {
        encoded.iter().find(|(r, c, _)| (*r, *c) == (rate, channels)).map(|(_, _, frame)| super::share(frame))
    };
    if let Some(frame) = known(&ENCODED.lock().unwrap_or_else(|e| e.into_inner())) {
        return Ok(frame);
    }
    // Encoded outside the lock: two sessions racing may both encode, and the first to finish is kept.
    let frame = encode_silent_frame(rate, layout)?;
    let mut encoded = ENCODED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(frame) = known(&encoded) {
        return Ok(frame);
    }
    if encoded.len() < MAX_ENCODED {
        encoded.push((rate, channels, super::share(&frame)));
    }
    Ok(frame)
}

/// Encodes one AAC frame of silence with the output's settings.
fn encode_silent_frame(rate: u32, layout: ChannelLayout) -> Result<Packet, ffmpeg_next::Error> {
    let codec = encoder::find(Id::AAC).ok_or(ffmpeg_next::Error::EncoderNotFound)?;
    let mut enc = codec::context::Context::new_with_codec(codec).encoder().audio()?;
    enc.set_rate(rate as i32);
    channel_layout::set_on_encoder(&mut enc, layout);
    enc.set_format(Sample::F32(sample::Type::Planar));
    enc.set_time_base(Rational(1, rate as i32));
    enc.set_flags(codec::Flags::GLOBAL_HEADER);
    let mut enc = enc.open_as(codec)?;
    let mut silence = frame::Audio::new(Sample::F32(sample::Type::Planar), SAMPLES as usize, layout);
    silence.set_rate(rate);
    for plane in 0..silence.planes() {
        silence.data_mut(plane).fill(0);
    }
    let mut packet = Packet::empty();
    // The encoder holds the first frames back (priming): feed silence until a frame of it comes out.
    for n in 0..8 {
        silence.set_pts(Some(n * SAMPLES));
        enc.send_frame(&silence)?;
        match enc.receive_packet(&mut packet) {
            Ok(()) => return Ok(packet),
            Err(ffmpeg_next::Error::Other { errno: ffmpeg_next::error::EAGAIN }) => {}
            Err(e) => return Err(e),
        }
    }
    enc.send_eof()?;
    enc.receive_packet(&mut packet)?;
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_only_real_gaps_and_never_overlaps() {
        crate::pipeline::init();
        let mut filler = SilenceFiller::new(48_000, 1).expect("FFmpeg's AAC encoder");
        let mut sent = Vec::new();
        let mut emit = |p: &mut Packet, tb: Rational| {
            sent.push(p.pts().unwrap() as f64 * f64::from(tb));
            Ok(())
        };
        filler.fill_to(10.0, &mut emit).unwrap();
        assert!(filler.admit(10.0, 0.02), "audio right after the first video");
        filler.fill_to(10.5, &mut emit).unwrap();
        assert_eq!(filler.filled, 0, "half a second of lag is jitter, not a gap");
        // Audio stops; the video runs on for three seconds.
        filler.fill_to(13.0, &mut emit).unwrap();
        assert!(filler.filled > 0);
        let last = *sent.last().unwrap();
        assert!(last > 12.5 && last < 13.0, "filled to just behind the video: {last}");
        assert!(sent.windows(2).all(|w| w[1] > w[0]), "timestamps go forward");
        // The camera's audio comes back: packets inside the silence already sent are dropped, later ones pass.
        assert!(!filler.admit(12.0, 0.02));
        assert!(filler.admit(13.0, 0.02));
    }

    #[test]
    fn a_camera_clock_jump_turns_the_filler_off_for_the_session() {
        crate::pipeline::init();
        let mut filler = SilenceFiller::new(48_000, 1).expect("FFmpeg's AAC encoder");
        let mut emit = |_: &mut Packet, _: Rational| Ok(());
        filler.fill_to(0.0, &mut emit).unwrap();
        filler.fill_to(5.0, &mut emit).unwrap();
        let filled = filler.filled;
        assert!(filled > 0, "a 5 s gap was filled");
        // The camera re-seeks to 0: its audio there is admitted, and no more silence is made.
        filler.fill_to(0.2, &mut emit).unwrap();
        assert!(filler.admit(0.1, 0.02));
        filler.fill_to(4.0, &mut emit).unwrap();
        assert_eq!(filler.filled, filled);
        // Nor for video a minute ahead of the audio in another session: clocks disagreeing, not a gap.
        let mut other = SilenceFiller::new(48_000, 1).expect("FFmpeg's AAC encoder");
        other.fill_to(0.0, &mut emit).unwrap();
        other.fill_to(60.0, &mut emit).unwrap();
        assert_eq!(other.filled, 0);
    }

    #[test]
    fn sessions_of_one_format_share_one_encoded_frame() {
        crate::pipeline::init();
        // 22.05 kHz stereo: a format no other test here uses, so the first filler encodes it.
        let first = SilenceFiller::new(22_050, 2).expect("FFmpeg's AAC encoder");
        let second = SilenceFiller::new(22_050, 2).expect("FFmpeg's AAC encoder");
        assert!(!first.frame.data().is_none_or(<[u8]>::is_empty), "an encoded frame");
        assert_eq!(first.frame.data().map(<[u8]>::as_ptr), second.frame.data().map(<[u8]>::as_ptr), "one buffer");
        let fresh = encode_silent_frame(22_050, channel_layout::for_output(2)).expect("FFmpeg's AAC encoder");
        assert_eq!(first.frame.data(), fresh.data(), "the shared frame is the encoder's");
        // Another format gets a frame of its own.
        let mono = SilenceFiller::new(22_050, 1).expect("FFmpeg's AAC encoder");
        assert_ne!(mono.frame.data().map(<[u8]>::as_ptr), first.frame.data().map(<[u8]>::as_ptr));
    }
}
