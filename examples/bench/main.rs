//! camgate's end-to-end benchmark: N synthetic cameras through camgate (one process, one thread per camera)
//! and, side by side in the same run, through one `ffmpeg` CLI process per camera — once with camgate's own
//! encoder settings and once with the old service's exact command. Prints a table, ratios, and optionally
//! writes JSON and an SVG plot. See BENCHMARKS.md for what every figure means.
//!
//! ```text
//! cargo run --release --example bench -- --cameras 1,2,4 --source 720p-h264-aac --mode transcode \
//!     --seconds 10 --json target/bench.json --plot target/bench.svg
//! ```
//!
//! It starts its own camera server(s) (tests/fixtures/rtsp_server.py, or a replay of it for a thousand sessions:
//! `--rtsp-source replay`) and nginx-rtmp on loopback through the integration tests' helpers. camgate runs in a
//! child process of the bench (the same binary with `--child`), so the CPU and memory it reports are camgate's
//! alone.

#[path = "../../tests/common/mod.rs"]
mod common;

mod args;
mod camera_server;
mod camgate_run;
mod ffmpeg_run;
mod proxy;
mod reader;
mod report;
mod sys;
mod targets;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use camgate::VideoMode;

use crate::args::{Args, RtmpServerKind, System};
use crate::camera_server::CameraServer;
use crate::camgate_run::{ChildConfig, ChildResult};
use crate::common::{RtmpServer, RtspOptions, SrsOptions, SrsServer};
use crate::ffmpeg_run::FfmpegProcess;
use crate::reader::{FirstFrameReader, KeyframeMonitor};
use crate::report::{HungRow, Report, Row};
use crate::sys::Summary;

/// A camera keeps realtime when it writes at least this share of the source's frame rate.
const REALTIME_SHARE: f64 = 0.95;
/// Cameras that wrote this share of the source's frame rate on average over the window were still catching up
/// on their start: the window counts frames that were due before it, so the CPU per frame flatters.
const CATCHING_UP_SHARE: f64 = 1.05;
/// How long a run waits for all its cameras to write their first frame.
const START_WITHIN: Duration = Duration::from_secs(30);

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--child") {
        let config = argv.get(1).and_then(|json| serde_json::from_str(json).ok()).expect("--child takes a JSON config");
        if let Err(e) = camgate_run::run(config) {
            eprintln!("bench child: {e}");
            std::process::exit(1);
        }
        return;
    }
    if argv.first().map(String::as_str) == Some("--replay-child") {
        if let Err(e) = camera_server::replay_child(&argv[1..]) {
            eprintln!("bench replay: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = match Args::parse(&argv) {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench: {e}\n");
            }
            eprint!("{}", args::USAGE);
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

/// The servers every run of one invocation shares.
struct Servers {
    rtsp: Vec<CameraServer>,
    rtmp: RtmpTarget,
}

/// The RTMP server the cameras publish to (`--rtmp-server`).
enum RtmpTarget {
    Nginx(RtmpServer),
    Srs(SrsServer),
}

impl RtmpTarget {
    fn start(kind: RtmpServerKind) -> RtmpTarget {
        match kind {
            RtmpServerKind::Nginx => RtmpTarget::Nginx(RtmpServer::start()),
            RtmpServerKind::Srs => RtmpTarget::Srs(SrsServer::start(SrsOptions::default())),
        }
    }

    /// `rtmp://127.0.0.1:PORT/live/<stream>`, for publishing and playing alike.
    fn url(&self, stream: &str) -> String {
        match self {
            RtmpTarget::Nginx(server) => server.url(stream),
            RtmpTarget::Srs(server) => server.url(stream),
        }
    }

    fn pid(&self) -> u32 {
        match self {
            RtmpTarget::Nginx(server) => server.process().pid(),
            RtmpTarget::Srs(server) => server.process().pid(),
        }
    }
}

impl Servers {
    fn camera_url(&self, args: &Args, i: usize) -> String {
        self.rtsp[i % self.rtsp.len()].url(args.source.mount())
    }

    fn camera_urls(&self, args: &Args) -> Vec<String> {
        self.rtsp.iter().map(|s| s.url(args.source.mount())).collect()
    }

    /// CPU seconds so far of the camera servers and of the RTMP server.
    fn cpu(&self) -> (f64, f64) {
        let source = self.rtsp.iter().filter_map(|s| sys::process_cpu_secs(Some(s.pid()))).sum();
        (source, sys::process_cpu_secs(Some(self.rtmp.pid())).unwrap_or(0.0))
    }
}

fn run(args: &Args) -> Result<(), String> {
    // Before any thread or process starts: the camera servers, nginx and the observers inherit this set; the
    // system under test is moved to its own below.
    if let Some(cpus) = &args.servers_cpus {
        sys::pin(None, cpus)?;
    }
    common::init_ffmpeg();
    ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
    let load_before = sys::loadavg();
    eprintln!("bench: load before: {load_before}");
    let opts = RtspOptions {
        width: args.source.width,
        height: args.source.height,
        fps: args.source.fps,
        gop: args.source_gop,
        auth: None,
        digest: false,
        busy: args.source.busy,
        aac_rate: args.source_aac_rate,
    };
    let servers = Servers {
        rtsp: (0..args.rtsp_servers).map(|_| CameraServer::start(args, &opts)).collect::<Result<_, _>>()?,
        rtmp: RtmpTarget::start(args.rtmp_server),
    };
    // Let the camera pipelines and nginx settle before the first run.
    thread::sleep(Duration::from_secs(1));

    let mut report = Report::new(args, load_before);
    for &n in &args.cameras {
        for &system in &args.systems {
            eprintln!("bench: {} with {n} camera(s) ...", system.name());
            let row = match system {
                System::Camgate => run_camgate(args, &servers, n)?,
                _ => run_ffmpeg(args, &servers, system, n)?,
            };
            eprintln!("{}", report::row_line(&row));
            report.rows.push(row);
        }
    }
    if args.hung_stop > 0 {
        for &system in &args.systems {
            eprintln!("bench: stopping {} hung camera(s) under {} ...", args.hung_stop, system.name());
            let row = match system {
                System::Camgate => hung_camgate(args, &servers)?,
                _ => hung_ffmpeg(args, &servers, system)?,
            };
            report.hung.push(row);
        }
    }
    report.load_after = sys::loadavg();
    report.observers = reader::PRIORITY.get().map_or(String::new(), |p| (*p).to_owned());
    report.finish();
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, report.svg()).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    if args.check {
        if report.targets.checks.is_empty() {
            return Err("--check: this run measured none of the targets (the report says what each needs)".into());
        }
        let failed = report.targets.failed();
        if failed > 0 {
            eprintln!("bench: --check: {failed} of {} target checks not met", report.targets.checks.len());
            std::process::exit(3);
        }
    }
    Ok(())
}

/// Keyframe monitors on the camera mounts and first-frame readers on the RTMP streams of the sampled cameras,
/// started before any camera is.
struct Watchers {
    monitors: Vec<KeyframeMonitor>,
    readers: Vec<FirstFrameReader>,
    keyframes: Vec<Vec<u64>>,
    /// The cameras' keyframe interval.
    gop: Duration,
}

impl Watchers {
    fn start(args: &Args, servers: &Servers, rtmp_prefix: &str, n: usize) -> Watchers {
        let monitors: Vec<KeyframeMonitor> =
            servers.camera_urls(args).into_iter().map(KeyframeMonitor::start).collect();
        let readers = (0..n.min(args.ttff_sample))
            .map(|i| FirstFrameReader::start(format!("{rtmp_prefix}{i}"), START_WITHIN + Duration::from_secs(10)))
            .collect();
        // The readers must be playing before anything publishes, or they would time a later keyframe.
        thread::sleep(Duration::from_millis(800));
        let gop = Duration::from_secs_f64(f64::from(args.source_gop) / f64::from(args.source.fps.max(1)));
        Watchers { monitors, readers, keyframes: Vec::new(), gop }
    }

    /// Returns just after every camera server's next keyframe (or after a GOP and a second, if one does not
    /// come). Each server's encoder started when its monitor connected, so their keyframes are tens of
    /// milliseconds apart: started after the last, every run's cameras have about a GOP to get ready for their
    /// next keyframe, instead of whatever the phase of the moment left them.
    fn wait_for_keyframe(&self) {
        let seen: Vec<usize> = self.monitors.iter().map(KeyframeMonitor::keyframe_count).collect();
        let until = Instant::now() + self.gop + Duration::from_secs(1);
        while Instant::now() < until && self.monitors.iter().zip(&seen).any(|(m, &n)| m.keyframe_count() == n) {
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops the monitors (they are camera clients too, and cost the camera server CPU during the window).
    fn stop_monitors(&mut self) {
        self.keyframes = self.monitors.iter().map(KeyframeMonitor::keyframes).collect();
        self.monitors.clear();
    }

    /// First-frame figures of the sampled cameras, given when each was started (Unix µs).
    fn finish(mut self, starts: &[u64], row: &mut Row) {
        if !self.monitors.is_empty() {
            self.stop_monitors();
        }
        let (mut ttff, mut wait, mut after_next, mut after_key) = (vec![], vec![], vec![], vec![]);
        for (i, reader) in self.readers.into_iter().enumerate() {
            let first = match reader.wait() {
                Ok(t) => t,
                Err(e) => {
                    row.errors.push(format!("first frame of camera {i}: {e}"));
                    continue;
                }
            };
            let Some(&start) = starts.get(i) else { continue };
            let keyframes = &self.keyframes[i % self.keyframes.len().max(1)];
            let ms = |a: u64, b: u64| (a as f64 - b as f64) / 1000.0;
            ttff.push(ms(first, start));
            if let Some(&next) = keyframes.iter().find(|&&k| k >= start) {
                wait.push(ms(next, start));
                after_next.push(ms(first, next));
            }
            if let Some(&last) = keyframes.iter().rev().find(|&&k| k <= first) {
                after_key.push(ms(first, last));
            }
        }
        row.ttff_ms = Summary::of_ms(ttff);
        row.keyframe_wait_ms = Summary::of_ms(wait);
        row.after_next_keyframe_ms = Summary::of_ms(after_next);
        row.after_keyframe_ms = Summary::of_ms(after_key);
    }
}

fn run_camgate(args: &Args, servers: &Servers, n: usize) -> Result<Row, String> {
    let prefix = servers.rtmp.url(&format!("camgate-n{n}-"));
    let mut watchers = Watchers::start(args, servers, &prefix, n);
    let config = ChildConfig {
        rtsp_urls: servers.camera_urls(args),
        rtmp_prefix: prefix,
        cameras: n,
        mode: args.mode.to_string(),
        threads: args.threads,
        preview: args.preview,
        read_batch_ms: args.read_batch_ms,
        rtsp_reader: args.rtsp_reader,
        rtmp_writer: args.rtmp_writer,
        audio_rate: args.audio_rate,
        warmup: args.warmup,
        seconds: args.seconds,
        hung: false,
        start_on_cue: true,
        cpus: args.system_cpus.clone(),
    };
    let mut row = Row::new(args, System::Camgate, n, "camgate library, one thread per camera".into());
    let ChildRun { starts, result, servers_cpu: (source, rtmp) } = run_child(&config, servers, Some(&mut watchers))?;
    row.window_secs = result.window_secs;
    row.running = result.running;
    row.set_fps(&result.fps_out, args.source.fps);
    row.frames_out = result.frames_out;
    row.set_cpu(result.cpu_process_secs, n);
    if result.frames_out > 0 {
        row.worker_cpu_ms_per_frame = Some(result.cpu_workers_secs * 1000.0 / result.frames_out as f64);
    }
    row.worker_threads = Some(result.worker_threads);
    row.latency_p50_ms = result.latency_p50_ms;
    row.latency_p99_ms = result.latency_p99_ms;
    row.switches_per_camera_s = Some(result.context_switches as f64 / n as f64 / result.window_secs.max(1e-9));
    row.rss_mb_per_camera = result.rss_after.saturating_sub(result.rss_before) as f64 / n as f64 / 1e6;
    row.process_rss_mb = Some(result.rss_after as f64 / 1e6);
    row.set_stops(&result.stop_ms);
    row.control_ms = Some(result.control_ms);
    row.camgate_first_frame_ms = Some(Summary::of_ms(result.first_frame_after_ms));
    row.session = result.session;
    row.errors.extend(result.errors);
    row.source_cores = source / row.window_secs.max(1e-9);
    row.rtmp_cores = rtmp / row.window_secs.max(1e-9);
    watchers.finish(&starts, &mut row);
    Ok(row)
}

/// What a camgate child run gave.
struct ChildRun {
    /// Unix µs of each camera's start call.
    starts: Vec<u64>,
    result: ChildResult,
    /// CPU seconds of the camera servers and of nginx over the child's window.
    servers_cpu: (f64, f64),
}

/// Runs the camgate child, following its events.
fn run_child(config: &ChildConfig, servers: &Servers, mut watchers: Option<&mut Watchers>) -> Result<ChildRun, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("--child")
        .arg(serde_json::to_string(config).map_err(|e| e.to_string())?)
        .stdin(if config.start_on_cue { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the camgate child: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut cue = child.stdin.take();
    let (mut starts, mut result) = (Vec::new(), None);
    let (mut cpu0, mut cpu1) = ((0.0, 0.0), (0.0, 0.0));
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line == "READY" {
            if let Some(w) = watchers.as_deref() {
                w.wait_for_keyframe();
            }
            let mut stdin = cue.take().ok_or("the child asked for its start cue twice")?;
            writeln!(stdin, "GO").map_err(|e| format!("cannot cue the child: {e}"))?;
        } else if let Some(json) = line.strip_prefix("STARTED ") {
            starts = serde_json::from_str(json).map_err(|e| e.to_string())?;
        } else if line == "WINDOW_START" {
            cpu0 = servers.cpu();
            if let Some(w) = watchers.as_deref_mut() {
                w.stop_monitors();
            }
        } else if line == "WINDOW_END" {
            cpu1 = servers.cpu();
        } else if let Some(json) = line.strip_prefix("RESULT ") {
            result = Some(serde_json::from_str(json).map_err(|e| e.to_string())?);
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the camgate child exited with {status}"));
    }
    let result = result.ok_or("the camgate child ended without a result")?;
    Ok(ChildRun { starts, result, servers_cpu: (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1) })
}

fn run_ffmpeg(args: &Args, servers: &Servers, system: System, n: usize) -> Result<Row, String> {
    let copy = args.effective_mode() == VideoMode::Copy;
    let tag = if system == System::FfmpegOld { "old" } else { "ffmpeg" };
    let prefix = servers.rtmp.url(&format!("{tag}-n{n}-"));
    let template = ffmpeg_run::command(system, copy, &args.source, args.threads, "RTSP_URL", "RTMP_URL");
    let mut row = Row::new(args, system, n, format!("ffmpeg {}", template.join(" ")));
    if system == System::FfmpegOld {
        row.mode = "transcode".into();
    }
    let mut watchers = Watchers::start(args, servers, &prefix, n);
    watchers.wait_for_keyframe();
    let mut starts = Vec::with_capacity(n);
    let mut procs = Vec::with_capacity(n);
    for i in 0..n {
        let argv = ffmpeg_run::command(
            system,
            copy,
            &args.source,
            args.threads,
            &servers.camera_url(args, i),
            &format!("{prefix}{i}"),
        );
        starts.push(sys::unix_us());
        procs.push(
            FfmpegProcess::spawn(&argv, args.system_cpus.as_deref()).map_err(|e| format!("cannot run ffmpeg: {e}"))?,
        );
    }
    let until = Instant::now() + START_WITHIN;
    while Instant::now() < until && procs.iter().any(|p| p.progress().1 == 0) {
        thread::sleep(Duration::from_millis(100));
    }
    row.running = procs.iter().filter(|p| p.progress().1 > 0).count();
    thread::sleep(Duration::from_secs_f64(args.warmup));

    watchers.stop_monitors();
    let t0 = Instant::now();
    let switches = || procs.iter().map(|p| sys::context_switches(Some(p.pid()))).sum::<u64>();
    let switches0 = switches();
    let (cpu0, servers0): (Vec<f64>, _) = (procs.iter().map(FfmpegProcess::cpu_secs).collect(), servers.cpu());
    let progress0: Vec<_> = procs.iter().map(FfmpegProcess::progress).collect();
    thread::sleep(Duration::from_secs_f64(args.seconds));
    let (cpu1, servers1): (Vec<f64>, _) = (procs.iter().map(FfmpegProcess::cpu_secs).collect(), servers.cpu());
    let progress1: Vec<_> = procs.iter().map(FfmpegProcess::progress).collect();
    row.window_secs = t0.elapsed().as_secs_f64();
    row.switches_per_camera_s = Some(switches().saturating_sub(switches0) as f64 / n as f64 / row.window_secs);
    let rss: Vec<u64> = procs.iter().map(|p| sys::rss_bytes(Some(p.pid())).unwrap_or(0)).collect();
    let pss: Vec<u64> = procs.iter().map(|p| sys::pss_bytes(p.pid()).unwrap_or(0)).collect();

    let mut fps = Vec::with_capacity(n);
    for ((t0, f0), (t1, f1)) in progress0.iter().zip(&progress1) {
        let secs = t1.duration_since(*t0).as_secs_f64();
        fps.push(if secs > 0.0 { f1.saturating_sub(*f0) as f64 / secs } else { 0.0 });
        row.frames_out += f1.saturating_sub(*f0);
    }
    row.set_fps(&fps, args.source.fps);
    row.set_cpu(cpu1.iter().zip(&cpu0).map(|(b, a)| b - a).sum(), n);
    row.rss_mb_per_camera = rss.iter().sum::<u64>() as f64 / n as f64 / 1e6;
    row.pss_mb_per_camera = Some(pss.iter().sum::<u64>() as f64 / n as f64 / 1e6);
    row.source_cores = (servers1.0 - servers0.0) / row.window_secs;
    row.rtmp_cores = (servers1.1 - servers0.1) / row.window_secs;
    let stops: Vec<f64> = procs.into_iter().map(FfmpegProcess::stop).collect();
    row.set_stops(&stops);
    watchers.finish(&starts, &mut row);
    Ok(row)
}

fn hung_camgate(args: &Args, servers: &Servers) -> Result<HungRow, String> {
    let config = ChildConfig {
        rtsp_urls: servers.camera_urls(args),
        rtmp_prefix: servers.rtmp.url("hung-camgate-"),
        cameras: args.hung_stop,
        mode: args.mode.to_string(),
        threads: args.threads,
        preview: args.preview,
        read_batch_ms: args.read_batch_ms,
        rtsp_reader: args.rtsp_reader,
        rtmp_writer: args.rtmp_writer,
        audio_rate: args.audio_rate,
        warmup: 0.0,
        seconds: 0.0,
        hung: true,
        start_on_cue: false,
        cpus: args.system_cpus.clone(),
    };
    let result = run_child(&config, servers, None)?.result;
    Ok(HungRow::new(System::Camgate, result.running, &result.stop_ms))
}

fn hung_ffmpeg(args: &Args, servers: &Servers, system: System) -> Result<HungRow, String> {
    let copy = args.effective_mode() == VideoMode::Copy;
    let upstream = ([127, 0, 0, 1], servers.rtsp[0].port()).into();
    let proxy = proxy::FreezableProxy::start(upstream).map_err(|e| format!("proxy: {e}"))?;
    let url = format!("rtsp://127.0.0.1:{}{}", proxy.port(), args.source.mount());
    let tag = if system == System::FfmpegOld { "old" } else { "ffmpeg" };
    let procs: Vec<FfmpegProcess> = (0..args.hung_stop)
        .map(|i| {
            let out = servers.rtmp.url(&format!("hung-{tag}-{i}"));
            FfmpegProcess::spawn(
                &ffmpeg_run::command(system, copy, &args.source, args.threads, &url, &out),
                args.system_cpus.as_deref(),
            )
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    let until = Instant::now() + START_WITHIN;
    while Instant::now() < until && procs.iter().any(|p| p.progress().1 == 0) {
        thread::sleep(Duration::from_millis(100));
    }
    let running = procs.iter().filter(|p| p.progress().1 > 0).count();
    thread::sleep(Duration::from_secs(1));
    proxy.freeze();
    thread::sleep(Duration::from_millis(1500));
    // In parallel: ffmpeg may not exit on SIGTERM while its input hangs, and each stop waits up to 10 s.
    let stops: Vec<f64> = procs
        .into_iter()
        .map(|p| {
            thread::spawn(move || {
                sys::jitter_pause();
                p.stop()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap_or(-1.0))
        .collect();
    Ok(HungRow::new(system, running, &stops))
}
