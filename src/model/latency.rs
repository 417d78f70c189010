//! Packet latency through camgate — from the moment a video packet is read from the camera to the moment the
//! muxer of the camera's first output has its (copied or re-encoded) packet, its wait to be interleaved with
//! the audio included — as a fixed-bucket histogram of atomics.
//!
//! The camera thread only increments one bucket per packet (a relaxed atomic add); the supervisor samples the
//! counts with the other counters and derives p50/p99 over its rate window, and `/metrics` exports the
//! cumulative buckets as a Prometheus histogram (`camgate_camera_packet_latency_seconds`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds; one more bucket holds everything above the last.
pub const BOUNDS_US: [u64; 15] =
    [50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000, 1_280_000];
/// Buckets, the overflow bucket included.
pub const BUCKETS: usize = BOUNDS_US.len() + 1;

/// Latency counts a camera thread records into.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    /// Counts one packet that took `latency`.
    #[inline]
    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US.iter().position(|&bound| us <= bound).unwrap_or(BOUNDS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> LatencyCounts {
        LatencyCounts {
            buckets: std::array::from_fn(|n| self.buckets[n].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// Counts per bucket (not cumulative) and the sum of all latencies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LatencyCounts {
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
}

impl LatencyCounts {
    /// Packets counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// What was counted after `earlier` (a sample of the same histogram).
    pub fn since(&self, earlier: &LatencyCounts) -> LatencyCounts {
        LatencyCounts {
            buckets: std::array::from_fn(|n| self.buckets[n].saturating_sub(earlier.buckets[n])),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// The latency below which a share `q` (0–1) of the packets fall, in milliseconds, interpolated linearly
    /// inside its bucket; `None` without packets. Above the last bound it answers that bound: "at least".
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (n, &count) in self.buckets.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let low = if n == 0 { 0 } else { BOUNDS_US[n - 1] };
                let Some(&high) = BOUNDS_US.get(n) else { return Some(low as f64 / 1000.0) };
                let share = (rank - below as f64) / count as f64;
                return Some((low as f64 + share * (high - low) as f64) / 1000.0);
            }
            below += count;
        }
        BOUNDS_US.last().map(|&b| b as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_in_the_right_buckets() {
        let h = LatencyHistogram::default();
        assert_eq!(h.snapshot().quantile_ms(0.5), None);
        for _ in 0..98 {
            h.record(Duration::from_micros(80)); // 50–100 µs
        }
        h.record(Duration::from_millis(3)); // 2–5 ms
        h.record(Duration::from_secs(5)); // overflow
        let counts = h.snapshot();
        assert_eq!(counts.count(), 100);
        let p50 = counts.quantile_ms(0.5).unwrap();
        assert!((0.05..=0.1).contains(&p50), "{p50}");
        let p99 = counts.quantile_ms(0.99).unwrap();
        assert!((2.0..=5.0).contains(&p99), "{p99}");
        assert_eq!(counts.quantile_ms(1.0), Some(1280.0), "the overflow bucket answers its lower bound");
        let later = h.snapshot();
        assert_eq!(later.since(&counts).count(), 0);
    }
}
