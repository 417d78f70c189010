//! The figures of a bench invocation: one [`Row`] per (system, camera count), the hung-camera stops, the
//! camgate/ffmpeg ratios; printed as a table, written as JSON and drawn as an SVG.

use std::fmt::Write as _;
use std::process::Command;

use serde::Serialize;

use crate::args::{Args, System};
use crate::sys::Summary;
use crate::targets::Checks;

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub os: String,
    pub kernel: String,
    pub ffmpeg: String,
}

impl Machine {
    fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let field = |key: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map_or(String::new(), |(_, v)| v.trim().to_owned())
        };
        let mem_kb: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map_or(String::new(), |v| v.trim_matches('"').to_owned());
        let ffmpeg = Command::new("ffmpeg")
            .arg("-version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(|l| l.split(" Copyright").next().unwrap_or(l).to_owned()))
            .unwrap_or_default();
        Machine {
            cpu: field("model name"),
            cores: crate::sys::online_cpus(),
            memory_gib: mem_kb / 1024.0 / 1024.0,
            os,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            ffmpeg,
        }
    }
}

/// One system running N cameras for one window.
#[derive(Debug, Default, Serialize)]
pub struct Row {
    pub system: String,
    pub cameras: usize,
    pub source: String,
    /// The video mode in effect: `copy` or `transcode`.
    pub mode: String,
    /// What camgate's sessions reported deciding.
    pub session: Option<String>,
    pub command: String,
    pub window_secs: f64,
    /// Cameras that delivered frames before the window.
    pub running: usize,
    /// Cameras whose output frame rate over the window was at least 95 % of the source's.
    pub realtime: usize,
    pub fps_out_min: f64,
    pub fps_out_mean: f64,
    /// The mean rate was well above the source's: cameras still catching up on their start (see
    /// `CATCHING_UP_SHARE`).
    pub catching_up: bool,
    pub frames_out: u64,
    /// CPU seconds of the process(es) over the window.
    pub cpu_secs: f64,
    /// Cores busy on average: `cpu_secs / window_secs`.
    pub cores: f64,
    pub core_pct_per_camera: f64,
    /// Process CPU per output video frame, in ms.
    pub cpu_ms_per_frame: f64,
    /// CPU of the `cam-*` threads per output video frame, in ms (camgate only).
    pub worker_cpu_ms_per_frame: Option<f64>,
    pub worker_threads: Option<usize>,
    /// camgate: (process RSS at the window's end − RSS before any camera) / N. ffmpeg: mean RSS of a process.
    pub rss_mb_per_camera: f64,
    /// ffmpeg: mean PSS of a process (its shared library pages split among the processes).
    pub pss_mb_per_camera: Option<f64>,
    pub process_rss_mb: Option<f64>,
    /// Start call (or process spawn) to the first video frame at a player of the RTMP server.
    pub ttff_ms: Summary,
    /// Start call to the camera's next keyframe (as seen by another client of the camera).
    pub keyframe_wait_ms: Summary,
    /// First frame at the RTMP server minus the camera's next keyframe after the start call.
    pub after_next_keyframe_ms: Summary,
    /// First frame at the RTMP server minus the camera keyframe just before it.
    pub after_keyframe_ms: Summary,
    /// camgate's own `first_frame_after_ms` (start of the session to the first frame written).
    pub camgate_first_frame_ms: Option<Summary>,
    pub stop_ms: Summary,
    pub stop_failures: usize,
    /// Video packet latency through camgate (read from the camera → written to the outputs) over the window,
    /// all cameras together, in ms (camgate only: ffmpeg does not report it).
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Context switches (wake-ups and preemptions) per camera per second, all threads of the process(es).
    pub switches_per_camera_s: Option<f64>,
    /// Latency of `snapshot()`/`status()` during the window (camgate only).
    pub control_ms: Option<Summary>,
    /// Cores used by the camera server(s) during the window: the synthetic cameras' encoders; not part of
    /// either system's cost.
    pub source_cores: f64,
    /// Cores used by the RTMP server (nginx-rtmp, or SRS with `--rtmp-server srs`) during the window.
    pub rtmp_cores: f64,
    pub errors: Vec<String>,
}

impl Row {
    pub fn new(args: &Args, system: System, cameras: usize, command: String) -> Row {
        Row {
            system: system.name().into(),
            cameras,
            source: args.source.name.clone(),
            mode: args.effective_mode().to_string(),
            command,
            ..Row::default()
        }
    }

    pub fn set_fps(&mut self, fps: &[f64], source_fps: u32) {
        self.realtime = fps.iter().filter(|&&f| f >= super::REALTIME_SHARE * f64::from(source_fps)).count();
        self.fps_out_min = fps.iter().copied().fold(f64::INFINITY, f64::min);
        if !self.fps_out_min.is_finite() {
            self.fps_out_min = 0.0;
        }
        self.fps_out_mean = if fps.is_empty() { 0.0 } else { fps.iter().sum::<f64>() / fps.len() as f64 };
        self.catching_up = self.fps_out_mean >= super::CATCHING_UP_SHARE * f64::from(source_fps);
    }

    pub fn set_cpu(&mut self, cpu_secs: f64, cameras: usize) {
        self.cpu_secs = cpu_secs;
        self.cores = cpu_secs / self.window_secs.max(1e-9);
        self.core_pct_per_camera = self.cores * 100.0 / cameras as f64;
        self.cpu_ms_per_frame = if self.frames_out > 0 { cpu_secs * 1000.0 / self.frames_out as f64 } else { 0.0 };
    }

    pub fn set_stops(&mut self, stops: &[f64]) {
        self.stop_failures = stops.iter().filter(|&&s| s < 0.0).count();
        self.stop_ms = Summary::of_ms(stops.iter().copied().filter(|&s| s >= 0.0).collect());
    }
}

/// Stopping cameras whose camera stopped answering mid-stream.
#[derive(Debug, Serialize)]
pub struct HungRow {
    pub system: String,
    pub cameras: usize,
    pub running_before_freeze: usize,
    pub stop_ms: Summary,
    pub stop_failures: usize,
}

impl HungRow {
    pub fn new(system: System, running: usize, stops: &[f64]) -> HungRow {
        HungRow {
            system: system.name().into(),
            cameras: stops.len(),
            running_before_freeze: running,
            stop_ms: Summary::of_ms(stops.iter().copied().filter(|&s| s >= 0.0).collect()),
            stop_failures: stops.iter().filter(|&&s| s < 0.0).count(),
        }
    }
}

/// camgate against one ffmpeg variant at one camera count.
#[derive(Debug, Serialize)]
pub struct Ratio {
    pub cameras: usize,
    pub versus: String,
    /// camgate's process CPU per output frame / ffmpeg's.
    pub cpu_per_frame: Option<f64>,
    /// camgate's RSS per camera / an ffmpeg process's RSS.
    pub rss_per_camera: Option<f64>,
    /// camgate's RSS per camera / an ffmpeg process's PSS.
    pub rss_per_camera_vs_pss: Option<f64>,
    pub ttff_p50: Option<f64>,
    pub stop_p99: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub args: Args,
    pub load_before: String,
    pub load_after: String,
    /// The priority the keyframe and first-frame observers ran at (`reader::PRIORITY`).
    pub observers: String,
    pub rows: Vec<Row>,
    pub hung: Vec<HungRow>,
    pub ratios: Vec<Ratio>,
    /// The targets of issue 13 this invocation's figures speak to.
    pub targets: Checks,
}

fn div(a: f64, b: f64) -> Option<f64> {
    (a > 0.0 && b > 0.0).then(|| a / b)
}

impl Report {
    pub fn new(args: &Args, load_before: String) -> Report {
        Report {
            machine: Machine::detect(),
            args: args.clone(),
            load_before,
            load_after: String::new(),
            observers: String::new(),
            rows: Vec::new(),
            hung: Vec::new(),
            ratios: Vec::new(),
            targets: Checks::default(),
        }
    }

    /// Computes the ratios and checks the targets once all rows are in.
    pub fn finish(&mut self) {
        let mut ratios = Vec::new();
        for cg in self.rows.iter().filter(|r| r.system == System::Camgate.name()) {
            for ff in self.rows.iter().filter(|r| r.cameras == cg.cameras && r.system != cg.system) {
                ratios.push(Ratio {
                    cameras: cg.cameras,
                    versus: ff.system.clone(),
                    cpu_per_frame: div(cg.cpu_ms_per_frame, ff.cpu_ms_per_frame),
                    rss_per_camera: div(cg.rss_mb_per_camera, ff.rss_mb_per_camera),
                    rss_per_camera_vs_pss: ff.pss_mb_per_camera.and_then(|p| div(cg.rss_mb_per_camera, p)),
                    ttff_p50: div(cg.ttff_ms.p50.unwrap_or(0.0), ff.ttff_ms.p50.unwrap_or(0.0)),
                    stop_p99: div(cg.stop_ms.p99.unwrap_or(0.0), ff.stop_ms.p99.unwrap_or(0.0)),
                });
            }
        }
        self.ratios = ratios;
        self.targets = Checks::of(&self.args, &self.rows, &self.ratios);
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ =
            writeln!(out, "\nmachine: {} ({} cores, {:.0} GiB), {}, {}", m.cpu, m.cores, m.memory_gib, m.os, m.ffmpeg);
        let _ = writeln!(out, "load before: {}   after: {}", self.load_before, self.load_after);
        if !self.observers.is_empty() {
            let _ = writeln!(out, "keyframe and first-frame observers: {}", self.observers);
        }
        if self.args.rtsp_source == crate::args::RtspSource::Replay {
            let _ = writeln!(
                out,
                "camera servers: {} replay(s) of {:.0} s of the fixture, sender tick {} ms",
                self.args.rtsp_servers, self.args.replay_seconds, self.args.replay_tick_ms
            );
        }
        if self.args.rtmp_server == crate::args::RtmpServerKind::Srs {
            let _ = writeln!(out, "RTMP server: SRS (its CPU is the JSON's rtmp_cores)");
        }
        if self.args.system_cpus.is_some() || self.args.servers_cpus.is_some() {
            let show = |cpus: &Option<Vec<usize>>| cpus.as_ref().map_or("any".to_owned(), |c| format!("{c:?}"));
            let _ = writeln!(
                out,
                "CPUs: system under test {}, camera servers + nginx + observers {}",
                show(&self.args.system_cpus),
                show(&self.args.servers_cpus)
            );
        }
        let _ = writeln!(out, "\n{}", HEADER);
        for row in &self.rows {
            let _ = writeln!(out, "{}", row_line(row));
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(out, "\ncamgate / ffmpeg     cams  cpu/frame  rss/cam  rss/pss  ttff-p50  stop-p99");
            for r in &self.ratios {
                let f = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
                let _ = writeln!(
                    out,
                    "  vs {:<16} {:>4}  {:>9}  {:>7}  {:>7}  {:>8}  {:>8}",
                    r.versus,
                    r.cameras,
                    f(r.cpu_per_frame),
                    f(r.rss_per_camera),
                    f(r.rss_per_camera_vs_pss),
                    f(r.ttff_p50),
                    f(r.stop_p99)
                );
            }
        }
        if !self.hung.is_empty() {
            let _ = writeln!(out, "\nstopping cameras that stopped answering (ms)");
            for h in &self.hung {
                let _ = writeln!(
                    out,
                    "  {:<12} {:>3} cameras ({} running before the freeze): p50 {}  p99 {}  max {}  failed {}",
                    h.system,
                    h.cameras,
                    h.running_before_freeze,
                    opt(h.stop_ms.p50),
                    opt(h.stop_ms.p99),
                    opt(h.stop_ms.max),
                    h.stop_failures
                );
            }
        }
        out.push_str(&self.targets.table());
        for row in self.rows.iter().filter(|r| r.catching_up) {
            let _ = writeln!(
                out,
                "\n{} n={}: {:.1} fps on average against the source's {}: cameras still catching up on their start, \
                 so the CPU per frame counts frames due before the window (a longer --warmup settles it)",
                row.system, row.cameras, row.fps_out_mean, self.args.source.fps
            );
        }
        for row in self.rows.iter().filter(|r| !r.errors.is_empty()) {
            let _ = writeln!(out, "\n{} n={}: {}", row.system, row.cameras, row.errors.join("; "));
        }
        out
    }

    /// Cores used against camera count, one line per system; a hollow marker where not every camera kept
    /// realtime.
    pub fn svg(&self) -> String {
        let systems: Vec<&str> = {
            let mut s: Vec<&str> = self.rows.iter().map(|r| r.system.as_str()).collect();
            s.dedup();
            s.sort();
            s.dedup();
            s
        };
        let (w, h, left, right, top, bottom) = (720.0, 440.0, 70.0, 190.0, 50.0, 60.0);
        let max_n = self.rows.iter().map(|r| r.cameras).max().unwrap_or(1).max(1) as f64;
        let max_y = self.rows.iter().map(|r| r.cores).fold(self.machine.cores as f64, f64::max).max(0.5) * 1.1;
        let x = |n: f64| left + (n / max_n) * (w - left - right);
        let y = |c: f64| h - bottom - (c / max_y) * (h - top - bottom);
        // One colour per system in every plot.
        let color_of = |system: &str| match system {
            "camgate" => "#d62728",
            "ffmpeg-old" => "#1f77b4",
            _ => "#ff7f0e",
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let title = format!(
            "{} cameras, {} — CPU in cores (process time / wall time)",
            self.args.source.name,
            self.args.effective_mode()
        );
        let _ = writeln!(s, r#"<text x="{left}" y="24" font-size="14">{title}</text>"#);
        // Axes and grid.
        let steps = 5;
        for i in 0..=steps {
            let c = max_y * f64::from(i) / f64::from(steps);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" text-anchor="end">{c:.2}</text>"##,
                y(c),
                w - right,
                left - 6.0,
                y(c) + 4.0
            );
        }
        let mut ticks: Vec<usize> = self.rows.iter().map(|r| r.cameras).collect();
        ticks.sort_unstable();
        ticks.dedup();
        for n in &ticks {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{n}</text>"#,
                x(*n as f64),
                h - bottom + 18.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">cameras</text><text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">cores</text>"#,
            (left + w - right) / 2.0,
            h - 16.0,
            (top + h - bottom) / 2.0,
            (top + h - bottom) / 2.0
        );
        let cores = self.machine.cores as f64;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#888" stroke-dasharray="6 4"/><text x="{2:.1}" y="{3:.1}" fill="#666">all {cores} cores</text>"##,
            y(cores),
            w - right,
            left + 6.0,
            y(cores) - 6.0
        );
        let _ = writeln!(
            s,
            r#"<line x1="{left}" y1="{0:.1}" x2="{left}" y2="{top}" stroke="black"/><line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="black"/>"#,
            h - bottom,
            w - right
        );
        for (k, system) in systems.iter().enumerate() {
            let color = color_of(system);
            let mut rows: Vec<&Row> = self.rows.iter().filter(|r| r.system == *system).collect();
            rows.sort_by_key(|r| r.cameras);
            let points: Vec<String> =
                rows.iter().map(|r| format!("{:.1},{:.1}", x(r.cameras as f64), y(r.cores))).collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
            for r in &rows {
                let fill = if r.realtime == r.cameras { color } else { "white" };
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4.5" fill="{fill}" stroke="{color}" stroke-width="2"/>"#,
                    x(r.cameras as f64),
                    y(r.cores)
                );
            }
            let ly = top + 20.0 + 22.0 * k as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{0:.1}" y1="{ly:.1}" x2="{1:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{2:.1}" y="{3:.1}">{system}</text>"#,
                w - right + 15.0,
                w - right + 40.0,
                w - right + 46.0,
                ly + 4.0
            );
        }
        let ly = top + 20.0 + 22.0 * systems.len() as f64;
        let _ = writeln!(
            s,
            r##"<circle cx="{0:.1}" cy="{ly:.1}" r="4.5" fill="white" stroke="#444" stroke-width="2"/><text x="{1:.1}" y="{2:.1}">not all realtime</text>"##,
            w - right + 27.0,
            w - right + 46.0,
            ly + 4.0
        );
        s.push_str("</svg>\n");
        s
    }
}

const HEADER: &str = "system       cams mode      rt/run  fps-min  cores %core/cam ms/frame wrk-ms/fr  rss/cam  pss/cam  ttff-p50  ttff-max next-kf+  stop-p50 stop-p99 ctl-p99 src-cores lat-p50 lat-p99 csw/cam/s";

fn opt(x: Option<f64>) -> String {
    x.map_or("-".to_owned(), |x| format!("{x:.0}"))
}

/// One row of the table.
pub fn row_line(r: &Row) -> String {
    let f2 = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
    let ctl = r.control_ms.as_ref().and_then(|c| c.p99).map_or("-".to_owned(), |x| format!("{x:.3}"));
    format!(
        "{:<12} {:>4} {:<9} {:>3}/{:<3} {:>7.1} {:>6.2} {:>9.2} {:>8.3} {:>9} {:>7.1}M {:>8} {:>9} {:>9} {:>8} {:>9} {:>8} {:>7} {:>9.2} {:>7} {:>7} {:>9}",
        r.system,
        r.cameras,
        r.mode,
        r.realtime,
        r.running,
        r.fps_out_min,
        r.cores,
        r.core_pct_per_camera,
        r.cpu_ms_per_frame,
        f2(r.worker_cpu_ms_per_frame),
        r.rss_mb_per_camera,
        r.pss_mb_per_camera.map_or("-".to_owned(), |p| format!("{p:.1}M")),
        opt(r.ttff_ms.p50),
        opt(r.ttff_ms.max),
        opt(r.after_next_keyframe_ms.max),
        opt(r.stop_ms.p50),
        opt(r.stop_ms.p99),
        ctl,
        r.source_cores,
        r.latency_p50_ms.map_or("-".to_owned(), |x| format!("{x:.3}")),
        r.latency_p99_ms.map_or("-".to_owned(), |x| format!("{x:.3}")),
        r.switches_per_camera_s.map_or("-".to_owned(), |x| format!("{x:.0}")),
    )
}
