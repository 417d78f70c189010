//! The camgate side, run in a child process of the bench so that its CPU time and memory are camgate's alone
//! (the servers, readers and ffmpeg processes of the bench live elsewhere).
//!
//! The child talks to its parent on stdout, one line per event: `STARTED <unix µs of each start call>`,
//! `WINDOW_START`, `WINDOW_END`, then `RESULT <json>`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use camgate::model::latency::LatencyCounts;
use camgate::{CameraId, RtmpWriter, RtspReader, StreamSpec, Supervisor, SupervisorConfig, VideoMode, WorkerState};
use serde::{Deserialize, Serialize};

use crate::proxy::FreezableProxy;
use crate::sys::{self, Summary};

/// What the parent asks the child to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildConfig {
    pub rtsp_urls: Vec<String>,
    pub rtmp_prefix: String,
    pub cameras: usize,
    pub mode: String,
    pub threads: u32,
    /// Feed the built-in preview hub too.
    #[serde(default)]
    pub preview: bool,
    /// `read_batch_ms` of every camera.
    pub read_batch_ms: u64,
    /// `rtsp_reader` of every camera.
    #[serde(default)]
    pub rtsp_reader: RtspReader,
    /// `rtmp_writer` of every camera.
    #[serde(default)]
    pub rtmp_writer: RtmpWriter,
    /// `audio.encoding.sample_rate` of every camera.
    #[serde(default)]
    pub audio_rate: Option<u32>,
    pub warmup: f64,
    pub seconds: f64,
    /// Stop cameras that stopped answering instead of measuring a window.
    pub hung: bool,
    /// Say `READY` and wait for a line on stdin before starting the cameras: the parent answers just after a
    /// keyframe of the cameras' source, so every run starts at the same point of the GOP.
    #[serde(default)]
    pub start_on_cue: bool,
    /// CPUs the whole process may run on (`None`: any).
    #[serde(default)]
    pub cpus: Option<Vec<usize>>,
}

/// What the child measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChildResult {
    /// Cameras that wrote at least one frame before the window.
    pub running: usize,
    pub window_secs: f64,
    /// Output frame rate of each camera over the window.
    pub fps_out: Vec<f64>,
    pub frames_out: u64,
    /// CPU seconds of the whole process over the window.
    pub cpu_process_secs: f64,
    /// CPU seconds of the `cam-*` threads over the window.
    pub cpu_workers_secs: f64,
    /// Threads named `cam-*` at the end of the window (workers and the codec threads they started).
    pub worker_threads: usize,
    pub rss_before: u64,
    pub rss_after: u64,
    /// Latency of each `stop_blocking`, in ms; -1 for a stop that failed.
    pub stop_ms: Vec<f64>,
    /// Latency of `snapshot()` and `status()` calls made every 50 ms during the window.
    pub control_ms: Summary,
    pub control_calls: usize,
    /// camgate's own view of its start-to-first-frame time (from `CameraStatus::first_frame_after_ms`).
    pub first_frame_after_ms: Vec<f64>,
    /// What the cameras' sessions decided (`copy`/`transcode`, encoder, threads).
    pub session: Option<String>,
    /// Video packet latency through camgate over the window, all cameras together (ms).
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Context switches of the whole process over the window.
    pub context_switches: u64,
    pub errors: Vec<String>,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn id(i: usize) -> CameraId {
    format!("c{i}").parse().expect("a valid camera id")
}

pub fn run(config: ChildConfig) -> Result<(), String> {
    // First, while this is the only thread: every thread started later inherits the set.
    if let Some(cpus) = &config.cpus {
        sys::pin(None, cpus)?;
    }
    // As the binary does.
    camgate::runtime::allocator::tune_for_many_threads();
    camgate::init_ffmpeg();
    // camgate keeps FFmpeg's errors; in a benchmark of hundreds of cameras joining mid-GOP they are noise.
    ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
    let supervisor = Supervisor::new(SupervisorConfig {
        max_cameras: config.cameras + 8,
        stats_interval: Duration::from_millis(250),
        // The bench's cameras are on loopback, which camgate refuses by default.
        camera_hosts: std::sync::Arc::new(
            camgate::model::HostPolicy::default().allowing(&camgate::model::host_policy::LOOPBACK).expect("valid"),
        ),
        ..SupervisorConfig::default()
    });
    let mut result = ChildResult { rss_before: sys::rss_bytes(None).unwrap_or(0), ..ChildResult::default() };

    let proxy = if config.hung {
        let upstream: SocketAddr = url::Url::parse(&config.rtsp_urls[0])
            .ok()
            .and_then(|u| u.socket_addrs(|| Some(554)).ok())
            .and_then(|a| a.into_iter().next())
            .ok_or("camera URL without an address")?;
        Some(FreezableProxy::start(upstream).map_err(|e| format!("proxy: {e}"))?)
    } else {
        None
    };

    let mode: VideoMode = config.mode.parse()?;
    if config.start_on_cue {
        say("READY");
        let mut cue = String::new();
        std::io::stdin().read_line(&mut cue).map_err(|e| format!("waiting for the start cue: {e}"))?;
    }
    let mut starts = Vec::with_capacity(config.cameras);
    for i in 0..config.cameras {
        let mut url = config.rtsp_urls[i % config.rtsp_urls.len()].clone();
        if let Some(proxy) = &proxy {
            let mut u = url::Url::parse(&url).map_err(|e| e.to_string())?;
            let _ = u.set_port(Some(proxy.port()));
            url = u.to_string();
        }
        let mut spec =
            StreamSpec::new(id(i).as_str(), &url, &format!("{}{i}", config.rtmp_prefix)).map_err(|e| e.to_string())?;
        spec.video.mode = mode;
        spec.video.encoding.threads = config.threads;
        spec.preview = config.preview;
        spec.read_batch_ms = config.read_batch_ms;
        spec.rtsp_reader = config.rtsp_reader;
        spec.rtmp_writer = config.rtmp_writer;
        spec.audio.encoding.sample_rate = config.audio_rate;
        starts.push(sys::unix_us());
        supervisor.start_blocking(spec).map_err(|e| e.to_string())?;
    }
    say(&format!("STARTED {}", serde_json::to_string(&starts).expect("numbers serialize")));

    // Every camera has written a frame (or 30 s passed).
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let running = supervisor.snapshot().iter().filter(|s| s.totals.video_frames_out > 0).count();
        if running == config.cameras {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let snapshot = supervisor.snapshot();
    result.running = snapshot.iter().filter(|s| s.totals.video_frames_out > 0).count();
    result.first_frame_after_ms = snapshot.iter().filter_map(|s| s.first_frame_after_ms).map(|ms| ms as f64).collect();
    result.errors = snapshot.iter().filter_map(|s| s.last_error.clone()).take(5).collect();
    result.session = snapshot.iter().find_map(|s| s.session.as_ref()).map(|s| {
        let threads = s.video_threads.map_or(String::new(), |t| format!(", threads {}+{}", t.decoder, t.encoder));
        format!(
            "video {} ({}{threads}), audio {}",
            s.video_mode,
            s.video_encoder.as_deref().unwrap_or("no encoder"),
            s.audio_mode
        )
    });

    if let Some(proxy) = &proxy {
        thread::sleep(Duration::from_secs(1));
        proxy.freeze();
        // Long enough for every worker to sit in a blocking read, well short of its 10 s read timeout.
        thread::sleep(Duration::from_millis(1500));
        result.stop_ms = stop_all(&supervisor, config.cameras, true);
        say(&format!("RESULT {}", serde_json::to_string(&result).expect("result serializes")));
        return Ok(());
    }

    thread::sleep(Duration::from_secs_f64(config.warmup));

    // The window: counters, CPU and memory at both ends, control-plane calls in between.
    let sample = || -> Vec<(u64, f64)> {
        (0..config.cameras)
            .map(|i| supervisor.status(&id(i)).map_or((0, 0.0), |s| (s.totals.video_frames_out, s.uptime_secs)))
            .collect()
    };
    let latency = || {
        supervisor.snapshot().iter().fold(LatencyCounts::default(), |mut all, s| {
            for (sum, n) in all.buckets.iter_mut().zip(s.totals.latency.buckets) {
                *sum += n;
            }
            all.sum_us += s.totals.latency.sum_us;
            all
        })
    };
    let (latency0, switches0) = (latency(), sys::context_switches(None));
    let (frames0, cpu0, threads0) = (sample(), sys::process_cpu_secs(None), sys::threads_cpu_secs("cam-"));
    let t0 = Instant::now();
    say("WINDOW_START");
    let stop_polling = Arc::new(AtomicBool::new(false));
    let poller = {
        let (supervisor, stop) = (supervisor.clone(), Arc::clone(&stop_polling));
        let cameras = config.cameras;
        thread::Builder::new()
            .name("control-plane".into())
            .spawn(move || {
                let mut latencies = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if i % 2 == 0 {
                        std::hint::black_box(supervisor.snapshot());
                    } else {
                        std::hint::black_box(supervisor.status(&id(i / 2 % cameras)));
                    }
                    latencies.push(t.elapsed());
                    i += 1;
                    thread::sleep(Duration::from_millis(50));
                }
                latencies
            })
            .expect("cannot start the control-plane thread")
    };
    thread::sleep(Duration::from_secs_f64(config.seconds));
    let (frames1, cpu1, threads1) = (sample(), sys::process_cpu_secs(None), sys::threads_cpu_secs("cam-"));
    result.window_secs = t0.elapsed().as_secs_f64();
    result.context_switches = sys::context_switches(None).saturating_sub(switches0);
    let window_latency = latency().since(&latency0);
    result.latency_p50_ms = window_latency.quantile_ms(0.5);
    result.latency_p99_ms = window_latency.quantile_ms(0.99);
    say("WINDOW_END");
    stop_polling.store(true, Ordering::Relaxed);
    let latencies = poller.join().unwrap_or_default();
    result.control_calls = latencies.len();
    result.control_ms = Summary::of_durations(&latencies);
    result.rss_after = sys::rss_bytes(None).unwrap_or(0);
    result.cpu_process_secs = cpu1.unwrap_or(0.0) - cpu0.unwrap_or(0.0);
    result.cpu_workers_secs = sys::threads_delta(&threads0, &threads1);
    result.worker_threads = threads1.len();
    for ((f0, u0), (f1, u1)) in frames0.iter().zip(&frames1) {
        let secs = u1 - u0;
        result.fps_out.push(if secs > 0.0 { f1.saturating_sub(*f0) as f64 / secs } else { 0.0 });
        result.frames_out += f1.saturating_sub(*f0);
    }
    let failed = supervisor.snapshot().iter().filter(|s| s.state != WorkerState::Running).count();
    if failed > 0 {
        result.errors.push(format!("{failed} cameras not running at the end of the window"));
    }
    result.stop_ms = stop_all(&supervisor, config.cameras, false);
    say(&format!("RESULT {}", serde_json::to_string(&result).expect("result serializes")));
    Ok(())
}

/// Stops the cameras one after the other, timing each `stop_blocking` (it returns once the thread joined);
/// with `jitter`, after a random pause of up to 100 ms each.
fn stop_all(supervisor: &Supervisor, cameras: usize, jitter: bool) -> Vec<f64> {
    (0..cameras)
        .map(|i| {
            if jitter {
                sys::jitter_pause();
            }
            let t = Instant::now();
            let ok = supervisor.stop_blocking(&id(i)).is_ok();
            if ok { t.elapsed().as_secs_f64() * 1000.0 } else { -1.0 }
        })
        .collect()
}
