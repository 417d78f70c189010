//! Secrets never leave: a full session of the real binary with every kind of secret in play — operator,
//! viewer and hook tokens (hook calls authenticated with `?token=`), a viewer-URL signing secret, a camera
//! password, an RTMP stream key — and then every byte of every answer and of the whole log (at debug level,
//! FFmpeg's own lines included) is searched for each secret.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, RtmpServer, RtspOptions, RtspServer, free_port, mount};
use serde_json::{Value, json};

const OPERATOR: &str = "op-secret-token-7c1f9a2b4d";
const VIEWER: &str = "viewer-secret-token-55e0aa1c";
const HOOKS: &str = "hook-secret-token-0b94e7d2c1";
const SIGNING: &str = "signing-secret-3f8e2a9d0c7b6e5f4a3b2c1d0e";
const PASSWORD: &str = "cam-pass-Zq81";
const STREAM_KEY: &str = "live-key-xq7r-93mv-p0da";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_an_answer_or_the_log() {
    let rtsp =
        RtspServer::start_with(RtspOptions { auth: Some(("admin".into(), PASSWORD.into())), ..RtspOptions::default() });
    let rtmp = RtmpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log_path = dir.path().join("camgate.log");
    let env = [
        ("CAMGATE_TOKENS", OPERATOR),
        ("CAMGATE_VIEWER_TOKENS", VIEWER),
        ("CAMGATE_HOOK_TOKENS", HOOKS),
        ("CAMGATE_VIEWER_SECRET", SIGNING),
        ("CAMGATE_ALLOW_CAMERA_HOSTS", "127.0.0.0/8"),
        ("CAMGATE_FFMPEG_LOG", "debug"),
        ("RUST_LOG", "debug,ffmpeg=trace,camgate=trace"),
    ];
    let rtmp_base = format!("rtmp://127.0.0.1:{}", rtmp.port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_camgate"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--rtmp-base", &rtmp_base, "--data-dir"])
        .arg(dir.path().join("data"))
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut child = ChildGuard::spawn("camgate", cmd).unwrap();
    child.wait_listening(port, Duration::from_secs(20)).unwrap();

    let http = reqwest::Client::new();
    let mut answers = Vec::<String>::new();
    let record = |answers: &mut Vec<String>,
                  what: &str,
                  status: reqwest::StatusCode,
                  headers: &reqwest::header::HeaderMap,
                  body: &str| {
        let headers: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or(""))).collect();
        answers.push(format!("{what} -> {status}\n{}\n{body}", headers.join("\n")));
    };
    macro_rules! call {
        ($what:expr, $request:expr) => {{
            let response = $request.send().await.unwrap();
            let (status, headers) = (response.status(), response.headers().clone());
            let body = response.text().await.unwrap_or_default();
            record(&mut answers, $what, status, &headers, &body);
            (status, serde_json::from_str::<Value>(&body).unwrap_or(Value::Null))
        }};
    }

    // An operator starts a camera with a password, pushing to a stream key, and one through the old route.
    let camera =
        json!({"input": rtsp.url_with_auth(mount::H264_AAC), "output": format!("{rtmp_base}/live/{STREAM_KEY}")});
    let (status, _) =
        call!("put", http.put(format!("{base}/api/v1/cameras/secret")).bearer_auth(OPERATOR).json(&camera));
    assert_eq!(status, 201);
    let (status, legacy) = call!(
        "play_camera",
        http.post(format!("{base}/play_camera"))
            .bearer_auth(OPERATOR)
            .form(&[("id", "old"), ("ip", &rtsp.url_with_auth(mount::H264))])
    );
    assert_eq!(status, 200, "{legacy}");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, cameras) = call!("list", http.get(format!("{base}/api/v1/cameras")).bearer_auth(OPERATOR));
        if cameras.as_array().is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["state"] == "running")) {
            break;
        }
        assert!(Instant::now() < until, "cameras never ran: {cameras}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Watching: a viewer token, a signed URL; SRS's hooks with the token in the URL and a signed player.
    let (_, urls) =
        call!("viewer_url", http.get(format!("{base}/api/v1/cameras/secret/viewer_url")).bearer_auth(OPERATOR));
    let signed = urls["preview_url"].as_str().unwrap().split_once('?').unwrap().1.to_owned();
    call!("snapshot", http.get(format!("{base}/api/v1/cameras/secret/snapshot.jpg?width=160")).bearer_auth(VIEWER));
    let preview = http.get(format!("{base}/live/secret.flv?{signed}")).send().await.unwrap();
    assert_eq!(preview.status(), 200);
    drop(preview);
    for (action, param) in
        [("on_publish", String::new()), ("on_play", format!("?{signed}")), ("on_stop", String::new())]
    {
        let hook = json!({"action": action, "client_id": "c1", "ip": "10.0.0.9", "vhost": "__defaultVhost__",
                          "app": "live", "stream": STREAM_KEY, "param": param});
        call!(action, http.post(format!("{base}/api/v1/srs/{action}?token={HOOKS}")).json(&hook));
    }
    // Everything a client can read back, and some failures.
    for path in [
        "/api/v1/cameras",
        "/api/v1/cameras/secret",
        "/api/v1/on_demand",
        "/metrics",
        "/openapi.json",
        "/readyz",
        "/api/v1/gateway",
    ] {
        call!(path, http.get(format!("{base}{path}")).bearer_auth(OPERATOR));
    }
    call!("wrong token", http.get(format!("{base}/api/v1/cameras")).bearer_auth("not-the-token-0000000"));
    call!("viewer on control", http.get(format!("{base}/api/v1/cameras")).bearer_auth(VIEWER));
    call!("hook token on control", http.get(format!("{base}/api/v1/cameras")).bearer_auth(HOOKS));
    let mut events = http.get(format!("{base}/api/v1/events")).bearer_auth(OPERATOR).send().await.unwrap();
    let mut streamed = Vec::new();
    while streamed.len() < 8_000 {
        match tokio::time::timeout(Duration::from_secs(3), events.chunk()).await {
            Ok(Ok(Some(chunk))) => streamed.extend_from_slice(&chunk),
            _ => break,
        }
    }
    answers.push(String::from_utf8_lossy(&streamed).into_owned());
    call!("delete", http.delete(format!("{base}/api/v1/cameras/secret")).bearer_auth(OPERATOR));

    // check-config prints the effective configuration.
    let check = Command::new(env!("CARGO_BIN_EXE_camgate")).arg("check-config").envs(env).output().unwrap();
    answers.push(String::from_utf8_lossy(&check.stdout).into_owned() + &String::from_utf8_lossy(&check.stderr));

    child.terminate(Duration::from_secs(10));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("camera started") && log.contains("target") || log.len() > 10_000,
        "a full log: {} bytes",
        log.len()
    );
    let state_file = std::fs::read_to_string(dir.path().join("data/cameras.json")).unwrap_or_default();
    assert!(state_file.contains(PASSWORD), "the state file (mode 0600) is the one place the password is kept");
    for secret in [OPERATOR, VIEWER, HOOKS, SIGNING, PASSWORD, STREAM_KEY] {
        for answer in &answers {
            assert!(!answer.contains(secret), "{secret} in an answer:\n{answer}");
        }
        let leaked: Vec<&str> = log.lines().filter(|l| l.contains(secret)).take(3).collect();
        assert!(leaked.is_empty(), "{secret} in the log:\n{}", leaked.join("\n"));
    }
    eprintln!("searched {} answers and {} bytes of log for 6 secrets", answers.len(), log.len());
}
