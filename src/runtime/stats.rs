//! What the supervisor reports: the rates derived from a worker's counters over a sliding window, and the
//! serializable status of a camera.
//!
//! Workers only increment atomics on the hot path ([`crate::model::Counters`]); the supervisor samples them
//! once a second and turns the differences into frame rates and bitrates ([`RateWindow`]), so a worker blocked
//! in a read still gets its rates refreshed (they fall to zero, which is the truth).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::{CameraId, SessionInfo, StreamSpec, Totals};

/// Rates over the sliding window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rates {
    /// Video packets per second read from the camera.
    pub fps_in: f64,
    /// Video frames per second written to the output.
    pub fps_out: f64,
    /// Output bitrate in kbit/s.
    pub bitrate_kbps: f64,
    /// Median latency of video packets through camgate (read from the camera → written to the outputs), in
    /// milliseconds; `None` without packets in the window.
    #[serde(default)]
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    #[serde(default)]
    pub latency_p99_ms: Option<f64>,
}

/// Turns periodic [`Totals`] samples into [`Rates`] over the last `window`.
#[derive(Debug)]
pub struct RateWindow {
    window: Duration,
    samples: VecDeque<(Instant, Totals)>,
}

impl RateWindow {
    /// A window of the given length; rates are computed between the oldest sample inside it and the newest.
    pub fn new(window: Duration) -> RateWindow {
        RateWindow { window, samples: VecDeque::new() }
    }

    /// Records a sample and returns the rates including it.
    pub fn push(&mut self, at: Instant, totals: Totals) -> Rates {
        self.samples.push_back((at, totals));
        // Keep one sample at or before the window's start, so the window is always fully covered.
        while self.samples.len() > 2 && at.duration_since(self.samples[1].0) >= self.window {
            self.samples.pop_front();
        }
        self.rates()
    }

    /// The rates between the oldest and newest samples (zero before there are two).
    pub fn rates(&self) -> Rates {
        let (Some((t0, a)), Some((t1, b))) = (self.samples.front(), self.samples.back()) else {
            return Rates::default();
        };
        let secs = t1.duration_since(*t0).as_secs_f64();
        if secs <= 0.0 {
            return Rates::default();
        }
        let per_sec = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
        let latency = b.latency.since(&a.latency);
        Rates {
            fps_in: per_sec(a.video_packets_in, b.video_packets_in),
            fps_out: per_sec(a.video_frames_out, b.video_frames_out),
            bitrate_kbps: per_sec(a.bytes_out, b.bytes_out) * 8.0 / 1000.0,
            latency_p50_ms: latency.quantile_ms(0.5),
            latency_p99_ms: latency.quantile_ms(0.99),
        }
    }
}

/// Where a camera's worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// The thread runs and is connecting; no frame has reached the output yet.
    Starting,
    /// Frames are reaching the output.
    Running,
    /// A session failed; the worker waits and tries again (see `last_error`, `retry`).
    Reconnecting,
    /// A stop was requested; the worker is closing its contexts.
    Stopping,
    /// The worker exited after a stop.
    Stopped,
    /// The worker exited on an error (see `last_error`).
    Failed,
    /// A stop was requested but the thread did not exit in time.
    Stuck,
    /// Desired, but no cluster node runs it yet (`last_error` says why).
    Pending,
}

impl WorkerState {
    /// Whether the worker's thread is (still) running.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            WorkerState::Starting
                | WorkerState::Running
                | WorkerState::Reconnecting
                | WorkerState::Stopping
                | WorkerState::Stuck
        )
    }
}

/// Everything known about one camera, as reported by the supervisor.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CameraStatus {
    /// The camera.
    pub id: CameraId,
    /// Its worker's state.
    pub state: WorkerState,
    /// The camera URL, credentials hidden.
    pub input: String,
    /// The RTMP URL or file path, credentials hidden; `None` when the camera only feeds the preview.
    pub output: Option<String>,
    /// Unix time in milliseconds when the worker was started.
    pub started_at_ms: u64,
    /// Seconds since the worker was started.
    pub uptime_secs: f64,
    /// Milliseconds from the start to the first frame written, for the current session.
    pub first_frame_after_ms: Option<u64>,
    /// Rates over the last few seconds.
    pub rates: Rates,
    /// Totals since the worker started.
    pub totals: Totals,
    /// What the current session found and decided.
    pub session: Option<SessionInfo>,
    /// The last error, with FFmpeg's message; credentials hidden.
    pub last_error: Option<String>,
    /// Things that work, but not as asked (encoder fallback, audio dropped …).
    pub warnings: Vec<String>,
    /// Failed sessions since the worker started.
    pub restarts: u32,
    /// While reconnecting: the attempt number and when it is due (Unix milliseconds).
    pub retry: Option<RetryStatus>,
    /// Where the built-in preview plays this camera (`/live/<id>.flv` on camgate's HTTP port), if it is on.
    pub preview_path: Option<String>,
    /// Viewers of the built-in preview now.
    pub preview_viewers: usize,
    /// Preview viewers disconnected so far because they fell too far behind.
    pub preview_viewers_dropped: u64,
    /// Cores the camera's threads used over the last measurement (every few seconds; `None` until measured).
    pub cpu_cores: Option<f64>,
    /// The cluster node that runs the camera (`None` on a single box).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The RTSP status the camera last answered with a failure (401, 404, 461, 503 …), alongside `last_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtsp_status: Option<u16>,
    /// While the camera is away and its outputs show the offline slate: since when (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_slate_since_ms: Option<u64>,
    /// In a cluster: the node that ran the camera before this one took it over (failover or drain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
    /// Viewers of the camera's stream on the RTMP server now, as its `on_play`/`on_stop` hooks reported them
    /// (see [`crate::gateway`]); 0 when no hooks are configured.
    pub viewers: usize,
}

impl CameraStatus {
    /// The status of a camera whose worker is starting now.
    pub(crate) fn new(spec: &StreamSpec, started_at_ms: u64, viewers: usize) -> CameraStatus {
        CameraStatus {
            id: spec.id.clone(),
            state: WorkerState::Starting,
            input: spec.input.redacted(),
            output: spec.output.as_ref().map(|o| o.redacted_for(&spec.id)),
            started_at_ms,
            uptime_secs: 0.0,
            first_frame_after_ms: None,
            rates: Rates::default(),
            totals: Totals::default(),
            session: None,
            last_error: None,
            warnings: Vec::new(),
            restarts: 0,
            retry: None,
            preview_path: spec.preview.then(|| format!("/live/{}.flv", spec.id)),
            preview_viewers: 0,
            preview_viewers_dropped: 0,
            cpu_cores: None,
            node: None,
            rtsp_status: None,
            offline_slate_since_ms: None,
            moved_from: None,
            viewers,
        }
    }
}

/// Viewers per camera as an outside source (the RTMP server's hooks) reports them, shared between whoever
/// counts (the on-demand registry) and the supervisor, which copies them into each [`CameraStatus`].
#[derive(Debug, Default)]
pub struct ViewerCounts(std::sync::RwLock<std::collections::HashMap<CameraId, usize>>);

impl ViewerCounts {
    /// Sets camera `id`'s count; 0 forgets it.
    pub fn set(&self, id: &CameraId, viewers: usize) {
        let mut counts = self.0.write().unwrap_or_else(|e| e.into_inner());
        if viewers == 0 {
            counts.remove(id);
        } else {
            counts.insert(id.clone(), viewers);
        }
    }

    /// Camera `id`'s count.
    pub fn get(&self, id: &CameraId) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).get(id).copied().unwrap_or(0)
    }
}

/// A pending reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RetryStatus {
    /// 1 for the first retry after a failure.
    pub attempt: u32,
    /// When the attempt is due, Unix time in milliseconds.
    pub at_ms: u64,
}

/// A change the supervisor announces to subscribers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A camera's status changed (state change or a stats refresh).
    Status(Box<CameraStatus>),
    /// A camera was removed after it stopped.
    Removed {
        /// The camera.
        id: CameraId,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(video_in: u64, video_out: u64, bytes: u64) -> Totals {
        Totals { video_packets_in: video_in, video_frames_out: video_out, bytes_out: bytes, ..Totals::default() }
    }

    #[test]
    fn rates_need_two_samples() {
        let mut w = RateWindow::new(Duration::from_secs(5));
        assert_eq!(w.push(Instant::now(), totals(10, 10, 1000)), Rates::default());
    }

    #[test]
    fn rates_over_the_window() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(Duration::from_secs(2));
        w.push(t0, totals(0, 0, 0));
        w.push(t0 + Duration::from_secs(1), totals(25, 24, 125_000));
        let r = w.push(t0 + Duration::from_secs(2), totals(50, 49, 250_000));
        assert_eq!(r.fps_in, 25.0);
        assert_eq!(r.fps_out, 24.5);
        assert_eq!(r.bitrate_kbps, 1000.0);
    }

    #[test]
    fn old_samples_leave_the_window() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(Duration::from_secs(2));
        // 100 fps for 10 s, then a stall: after the window passes the stall, the rate is 0.
        for s in 0..=10 {
            w.push(t0 + Duration::from_secs(s), totals(s * 100, s * 100, 0));
        }
        assert_eq!(w.rates().fps_in, 100.0);
        for s in 11..=13 {
            w.push(t0 + Duration::from_secs(s), totals(1000, 1000, 0));
        }
        assert_eq!(w.rates().fps_in, 0.0);
        assert!(w.samples.len() <= 4);
    }
}
