//! What a camera costs, in cores, and what a node can carry: the ground for admission on one box and for
//! placement in a cluster.
//!
//! Before a camera runs its cost is **estimated** from its spec: a copied camera is mostly I/O (a few
//! thousandths of a core, from BENCHMARKS.md's copy runs), a transcoding one is x264's work, which grows with
//! pixels per second (BENCHMARKS.md's 720p25 figures on a busy scene; the synthetic ball is cheaper). When it
//! runs, the **measured** CPU of its threads replaces the estimate (see `runtime::cpu`). A node's capacity is its
//! cores times `cpu_budget`.
//!
//! Auto mode does not know the codec before it connects; it is estimated as a copy (most cameras send H.264),
//! and the measurement corrects it within seconds.

use crate::model::{StreamSpec, VideoMode};

/// Cores a copied camera is assumed to cost before it is measured.
pub const COPY_CORES: f64 = 0.005;
/// Cores a 720p25 transcode is assumed to cost before it is measured (libx264 veryfast on a busy scene).
pub const TRANSCODE_720P25_CORES: f64 = 0.35;
/// The picture assumed for a transcoded camera whose output size is not configured.
const ASSUMED_INPUT: (f64, f64, f64) = (1920.0, 1080.0, 25.0);

/// The estimated cost of `spec`, in cores.
pub fn estimate(spec: &StreamSpec) -> f64 {
    if spec.input.demo().is_some() {
        // The demo camera draws and encodes its own picture.
        let demo = spec.input.demo().expect("checked just above");
        return transcode_cores(f64::from(demo.width), f64::from(demo.height), f64::from(demo.fps));
    }
    match spec.video.mode {
        VideoMode::Copy | VideoMode::Auto => COPY_CORES,
        VideoMode::Transcode => {
            let (w, h, fps) = ASSUMED_INPUT;
            let encoding = &spec.video.encoding;
            let (width, height) = match (encoding.width, encoding.height) {
                (Some(width), Some(height)) => (f64::from(width), f64::from(height)),
                (Some(width), None) => (f64::from(width), f64::from(width) * h / w),
                (None, Some(height)) => (f64::from(height) * w / h, f64::from(height)),
                (None, None) => (w, h),
            };
            transcode_cores(width, height, fps)
        }
    }
}

fn transcode_cores(width: f64, height: f64, fps: f64) -> f64 {
    TRANSCODE_720P25_CORES * (width * height * fps) / (1280.0 * 720.0 * 25.0)
}

/// A node's capacity: `cores` × `budget`.
pub fn capacity(cores: usize, budget: f64) -> f64 {
    cores as f64 * budget
}

/// The cores this machine offers to camgate (the CPUs it may run on).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: VideoMode) -> StreamSpec {
        let mut spec = StreamSpec::new("c", "rtsp://cam/s", "rtmp://srs/live/c").unwrap();
        spec.video.mode = mode;
        spec
    }

    #[test]
    fn copies_are_cheap_and_transcodes_grow_with_pixels() {
        assert_eq!(estimate(&spec(VideoMode::Copy)), COPY_CORES);
        assert_eq!(estimate(&spec(VideoMode::Auto)), COPY_CORES);
        let full = estimate(&spec(VideoMode::Transcode));
        assert!((full - TRANSCODE_720P25_CORES * 2.25).abs() < 1e-9, "1080p is 2.25 × 720p: {full}");
        let mut small = spec(VideoMode::Transcode);
        small.video.encoding.width = Some(640);
        assert!((estimate(&small) - TRANSCODE_720P25_CORES / 4.0).abs() < 1e-9);
        let demo = StreamSpec::preview_only("d", "demo://720p").unwrap();
        assert!((estimate(&demo) - TRANSCODE_720P25_CORES).abs() < 1e-9);
        assert_eq!(capacity(2, 0.9), 1.8);
    }
}
