//! Keeping each output stream's timestamps strictly increasing, whatever the camera sends.
//!
//! Cameras repeat timestamps, go back a little (reordering), or jump (a reboot, an RTSP server re-seeking a
//! shared pipeline, a 32-bit wrap). The FLV muxer refuses a DTS that does not increase and players stall on big
//! jumps, so every packet passes a [`TimestampGuard`] just before the muxer:
//! - a DTS at or slightly below the last one (within `max_back`) is moved to just after it;
//! - a jump back by more than `max_back`, or forward by more than `max_gap`, is a discontinuity: the stream is
//!   re-based so it continues one step after the last packet, and everything after it keeps the new offset.
//!   Going back is held to a much smaller tolerance than going forward: a live source may skip ahead (frames
//!   lost), but time running backwards by more than jitter is always a reset, and squeezing it into 1-tick
//!   steps would pull audio and video apart;
//! - for live sources ([`TimestampGuard::repair_live`]) "forward" is judged against the clock: timestamps that
//!   run ahead of the time that really passed between two packets by more than the jitter tolerance are a
//!   jump, while a real gap (frames lost for two seconds, two seconds passed) is kept as it is;
//! - PTS is shifted with DTS and never left below it.
//!
//! An output's two streams have a guard each, and one move of the camera's clock can reach them differently.
//! Seen at 300 cameras on loaded camera servers: both streams' timestamps moved about 1 s forward in the output's
//! first second; the audio, flowing steadily, made a jump that outran the clock (re-based away), while the
//! video, stalled for as long, made it across a gap the clock allowed (kept). The streams then stayed that far
//! apart: every video packet waited in the interleaving queue for audio behind it (up to the queue's 0.5 s), and
//! the picture was that far from its sound (BENCHMARKS.md, "the latency tail at 300 cameras"). [`realign`] undoes
//! it: when the camera's own timestamps have the two streams closer together than the output has them, the
//! stream left behind takes the other's shift, one jump forward.

/// Per-stream timestamp repair, in the stream's own time base.
#[derive(Debug, Clone)]
pub struct TimestampGuard {
    last_dts: Option<i64>,
    offset: i64,
    max_gap: i64,
    max_back: i64,
    last_arrival: Option<i64>,
    default_step: i64,
    discontinuities: u64,
    /// The last packet's DTS as it came (before the shift), for [`realign`].
    last_raw: Option<i64>,
    /// Whether the next packet's move forward is one [`realign`] made, not to be judged a jump.
    realigned: bool,
}

/// Timestamps after repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repaired {
    /// Presentation timestamp, never below `dts`.
    pub pts: i64,
    /// Decoding timestamp, strictly above the previous one.
    pub dts: i64,
}

impl TimestampGuard {
    /// A guard that treats jumps forward above `max_gap`, or back above a twentieth of it, as discontinuities
    /// and advances by `default_step` where a packet carries no usable timestamp or duration (all in the
    /// stream's time base).
    pub fn new(max_gap: i64, default_step: i64) -> TimestampGuard {
        TimestampGuard {
            last_dts: None,
            offset: 0,
            max_gap,
            max_back: max_gap / 20,
            last_arrival: None,
            default_step: default_step.max(1),
            discontinuities: 0,
            last_raw: None,
            realigned: false,
        }
    }

    /// Whether a packet has passed already.
    pub fn is_started(&self) -> bool {
        self.last_dts.is_some()
    }

    /// How many discontinuities were re-based so far.
    pub fn discontinuities(&self) -> u64 {
        self.discontinuities
    }

    /// Repairs one packet's timestamps. `duration` is the packet's duration if known (0 otherwise).
    pub fn repair(&mut self, pts: Option<i64>, dts: Option<i64>, duration: i64) -> Repaired {
        self.repair_inner(pts, dts, duration, self.max_gap)
    }

    /// Like [`repair`](Self::repair) for a live stream: `arrival` is when the packet arrived, in the same time
    /// base on any fixed origin, and a forward jump is one that outruns the clock.
    pub fn repair_live(&mut self, pts: Option<i64>, dts: Option<i64>, duration: i64, arrival: i64) -> Repaired {
        let max_forward = match self.last_arrival {
            Some(last) => arrival.saturating_sub(last).max(0).saturating_add(self.max_back),
            None => self.max_gap,
        };
        self.last_arrival = Some(arrival);
        self.last_raw = dts.or(pts);
        self.repair_inner(pts, dts, duration, max_forward)
    }

    /// How far the stream's timestamps as they came ran ahead of the clock at its last live packet (raw DTS
    /// minus arrival, in the time base): comparable between two streams timed on the same clock.
    fn raw_lead(&self) -> Option<i64> {
        Some(self.last_raw?.saturating_sub(self.last_arrival?))
    }

    fn repair_inner(&mut self, pts: Option<i64>, dts: Option<i64>, duration: i64, max_forward: i64) -> Repaired {
        let step = if duration > 0 { duration } else { self.default_step };
        let Some(last) = self.last_dts else {
            let dts = dts.or(pts).unwrap_or(0);
            let pts = pts.unwrap_or(dts).max(dts);
            self.last_dts = Some(dts);
            return Repaired { pts, dts };
        };
        let Some(raw_dts) = dts.or(pts) else {
            // No timestamp at all: continue one step on, and let PTS follow.
            let dts = last.saturating_add(step);
            self.last_dts = Some(dts);
            return Repaired { pts: dts, dts };
        };
        // Saturating throughout: a camera's timestamps can be anything.
        let mut dts = raw_dts.saturating_add(self.offset);
        if std::mem::take(&mut self.realigned) {
            // The jump forward `realign` chose: kept, but never a step back.
            dts = dts.max(last.saturating_add(1));
        } else if dts > last.saturating_add(max_forward) || dts < last.saturating_sub(self.max_back) {
            self.offset = self.offset.saturating_add(last.saturating_add(step).saturating_sub(dts));
            self.discontinuities += 1;
            dts = last.saturating_add(step);
        } else if dts <= last {
            dts = last.saturating_add(1);
        }
        let pts = pts.map_or(dts, |p| p.saturating_add(self.offset)).max(dts);
        self.last_dts = Some(dts);
        Repaired { pts, dts }
    }
}

/// Before a live packet of one stream (its DTS as it came, `raw_dts`, at `arrival`) is repaired by `guard`:
/// if the output's other stream, repaired by `other`, is shifted ahead of this one by more than `min_gain`, and
/// taking the same shift would leave the two streams at least `min_gain` closer to how the camera timed them than
/// they are now, this stream takes it — its timestamps jump forward once — and `true` is returned. All in one time
/// base shared by both streams. See the module's documentation for when the shifts differ.
///
/// Only a stream behind is moved, and only forward: timestamps never go back, and a stream that was re-based on
/// its own (a reset of its clock alone) is not pulled back into the other's, since the camera's timestamps put
/// the two far apart there.
pub fn realign(guard: &mut TimestampGuard, other: &TimestampGuard, raw_dts: i64, arrival: i64, min_gain: i64) -> bool {
    // Saturating throughout: a camera's timestamps can be anything.
    let behind = other.offset.saturating_sub(guard.offset);
    let Some(other_lead) = other.raw_lead() else { return false };
    if !guard.is_started() || behind <= min_gain {
        return false;
    }
    // How far this stream runs ahead of the other as the camera timed them, and as the output has them now.
    let as_timed = raw_dts.saturating_sub(arrival).saturating_sub(other_lead);
    let as_written = as_timed.saturating_sub(behind);
    if as_timed.unsigned_abs().saturating_add(min_gain.unsigned_abs()) > as_written.unsigned_abs() {
        return false;
    }
    guard.offset = other.offset;
    guard.realigned = true;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> TimestampGuard {
        // Milliseconds: 10 s gap limit, 40 ms default step (25 fps).
        TimestampGuard::new(10_000, 40)
    }

    fn dts_of(g: &mut TimestampGuard, input: &[i64]) -> Vec<i64> {
        input.iter().map(|&t| g.repair(Some(t), Some(t), 0).dts).collect()
    }

    #[test]
    fn clean_input_passes_unchanged() {
        assert_eq!(dts_of(&mut guard(), &[0, 40, 80, 120]), [0, 40, 80, 120]);
    }

    #[test]
    fn repeats_and_small_steps_back_are_pushed_forward() {
        assert_eq!(dts_of(&mut guard(), &[0, 40, 40, 30, 120]), [0, 40, 41, 42, 120]);
    }

    #[test]
    fn jump_back_is_rebased_and_stays_rebased() {
        let mut g = guard();
        // A shared RTSP pipeline re-seeked to 0 while we were at 60 s.
        let out = dts_of(&mut g, &[60_000, 60_040, 0, 40, 80]);
        assert_eq!(out, [60_000, 60_040, 60_080, 60_120, 60_160]);
        assert_eq!(g.discontinuities(), 1);
    }

    #[test]
    fn a_short_jump_back_is_a_discontinuity_too() {
        // Two seconds back: beyond jitter (0.5 s here), so re-based rather than squeezed into 1 ms steps.
        let mut g = guard();
        assert_eq!(dts_of(&mut g, &[3_000, 3_040, 1_000, 1_040]), [3_000, 3_040, 3_080, 3_120]);
        assert_eq!(g.discontinuities(), 1);
    }

    #[test]
    fn jump_forward_is_rebased() {
        let mut g = guard();
        let out = dts_of(&mut g, &[0, 40, 3_600_000, 3_600_040]);
        assert_eq!(out, [0, 40, 80, 120]);
    }

    #[test]
    fn live_forward_jumps_are_judged_against_the_clock() {
        let mut g = guard();
        // 40 ms apart on the clock, but 2.5 s apart in timestamps: a jump, re-based.
        assert_eq!(g.repair_live(Some(0), Some(0), 0, 0).dts, 0);
        assert_eq!(g.repair_live(Some(40), Some(40), 0, 40).dts, 40);
        assert_eq!(g.repair_live(Some(2_580), Some(2_580), 0, 80).dts, 80);
        // Two seconds of frames really lost: two seconds passed, the gap is kept.
        assert_eq!(g.repair_live(Some(4_620), Some(4_620), 0, 2_120).dts, 2_120);
        // A burst after a network stall: timestamps advance less than the clock, nothing to repair.
        assert_eq!(g.repair_live(Some(4_660), Some(4_660), 0, 5_000).dts, 2_160);
        assert_eq!(g.discontinuities(), 1);
    }

    #[test]
    fn packet_duration_is_the_step_after_a_jump() {
        let mut g = guard();
        g.repair(Some(0), Some(0), 0);
        assert_eq!(g.repair(Some(999_999), Some(999_999), 23).dts, 23);
    }

    #[test]
    fn missing_timestamps_advance_by_one_step() {
        let mut g = guard();
        g.repair(Some(0), Some(0), 0);
        assert_eq!(g.repair(None, None, 0), Repaired { pts: 40, dts: 40 });
        // A packet with only PTS uses it as DTS.
        assert_eq!(g.repair(Some(100), None, 0), Repaired { pts: 100, dts: 100 });
    }

    #[test]
    fn pts_is_shifted_with_dts_and_never_below_it() {
        let mut g = guard();
        g.repair(Some(80), Some(0), 0);
        // B-frame style: PTS below DTS after a repair is lifted to DTS.
        assert_eq!(g.repair(Some(0), Some(0), 0), Repaired { pts: 1, dts: 1 });
        // After a rebase the PTS/DTS distance is kept.
        let r = g.repair(Some(500_080), Some(500_000), 40);
        assert_eq!(r, Repaired { pts: 121, dts: 41 });
    }

    /// One live packet through `realign` and then its guard, as the output does: the DTS written.
    fn live(g: &mut TimestampGuard, other: &TimestampGuard, dts: i64, arrival: i64) -> i64 {
        realign(g, other, dts, arrival, 100);
        g.repair_live(Some(dts), Some(dts), 0, arrival).dts
    }

    #[test]
    fn a_clock_move_both_streams_make_leaves_them_together() {
        // As measured at 300 cameras (ms): audio 35 ms ahead of video; at 239 ms the audio's timestamps move
        // ~1 s forward while it flows (re-based away); the video stalls, then makes the same move after a gap
        // the clock allows (kept), and catches up in a burst.
        let (mut video, mut audio) = (guard(), guard());
        for t in (0..4).map(|n| n * 40) {
            assert_eq!(live(&mut video, &audio, t, t), t);
            assert_eq!(live(&mut audio, &video, t + 35, t), t + 35);
        }
        let audio_raw = |t: i64| 1374 + (t - 239);
        let rebased = live(&mut audio, &video, audio_raw(239), 239);
        assert_eq!((rebased, audio.discontinuities()), (155 + 40, 1), "a jump that outruns the clock is re-based");
        let shift = rebased - audio_raw(239);
        for t in [260, 500, 1000] {
            // The video is still stalled: as timed, the audio now runs far ahead of it, so nothing is moved.
            assert_eq!(live(&mut audio, &video, audio_raw(t), t), audio_raw(t) + shift);
        }
        assert_eq!(live(&mut video, &audio, 1520, 1024), 1520, "the video's move after its gap is kept");
        for (n, t) in (1..=16).map(|n| (n, 1024 + n)) {
            assert_eq!(live(&mut video, &audio, 1520 + n * 40, t), 1520 + n * 40);
        }
        // The next audio packet takes the video's shift: one jump forward, back in step with the video.
        assert_eq!(live(&mut audio, &video, audio_raw(1050), 1050), audio_raw(1050));
        assert_eq!(audio.discontinuities(), 1, "a realignment is not counted as a discontinuity");
        // And stays there.
        assert_eq!(live(&mut audio, &video, 8030, 7000), 8030);
        assert_eq!(live(&mut video, &audio, 8000, 7000), 8000);
    }

    #[test]
    fn a_stream_reset_on_its_own_is_not_pulled_back() {
        // The audio's clock alone goes back 60 s: re-based, which keeps the streams together; the video, now
        // shifted less than the audio, is not moved onto the audio's shift, which would put them 60 s apart.
        let (mut video, mut audio) = (guard(), guard());
        for t in (0..5).map(|n| n * 40) {
            live(&mut video, &audio, 60_000 + t, t);
            live(&mut audio, &video, 60_010 + t, t);
        }
        assert_eq!(live(&mut audio, &video, 10, 200), 60_170 + 40, "re-based: one step after its last");
        for t in (6..20).map(|n| n * 40) {
            assert_eq!(live(&mut video, &audio, 60_000 + t, t), 60_000 + t, "the video is not moved");
            assert_eq!(live(&mut audio, &video, 10 + (t - 200), t), 60_010 + t);
        }
    }

    #[test]
    fn extreme_timestamps_overflow_nothing() {
        // Whatever a camera sends: no arithmetic overflow (a panic in debug builds, a wrap in release ones).
        let (mut video, mut audio) = (guard(), guard());
        video.repair_live(Some(i64::MAX), Some(i64::MAX), 0, 0);
        audio.repair_live(Some(i64::MIN + 1), Some(i64::MIN + 1), 0, 0);
        video.repair_live(Some(i64::MIN + 1), Some(i64::MIN + 1), 0, 40);
        for (raw, arrival) in [(i64::MAX, 80), (i64::MIN + 1, i64::MAX), (0, i64::MIN + 1)] {
            realign(&mut audio, &video, raw, arrival, 100);
            audio.repair_live(Some(raw), Some(raw), i64::MAX, arrival);
            realign(&mut video, &audio, raw, arrival, 100);
            video.repair_live(Some(raw), None, 0, arrival);
            video.repair_live(None, None, i64::MAX, arrival);
        }
    }

    #[test]
    fn shifts_a_little_apart_are_left_alone() {
        // Both streams re-based on their own at a shared jump back, 30 ms apart: no jump for so little.
        let (mut video, mut audio) = (guard(), guard());
        video.repair_live(Some(5_000), Some(5_000), 0, 0);
        audio.repair_live(Some(5_000), Some(5_000), 0, 0);
        video.repair_live(Some(0), Some(0), 0, 40);
        audio.repair_live(Some(30), Some(30), 0, 40);
        assert!(!realign(&mut audio, &video, 60, 60, 100));
        assert!(!realign(&mut video, &audio, 80, 80, 100));
    }

    #[test]
    fn output_is_strictly_increasing_for_any_input() {
        // A cheap deterministic pseudo-random walk with repeats, reversals and jumps.
        let mut g = guard();
        let mut x: i64 = 1;
        let mut t: i64 = 0;
        let mut last = i64::MIN;
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let r = (x >> 33) % 100;
            t += match r {
                0..=69 => 40,
                70..=79 => 0,
                80..=89 => -30,
                90..=94 => 50_000,
                _ => -50_000,
            };
            let out = g.repair(Some(t), Some(t), 0);
            assert!(out.dts > last, "dts {} after {}", out.dts, last);
            assert!(out.pts >= out.dts);
            last = out.dts;
        }
    }
}
