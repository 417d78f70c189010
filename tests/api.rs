//! Handler tests: the router driven in-process through `tower::ServiceExt::oneshot`, one test per behaviour
//! and status code the API promises. Cameras point at a closed local port, so their workers start (which is
//! all a start waits for) and then retry quietly; no media server is needed.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use camgate::api::{ApiError, ApiSettings, AppState, router};
use camgate::gateway::config::Config;
use camgate::{CameraId, Gateway, SupervisorError};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Nothing listens on port 9 (discard) here: connections are refused at once.
const DEAD_CAMERA: &str = "rtsp://127.0.0.1:9/stream";
const TOKEN: &str = "test-token-0123456789";

fn app_with(mut config: Config) -> (Router, AppState) {
    // The dead camera is on loopback, which camgate refuses by default.
    config.camera_hosts.allow.push("127.0.0.0/8".into());
    config.validate().expect("test config is valid");
    let state = AppState::new(Gateway::from_config(&config, None), ApiSettings::from_config(&config));
    (router(state.clone()), state)
}

fn app() -> (Router, AppState) {
    app_with(Config::default())
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    text: String,
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, headers, body, text }
}

fn form(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::HOST, "gw.example.com:7000")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn json_request(method: Method, uri: &str, body: Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn delete(uri: &str) -> Request<Body> {
    Request::delete(uri).body(Body::empty()).unwrap()
}

fn assert_error(reply: &Reply, status: StatusCode, field: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.body["code"], status.as_u16(), "{}", reply.text);
    assert!(reply.body["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", reply.text);
    assert_eq!(reply.body["message"], reply.body["error"]);
    assert_eq!(reply.body["field"].as_str(), field, "{}", reply.text);
}

#[tokio::test]
async fn play_camera_starts_and_answers_the_viewer_url() {
    let (app, state) = app();
    let reply = send(&app, form("/play_camera", &format!("id=7&ip={}", urlencode(DEAD_CAMERA)))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["code"], 200);
    assert_eq!(reply.body["flv_data"], "http://gw.example.com:8080/live/livestream7.flv");
    assert!(reply.body["message"].as_str().unwrap().contains("started"));
    let camera = state.gateway.supervisor().status(&"7".parse().unwrap()).expect("camera is known");
    assert_eq!(camera.output.as_deref(), Some("rtmp://127.0.0.1:1935/live/livestream7"));

    // The same camera again: found running, not restarted.
    let again = send(&app, form("/play_camera", &format!("id=7&ip={}", urlencode(DEAD_CAMERA)))).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.body["message"].as_str().unwrap().contains("already running"), "{}", again.text);
    state.gateway.supervisor().stop_all().await;
}

#[tokio::test]
async fn play_camera_takes_json_and_a_configured_public_host() {
    let config = Config { public_host: Some("cams.example.org".into()), ..Config::default() };
    let (app, state) = app_with(config);
    let request = json_request(Method::POST, "/play_camera", json!({"id": "cam_2", "ip": DEAD_CAMERA}));
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["flv_data"], "http://cams.example.org:8080/live/livestreamcam_2.flv");
    state.gateway.supervisor().stop_all().await;
}

#[tokio::test]
async fn play_camera_rejects_bad_ids_and_urls_naming_the_field() {
    let (app, state) = app();
    for id in ["", "a/b", "a?b", "../x", &"x".repeat(65)] {
        let reply =
            send(&app, form("/play_camera", &format!("id={}&ip={}", urlencode(id), urlencode(DEAD_CAMERA)))).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, Some("id"));
    }
    for url in [
        "file:///etc/passwd",
        "/etc/passwd",
        "concat:a.flv|b.flv",
        "pipe:0",
        "subfile:,,start,0,end,0,,:/etc/passwd",
        "lavfi:testsrc",
        "http://127.0.0.1/x",
        "rtmp://127.0.0.1/live/x",
        "",
    ] {
        let reply = send(&app, form("/play_camera", &format!("id=a&ip={}", urlencode(url)))).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, Some("ip"));
    }
    assert!(state.gateway.supervisor().snapshot().is_empty(), "nothing was started");
}

#[tokio::test]
async fn malformed_bodies_are_400_and_oversized_ones_413() {
    let (app, _state) = app();
    let reply = send(&app, form("/play_camera", "id=a")).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, Some("ip"));
    let reply = send(&app, form("/play_camera", "%%%")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let request = Request::post("/play_camera")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"id\": "))
        .unwrap();
    assert_error(&send(&app, request).await, StatusCode::BAD_REQUEST, Some("body"));
    let big = format!("id=a&ip={}", "x".repeat(70 * 1024));
    assert_error(&send(&app, form("/play_camera", &big)).await, StatusCode::PAYLOAD_TOO_LARGE, Some("body"));
}

#[tokio::test]
async fn over_the_cap_is_an_immediate_429_and_running_cameras_stay() {
    let (app, state) = app_with(Config { max_cameras: 2, ..Config::default() });
    for id in ["a", "b"] {
        let reply = send(&app, form("/play_camera", &format!("id={id}&ip={}", urlencode(DEAD_CAMERA)))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    let started = std::time::Instant::now();
    let reply = send(&app, form("/play_camera", &format!("id=c&ip={}", urlencode(DEAD_CAMERA)))).await;
    assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, Some("id"));
    assert!(reply.body["error"].as_str().unwrap().contains("limit"), "{}", reply.text);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    let put = json_request(Method::PUT, "/api/v1/cameras/c", json!({"input": DEAD_CAMERA}));
    assert_error(&send(&app, put).await, StatusCode::TOO_MANY_REQUESTS, Some("id"));
    let ids: Vec<String> = state.gateway.supervisor().snapshot().into_iter().map(|c| c.id.to_string()).collect();
    assert_eq!(ids, ["a", "b"]);
    state.gateway.supervisor().stop_all().await;
}

#[tokio::test]
async fn stop_camera_and_stop_all() {
    let (app, state) = app();
    assert_error(&send(&app, form("/stop_camera", "id=nope")).await, StatusCode::NOT_FOUND, Some("id"));
    assert_error(&send(&app, form("/stop_camera", "id=a%2Fb")).await, StatusCode::BAD_REQUEST, Some("id"));
    for id in ["a", "b", "c"] {
        send(&app, form("/play_camera", &format!("id={id}&ip={}", urlencode(DEAD_CAMERA)))).await;
    }
    let reply = send(&app, form("/stop_camera", "id=a")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["code"], 200);
    assert_eq!(state.gateway.supervisor().snapshot().len(), 2);
    let request = json_request(Method::POST, "/stop_camera", json!({"id": "b"}));
    assert_eq!(send(&app, request).await.status, StatusCode::OK);
    let reply = send(&app, Request::post("/stop_all_camera").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["code"], 200);
    assert!(state.gateway.supervisor().snapshot().is_empty());
}

#[tokio::test]
async fn rest_put_get_delete() {
    let (app, state) = app();
    let spec = json!({"input": DEAD_CAMERA, "video": {"mode": "transcode", "encoding": {"preset": "ultrafast"}}});
    let reply = send(&app, json_request(Method::PUT, "/api/v1/cameras/door", spec.clone())).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["id"], "door");
    assert_eq!(reply.body["output"], "rtmp://127.0.0.1:1935/live/livestreamdoor");

    let with_output = json!({"input": DEAD_CAMERA, "output": "rtmp://127.0.0.1:1935/live/other"});
    let reply = send(&app, json_request(Method::PUT, "/api/v1/cameras/door", with_output)).await;
    assert_eq!(reply.status, StatusCode::OK, "replaced: {}", reply.text);
    // A stream name that does not name the camera may be a stream key: it is never shown.
    assert_eq!(reply.body["output"], "rtmp://127.0.0.1:1935/live/***");

    let reply = send(&app, get("/api/v1/cameras/door")).await;
    assert_eq!(reply.status, StatusCode::OK);
    for key in ["state", "rates", "totals", "uptime_secs", "restarts", "last_error", "session"] {
        assert!(reply.body.get(key).is_some(), "missing {key}: {}", reply.text);
    }
    let list = send(&app, get("/api/v1/cameras")).await;
    assert_eq!(list.body.as_array().map(Vec::len), Some(1));

    assert_error(&send(&app, get("/api/v1/cameras/nope")).await, StatusCode::NOT_FOUND, Some("id"));
    assert_error(&send(&app, get("/api/v1/cameras/a.b")).await, StatusCode::BAD_REQUEST, Some("id"));
    let reply = send(&app, delete("/api/v1/cameras/door")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["id"], "door");
    assert_error(&send(&app, delete("/api/v1/cameras/door")).await, StatusCode::NOT_FOUND, Some("id"));

    for id in ["x", "y"] {
        send(&app, json_request(Method::PUT, &format!("/api/v1/cameras/{id}"), spec.clone())).await;
    }
    let reply = send(&app, delete("/api/v1/cameras")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["stopped"], 2);
    assert!(state.gateway.supervisor().snapshot().is_empty());
}

#[tokio::test]
async fn rest_put_rejects_bad_specs_without_disturbing_the_running_camera() {
    let (app, state) = app();
    let good = json!({"input": DEAD_CAMERA});
    assert_eq!(send(&app, json_request(Method::PUT, "/api/v1/cameras/door", good)).await.status, StatusCode::CREATED);
    let started_at = state.gateway.supervisor().status(&"door".parse().unwrap()).unwrap().started_at_ms;
    let cases = [
        (json!({"input": "file:///etc/passwd"}), "input"),
        (json!({"input": DEAD_CAMERA, "output": "/tmp/x.flv"}), "output"),
        (json!({"input": DEAD_CAMERA, "output": "pipe:1"}), "output"),
        (json!({"input": DEAD_CAMERA, "output": "http://x/y"}), "output"),
        (json!({"input": DEAD_CAMERA, "inptu": 1}), "inptu"),
        (json!({"input": DEAD_CAMERA, "read_batch_ms": 101}), "read_batch_ms"),
        (json!({"output": "rtmp://h/live/x"}), "input"),
        (json!({"input": DEAD_CAMERA, "video": {"encoding": {"preset": "warp"}}}), "video.encoding.preset"),
        (json!({"input": DEAD_CAMERA, "audio": {"encoding": {"bitrate_kbps": 5000}}}), "audio.encoding.bitrate_kbps"),
        (json!({"input": DEAD_CAMERA, "timeouts": {"read_ms": 1}}), "timeouts.read_ms"),
    ];
    for (body, field) in cases {
        let reply = send(&app, json_request(Method::PUT, "/api/v1/cameras/door", body.clone())).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, Some(field));
    }
    let camera = state.gateway.supervisor().status(&"door".parse().unwrap()).unwrap();
    assert!(camera.state.is_live());
    assert_eq!(camera.started_at_ms, started_at, "the running camera was not restarted");
    state.gateway.supervisor().stop_all().await;
}

#[tokio::test]
async fn tokens_guard_control_routes() {
    let mut config = Config::default();
    config.auth.tokens = vec![TOKEN.into()];
    let (app, _state) = app_with(config.clone());
    let bearer = |request: Request<Body>, token: &str| {
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        Request::from_parts(parts, body)
    };
    let reply = send(&app, get("/api/v1/cameras")).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, Some("authorization"));
    assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(
        send(&app, bearer(get("/api/v1/cameras"), "wrong-token-0123456789")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&app, bearer(get("/api/v1/cameras"), TOKEN)).await.status, StatusCode::OK);
    assert_eq!(send(&app, form("/stop_all_camera", "")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&app, get("/api/v1/events")).await.status, StatusCode::UNAUTHORIZED);
    // Probes and metrics stay open unless configured otherwise.
    assert_eq!(send(&app, get("/healthz")).await.status, StatusCode::OK);
    assert_eq!(send(&app, get("/metrics")).await.status, StatusCode::OK);

    config.auth.protect_health = true;
    config.auth.protect_metrics = true;
    let (app, _state) = app_with(config);
    assert_eq!(send(&app, get("/healthz")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&app, get("/metrics")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&app, bearer(get("/metrics"), TOKEN)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn cors_on_every_route() {
    let (app, _state) = app();
    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri("/play_camera")
        .header(header::ORIGIN, "http://ui.example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, preflight).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let request = Request::get("/api/v1/cameras/nope")
        .header(header::ORIGIN, "http://ui.example.com")
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*", "errors carry CORS headers too");

    let mut config = Config::default();
    config.cors.allowed_origins = vec!["https://ops.example.com".into()];
    config.cors.allow_credentials = true;
    config.auth.tokens = vec![TOKEN.into()];
    let (app, _state) = app_with(config);
    let from =
        |origin: &str| Request::get("/api/v1/cameras").header(header::ORIGIN, origin).body(Body::empty()).unwrap();
    let reply = send(&app, from("https://ops.example.com")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://ops.example.com");
    assert_eq!(reply.headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    let reply = send(&app, from("https://evil.example.com")).await;
    assert!(reply.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let (app, _state) = app();
    assert_error(&send(&app, get("/nope")).await, StatusCode::NOT_FOUND, None);
    assert_error(&send(&app, get("/play_camera")).await, StatusCode::METHOD_NOT_ALLOWED, None);
    assert_error(
        &send(&app, Request::post("/api/v1/cameras").body(Body::empty()).unwrap()).await,
        StatusCode::METHOD_NOT_ALLOWED,
        None,
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let (app, state) = app();
    let reply = send(&app, get("/healthz")).await;
    assert_eq!((reply.status, reply.body["status"].as_str()), (StatusCode::OK, Some("ok")));
    assert_eq!(send(&app, get("/readyz")).await.status, StatusCode::OK);
    state.gateway.begin_shutdown();
    assert_eq!(send(&app, get("/readyz")).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send(&app, get("/healthz")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn passwords_never_appear_in_answers_or_metrics() {
    let (app, state) = app();
    let url = "rtsp://admin:hunter2@127.0.0.1:9/stream";
    let reply = send(&app, form("/play_camera", &format!("id=secret&ip={}", urlencode(url)))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!reply.text.contains("hunter2"));
    // Once the worker has failed a connection, its error is in the answers too.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let reply = send(&app, get("/api/v1/cameras/secret")).await;
        if reply.body["last_error"].as_str().is_some_and(|e| !e.is_empty()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no connection failure reported: {}", reply.text);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for uri in ["/api/v1/cameras", "/api/v1/cameras/secret", "/metrics"] {
        let reply = send(&app, get(uri)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(!reply.text.contains("hunter2"), "{uri}: {}", reply.text);
    }
    let metrics = send(&app, get("/metrics")).await.text;
    assert!(metrics.contains("camgate_camera_state{camera=\"secret\","), "{metrics}");
    assert!(metrics.contains("camgate_camera_fps_in{camera=\"secret\"}"), "{metrics}");
    assert!(
        metrics.contains("camgate_http_requests_total{route=\"/play_camera\",method=\"POST\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("camgate_cameras_max 5"));
    state.gateway.supervisor().stop_all().await;
}

#[tokio::test]
async fn openapi_document_describes_the_routes() {
    let (app, _state) = app();
    let reply = send(&app, get("/openapi.json")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let paths = reply.body["paths"].as_object().expect("paths");
    for path in [
        "/play_camera",
        "/stop_camera",
        "/stop_all_camera",
        "/api/v1/cameras",
        "/api/v1/cameras/{id}",
        "/api/v1/events",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    let schemas = reply.body["components"]["schemas"].as_object().expect("schemas");
    for schema in ["CameraStatus", "CameraConfig", "ErrorBody", "LegacyReply", "VideoSpec"] {
        assert!(schemas.contains_key(schema), "{schema} missing");
    }
}

#[tokio::test]
async fn events_start_with_a_snapshot() {
    let (app, state) = app();
    send(&app, form("/play_camera", &format!("id=ev&ip={}", urlencode(DEAD_CAMERA)))).await;
    let response = app.clone().oneshot(get("/api/v1/events")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = response.into_body();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !(seen.contains("event: snapshot") && seen.contains("event: status")) {
        let frame = tokio::time::timeout_at(deadline, body.frame()).await.expect("events arrive").unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(seen.contains("\"id\":\"ev\""), "{seen}");
    // Shutdown ends the stream, so a graceful drain is not held up by dashboards.
    state.gateway.begin_shutdown();
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    });
    end.await.expect("the stream ends on shutdown");
    state.gateway.supervisor().stop_all().await;
}

#[test]
fn supervisor_errors_map_to_statuses() {
    let id: CameraId = "a".parse().unwrap();
    let cases = [
        (SupervisorError::LimitReached { running: 5, limit: 5 }, StatusCode::TOO_MANY_REQUESTS),
        (SupervisorError::NotFound(id.clone()), StatusCode::NOT_FOUND),
        (SupervisorError::Stopping(id.clone()), StatusCode::CONFLICT),
        (
            SupervisorError::StopTimeout { camera: id.clone(), after: std::time::Duration::from_secs(5) },
            StatusCode::GATEWAY_TIMEOUT,
        ),
        (
            SupervisorError::Spawn { camera: id.clone(), source: std::io::Error::other("EAGAIN") },
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (SupervisorError::ShutDown, StatusCode::SERVICE_UNAVAILABLE),
        (SupervisorError::InvalidSpec(camgate::SpecError::new("video.encoding.crf", "x")), StatusCode::BAD_REQUEST),
    ];
    for (error, status) in cases {
        assert_eq!(ApiError::from(error).status(), status);
    }
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)]).unwrap().trim_start_matches("v=").to_owned()
}

#[tokio::test]
async fn dashboard_files_are_served_from_the_web_folder_without_a_token() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<!doctype html><title>camgate</title>").unwrap();
    std::fs::write(web.path().join("dashboard.js"), "'use strict';").unwrap();
    let mut config = Config { web_dir: web.path().to_owned(), ..Config::default() };
    config.auth.tokens = vec![TOKEN.into()];
    let (app, _) = app_with(config);

    let page = send(&app, get("/")).await;
    assert_eq!(page.status, StatusCode::OK, "the page loads before it can ask for a token");
    assert_eq!(page.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(page.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("frame-ancestors 'none'"));
    assert!(page.text.contains("<title>camgate</title>"));
    let script = send(&app, get("/ui/dashboard.js")).await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(script.headers[header::CONTENT_TYPE], "text/javascript; charset=utf-8");

    // `npm ci` not run: the operator is told what to do.
    let player = send(&app, get("/ui/mpegts.js")).await;
    assert_error(&player, StatusCode::INTERNAL_SERVER_ERROR, None);
    assert!(player.body["error"].as_str().unwrap().contains("npm ci"), "{}", player.text);
    let style = send(&app, get("/ui/dashboard.css")).await;
    assert_error(&style, StatusCode::INTERNAL_SERVER_ERROR, None);
    assert!(style.body["error"].as_str().unwrap().contains("web_dir"), "{}", style.text);

    // Only the listed files: nothing else in the folder, and no way out of it.
    for uri in ["/ui/package.json", "/ui/..%2Findex.html", "/ui/node_modules"] {
        assert_error(&send(&app, get(uri)).await, StatusCode::NOT_FOUND, None);
    }
    // The data behind the page still needs the token.
    assert_eq!(send(&app, get("/api/v1/events")).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_start_beyond_the_cpu_budget_is_refused_at_once_naming_it() {
    // One core at half its capacity: a copied camera fits, a 1080p transcode (about 0.8 cores) does not.
    let config = Config { cpu_cores: Some(1), cpu_budget: 0.5, ..Config::default() };
    let (app, state) = app_with(config);
    let copy = json!({"input": DEAD_CAMERA, "video": {"mode": "copy"}});
    let reply = send(&app, json_request(Method::PUT, "/api/v1/cameras/cheap", copy)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let transcode = json!({"input": DEAD_CAMERA, "video": {"mode": "transcode"}});
    let reply = send(&app, json_request(Method::PUT, "/api/v1/cameras/dear", transcode)).await;
    assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, None);
    assert_eq!(reply.body["limit"], "cpu_budget", "{}", reply.text);
    assert!(state.gateway.status(&"dear".parse().unwrap()).is_none(), "nothing started");
    // A smaller picture fits.
    let small = json!({"input": DEAD_CAMERA, "video": {"mode": "transcode", "encoding": {"width": 640}}});
    let reply = send(&app, json_request(Method::PUT, "/api/v1/cameras/dear", small)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    state.gateway.supervisor().stop_all().await;
}
