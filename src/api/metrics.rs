//! `GET /metrics` in Prometheus' text format: per-camera rates, totals, restarts and state; the process's
//! uptime, memory, CPU and threads; and the API's request counts.
//!
//! Camera series are labelled by id only (ids are `[A-Za-z0-9_-]`, so they need no escaping, and URLs,
//! which may carry passwords, never become labels). Written by hand: a dozen series do not need a crate.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::model::latency::BOUNDS_US;
use crate::runtime::{CameraStatus, WorkerState};

use super::state::AppState;

/// Requests answered, by route template (`/api/v1/cameras/{id}`, never the raw path), method and status.
#[derive(Debug, Default)]
pub struct HttpCounters {
    counts: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl HttpCounters {
    fn record(&self, route: &str, method: &str, status: u16) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry((route.to_owned(), method.to_owned(), status)).or_default() += 1;
        }
    }
}

/// Middleware counting every answered request into [`HttpCounters`]. Labels are bounded whatever clients send:
/// the route is the router's template (or `unmatched`), the method one of the standard ones (or `other`), the
/// status a number below 1000.
pub async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        _ => "other",
    };
    let response = next.run(request).await;
    state.http.record(&route, method, response.status().as_u16());
    response
}

/// The metrics page.
#[utoipa::path(
    get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::with_capacity(4096);
    let supervisor = state.gateway.supervisor();
    write_cameras(&mut out, &supervisor.snapshot(), supervisor.config().max_cameras);
    write_preview(&mut out, supervisor.preview().total_viewers());
    write_load(&mut out, &state);
    write_process(&mut out, state.started.elapsed().as_secs_f64());
    write_http(&mut out, &state.http);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out)
}

const STATES: [(WorkerState, &str); 8] = [
    (WorkerState::Starting, "starting"),
    (WorkerState::Running, "running"),
    (WorkerState::Reconnecting, "reconnecting"),
    (WorkerState::Stopping, "stopping"),
    (WorkerState::Stopped, "stopped"),
    (WorkerState::Failed, "failed"),
    (WorkerState::Stuck, "stuck"),
    (WorkerState::Pending, "pending"),
];

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn write_cameras(out: &mut String, cameras: &[CameraStatus], max: usize) {
    header(out, "camgate_cameras_max", "gauge", "Most cameras allowed to run at once.");
    let _ = writeln!(out, "camgate_cameras_max {max}");
    header(out, "camgate_cameras", "gauge", "Known cameras by state.");
    for (state, name) in STATES {
        let n = cameras.iter().filter(|c| c.state == state).count();
        let _ = writeln!(out, "camgate_cameras{{state=\"{name}\"}} {n}");
    }
    header(out, "camgate_camera_state", "gauge", "1 for the camera's current state.");
    for camera in cameras {
        let name = STATES.iter().find(|(s, _)| *s == camera.state).map_or("unknown", |(_, n)| n);
        let _ = writeln!(out, "camgate_camera_state{{camera=\"{}\",state=\"{name}\"}} 1", camera.id);
    }
    type Value = fn(&CameraStatus) -> f64;
    let series: [(&str, &str, &str, Value); 14] = [
        ("camgate_camera_fps_in", "gauge", "Video packets per second read from the camera.", |c| c.rates.fps_in),
        ("camgate_camera_fps_out", "gauge", "Video frames per second written to the output.", |c| c.rates.fps_out),
        ("camgate_camera_bitrate_kbps", "gauge", "Output bitrate in kbit/s.", |c| c.rates.bitrate_kbps),
        ("camgate_camera_uptime_seconds", "gauge", "Seconds since the camera was started.", |c| c.uptime_secs),
        ("camgate_camera_video_packets_in_total", "counter", "Video packets read.", |c| {
            c.totals.video_packets_in as f64
        }),
        ("camgate_camera_video_frames_out_total", "counter", "Video frames written.", |c| {
            c.totals.video_frames_out as f64
        }),
        ("camgate_camera_video_dropped_total", "counter", "Video packets or frames dropped.", |c| {
            c.totals.video_dropped as f64
        }),
        ("camgate_camera_audio_packets_in_total", "counter", "Audio packets read.", |c| {
            c.totals.audio_packets_in as f64
        }),
        ("camgate_camera_audio_frames_out_total", "counter", "Audio frames written.", |c| {
            c.totals.audio_frames_out as f64
        }),
        ("camgate_camera_audio_dropped_total", "counter", "Audio packets or frames dropped.", |c| {
            c.totals.audio_dropped as f64
        }),
        ("camgate_camera_bytes_out_total", "counter", "Bytes written to the output.", |c| c.totals.bytes_out as f64),
        (
            "camgate_camera_timestamp_discontinuities_total",
            "counter",
            "Jumps in the camera's timestamps that camgate re-based.",
            |c| c.totals.timestamp_discontinuities as f64,
        ),
        (
            "camgate_camera_timestamp_realignments_total",
            "counter",
            "Times the output's audio and video were put back in step after the camera's clock moved.",
            |c| c.totals.timestamp_realignments as f64,
        ),
        ("camgate_camera_restarts_total", "counter", "Failed sessions since the camera was started.", |c| {
            f64::from(c.restarts)
        }),
    ];
    for (name, kind, help, value) in series {
        header(out, name, kind, help);
        for camera in cameras {
            let _ = writeln!(out, "{name}{{camera=\"{}\"}} {}", camera.id, value(camera));
        }
    }
    write_latency(out, cameras);
}

/// Per camera, the histogram of video packet latency through camgate since the camera started.
fn write_latency(out: &mut String, cameras: &[CameraStatus]) {
    const NAME: &str = "camgate_camera_packet_latency_seconds";
    header(out, NAME, "histogram", "Video packets from read at the camera to written to the first output's muxer.");
    // Cameras of other cluster nodes carry no counts here: their own node exports them.
    for camera in cameras.iter().filter(|c| c.totals.latency.count() > 0) {
        let counts = &camera.totals.latency;
        let mut cumulative = 0;
        for (n, bound) in BOUNDS_US.iter().enumerate() {
            cumulative += counts.buckets[n];
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{NAME}_bucket{{camera=\"{}\",le=\"{le}\"}} {cumulative}", camera.id);
        }
        let count = counts.count();
        let _ = writeln!(out, "{NAME}_bucket{{camera=\"{}\",le=\"+Inf\"}} {count}", camera.id);
        let _ = writeln!(out, "{NAME}_sum{{camera=\"{}\"}} {}", camera.id, counts.sum_us as f64 / 1e6);
        let _ = writeln!(out, "{NAME}_count{{camera=\"{}\"}} {count}", camera.id);
    }
}

fn write_load(out: &mut String, state: &AppState) {
    header(out, "camgate_cpu_load_cores", "gauge", "Cores this node's cameras use (measured, or estimated).");
    let _ = writeln!(out, "camgate_cpu_load_cores {:.3}", state.gateway.cpu_load(None));
    header(out, "camgate_cpu_capacity_cores", "gauge", "Cores this node may fill with cameras (cpu_budget).");
    let _ = writeln!(out, "camgate_cpu_capacity_cores {:.3}", state.gateway.cpu_capacity());
    if let Some(cluster) = state.gateway.cluster() {
        header(
            out,
            "camgate_cluster_lease",
            "gauge",
            "1 while this node holds its cluster lease (its cameras may run).",
        );
        let _ = writeln!(out, "camgate_cluster_lease {}", u8::from(cluster.holds_lease()));
        let overview = cluster.overview();
        header(out, "camgate_cluster_nodes", "gauge", "Live nodes of the cluster, as this node sees it.");
        let _ = writeln!(out, "camgate_cluster_nodes {}", overview.nodes.iter().filter(|n| n.alive).count());
        header(out, "camgate_cluster_pending_cameras", "gauge", "Desired cameras no node has taken.");
        let _ = writeln!(out, "camgate_cluster_pending_cameras {}", overview.pending);
    }
}

fn write_preview(out: &mut String, viewers: usize) {
    header(out, "camgate_preview_viewers", "gauge", "Built-in preview viewers of all cameras.");
    let _ = writeln!(out, "camgate_preview_viewers {viewers}");
}

fn write_process(out: &mut String, uptime: f64) {
    header(out, "camgate_process_uptime_seconds", "gauge", "Seconds since the gateway started.");
    let _ = writeln!(out, "camgate_process_uptime_seconds {uptime:.3}");
    // Linux only; elsewhere these series are simply absent.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| -> Option<u64> {
        status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    if let Some(kib) = field("VmRSS:") {
        header(out, "camgate_process_resident_memory_bytes", "gauge", "Resident memory.");
        let _ = writeln!(out, "camgate_process_resident_memory_bytes {}", kib * 1024);
    }
    if let Some(threads) = field("Threads:") {
        header(out, "camgate_process_threads", "gauge", "OS threads (one per camera, plus the runtime's).");
        let _ = writeln!(out, "camgate_process_threads {threads}");
    }
    if let Some(seconds) = cpu_seconds() {
        header(out, "camgate_process_cpu_seconds_total", "counter", "User and system CPU time.");
        let _ = writeln!(out, "camgate_process_cpu_seconds_total {seconds:.2}");
    }
}

/// utime + stime from `/proc/self/stat`, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux ABI Rust targets.
    Some(ticks as f64 / 100.0)
}

fn write_http(out: &mut String, http: &HttpCounters) {
    header(out, "camgate_http_requests_total", "counter", "HTTP requests answered, by route, method and status.");
    if let Ok(counts) = http.counts.lock() {
        for ((route, method, status), n) in counts.iter() {
            let _ = writeln!(
                out,
                "camgate_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
    }
}
