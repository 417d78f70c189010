//! The order an FLV output's packets leave in.
//!
//! FLV carries a camera's audio and video as one sequence of tags, which players expect in decoding-time order,
//! while the camera sends each stream at its own pace. [`Interleaver`] holds packets back until that order is
//! known, by the rules of libavformat's `av_interleaved_write_frame`: a packet leaves once every stream has one
//! waiting (the earliest first), or once the packets waiting span more than `max_delta`, so a stream that has
//! gone quiet holds the other back no longer than that. The packets and their order are libavformat's (a test in
//! `output.rs` compares the two on a recorded camera). Three things differ from handing them to libavformat:
//!
//! - camgate sees when each packet leaves, so a video packet's latency counts its wait here. A video packet
//!   waits when the camera's audio runs behind its video; the test fixture's runs 20 ms ahead, and its packets
//!   rarely wait more than a fraction of a millisecond (BENCHMARKS.md, "Interleaving in camgate's hands");
//! - an output's first packet leaves at once. It is always its first picture (the output drops audio from
//!   before it), so nothing can be due before it. libavformat held it until the camera's next audio packet, and
//!   as the camera counted its first frame as sent once the queue had it, its batched reads began, and the
//!   picture waited out a whole batch (~100 ms) in the queue;
//! - it costs about the same per packet: a packet waiting here moves into a ring buffer allocated once, where
//!   libavformat allocates a list entry per packet, but `av_write_frame` then takes a reference of its own (a
//!   small allocation), where libavformat's queue hands its packet over.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ffmpeg_next::{Packet, Rational};

/// A packet on its way out, with when the camera packet it comes from was read (for the latency histogram).
pub struct Held {
    pub packet: Packet,
    pub read: Option<Instant>,
}

impl Held {
    /// The packet's DTS; one without (never, after the output's timestamp guard) counts as earliest.
    fn dts(&self) -> i64 {
        self.packet.dts().unwrap_or(i64::MIN)
    }
}

/// Per-output packet queues in decoding-time order (see the module's doc).
pub struct Interleaver {
    /// One per output stream, by stream index.
    lanes: Vec<Lane>,
    max_delta_us: i128,
    /// Whether a packet has left yet (the first leaves at once).
    started: bool,
}

struct Lane {
    time_base: Rational,
    waiting: VecDeque<Held>,
}

impl Interleaver {
    /// Queues for streams with these time bases (by stream index); `max_delta` as libavformat's
    /// `max_interleave_delta`.
    pub fn new(time_bases: &[Rational], max_delta: Duration) -> Interleaver {
        Interleaver {
            // A few packets wait at a time, and never more than `max_delta` of a stream: room for half a second
            // of 25 fps video, or of 50 audio packets a second, without growing.
            lanes: time_bases
                .iter()
                .map(|&time_base| Lane { time_base, waiting: VecDeque::with_capacity(32) })
                .collect(),
            max_delta_us: max_delta.as_micros() as i128,
            started: false,
        }
    }

    /// Queues a packet. Every packet carries a DTS (the output's timestamp guard sets one), and each stream's
    /// DTS only increase. A packet of a stream the queue does not know is given back.
    pub fn push(&mut self, held: Held) -> Result<(), Held> {
        match self.lanes.get_mut(held.packet.stream()) {
            Some(lane) => {
                lane.waiting.push_back(held);
                Ok(())
            }
            None => Err(held),
        }
    }

    /// The next packet that may leave now, if any; call until `None` after each [`push`](Self::push).
    pub fn pop_ready(&mut self) -> Option<Held> {
        if !self.started {
            // The output's first packet (see the module's doc).
            return self.pop_earliest();
        }
        let waiting = self.lanes.iter().filter(|lane| !lane.waiting.is_empty()).count();
        if waiting == 0 {
            return None;
        }
        if waiting == self.lanes.len() {
            return self.pop_earliest();
        }
        // A stream has nothing waiting: wait for it unless the queue already spans more than `max_delta`
        // (libavformat measures from the earliest packet to each stream's latest, in microseconds).
        let earliest = self.earliest()?;
        let from = self.lanes[earliest].micros(self.lanes[earliest].waiting.front()?);
        let span =
            self.lanes.iter().filter_map(|lane| lane.waiting.back().map(|last| lane.micros(last) - from)).max()?;
        if span > self.max_delta_us { self.pop_earliest() } else { None }
    }

    /// The earliest packet waiting, whether or not it may leave yet: for draining at the end.
    pub fn pop_earliest(&mut self) -> Option<Held> {
        let lane = self.earliest()?;
        let held = self.lanes[lane].waiting.pop_front();
        self.started |= held.is_some();
        held
    }

    /// The lane whose first packet is due first: lowest DTS, and on a tie the lower stream index, as
    /// libavformat orders them.
    fn earliest(&self) -> Option<usize> {
        let mut best: Option<(usize, &Held)> = None;
        for (index, lane) in self.lanes.iter().enumerate() {
            let Some(first) = lane.waiting.front() else { continue };
            let earlier = match best {
                None => true,
                Some((b, held)) => lane.compare(first, &self.lanes[b], held) == Ordering::Less,
            };
            if earlier {
                best = Some((index, first));
            }
        }
        best.map(|(index, _)| index)
    }
}

impl Lane {
    /// The packet's DTS in microseconds, rounded as `av_rescale_q` rounds.
    fn micros(&self, held: &Held) -> i128 {
        let ts = i128::from(held.dts());
        let num = ts * i128::from(self.time_base.numerator()) * 1_000_000;
        let den = i128::from(self.time_base.denominator().max(1));
        let half = if num < 0 { -den / 2 } else { den / 2 };
        (num + half) / den
    }

    /// How `mine` (a packet of this lane) compares in time with `theirs` (of `other`): exactly, across
    /// time bases, as `av_compare_ts` does.
    fn compare(&self, mine: &Held, other: &Lane, theirs: &Held) -> Ordering {
        let cross = |held: &Held, lane: &Lane, by: &Lane| {
            i128::from(held.dts()) * i128::from(lane.time_base.numerator()) * i128::from(by.time_base.denominator())
        };
        cross(mine, self, other).cmp(&cross(theirs, other, self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(stream: usize, dts: i64) -> Held {
        let mut packet = Packet::empty();
        packet.set_stream(stream);
        packet.set_dts(Some(dts));
        packet.set_pts(Some(dts));
        Held { packet, read: None }
    }

    fn put(queue: &mut Interleaver, stream: usize, dts: i64) {
        assert!(queue.push(packet(stream, dts)).is_ok(), "stream {stream} is one of the queue's");
    }

    fn drain(queue: &mut Interleaver) -> Vec<(usize, i64)> {
        std::iter::from_fn(|| queue.pop_ready()).map(|h| (h.packet.stream(), h.packet.dts().unwrap())).collect()
    }

    fn flv() -> Interleaver {
        Interleaver::new(&[Rational(1, 1000), Rational(1, 1000)], Duration::from_millis(500))
    }

    #[test]
    fn the_first_packet_leaves_at_once_and_later_video_waits_for_audio_at_least_as_late() {
        let mut queue = flv();
        put(&mut queue, 0, 0);
        assert_eq!(drain(&mut queue), [(0, 0)], "nothing can be due before the first picture");
        put(&mut queue, 0, 40);
        put(&mut queue, 0, 80);
        assert_eq!(drain(&mut queue), [], "video waits while no audio is waiting");
        // Audio covering 0–63 ms arrives in one burst: what is due before the video goes first, and the video
        // at 40 ms goes once audio later than it waits.
        for dts in [0, 21, 43, 64] {
            put(&mut queue, 1, dts);
        }
        assert_eq!(drain(&mut queue), [(1, 0), (1, 21), (0, 40), (1, 43), (1, 64)]);
        assert_eq!(drain(&mut queue), [], "the video at 80 ms waits for audio again");
        assert_eq!(queue.pop_earliest().map(|h| h.packet.dts()), Some(Some(80)), "draining at the end takes it");
    }

    #[test]
    fn equal_timestamps_go_in_stream_order() {
        let mut queue = flv();
        put(&mut queue, 0, 0);
        drain(&mut queue);
        put(&mut queue, 1, 40);
        put(&mut queue, 0, 40);
        assert_eq!(drain(&mut queue), [(0, 40)]);
    }

    #[test]
    fn a_stream_gone_quiet_holds_the_other_back_no_longer_than_max_delta() {
        let mut queue = flv();
        put(&mut queue, 0, 0);
        drain(&mut queue);
        let mut left = Vec::new();
        for n in 1..=20 {
            put(&mut queue, 0, n * 40);
            left.extend(drain(&mut queue));
        }
        // 40 … 800 ms waiting: the span passes 500 ms at 580 ms, when the 40 ms packet leaves, and so on.
        assert_eq!(left.first(), Some(&(0, 40)));
        assert_eq!(left.last(), Some(&(0, 800 - 520)));
    }

    #[test]
    fn time_bases_are_compared_exactly() {
        // Video in 90 kHz ticks, audio in 48 kHz samples: 3600 ticks (40 ms) against 1920 samples (40 ms).
        let mut queue = Interleaver::new(&[Rational(1, 90_000), Rational(1, 48_000)], Duration::from_millis(500));
        put(&mut queue, 0, 0);
        drain(&mut queue);
        put(&mut queue, 0, 3600);
        put(&mut queue, 1, 1919);
        put(&mut queue, 1, 1920);
        assert_eq!(drain(&mut queue), [(1, 1919), (0, 3600)]);
    }

    #[test]
    fn a_packet_of_a_stream_the_queue_does_not_know_is_given_back() {
        let mut queue = flv();
        assert!(queue.push(packet(2, 0)).is_err());
        assert!(queue.pop_ready().is_none(), "nothing was queued");
    }
}
