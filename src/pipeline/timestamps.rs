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
            Some(last) => (arrival - last).max(0) + self.max_back,
            None => self.max_gap,
        };
        self.last_arrival = Some(arrival);
        self.repair_inner(pts, dts, duration, max_forward)
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
            let dts = last + step;
            self.last_dts = Some(dts);
            return Repaired { pts: dts, dts };
        };
        let mut dts = raw_dts + self.offset;
        if dts > last + max_forward || dts < last - self.max_back {
            self.offset += last + step - dts;
            self.discontinuities += 1;
            dts = last + step;
        } else if dts <= last {
            dts = last + 1;
        }
        let pts = pts.map_or(dts, |p| p + self.offset).max(dts);
        self.last_dts = Some(dts);
        Repaired { pts, dts }
    }
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
