//! Every resource a client can make the gateway hold is bounded: each limit refuses the next client with a JSON
//! error naming the setting, gives the place back when a client leaves, and disturbs no running camera. Driven
//! through the router (`oneshot`) against real cameras from the RTSP fixture.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use camgate::api::{ApiSettings, AppState, router};
use camgate::gateway::config::Config;
use camgate::{CameraId, Gateway};
use common::{RtspServer, mount};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn id(s: &str) -> CameraId {
    s.parse().unwrap()
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value, axum::response::Response) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    if status.is_success() {
        // Streaming answers (preview, events) are handed back whole: the caller holds or drops them.
        return (status, Value::Null, response);
    }
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), axum::response::Response::default())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn assert_limited(status: StatusCode, body: &Value, setting: &str) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], 429, "{body}");
    assert_eq!(body["limit"], setting, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains(setting)), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_refuses_the_next_client_and_running_cameras_keep_their_frame_rate() {
    let rtsp = RtspServer::start();
    let text = r#"
        output_template = "none"
        [camera_hosts]
        allow = ["127.0.0.0/8"]
        [limits]
        preview_viewers = 2
        preview_viewers_per_camera = 1
        event_clients = 1
        snapshot_decodes = 1
        on_demand_viewers_per_camera = 1
    "#;
    let config = Config::from_toml(text).unwrap();
    config.validate().unwrap();
    let gateway = Gateway::from_config(&config, None);
    let app = router(AppState::new(gateway.clone(), ApiSettings::from_config(&config)));
    for camera in ["a", "b", "c"] {
        let body = json!({"input": rtsp.url(mount::H264), "video": {"mode": "copy"}});
        let request = Request::put(format!("/api/v1/cameras/{camera}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        assert_eq!(send(&app, request).await.0, StatusCode::CREATED);
    }
    common::wait_for(Duration::from_secs(20), "three running cameras", || {
        gateway.statuses().iter().all(|s| s.state == camgate::WorkerState::Running).then_some(())
    });

    // Preview viewers: one per camera, two in all.
    let (status, _, a1) = send(&app, get("/live/a.flv")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, _) = send(&app, get("/live/a.flv")).await;
    assert_limited(status, &body, "limits.preview_viewers_per_camera");
    let (status, _, b1) = send(&app, get("/live/b.flv")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, _) = send(&app, get("/live/c.flv")).await;
    assert_limited(status, &body, "limits.preview_viewers");
    drop(a1);
    let (status, _, c1) = send(&app, get("/live/c.flv")).await;
    assert_eq!(status, StatusCode::OK, "a viewer that left gave its place back");

    // Event streams.
    let (status, _, events) = send(&app, get("/api/v1/events")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, _) = send(&app, get("/api/v1/events")).await;
    assert_limited(status, &body, "limits.event_clients");
    drop(events);
    let (status, _, events) = send(&app, get("/api/v1/events")).await;
    assert_eq!(status, StatusCode::OK);

    // Snapshots decoded at once: bursts until one arrives while another decodes.
    let mut refused = None;
    for _ in 0..20 {
        let burst: Vec<_> =
            (0..12).map(|_| tokio::spawn(send_owned(app.clone(), "/api/v1/cameras/a/snapshot.jpg"))).collect();
        for reply in burst {
            let (status, body) = reply.await.unwrap();
            match status {
                StatusCode::OK => {}
                StatusCode::TOO_MANY_REQUESTS => refused = Some(body),
                other => panic!("snapshot answered {other}: {body}"),
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let body = refused.expect("a snapshot beyond limits.snapshot_decodes is refused");
    assert_limited(StatusCode::TOO_MANY_REQUESTS, &body, "limits.snapshot_decodes");

    // Viewers the RTMP server's hooks report, per camera.
    let on_demand =
        json!({"input": rtsp.url(mount::H264), "output": "rtmp://127.0.0.1:1/live/livestreamd", "on_demand": true});
    let request = Request::put("/api/v1/cameras/d")
        .header("content-type", "application/json")
        .body(Body::from(on_demand.to_string()))
        .unwrap();
    assert_eq!(send(&app, request).await.0, StatusCode::ACCEPTED);
    let hook = |client: &str| {
        let body =
            json!({"action": "on_play", "client_id": client, "ip": "10.0.0.9", "app": "live", "stream": "livestreamd"});
        Request::post("/api/v1/srs/on_play")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    assert_eq!(send(&app, hook("v1")).await.0, StatusCode::OK);
    let (status, body, _) = send(&app, hook("v2")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], 429, "SRS refuses the player on a non-zero code: {body}");
    assert!(body["msg"].as_str().unwrap().contains("limits.on_demand_viewers_per_camera"), "{body}");
    assert_eq!(send(&app, hook("v1")).await.0, StatusCode::OK, "a viewer already counted is not a new one");

    // Metrics labels stay bounded whatever method a client sends, and before authentication.
    let weird =
        Request::builder().method(Method::from_bytes(b"BREW").unwrap()).uri("/nowhere").body(Body::empty()).unwrap();
    send(&app, weird).await;
    let metrics = app.clone().oneshot(get("/metrics")).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains(r#"route="unmatched",method="other""#), "{metrics}");
    assert!(!metrics.contains("BREW"));

    // Through all of it, the cameras kept their pace. Rates are over a 5 s window: wait until it is full and
    // past the start, when the frames buffered during stream probing go out at once.
    for camera in ["a", "b", "c"] {
        let status = common::wait_for(Duration::from_secs(15), "a full rate window", || {
            gateway.status(&id(camera)).filter(|s| s.uptime_secs > 8.0)
        });
        eprintln!("{camera}: {:.2} fps in, {:.2} fps out", status.rates.fps_in, status.rates.fps_out);
        assert!((22.0..=28.0).contains(&status.rates.fps_out), "{camera}: {} fps out", status.rates.fps_out);
    }
    drop((b1, c1, events));
    gateway.shutdown().await;
}

async fn send_owned(app: Router, uri: &'static str) -> (StatusCode, Value) {
    let (status, body, _) = send(&app, get(uri)).await;
    (status, body)
}
