//! The FLV muxer: opens the RTMP URL (or `.flv` file) with an interrupt callback, declares the streams, and
//! writes packets with timestamps that start at zero and always increase.

use std::ffi::CString;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ffmpeg_next::format::context::{Output, StreamIo};
use ffmpeg_next::packet::{Mut, Ref};
use ffmpeg_next::util::interrupt::{self, InterruptGuard};
use ffmpeg_next::{Dictionary, Packet, Rational, codec, ffi};
use tracing::info;

use super::interleave::{Held, Interleaver};
use super::interrupt::Interrupter;
use super::rtmp::{Outbox, Publisher, RtmpError};
use super::timestamps::{self, TimestampGuard};
use crate::model::latency::LatencyHistogram;
use crate::model::{Counters, OutputTarget, RtmpWriter};
use crate::preview::{Channel, HubWriter};

/// Which of the (at most two) output streams a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// The H.264 stream.
    Video,
    /// The AAC stream.
    Audio,
}

/// How an output stream gets its codec parameters.
pub enum StreamSource<'a> {
    /// Copied from the input stream (copy mode).
    Copy(&'a codec::Parameters),
    /// Taken from an opened encoder.
    Encoder(codec::Parameters),
}

struct OutStream {
    index: usize,
    time_base: Rational,
    guard: TimestampGuard,
    /// A tenth of a second in `time_base`: how much closer to the camera's timing a realignment must bring the
    /// output's two streams to be worth a jump in one of them (`timestamps::realign`).
    realign_gain: i64,
}

/// An FLV output being written.
pub struct FlvOutput {
    // Field order matters: the context (and its AVIO) must be closed before the callback state is freed.
    ctx: Output,
    _interrupt: InterruptGuard,
    interrupter: Arc<Interrupter>,
    write_timeout: Duration,
    video: Option<OutStream>,
    audio: Option<OutStream>,
    /// Output-time-base timestamp of the first video packet; every packet is shifted by it so the stream
    /// starts at zero, and audio from before it is dropped.
    start: Option<i64>,
    header_written: bool,
    /// How packets are put in order before the muxer: [`Order::Interleaved`] outside tests.
    order: Order,
    /// The queue of [`Order::Interleaved`], made with the header (it needs the muxer's time bases).
    queue: Option<Interleaver>,
    /// The clock live timestamps are checked against.
    opened: Instant,
    /// camgate's RTMP writer's queue, when it publishes: its media may be held (`held_sends`).
    outbox: Option<Outbox>,
    /// When the measured video packets still held in `outbox` were read, and how often the outbox had been
    /// emptied then: their latency runs until they leave.
    held_reads: Vec<Instant>,
    held_since_emptied: u64,
}

/// How an output puts its packets in order before the muxer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// camgate's queue (`interleave.rs`): libavformat's order, with each packet's wait measured and the
    /// first picture sent at once.
    Interleaved,
    /// libavformat's own queue (`av_interleaved_write_frame`), which `Interleaved` replaced; kept for the
    /// comparison test below.
    #[cfg(test)]
    Libavformat,
    /// Straight to the muxer in the order given. Cheapest, but a camera that sends one stream in a burst (after
    /// a re-seek, say) then reaches players with seconds of one stream ahead of the other, which browser
    /// players stall on; the queues bound that to [`MAX_INTERLEAVE_DELTA`]. Kept for the comparison test.
    #[cfg(test)]
    AsGiven,
}

/// How far one stream may run ahead of the other in the queue before it is written anyway: a silent audio
/// track holds video back no longer than this.
const MAX_INTERLEAVE_DELTA: Duration = Duration::from_millis(500);

/// How a packet handed to [`FlvOutput::write`] is measured: when the camera packet it comes from was read,
/// and the camera's counters, where the output counts how long a video packet took until the muxer had it and
/// the timestamp repairs the packet needed. One output per camera measures; writes to the others, and writes
/// of packets that were not just read, pass [`Measure::NONE`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Measure<'a> {
    /// When the camera packet was read (video only; `None` when not known).
    pub read: Option<Instant>,
    /// Where this output counts the latency of the video packets it writes during this call (earlier
    /// packets that leave the queue now included) and the packet's timestamp repairs.
    pub into: Option<&'a Counters>,
}

impl Measure<'_> {
    /// Not measured.
    pub const NONE: Measure<'static> = Measure { read: None, into: None };
}

/// What became of a packet handed to [`FlvOutput::write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written; carries its size in bytes.
    Yes(usize),
    /// Dropped: audio from before the first video frame.
    Dropped,
}

/// Why a write did not happen.
#[derive(Debug)]
pub enum WriteError {
    /// The interrupt callback fired (stop or write timeout).
    Interrupted,
    /// FFmpeg refused.
    Ffmpeg(ffmpeg_next::Error),
}

impl FlvOutput {
    /// Connects to `target` (for RTMP this is the TCP connect, handshake and publish, by `writer`'s client) and
    /// prepares an FLV muxer. Blocking steps give up when `interrupter` fires; the caller arms its deadline.
    pub fn open(
        target: &OutputTarget,
        writer: RtmpWriter,
        interrupter: Arc<Interrupter>,
        write_timeout: Duration,
    ) -> Result<FlvOutput, ffmpeg_next::Error> {
        if writer == RtmpWriter::Buffered && matches!(target, OutputTarget::Rtmp(_)) {
            match Publisher::publish(&target.expose(), &interrupter) {
                Ok(publisher) => return FlvOutput::around_publisher(publisher, interrupter, write_timeout),
                Err(RtmpError::Unsupported(reason)) => {
                    info!(output = %target.redacted(), "camgate's RTMP writer leaves this output to libavformat's: {reason}");
                }
                Err(error) => {
                    if !matches!(error, RtmpError::Interrupted) {
                        let text = error.to_string();
                        super::ffmpeg_log::writer_error(&text);
                    }
                    return Err(error.to_ffmpeg());
                }
            }
        }
        let url = CString::new(target.expose()).map_err(|_| ffmpeg_next::Error::InvalidData)?;
        let mut options = Dictionary::new();
        // Only the protocols the target needs, so an output can never reach anything else.
        options.set(
            "protocol_whitelist",
            match target {
                OutputTarget::Rtmp(_) => "rtmp,rtmps,tcp,tls",
                OutputTarget::File(_) => "file",
            },
        );
        options.set("rw_timeout", &write_timeout.as_micros().to_string());
        let interrupt = interrupt::new(Box::new(interrupter.callback()));
        let mut ps: *mut ffi::AVFormatContext = ptr::null_mut();
        // SAFETY: ffmpeg-next has no output constructor that takes an interrupt callback, so the context is
        // built by hand like `ffmpeg_next::format::output_as_with` does. `ps` is only used after a successful
        // allocation; on failure it is freed here; on success ownership passes to `Output::wrap`, whose drop
        // closes the AVIO and frees the context. The callback's state (`interrupt.guard`) is stored in the
        // returned value after `ctx`, so it outlives every use FFmpeg can make of it.
        let ctx = unsafe {
            let flv = CString::new("flv").expect("no NUL in a literal");
            let ret = ffi::avformat_alloc_output_context2(&mut ps, ptr::null_mut(), flv.as_ptr(), url.as_ptr());
            if ret < 0 || ps.is_null() {
                return Err(ffmpeg_next::Error::from(ret.min(-1)));
            }
            (*ps).interrupt_callback = interrupt.interrupt;
            let mut opts = options.disown();
            let ret = ffi::avio_open2(
                &mut (*ps).pb,
                url.as_ptr(),
                ffi::AVIO_FLAG_WRITE,
                &(*ps).interrupt_callback,
                &mut opts,
            );
            drop(Dictionary::own(opts));
            if ret < 0 {
                ffi::avformat_free_context(ps);
                return Err(ffmpeg_next::Error::from(ret));
            }
            Output::wrap(ps)
        };
        Ok(FlvOutput::around(ctx, interrupt.guard, interrupter, write_timeout))
    }

    fn around(ctx: Output, guard: InterruptGuard, interrupter: Arc<Interrupter>, write_timeout: Duration) -> FlvOutput {
        FlvOutput {
            ctx,
            _interrupt: guard,
            interrupter,
            write_timeout,
            video: None,
            audio: None,
            start: None,
            header_written: false,
            order: Order::Interleaved,
            queue: None,
            opened: Instant::now(),
            outbox: None,
            held_reads: Vec::new(),
            held_since_emptied: 0,
        }
    }

    /// An FLV muxer whose bytes `publisher` sends.
    fn around_publisher(
        publisher: Publisher,
        interrupter: Arc<Interrupter>,
        write_timeout: Duration,
    ) -> Result<FlvOutput, ffmpeg_next::Error> {
        let outbox = publisher.outbox();
        let io = StreamIo::from_write(publisher)?;
        let ctx = ffmpeg_next::format::output_to_stream(io, None, Some("flv"))?;
        // The publisher's waits consult the interrupter themselves; the muxer's callback is kept like every
        // output's.
        let interrupt = interrupt::new(Box::new(interrupter.callback()));
        let mut output = FlvOutput::around(ctx, interrupt.guard, interrupter, write_timeout);
        output.outbox = Some(outbox);
        Ok(output)
    }

    /// An FLV muxer feeding the preview hub's `channel` through a custom AVIO; writes never block.
    pub fn open_preview(
        channel: Arc<Channel>,
        interrupter: Arc<Interrupter>,
        write_timeout: Duration,
    ) -> Result<FlvOutput, ffmpeg_next::Error> {
        let io = StreamIo::from_write(HubWriter::new(channel))?;
        let ctx = ffmpeg_next::format::output_to_stream(io, None, Some("flv"))?;
        // Nothing in a custom AVIO consults the callback, but `FlvOutput` keeps one like every output does.
        let interrupt = interrupt::new(Box::new(interrupter.callback()));
        Ok(FlvOutput::around(ctx, interrupt.guard, interrupter, write_timeout))
    }

    /// Declares a stream; call for video, then audio, before [`write_header`](Self::write_header).
    pub fn add_stream(&mut self, track: Track, source: StreamSource<'_>) -> Result<(), ffmpeg_next::Error> {
        let mut stream = self.ctx.add_stream(None::<ffmpeg_next::Codec>)?;
        match source {
            StreamSource::Copy(parameters) => stream.set_parameters(parameters.clone()),
            StreamSource::Encoder(parameters) => stream.set_parameters(parameters),
        }
        // SAFETY: the stream was just added and its codecpar is allocated; a codec tag copied from the input
        // container could be wrong for FLV, and 0 lets the muxer pick its own.
        unsafe {
            (*stream.parameters().as_mut_ptr()).codec_tag = 0;
        }
        let out = OutStream {
            index: stream.index(),
            time_base: Rational(1, 1000),
            guard: TimestampGuard::new(0, 1),
            realign_gain: 100,
        };
        match track {
            Track::Video => self.video = Some(out),
            Track::Audio => self.audio = Some(out),
        }
        Ok(())
    }

    /// Writes the FLV header (and, for RTMP, the metadata and codec headers). Must precede any packet.
    pub fn write_header(&mut self) -> Result<(), WriteError> {
        let mut options = Dictionary::new();
        // For libavformat's own queue (tests only; see `Order`).
        options.set("max_interleave_delta", &MAX_INTERLEAVE_DELTA.as_micros().to_string());
        // Each packet leaves at once, for RTMP and the preview alike: latency matters more than syscalls.
        options.set("flush_packets", "1");
        self.interrupter.arm(self.write_timeout);
        self.ctx.write_header_with(options).map_err(map_write_error)?;
        for out in [&mut self.video, &mut self.audio].into_iter().flatten() {
            // The muxer may have changed the time base; read it back now (FLV: milliseconds).
            out.time_base = self.ctx.stream(out.index).map_or(out.time_base, |s| s.time_base());
            let per_second = i64::from(out.time_base.denominator()) / i64::from(out.time_base.numerator().max(1));
            out.guard = TimestampGuard::new(10 * per_second, (per_second / 50).max(1));
            out.realign_gain = (per_second / 10).max(1);
        }
        let time_bases: Vec<Rational> = self.ctx.streams().map(|stream| stream.time_base()).collect();
        self.queue = Some(Interleaver::new(&time_bases, MAX_INTERLEAVE_DELTA));
        self.header_written = true;
        Ok(())
    }

    /// Rescales `packet` from `from` to the output time base, shifts it so the stream starts at 0, repairs
    /// its timestamps, and writes it — once it is its turn (see `interleave.rs`): the packet is taken, and
    /// earlier ones may leave with it.
    pub fn write(
        &mut self,
        track: Track,
        packet: &mut Packet,
        from: Rational,
        measure: Measure<'_>,
    ) -> Result<Written, WriteError> {
        let (out, other) = match track {
            Track::Video => (self.video.as_mut(), self.audio.as_ref()),
            Track::Audio => (self.audio.as_mut(), self.video.as_ref()),
        };
        let Some(out) = out else { return Ok(Written::Dropped) };
        // Checked before every packet: a node whose cluster lease may have expired writes nothing more.
        if self.interrupter.check() == Some(super::interrupt::Interruption::Fenced) {
            return Err(WriteError::Interrupted);
        }
        packet.rescale_ts(from, out.time_base);
        let raw_dts = packet.dts().or(packet.pts());
        let start = match (self.start, track, raw_dts) {
            (Some(start), _, _) => Some(start),
            (None, Track::Video, Some(dts)) => {
                // After an untimed first packet at 0, this one goes one frame later.
                let behind = if out.guard.is_started() { frame_duration(packet, out.time_base) } else { 0 };
                Some(*self.start.insert(dts.saturating_sub(behind)))
            }
            // RTSP often cannot time the very first packet (the keyframe) before RTCP has been seen: write it
            // at 0 and let the next timed packet set the start.
            (None, Track::Video, None) => None,
            // Audio before the first timed video packet would start the stream without a picture.
            (None, Track::Audio, _) => return Ok(Written::Dropped),
        };
        if track == Track::Audio && raw_dts.zip(start).is_some_and(|(dts, start)| dts < start) {
            return Ok(Written::Dropped);
        }
        let start = start.unwrap_or(0);
        let arrival = self.opened.elapsed().as_secs_f64() * f64::from(out.time_base.invert());
        if let (Some(other), Some(raw)) = (other.filter(|o| o.time_base == out.time_base), raw_dts)
            && timestamps::realign(
                &mut out.guard,
                &other.guard,
                raw.saturating_sub(start),
                arrival as i64,
                out.realign_gain,
            )
        {
            info!(
                camera = %super::ffmpeg_log::thread_camera_id(),
                stream = ?track,
                "back in step with the other stream after a clock move of the camera's"
            );
            if let Some(counters) = measure.into {
                Counters::add(&counters.timestamp_realignments, 1);
            }
        }
        let discontinuities = out.guard.discontinuities();
        // Saturating, as the guard is: a camera's timestamps can be anything.
        let repaired = out.guard.repair_live(
            packet.pts().map(|t| t.saturating_sub(start)),
            packet.dts().map(|t| t.saturating_sub(start)),
            packet.duration(),
            arrival as i64,
        );
        if let Some(counters) = measure.into {
            super::count_rebased(counters, out.guard.discontinuities() - discontinuities);
        }
        packet.set_pts(Some(repaired.pts));
        packet.set_dts(Some(repaired.dts));
        packet.set_stream(out.index);
        packet.set_position(-1);
        let size = packet.size();
        self.interrupter.arm(self.write_timeout);
        match self.order {
            Order::Interleaved => {
                let mut packet = std::mem::replace(packet, Packet::empty());
                // SAFETY: `packet` is a valid AVPacket this function owns. A packet that does not own its data
                // (none of FFmpeg's demuxers and encoders make one, but nothing promises it) may point into a
                // buffer its maker reuses, so it gets its own copy before it waits in the queue.
                let ret = unsafe {
                    if (*packet.as_ptr()).buf.is_null() {
                        ffi::av_packet_make_refcounted(packet.as_mut_ptr())
                    } else {
                        0
                    }
                };
                if ret < 0 {
                    return Err(WriteError::Ffmpeg(ffmpeg_next::Error::from(ret)));
                }
                let queue = self.queue.as_mut().ok_or(WriteError::Ffmpeg(ffmpeg_next::Error::InvalidData))?;
                if let Err(held) = queue.push(Held { packet, read: measure.read }) {
                    // Not a stream of this output's: cannot happen, `add_stream` made every index.
                    drop(held);
                    return Ok(Written::Dropped);
                }
                while let Some(held) = self.queue.as_mut().and_then(Interleaver::pop_ready) {
                    self.write_now(held, measure.into.map(|c| &c.latency))?;
                }
            }
            #[cfg(test)]
            Order::Libavformat => packet.write_interleaved(&mut self.ctx).map_err(map_write_error)?,
            #[cfg(test)]
            Order::AsGiven => {
                packet.write(&mut self.ctx).map_err(map_write_error)?;
            }
        }
        Ok(Written::Yes(size))
    }

    /// Hands a packet whose turn it is to the muxer, and counts a measured video packet's latency: until the
    /// muxer has it, or, when the writer holds it (`held_sends`), until it leaves.
    fn write_now(&mut self, held: Held, into: Option<&LatencyHistogram>) -> Result<(), WriteError> {
        if let Some(into) = into {
            self.settle_held(into);
        }
        held.packet.write(&mut self.ctx).map_err(map_write_error)?;
        let video = self.video.as_ref().map(|v| v.index);
        if let (Some(read), Some(into), true) = (held.read, into, video == Some(held.packet.stream())) {
            match self.outbox.as_ref().map(Outbox::progress) {
                Some(progress) if progress.unsent > 0 => {
                    if self.held_reads.is_empty() {
                        self.held_since_emptied = progress.emptied;
                    }
                    self.held_reads.push(read);
                }
                _ => into.record(read.elapsed()),
            }
        }
        Ok(())
    }

    /// Counts the latency of held video packets that have left since: the first time the outbox was emptied
    /// after they were held is when they went (a second emptying since, if any, only makes the figure larger).
    fn settle_held(&mut self, into: &LatencyHistogram) {
        let Some(outbox) = self.outbox.as_ref().filter(|_| !self.held_reads.is_empty()) else { return };
        let progress = outbox.progress();
        if progress.emptied != self.held_since_emptied {
            for read in self.held_reads.drain(..) {
                into.record(progress.emptied_at.saturating_duration_since(read));
            }
        }
    }

    /// Sends what is held and holds no more (`held_sends`): the output goes to a thread that reads no camera.
    pub(crate) fn stop_holding(&self) {
        if let Some(outbox) = &self.outbox {
            outbox.let_go();
        }
    }

    /// camgate's RTMP writer's queue, when this output publishes with it.
    pub(crate) fn outbox(&self) -> Option<&Outbox> {
        self.outbox.as_ref()
    }

    /// The next packets come from a new source (the offline slate, or the camera back after it) whose
    /// timestamps start anywhere: they continue one step after the last ones written, so the stream's
    /// timestamps only go forward.
    pub fn rejoin(&mut self) {
        // The next video packet sets a new start; the guards see its timestamps jump back and re-base them
        // onto the timeline written so far.
        self.start = None;
    }

    /// What interrupts this output's blocking writes.
    pub fn interrupter(&self) -> &Arc<Interrupter> {
        &self.interrupter
    }

    /// The picture size of the video stream (0×0 before it is declared).
    pub fn video_size(&self) -> (u32, u32) {
        let Some(video) = &self.video else { return (0, 0) };
        self.ctx.stream(video.index).map_or((0, 0), |stream| {
            // SAFETY: the stream belongs to this open context; codecpar is allocated for every stream.
            let par = unsafe { &*stream.parameters().as_ptr() };
            (par.width.max(0) as u32, par.height.max(0) as u32)
        })
    }

    /// Flushes interleaving buffers and writes the trailer, with a short deadline of its own that a stop does
    /// not cut short: a recording must stay playable, and an RTMP server should see a clean unpublish.
    pub fn finish(mut self, within: Duration) -> Result<(), WriteError> {
        if !self.header_written {
            return Ok(());
        }
        self.interrupter.finish_within(within);
        while let Some(held) = self.queue.as_mut().and_then(Interleaver::pop_earliest) {
            self.write_now(held, None)?;
        }
        self.ctx.write_trailer().map_err(map_write_error)?;
        match &self.outbox {
            // Held media leaves now, within the finishing deadline.
            Some(outbox) => outbox.send().map_err(|e| map_write_error(e.to_ffmpeg())),
            None => Ok(()),
        }
    }
}

/// The packet's duration, or a 25 fps frame when it has none.
fn frame_duration(packet: &Packet, time_base: Rational) -> i64 {
    if packet.duration() > 0 {
        packet.duration()
    } else {
        i64::from(time_base.denominator()) / (25 * i64::from(time_base.numerator().max(1)))
    }
}

fn map_write_error(e: ffmpeg_next::Error) -> WriteError {
    match e {
        ffmpeg_next::Error::Exit => WriteError::Interrupted,
        other => WriteError::Ffmpeg(other),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use ffmpeg_next::media;

    use super::*;

    /// One packet as it reads back: stream kind, timestamps, keyframe flag and payload.
    type Seen = (media::Type, Option<i64>, Option<i64>, bool, Vec<u8>);

    fn recording() -> String {
        format!("{}/tests/fixtures/recorded/h264_aac_4s.flv", env!("CARGO_MANIFEST_DIR"))
    }

    fn read_all(path: &str) -> Vec<Seen> {
        let mut input = ffmpeg_next::format::input(path).expect("readable FLV");
        let kinds: Vec<media::Type> = input.streams().map(|s| s.parameters().medium()).collect();
        input
            .packets()
            .map(|(s, p)| (kinds[s.index()], p.pts(), p.dts(), p.is_key(), p.data().unwrap_or_default().to_vec()))
            .collect()
    }

    /// The recording's packets (stream index, packet) in the order `arrival` gives them.
    type Arrival = fn(Vec<(usize, Packet, f64)>) -> Vec<(usize, Packet, f64)>;

    /// As the recording has them (already interleaved).
    fn as_recorded(packets: Vec<(usize, Packet, f64)>) -> Vec<(usize, Packet, f64)> {
        packets
    }

    /// As a camera sends them whose audio lags: audio in bursts of four packets (~85 ms), each 90 ms after its
    /// last packet's time, and the audio of 1.5 s to 2.3 s held up until 2.39 s (so video runs on alone past
    /// the queue's 500 ms bound).
    fn audio_late_in_bursts(packets: Vec<(usize, Packet, f64)>) -> Vec<(usize, Packet, f64)> {
        let audio_times: Vec<f64> = packets.iter().filter(|p| p.0 == 1).map(|p| p.2).collect();
        let mut nth_audio = 0;
        let mut timed: Vec<(f64, (usize, Packet, f64))> = Vec::new();
        for (stream, packet, at) in packets {
            if stream == 0 {
                timed.push((at, (stream, packet, at)));
                continue;
            }
            let burst_end = audio_times[(nth_audio / 4 * 4 + 3).min(audio_times.len() - 1)];
            nth_audio += 1;
            let arrives = if (1.5..2.3).contains(&at) { 2.39 } else { burst_end + 0.09 };
            timed.push((arrives, (stream, packet, at)));
        }
        // Stable: packets arriving together keep their recorded order.
        timed.sort_by(|a, b| a.0.total_cmp(&b.0));
        timed.into_iter().map(|(_, p)| p).collect()
    }

    /// The recording (its video is stream 0, its audio stream 1), and an output into `to` ordered by `order`
    /// with the recording's two streams declared and its header written; the streams' time bases by index.
    fn output_for_recording(
        to: &std::path::Path,
        order: Order,
    ) -> (ffmpeg_next::format::context::Input, FlvOutput, [Rational; 2]) {
        let input = ffmpeg_next::format::input(&recording()).expect("the recording");
        let target: OutputTarget = to.to_str().unwrap().parse().unwrap();
        let interrupter = Interrupter::new(Arc::new(AtomicBool::new(false)));
        let mut output = FlvOutput::open(&target, RtmpWriter::Ffmpeg, interrupter, Duration::from_secs(5)).unwrap();
        output.order = order;
        let mut time_bases = [Rational(0, 1); 2];
        for (stream, track) in input.streams().zip([Track::Video, Track::Audio]) {
            assert_eq!(stream.parameters().medium() == media::Type::Video, track == Track::Video, "video first");
            output.add_stream(track, StreamSource::Copy(&stream.parameters())).unwrap();
            time_bases[stream.index()] = stream.time_base();
        }
        output.write_header().unwrap();
        (input, output, time_bases)
    }

    /// Copies the recording through an `FlvOutput` into `to`, ordered by `order`, the packets arriving as
    /// `arrival` says.
    fn copy_through(to: &std::path::Path, order: Order, arrival: Arrival) {
        let (mut input, mut output, time_bases) = output_for_recording(to, order);
        let packets: Vec<(usize, Packet, f64)> = input
            .packets()
            .map(|(stream, packet)| {
                let at = packet.dts().unwrap_or(0) as f64 * f64::from(stream.time_base());
                (stream.index(), packet, at)
            })
            .collect();
        for (stream, mut packet, _) in arrival(packets) {
            let track = if stream == 0 { Track::Video } else { Track::Audio };
            output.write(track, &mut packet, time_bases[stream], Measure::NONE).unwrap();
        }
        output.finish(Duration::from_secs(5)).unwrap();
    }

    fn of_kind(packets: &[Seen], kind: media::Type) -> Vec<&Seen> {
        packets.iter().filter(|p| p.0 == kind).collect()
    }

    #[test]
    fn writing_straight_to_the_muxer_gives_the_same_packets_as_the_interleaved_path() {
        crate::pipeline::init();
        let dir = tempfile::tempdir().unwrap();
        let (direct, interleaved) = (dir.path().join("direct.flv"), dir.path().join("interleaved.flv"));
        copy_through(&direct, Order::AsGiven, as_recorded);
        copy_through(&interleaved, Order::Interleaved, as_recorded);
        let (direct, interleaved, original) =
            (read_all(direct.to_str().unwrap()), read_all(interleaved.to_str().unwrap()), read_all(&recording()));
        for kind in [media::Type::Video, media::Type::Audio] {
            let (a, b, source) = (of_kind(&direct, kind), of_kind(&interleaved, kind), of_kind(&original, kind));
            assert!(source.len() > 50, "{kind:?}: the recording has packets");
            // Packet for packet: the same payloads, flags and timestamps, in the same order per stream.
            assert_eq!(a.len(), b.len(), "{kind:?}");
            for (n, (x, y)) in a.iter().zip(&b).enumerate() {
                assert_eq!(x, y, "{kind:?} packet {n} differs between the two paths");
            }
            // And the payloads are the camera's: copy mode changes timestamps (re-based to 0), never data.
            let payloads = |p: &[&Seen]| p.iter().map(|s| s.4.clone()).collect::<Vec<_>>();
            let source_payloads = payloads(&source);
            let written = payloads(&a);
            assert!(
                source_payloads.ends_with(&written) || written == source_payloads,
                "{kind:?}: payloads are the recording's ({} read, {} written)",
                source_payloads.len(),
                written.len()
            );
        }
    }

    #[test]
    fn camgates_queue_writes_the_packets_of_libavformats_queue_in_its_order() {
        crate::pipeline::init();
        let dir = tempfile::tempdir().unwrap();
        for (name, arrival) in
            [("as recorded", as_recorded as Arrival), ("audio late, in bursts", audio_late_in_bursts)]
        {
            let (ours, theirs) = (dir.path().join("camgate.flv"), dir.path().join("libavformat.flv"));
            copy_through(&ours, Order::Interleaved, arrival);
            copy_through(&theirs, Order::Libavformat, arrival);
            let (ours, theirs) = (read_all(ours.to_str().unwrap()), read_all(theirs.to_str().unwrap()));
            assert!(ours.len() > 100, "{name}: packets were written");
            // The whole file, both streams together: the same packets in the same order.
            assert_eq!(ours.len(), theirs.len(), "{name}");
            for (n, (x, y)) in ours.iter().zip(&theirs).enumerate() {
                assert_eq!(x, y, "{name}: packet {n} differs between the two queues");
            }
            // And the order is the one players need: decoding time never goes back from one tag to the next,
            // except once where the audio held up overran the 500 ms bound and video went on without it.
            let backsteps = ours.windows(2).filter(|w| w[1].2 < w[0].2).count();
            let expected = if name == "as recorded" { 0 } else { 1 };
            assert_eq!(backsteps, expected, "{name}: tags earlier than the one before");
        }
    }

    #[test]
    fn a_video_packet_is_measured_when_it_leaves_the_queue_not_when_it_is_handed_over() {
        crate::pipeline::init();
        let dir = tempfile::tempdir().unwrap();
        let (mut input, mut output, time_bases) = output_for_recording(&dir.path().join("out.flv"), Order::Interleaved);
        let (mut video, mut audio) = (Vec::new(), Vec::new());
        for (stream, packet) in input.packets() {
            if stream.index() == 0 { video.push(packet) } else { audio.push(packet) }
        }
        let counters = Counters::default();
        let counted = || counters.latency.snapshot().count();
        let seconds = |packet: &Packet, track| {
            packet.dts().unwrap() as f64 * f64::from(time_bases[usize::from(track == Track::Audio)])
        };
        let mut write = |track, packet: &Packet| {
            let time_base = time_bases[usize::from(track == Track::Audio)];
            let measure = Measure { read: Some(Instant::now()), into: Some(&counters) };
            output.write(track, &mut packet.clone(), time_base, measure).unwrap();
        };
        write(Track::Video, &video[0]);
        assert_eq!(counted(), 1, "the first picture leaves at once");
        write(Track::Video, &video[1]);
        write(Track::Video, &video[2]);
        assert_eq!(counted(), 1, "the next pictures wait for audio");
        // Each picture is counted once audio at least as late has come, not before.
        for packet in &audio {
            let before = counted();
            write(Track::Audio, packet);
            let now = seconds(packet, Track::Audio);
            for (picture, count) in [(&video[1], 2), (&video[2], 3)] {
                if before < count && counted() >= count {
                    assert!(now >= seconds(picture, Track::Video), "counted before audio as late had come");
                }
            }
            if counted() == 3 {
                return;
            }
        }
        panic!("the pictures were never counted ({} of 3)", counted());
    }
}
