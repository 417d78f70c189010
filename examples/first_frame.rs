//! How long a viewer waits for the first picture: from the start request (always-on camera) or the RTMP
//! server's `on_play` hook (on-demand camera, cold or warm) to the first video frame at a player of the RTMP
//! server, for cameras with a 2 s and a 10 s GOP. Published in BENCHMARKS.md ("Time to first frame").
//!
//! ```text
//! cargo run --release --example first_frame -- --gops 2,10 --trials 6
//! cargo run --release --example first_frame -- --gops 2 --trials 12 --audio aac   # the camera with AAC
//! ```
//!
//! It runs the library's `Gateway` in-process (as the binary does), the fixture RTSP server (H.264 without
//! audio by default, or with AAC, which camgate copies; 640x360 at 25 fps) and nginx-rtmp on loopback. The player is connected to nginx before anything is
//! published, as SRS holds a player while `on_play` starts the camera; it reads packets without stream
//! analysis, so the time taken is when the frame arrived. Trials start at different moments of the camera's
//! GOP (a pause of a pseudo-random share of the GOP before each), since a cold start waits for the camera's
//! next keyframe. Another RTSP client stays connected to the camera throughout, as a camera runs whether or
//! not camgate watches it: the fixture's encoder keeps its GOP instead of starting afresh (with a keyframe)
//! for every new session.

#[path = "../tests/common/mod.rs"]
mod common;

use std::thread;
use std::time::{Duration, Instant};

use camgate::gateway::{Gateway, GatewaySettings, RunMode};
use camgate::{AudioMode, StreamSpec, Supervisor, VideoMode};
use common::{RtmpServer, RtspOptions, RtspServer, mount};
use ffmpeg_next::{Dictionary, Packet};

const FPS: u32 = 25;

fn main() {
    let mut gops = vec![2u32, 10];
    let mut trials = 6usize;
    let mut with_audio = false;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--gops" => gops = value.split(',').map(|g| g.parse().expect("--gops 2,10")).collect(),
            "--trials" => trials = value.parse().expect("--trials N"),
            "--audio" => {
                with_audio = match value.as_str() {
                    "aac" => true,
                    "none" => false,
                    _ => panic!("--audio aac|none"),
                }
            }
            other => panic!("unknown flag {other} (--gops, --trials, --audio)"),
        }
    }
    // RUST_LOG=info shows what the gateway does (quiet by default: the table is the output).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()))
        .with_writer(std::io::stderr)
        .init();
    camgate::init_ffmpeg();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("| camera GOP | how it starts | from | first frame p50 | max | trials |");
    println!("|---|---|---|---|---|---|");
    let camera = if with_audio { mount::H264_AAC } else { mount::H264 };
    for gop in gops {
        let rtsp = RtspServer::start_with(RtspOptions { gop: gop * FPS, ..RtspOptions::default() });
        let rtmp = RtmpServer::start();
        let keeper = keep_camera_running(rtsp.url(camera));
        for mode in [RunMode::Always, RunMode::OnDemand, RunMode::Warm] {
            let times = runtime.block_on(measure(&rtsp, &rtmp, camera, mode, gop, trials));
            let (p50, max) = summary(&times);
            let (how, from) = match mode {
                RunMode::Always => ("always-on, started through the API", "start request"),
                RunMode::OnDemand => ("on demand (`on_demand = true`)", "`on_play` hook"),
                RunMode::Warm => ("warm (`on_demand = \"warm\"`)", "`on_play` hook"),
            };
            println!("| {gop} s | {how} | {from} | {p50:.0} ms | {max:.0} ms | {} |", times.len());
        }
        keeper.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An RTSP client that reads `url` until the returned flag is raised.
fn keep_camera_running(url: String) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    thread::spawn(move || {
        let mut options = Dictionary::new();
        options.set("rtsp_transport", "tcp");
        let interrupted = std::sync::Arc::clone(&flag);
        let Ok(mut input) = ffmpeg_next::format::input_with_interrupt_and_dictionary(
            &url,
            move || interrupted.load(std::sync::atomic::Ordering::Relaxed),
            options,
        ) else {
            return;
        };
        let mut packet = Packet::empty();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) && packet.read(&mut input).is_ok() {}
    });
    thread::sleep(Duration::from_secs(2));
    stop
}

async fn measure(
    rtsp: &RtspServer,
    rtmp: &RtmpServer,
    camera: &str,
    mode: RunMode,
    gop: u32,
    trials: usize,
) -> Vec<f64> {
    let mut config = common::rig();
    config.max_cameras = 4;
    let settings = GatewaySettings { on_demand_linger: Duration::from_millis(100), ..GatewaySettings::default() };
    let gateway = Gateway::new(Supervisor::new(config), settings, None);
    let id = format!("ff{}", mode_tag(mode));
    let stream = format!("livestream{id}");
    let mut spec = StreamSpec::new(&id, &rtsp.url(camera), &rtmp.url(&stream)).unwrap();
    spec.video.mode = VideoMode::Copy;
    spec.audio.mode = if camera == mount::H264_AAC { AudioMode::Auto } else { AudioMode::None };
    let gop_time = Duration::from_secs(u64::from(gop));
    if mode != RunMode::Always {
        gateway.put(spec.clone(), mode).await.unwrap();
    }
    if mode == RunMode::Warm {
        // Connected, with a whole GOP seen (so a keyframe is cached).
        tokio::time::sleep(gop_time + Duration::from_secs(2)).await;
    }
    let mut times = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(gop);
    for _ in 0..trials {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Start somewhere in the camera's GOP.
        tokio::time::sleep(gop_time.mul_f64((seed % 1000) as f64 / 1000.0)).await;
        let reader = start_reader(rtmp.url(&stream));
        // The player is waiting at nginx before anything is published.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let asked = Instant::now();
        match mode {
            RunMode::Always => {
                gateway.put(spec.clone(), RunMode::Always).await.unwrap();
            }
            _ => {
                gateway.viewer_joined("live", &stream, "player").unwrap();
                tracing::info!(camera = %id, "viewer joined");
            }
        }
        let arrived = tokio::task::spawn_blocking(move || reader.join().unwrap()).await.unwrap();
        match arrived {
            Ok(at) => {
                tracing::info!(camera = %id, "first video frame at the player");
                times.push(at.saturating_duration_since(asked).as_secs_f64() * 1000.0)
            }
            Err(e) => eprintln!("{mode:?} GOP {gop} s: {e}"),
        }
        match mode {
            RunMode::Always => {
                gateway.remove(&id.parse().unwrap()).await.unwrap();
            }
            _ => {
                gateway.viewer_left("live", &stream, "player").unwrap();
                // The linger (100 ms), then the output (warm) or the camera (cold) is gone.
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        }
    }
    gateway.shutdown().await;
    times
}

fn mode_tag(mode: RunMode) -> &'static str {
    match mode {
        RunMode::Always => "always",
        RunMode::OnDemand => "cold",
        RunMode::Warm => "warm",
    }
}

/// A player of `url` that returns when its first video packet arrived (or fails after 30 s).
fn start_reader(url: String) -> thread::JoinHandle<Result<Instant, String>> {
    thread::spawn(move || common::first_video_packet(&url, Duration::from_secs(30)).map(|(at, _)| at))
}

fn summary(times: &[f64]) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let p50 = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    (p50, sorted.last().copied().unwrap_or(f64::NAN))
}
