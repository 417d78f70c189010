//! The built-in preview through the router: the demo camera (no RTMP server anywhere) played over
//! `/live/{id}.flv`, its snapshot, and the URLs the legacy and REST answers give for it.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use camgate::api::{ApiSettings, AppState, router};
use camgate::gateway::config::Config;
use camgate::{Gateway, WorkerState};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

fn demo_app() -> (axum::Router, AppState) {
    // The demo configuration: nothing is pushed anywhere, cameras go to the built-in preview.
    let config = Config::from_toml("output_template = \"none\"\n").expect("valid TOML");
    config.validate().expect("valid config");
    let state = AppState::new(Gateway::from_config(&config, None), ApiSettings::from_config(&config));
    (router(state.clone()), state)
}

async fn wait_running(state: &AppState, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = id.parse().unwrap();
    while state.gateway.supervisor().status(&id).is_none_or(|s| s.state != WorkerState::Running) {
        assert!(Instant::now() < deadline, "camera never ran: {:?}", state.gateway.supervisor().status(&id));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_camera_plays_over_http_flv_and_answers_snapshots() {
    let (app, state) = demo_app();
    let play = Request::post("/play_camera")
        .header(header::HOST, "127.0.0.1:7000")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("id=demo&ip=demo%3A%2F%2F"))
        .unwrap();
    let reply = app.clone().oneshot(play).await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(&reply.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["flv_data"], "http://127.0.0.1:7000/live/demo.flv", "no RTMP output: the built-in URL");
    wait_running(&state, "demo").await;

    let live = app.clone().oneshot(Request::get("/live/demo.flv").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(live.headers()[header::CONTENT_TYPE], "video/x-flv");
    let mut body = live.into_body();
    let mut bytes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bytes.len() < 100_000 && Instant::now() < deadline {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("data keeps coming");
        if let Some(Ok(frame)) = frame
            && let Ok(data) = frame.into_data()
        {
            bytes.extend_from_slice(&data);
        }
    }
    assert_eq!(&bytes[..3], b"FLV", "an FLV stream");
    assert!(bytes.len() >= 100_000, "live data flows: {} bytes", bytes.len());
    assert_eq!(
        state.gateway.supervisor().status(&"demo".parse().unwrap()).unwrap().preview_path.as_deref(),
        Some("/live/demo.flv")
    );

    let snapshot =
        app.clone().oneshot(Request::get("/api/v1/cameras/demo/snapshot.jpg?width=320").body(Body::empty()).unwrap());
    let snapshot = snapshot.await.unwrap();
    assert_eq!(snapshot.status(), StatusCode::OK);
    assert_eq!(snapshot.headers()[header::CONTENT_TYPE], "image/jpeg");
    let jpeg = snapshot.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&jpeg[..2], &[0xff, 0xd8]);

    for (uri, status) in [
        ("/live/nope.flv", StatusCode::NOT_FOUND),
        ("/live/demo.mp4", StatusCode::NOT_FOUND),
        ("/api/v1/cameras/nope/snapshot.jpg", StatusCode::NOT_FOUND),
        ("/api/v1/cameras/a%3Fb/snapshot.jpg", StatusCode::BAD_REQUEST),
    ] {
        let reply = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(reply.status(), status, "{uri}");
    }
    state.gateway.supervisor().shutdown().await;
}
