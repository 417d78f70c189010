//! End-to-end: the real `camgate` binary on a free port, driven over HTTP, pulling from the fixture RTSP
//! server and pushing to a private nginx-rtmp; what arrives there is read back with `common::probe`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, ProbeOptions, RtmpServer, RtspOptions, RtspServer, free_port, mount, probe};
use reqwest::StatusCode;
use serde_json::Value;

const TOKEN: &str = "e2e-token-0123456789";

/// A running gateway; SIGTERMed on drop.
struct Gateway {
    child: ChildGuard,
    base: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Gateway {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::Builder::new().prefix("camgate-e2e-").tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("camgate.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_camgate"));
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env_remove("CAMGATE_TOKENS")
            // The test rig's cameras are on loopback, which camgate refuses by default.
            .env("CAMGATE_ALLOW_CAMERA_HOSTS", "127.0.0.0/8")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = ChildGuard::spawn("camgate", cmd).unwrap();
        let up = child.wait_listening(port, Duration::from_secs(20));
        let gateway = Gateway { child, base: format!("http://127.0.0.1:{port}"), dir, http: reqwest::Client::new() };
        if let Err(why) = up {
            panic!("{why}; log:\n{}", gateway.log());
        }
        gateway
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("camgate.log")).unwrap_or_default()
    }

    async fn form(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self.http.post(format!("{}{path}", self.base)).form(form).send().await.unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn camera(&self, id: &str) -> Option<Value> {
        let (status, text) = self.get(&format!("/api/v1/cameras/{id}"), None).await;
        (status == StatusCode::OK).then(|| serde_json::from_str(&text).unwrap())
    }

    /// Polls a camera until `ready` holds for it, or panics with the log after `timeout`.
    async fn wait_for(&self, id: &str, timeout: Duration, ready: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + timeout;
        loop {
            let camera = self.camera(id).await;
            if let Some(camera) = camera.as_ref().filter(|c| ready(c)) {
                return camera.clone();
            }
            assert!(Instant::now() < until, "camera {id} never got there: {camera:?}\nlog:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn probe_async(url: String, opts: ProbeOptions) -> Result<common::ProbeReport, String> {
    tokio::task::spawn_blocking(move || probe(&url, opts)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn play_stream_stats_stop() {
    let password = "s3cret-pw";
    let rtsp =
        RtspServer::start_with(RtspOptions { auth: Some(("admin".into(), password.into())), ..RtspOptions::default() });
    let rtmp = RtmpServer::start();
    let base = format!("rtmp://127.0.0.1:{}", rtmp.port());
    let gateway = Gateway::start(&["--rtmp-base", &base], &[]);

    let input = rtsp.url_with_auth(mount::H264_AAC);
    let started = Instant::now();
    let (status, body) = gateway.form("/play_camera", &[("id", "e2e"), ("ip", &input)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3), "play_camera answered without waiting for the stream");
    assert_eq!(body["code"], 200);
    assert_eq!(body["flv_data"], "http://127.0.0.1:8080/live/livestreame2e.flv");

    let report = probe_async(rtmp.url("livestreame2e"), ProbeOptions::default().with_media_seconds(3.0))
        .await
        .expect("the stream is readable from the RTMP server");
    assert_eq!(report.video.as_ref().map(|v| v.codec.as_str()), Some("h264"));
    assert_eq!(report.audio.as_ref().map(|a| a.codec.as_str()), Some("aac"));

    // Rates are over a 5 s window: wait until it is full of running time.
    let camera = gateway
        .wait_for("e2e", Duration::from_secs(20), |c| c["state"] == "running" && c["uptime_secs"].as_f64() > Some(6.0))
        .await;
    let fps_in = camera["rates"]["fps_in"].as_f64().unwrap();
    let fps_out = camera["rates"]["fps_out"].as_f64().unwrap();
    eprintln!("stats after {:.1}s: fps_in {fps_in:.2} fps_out {fps_out:.2}", camera["uptime_secs"]);
    assert!((22.0..=28.0).contains(&fps_in), "fps_in {fps_in} (source: 25)\n{camera}");
    assert!((22.0..=28.0).contains(&fps_out), "fps_out {fps_out} (source: 25)\n{camera}");
    assert_eq!(camera["session"]["video_in"]["codec"], "h264");
    assert_eq!(camera["session"]["audio_out"]["codec"], "aac");
    assert!(camera["totals"]["bytes_out"].as_u64() > Some(0));

    // Latency through camgate, in the status over the rate window and in /metrics as a histogram since start.
    let p50 = camera["rates"]["latency_p50_ms"].as_f64().expect("latency measured");
    let p99 = camera["rates"]["latency_p99_ms"].as_f64().expect("latency measured");
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}\n{camera}");
    let (_, metrics) = gateway.get("/metrics", None).await;
    assert!(metrics.contains("camgate_camera_state{camera=\"e2e\",state=\"running\"} 1"), "{metrics}");
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("camgate_camera_packet_latency_seconds_count{camera=\"e2e\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("a latency histogram for the camera");
    let all = metrics
        .lines()
        .find_map(|l| l.strip_prefix("camgate_camera_packet_latency_seconds_bucket{camera=\"e2e\",le=\"+Inf\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(all, Some(count), "the +Inf bucket holds every packet");
    assert!(count > 100, "every video packet written is counted: {count}");
    // Timestamp repairs are counted in both places, whatever this camera needed.
    for name in ["timestamp_discontinuities", "timestamp_realignments"] {
        let in_status = camera["totals"][name].as_u64().unwrap_or_else(|| panic!("totals.{name}\n{camera}"));
        let series = format!("camgate_camera_{name}_total{{camera=\"e2e\"}} ");
        let in_metrics =
            metrics.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|n| n.parse::<u64>().ok());
        assert!(in_metrics.is_some_and(|n| n >= in_status), "{series}: {in_metrics:?}, status {in_status}\n{metrics}");
    }

    let (status, body) = gateway.form("/stop_camera", &[("id", "e2e")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(gateway.camera("e2e").await.is_none());
    let gone =
        probe_async(rtmp.url("livestreame2e"), ProbeOptions::default().with_deadline(Duration::from_secs(3))).await;
    assert!(gone.is_err(), "the stream is gone after stop: {gone:?}");

    let (_, cameras) = gateway.get("/api/v1/cameras", None).await;
    let (_, metrics) = gateway.get("/metrics", None).await;
    let log = gateway.log();
    for (what, text) in [("answers", &cameras), ("metrics", &metrics), ("log", &log)] {
        assert!(!text.contains(password), "password in {what}:\n{text}");
    }
    assert!(log.contains("/play_camera"), "access log lines: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cap_and_stop_all() {
    let rtsp = RtspServer::start();
    let rtmp = RtmpServer::start();
    let base = format!("rtmp://127.0.0.1:{}", rtmp.port());
    let gateway = Gateway::start(&["--rtmp-base", &base, "--max-cameras", "2"], &[]);
    let input = rtsp.url(mount::H264_AAC);
    for id in ["a", "b"] {
        let (status, body) = gateway.form("/play_camera", &[("id", id), ("ip", &input)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let asked = Instant::now();
    let (status, body) = gateway.form("/play_camera", &[("id", "c"), ("ip", &input)]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], 429);
    assert!(asked.elapsed() < Duration::from_secs(1), "429 is immediate");

    gateway.wait_for("b", Duration::from_secs(20), |c| c["state"] == "running").await;
    let (status, body) = gateway.form("/stop_all_camera", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, cameras) = gateway.get("/api/v1/cameras", None).await;
    assert_eq!(cameras, "[]");
    let (status, body) = gateway.form("/play_camera", &[("id", "c"), ("ip", &input)]).await;
    assert_eq!(status, StatusCode::OK, "room again after stop_all: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_enforced() {
    let gateway = Gateway::start(&[], &[("CAMGATE_TOKENS", TOKEN)]);
    assert_eq!(gateway.get("/api/v1/cameras", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(gateway.get("/api/v1/cameras", Some("not-the-token-at-all")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(gateway.get("/api/v1/cameras", Some(TOKEN)).await.0, StatusCode::OK);
    let (status, body) = gateway.form("/play_camera", &[("id", "a"), ("ip", "rtsp://127.0.0.1:9/x")]).await;
    assert_eq!((status, body["code"].as_u64()), (StatusCode::UNAUTHORIZED, Some(401)));
    assert_eq!(gateway.get("/healthz", None).await.0, StatusCode::OK);
    assert!(!gateway.log().contains(TOKEN), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_running_cameras_cleanly() {
    let rtsp = RtspServer::start();
    let rtmp = RtmpServer::start();
    let base = format!("rtmp://127.0.0.1:{}", rtmp.port());
    // One boot camera recording to a file (config files may name files; the API may not), one from the API.
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("boot.flv");
    let config = dir.path().join("camgate.toml");
    let input = rtsp.url(mount::H264_AAC);
    std::fs::write(
        &config,
        format!(
            "log_format = \"json\"\n[cameras.boot]\ninput = \"{input}\"\noutput = \"{}\"\nvideo = {{ mode = \"copy\" }}\n",
            recording.display()
        ),
    )
    .unwrap();
    // A long drain: open requests may hold the shutdown up to 30 s, so a player that never disconnects would
    // be noticed.
    let mut gateway = Gateway::start(
        &["--config", config.to_str().unwrap(), "--rtmp-base", &base],
        &[("CAMGATE_DRAIN_TIMEOUT_MS", "30000")],
    );
    let (status, body) = gateway.form("/play_camera", &[("id", "api"), ("ip", &input)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for id in ["boot", "api"] {
        gateway.wait_for(id, Duration::from_secs(20), |c| c["state"] == "running").await;
    }
    // A player of the built-in preview, connected through the shutdown.
    let mut player = gateway.http.get(format!("{}/live/boot.flv", gateway.base)).send().await.unwrap();
    assert_eq!(player.status(), StatusCode::OK);
    assert!(player.chunk().await.unwrap().is_some_and(|c| c.starts_with(b"FLV")), "the player gets FLV");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let signalled = Instant::now();
    let exit = tokio::task::block_in_place(|| gateway.child.terminate(Duration::from_secs(15)));
    let took = signalled.elapsed();
    eprintln!("exit after SIGTERM: {exit:?} in {took:?}");
    assert!(exit.is_some_and(|s| s.success()), "clean exit: {exit:?}\nlog:\n{}", gateway.log());
    assert!(took < Duration::from_secs(10), "bounded shutdown, not held by the open player: {took:?}");
    // The player's stream ended (it was not cut off by the process dying mid-chunk).
    while let Ok(Some(_)) = player.chunk().await {}
    let log = gateway.log();
    assert!(log.lines().all(|l| l.starts_with('{')), "JSON log lines:\n{log}");
    assert!(log.contains("camgate stopped"), "{log}");

    // The recording was closed properly (trailer written): it reads to its end.
    let report = probe_async(recording.display().to_string(), ProbeOptions::default().until_eof()).await.unwrap();
    assert_eq!(report.stopped, common::StopReason::Eof, "{report:?}");
    assert_eq!(report.video.as_ref().map(|v| v.codec.as_str()), Some("h264"));
    let gone =
        probe_async(rtmp.url("livestreamapi"), ProbeOptions::default().with_deadline(Duration::from_secs(3))).await;
    assert!(gone.is_err(), "the API camera's stream is gone: {gone:?}");
}
