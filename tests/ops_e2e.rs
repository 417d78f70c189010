//! Operations end to end, with the real `camgate` binary: cameras started through the API come back from the
//! state file after a restart, a corrupt state file is kept aside and reported, and SRS-style hook calls start
//! an on-demand camera and stop it after the linger. What the RTMP server (nginx-rtmp) receives is read back.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    ChildGuard, ProbeOptions, RtmpServer, RtspOptions, RtspServer, SrsOptions, SrsServer, free_port, mount, probe,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "ops-e2e-token-0123456789";

/// A running gateway; SIGTERMed on drop. (Like `api_e2e.rs`'s, plus JSON bodies and a shared log file.)
struct Gateway {
    child: ChildGuard,
    base: String,
    log: std::path::PathBuf,
    http: reqwest::Client,
}

impl Gateway {
    fn start(log_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let port = free_port();
        let log = log_dir.join(format!("camgate-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_camgate"));
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env_remove("CAMGATE_TOKENS")
            // The test rig's cameras are on loopback, which camgate refuses by default.
            .env("CAMGATE_ALLOW_CAMERA_HOSTS", "127.0.0.0/8")
            .env_remove("CAMGATE_DATA_DIR")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = ChildGuard::spawn("camgate", cmd).unwrap();
        let up = child.wait_listening(port, Duration::from_secs(20));
        let gateway = Gateway { child, base: format!("http://127.0.0.1:{port}"), log, http: reqwest::Client::new() };
        if let Err(why) = up {
            panic!("{why}; log:\n{}", gateway.log());
        }
        gateway
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    /// An SRS hook call: no bearer header (SRS cannot send one), the token in the query if given.
    async fn hook(&self, action: &str, stream: &str, client: &str, token: Option<&str>) -> (StatusCode, Value) {
        let query = token.map(|t| format!("?token={t}")).unwrap_or_default();
        let body = json!({
            "server_id": "vid-0xk989d", "service_id": "0c4fs3v6", "action": action, "client_id": client,
            "ip": "127.0.0.1", "vhost": "__defaultVhost__", "app": "live", "tcUrl": "rtmp://127.0.0.1/live",
            "stream": stream, "param": "", "stream_url": format!("/live/{stream}"), "stream_id": "vid-124q9y3",
            "pageUrl": ""
        });
        let response =
            self.http.post(format!("{}/api/v1/srs/{action}{query}", self.base)).json(&body).send().await.unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    async fn camera(&self, id: &str) -> Option<Value> {
        let (status, body) = self.send(reqwest::Method::GET, &format!("/api/v1/cameras/{id}"), None).await;
        (status == StatusCode::OK).then_some(body)
    }

    /// Polls a camera until `ready` holds for it, or panics with the log after `timeout`.
    async fn wait_for(&self, id: &str, timeout: Duration, ready: impl Fn(Option<&Value>) -> bool) -> Option<Value> {
        let until = Instant::now() + timeout;
        loop {
            let camera = self.camera(id).await;
            if ready(camera.as_ref()) {
                return camera;
            }
            assert!(Instant::now() < until, "camera {id} never got there: {camera:?}\nlog:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn terminate(&mut self) {
        let exit = tokio::task::block_in_place(|| self.child.terminate(Duration::from_secs(15)));
        assert!(exit.is_some_and(|s| s.success()), "clean exit: {exit:?}\nlog:\n{}", self.log());
    }
}

fn running(camera: Option<&Value>) -> bool {
    camera.is_some_and(|c| c["state"] == "running")
}

async fn read_back(url: String) -> Result<common::ProbeReport, String> {
    let opts = ProbeOptions::default().with_media_seconds(2.0).with_deadline(Duration::from_secs(15));
    tokio::task::spawn_blocking(move || probe(&url, opts)).await.unwrap()
}

fn copy_camera(input: &str) -> Value {
    json!({ "input": input, "video": { "mode": "copy" }, "audio": { "mode": "none" } })
}

#[tokio::test(flavor = "multi_thread")]
async fn api_cameras_come_back_from_the_state_file_after_a_restart() {
    let rtsp =
        RtspServer::start_with(RtspOptions { auth: Some(("admin".into(), "s3cret-pw".into())), ..Default::default() });
    let rtmp = RtmpServer::start();
    let base = format!("rtmp://127.0.0.1:{}", rtmp.port());
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let args = ["--rtmp-base", &base, "--data-dir", data_dir];
    let env = [("CAMGATE_TOKENS", TOKEN)];
    let input = rtsp.url_with_auth(mount::H264);

    let mut gateway = Gateway::start(logs.path(), &args, &env);
    use reqwest::Method;
    for camera in ["keep", "gone"] {
        let (status, body) =
            gateway.send(Method::PUT, &format!("/api/v1/cameras/{camera}"), Some(copy_camera(&input))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let on_demand = json!({ "input": input, "on_demand": true });
    let (status, body) = gateway.send(Method::PUT, "/api/v1/cameras/od", Some(on_demand)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["stream"], "live/livestreamod");
    let (status, body) = gateway.send(Method::DELETE, "/api/v1/cameras/gone", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    gateway.wait_for("keep", Duration::from_secs(20), running).await;

    let state_file = data.path().join("cameras.json");
    let mode = std::fs::metadata(&state_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the state file holds camera URLs with passwords");
    let saved: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let ids: Vec<&str> =
        saved["cameras"].as_array().unwrap().iter().map(|c| c["spec"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["keep", "od"], "{saved}");
    assert_eq!(saved["cameras"][0]["spec"]["input"], input, "the full spec, credentials included");

    // A restart (SIGTERM stops the cameras, which must not forget them), then a fresh process.
    gateway.terminate();
    let gateway = Gateway::start(logs.path(), &args, &env);
    gateway.wait_for("keep", Duration::from_secs(20), running).await;
    let report = read_back(rtmp.url("livestreamkeep")).await.expect("the stream is back on the RTMP server");
    assert!(report.video.as_ref().is_some_and(|v| v.codec == "h264" && v.stats.first_is_key), "{report:?}");
    assert!(gateway.camera("gone").await.is_none(), "a stopped camera stays stopped");
    // Players of an always-on camera are let through by the SRS hooks; of a stopped one, not.
    assert_eq!(gateway.hook("on_play", "livestreamkeep", "p1", Some(TOKEN)).await.1["code"], 0);
    assert_ne!(gateway.hook("on_play", "livestreamgone", "p1", Some(TOKEN)).await.1["code"], 0);
    let (_, registered) = gateway.send(Method::GET, "/api/v1/on_demand", None).await;
    assert_eq!(registered[0]["id"], "od", "{registered}");
    assert!(gateway.camera("od").await.is_none(), "an on-demand camera waits for a viewer");
    // Stopping everything (as the old pages did on unload) forgets the always-on cameras, not on-demand ones.
    let (status, _) = gateway.send(Method::DELETE, "/api/v1/cameras", None).await;
    assert_eq!(status, StatusCode::OK);
    let saved: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(saved["cameras"].as_array().unwrap().len(), 1, "{saved}");
    assert!(!gateway.log().contains("s3cret"), "no password in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_state_file_is_kept_aside_and_reported() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let state_file = data.path().join("cameras.json");
    std::fs::write(&state_file, b"{ this is not json").unwrap();
    let gateway = Gateway::start(logs.path(), &["--data-dir", data.path().to_str().unwrap()], &[]);

    let (status, body) = gateway.send(reqwest::Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "the gateway runs on with what the config says");
    let problem = body["state_file"].as_str().unwrap_or_default();
    assert!(problem.contains("invalid JSON") && problem.contains("corrupt-"), "{body}");
    assert!(gateway.log().contains("saved cameras not restored"), "{}", gateway.log());
    let aside: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("cameras.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read(&aside[0]).unwrap(), b"{ this is not json", "kept as it was");

    // New cameras are saved to a fresh file; the corrupt copy is left alone.
    let camera = json!({ "input": format!("rtsp://127.0.0.1:{}/x", free_port()) });
    let (status, body) = gateway.send(reqwest::Method::PUT, "/api/v1/cameras/n", Some(camera)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(std::fs::read_to_string(&state_file).unwrap().contains("\"n\""));
    assert_eq!(std::fs::read(&aside[0]).unwrap(), b"{ this is not json");
}

#[tokio::test(flavor = "multi_thread")]
async fn srs_hooks_start_an_on_demand_camera_and_stop_it_after_the_linger() {
    let rtsp = RtspServer::start();
    let rtmp = RtmpServer::start();
    let base = format!("rtmp://127.0.0.1:{}", rtmp.port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("camgate.toml");
    let input = rtsp.url(mount::H264);
    std::fs::write(
        &config,
        format!("[cameras.7]\ninput = \"{input}\"\non_demand = true\nvideo = {{ mode = \"copy\" }}\n"),
    )
    .unwrap();
    let linger = Duration::from_millis(1500);
    let linger_ms = linger.as_millis().to_string();
    let args = ["--config", config.to_str().unwrap(), "--rtmp-base", &base, "--on-demand-linger-ms", &linger_ms];
    let gateway = Gateway::start(dir.path(), &args, &[("CAMGATE_TOKENS", TOKEN)]);
    assert!(gateway.camera("7").await.is_none(), "not started before a viewer");

    // SRS cannot send a bearer header: without the URL's token the hook is refused.
    let (status, _) = gateway.hook("on_play", "livestream7", "c1", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = gateway.hook("on_play", "livestream99", "c1", Some(TOKEN)).await;
    assert_ne!(body["code"], 0, "an unknown stream is refused so SRS rejects the player ({status})");

    let asked = Instant::now();
    let (status, body) = gateway.hook("on_play", "livestream7", "c1", Some(TOKEN)).await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({ "code": 0 })));
    assert!(asked.elapsed() < Duration::from_secs(1), "answered at once, started in the background");
    let camera = gateway
        .wait_for("7", Duration::from_secs(20), |c| running(c) && c.is_some_and(|c| c["viewers"] == 1))
        .await
        .unwrap();
    assert_eq!(camera["output"], format!("{base}/live/livestream7"));
    let report = read_back(rtmp.url("livestream7")).await.expect("the on-demand stream reaches the RTMP server");
    assert!(report.video.is_some(), "{report:?}");
    let (_, body) = gateway.hook("on_publish", "livestream7", "camgate", Some(TOKEN)).await;
    assert_eq!(body["code"], 0, "publishes are never refused");

    let (status, body) = gateway.hook("on_stop", "livestream7", "c1", Some(TOKEN)).await;
    assert_eq!((status, body["code"].as_u64()), (StatusCode::OK, Some(0)));
    let left = Instant::now();
    gateway.wait_for("7", Duration::from_secs(10), |c| c.is_none()).await;
    let after = left.elapsed();
    assert!(after >= linger, "stopped {after:?} after the last viewer left, before the linger {linger:?}");
    // The RTMP server saw the publish end.
    let until = Instant::now() + Duration::from_secs(5);
    let published = |log: String| log.lines().any(|l| l.contains("PUBLISH") && l.contains("livestream7"));
    while !published(rtmp.access_log()) {
        assert!(Instant::now() < until, "no finished publish in the RTMP access log:\n{}", rtmp.access_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, registered) = gateway.send(reqwest::Method::GET, "/api/v1/on_demand", None).await;
    assert_eq!(registered[0]["viewers"], 0, "{registered}");
}

/// The same on-demand flow with SRS itself calling the hooks, configured as docs/OPERATIONS.md says (a hook
/// token in each hook URL): a browser-like HTTP-FLV player of the camera's stream starts it and gets its
/// picture; when the player leaves, the camera stops after the linger and SRS reports the publish's end; a
/// player of a stream no camera serves is refused. Run with
/// `CAMGATE_SRS=…/objs/srs cargo test --test ops_e2e -- --ignored srs` (see `common::srs`).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs SRS, which Debian does not package: CAMGATE_SRS=/path/to/objs/srs"]
async fn srs_itself_starts_an_on_demand_camera_for_its_player_and_stops_it_after_the_linger() {
    let rtsp = RtspServer::start();
    let dir = tempfile::tempdir().unwrap();
    let linger = Duration::from_millis(1500);
    let linger_ms = linger.as_millis().to_string();
    const HOOK_TOKEN: &str = "ops-e2e-hook-token-0123456789";
    let env = [("CAMGATE_TOKENS", TOKEN), ("CAMGATE_HOOK_TOKENS", HOOK_TOKEN)];
    let gateway = Gateway::start(dir.path(), &["--on-demand-linger-ms", &linger_ms], &env);
    let srs = SrsServer::start(SrsOptions {
        hooks: Some(gateway.base.clone()),
        hooks_token: Some(HOOK_TOKEN.to_owned()),
        ..SrsOptions::default()
    });
    let camera = json!({
        "input": rtsp.url(mount::H264_AAC), "output": srs.url("livestream7"), "on_demand": true,
        "video": { "mode": "copy" },
    });
    let (status, body) = gateway.send(reqwest::Method::PUT, "/api/v1/cameras/7", Some(camera)).await;
    assert!(status.is_success(), "{status}: {body}");
    assert!(gateway.camera("7").await.is_none(), "not started before a viewer");

    let player = tokio::task::spawn_blocking({
        let url = srs.flv_url("livestream7");
        move || probe(&url, ProbeOptions::default().with_media_seconds(3.0).with_deadline(Duration::from_secs(30)))
    });
    let camera = gateway
        .wait_for("7", Duration::from_secs(20), |c| running(c) && c.is_some_and(|c| c["viewers"] == 1))
        .await
        .unwrap();
    assert_eq!(camera["output"], srs.url("livestream7"));
    let report = player.await.unwrap().unwrap_or_else(|e| panic!("the player got nothing: {e}\nSRS:\n{}", srs.log()));
    let video = report.video.as_ref().expect("the player gets video");
    assert!(video.stats.first_is_key && video.stats.packets >= 50, "{report:?}");
    assert!(report.audio.as_ref().is_some_and(|a| a.stats.packets > 0), "and audio: {report:?}");

    // The player has gone: SRS reports it (on_stop), the camera stops after the linger, and SRS reports the end
    // of camgate's publish (on_unpublish), which the registry shows.
    let left = Instant::now();
    gateway.wait_for("7", Duration::from_secs(15), |c| c.is_none()).await;
    assert!(
        left.elapsed() >= linger - Duration::from_millis(200),
        "stopped {:?} after the player left",
        left.elapsed()
    );
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, registered) = gateway.send(reqwest::Method::GET, "/api/v1/on_demand", None).await;
        if registered[0]["published"] == false && registered[0]["viewers"] == 0 {
            break;
        }
        assert!(Instant::now() < until, "SRS never reported the end: {registered}\nSRS:\n{}", srs.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A stream no camera serves: the hook refuses it and SRS turns the player away instead of holding it.
    let refused = tokio::task::spawn_blocking({
        let url = srs.flv_url("livestream99");
        move || probe(&url, ProbeOptions::default().with_media_seconds(1.0).with_deadline(Duration::from_secs(10)))
    });
    let refused = refused.await.unwrap();
    assert!(refused.is_err(), "a player of an unknown stream got {refused:?}");
    assert!(gateway.camera("99").await.is_none());
}
