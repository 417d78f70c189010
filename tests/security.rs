//! The API against an attacker: cameras where they must not be, roles, signed viewer URLs (tampered, expired,
//! for another camera, through SRS's hook), failed-authentication throttling, and browser origins. Driven
//! through the router (`oneshot`) with the built-in demo camera where video is needed; every refusal must be
//! JSON naming the field or the limit, and disturb nothing running.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use camgate::api::{ApiSettings, AppState, router};
use camgate::gateway::config::Config;
use camgate::gateway::{Gateway, GatewaySettings};
use camgate::runtime::clock::ManualClock;
use camgate::{CameraId, Supervisor, WorkerState};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const OPERATOR: &str = "operator-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789ab";
const HOOKS: &str = "hook-token-0123456789abcd";
const SECRET: &str = "viewer-secret-0123456789abcdef0123456789";

struct App {
    router: Router,
    gateway: Gateway,
    clock: Option<std::sync::Arc<ManualClock>>,
}

fn build(text: &str, manual_clock: bool) -> App {
    let config = Config::from_toml(text).expect("valid TOML");
    config.validate().expect("valid configuration");
    let clock = manual_clock.then(ManualClock::new);
    let mut supervisor = config.supervisor_config();
    if let Some(clock) = &clock {
        supervisor.clock = clock.clone();
    }
    let gateway = Gateway::new(Supervisor::new(supervisor), GatewaySettings::from_config(&config), None);
    let router = router(AppState::new(gateway.clone(), ApiSettings::from_config(&config)));
    App { router, gateway, clock }
}

struct Reply {
    status: StatusCode,
    body: Value,
    response: Option<axum::response::Response>,
}

async fn send(app: &App, mut request: Request<Body>, from: &str) -> Reply {
    request.extensions_mut().insert(ConnectInfo(from.parse::<SocketAddr>().unwrap()));
    let response = app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let streaming = response.headers().get(header::CONTENT_TYPE).is_some_and(|t| t == "video/x-flv");
    if streaming {
        return Reply { status, body: Value::Null, response: Some(response) };
    }
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), response: None }
}

fn request(method: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    match body {
        Some(body) => builder.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap()
}

fn form(uri: &str, body: &str, origin: Option<&str>) -> Request<Body> {
    let mut builder = Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(origin) = origin {
        builder = builder.header(header::ORIGIN, origin);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

const CLIENT: &str = "10.9.8.7:40000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_where_they_must_not_be_are_refused_naming_the_field() {
    let app = app("output_template = \"none\"");
    // One camera running, to show that refusals disturb nothing.
    let reply = send(&app, form("/play_camera", "id=demo&ip=demo%3A%2F%2F", None), CLIENT).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    for (ip, why) in [
        ("rtsp://127.0.0.1:8554/s", "loopback"),
        ("rtsp://169.254.169.254/latest", "cloud metadata"),
        ("rtsp://[::1]/s", "IPv6 loopback"),
        ("rtsp://[::ffff:127.0.0.1]/s", "loopback in IPv6 clothes"),
        ("rtsp://0.0.0.0/s", "this host"),
        ("rtsp://localhost:8554/s", "a name that resolves to loopback"),
    ] {
        let body = format!("id=x&ip={}", url::form_urlencoded::byte_serialize(ip.as_bytes()).collect::<String>());
        let reply = send(&app, form("/play_camera", &body, None), CLIENT).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{why}: {}", reply.body);
        assert_eq!(reply.body["field"], "ip", "{why}: {}", reply.body);
        assert!(reply.body["error"].as_str().unwrap().contains("camera_hosts"), "{why}: {}", reply.body);
        let put = request("PUT", "/api/v1/cameras/x", None, Some(json!({ "input": ip })));
        let reply = send(&app, put, CLIENT).await;
        assert_eq!((reply.status, reply.body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("input")), "{why}");
    }
    assert!(app.gateway.status(&"x".parse().unwrap()).is_none(), "nothing was started");
    assert_eq!(app.gateway.statuses().len(), 1, "the running camera is untouched");
    app.gateway.shutdown().await;
}

#[test]
fn the_camera_thread_checks_the_address_it_connects_to() {
    // No request-time check here (the supervisor alone): the thread itself resolves the name, finds only a
    // refused address, and never connects.
    let supervisor = Supervisor::new(camgate::SupervisorConfig::default());
    let mut spec = camgate::StreamSpec::preview_only("dns", "rtsp://localhost:8554/stream").unwrap();
    spec.retry = camgate::RetryPolicy::never();
    supervisor.start_blocking(spec).unwrap();
    let status = common::wait_for(Duration::from_secs(10), "the refusal", || {
        supervisor.status(&"dns".parse().unwrap()).filter(|s| s.state == WorkerState::Failed)
    });
    let error = status.last_error.unwrap();
    assert!(error.contains("resolves only to refused addresses") && error.contains("127.0.0.1"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_control_viewers_only_watch() {
    let text = format!(
        "output_template = \"none\"\n[auth]\ntokens = [\"{OPERATOR}\"]\nviewer_tokens = [\"{VIEWER}\"]\n\
         [cameras.demo]\ninput = \"demo://\""
    );
    let app = app(&text);
    let boot = Config::from_toml(&text).unwrap().boot_cameras().unwrap();
    app.gateway.restore(boot, vec![]).await;
    let demo: CameraId = "demo".parse().unwrap();
    common::wait_for(Duration::from_secs(10), "the demo camera's first keyframe", || {
        app.gateway.supervisor().preview().cached_gop(&demo)
    });

    for (method, uri, body) in [
        ("GET", "/api/v1/cameras", None),
        ("PUT", "/api/v1/cameras/x", Some(json!({"input": "demo://"}))),
        ("DELETE", "/api/v1/cameras/demo", None),
        ("GET", "/api/v1/cameras/demo/viewer_url", None),
    ] {
        let reply = send(&app, request(method, uri, Some(VIEWER), body.clone()), CLIENT).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "viewer {method} {uri}: {}", reply.body);
        assert_eq!(reply.body["field"], "authorization");
        let reply = send(&app, request(method, uri, None, body), "10.9.8.6:1").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "anonymous {method} {uri}");
    }
    for token in [VIEWER, OPERATOR] {
        let reply = send(&app, request("GET", "/live/demo.flv", Some(token), None), CLIENT).await;
        assert_eq!(reply.status, StatusCode::OK, "{token} watches the preview");
        let reply = send(&app, request("GET", "/api/v1/cameras/demo/snapshot.jpg", Some(token), None), CLIENT).await;
        assert_eq!(reply.status, StatusCode::OK, "{token} takes a snapshot: {}", reply.body);
    }
    let reply = send(&app, request("GET", "/live/demo.flv", None, None), CLIENT).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.gateway.status(&demo).unwrap().state, WorkerState::Running, "still running");
    app.gateway.shutdown().await;
}

/// A hook token (what SRS's hook URLs carry, and SRS logs) opens the hooks, in the query as SRS sends it or as a
/// bearer token, and nothing else: every operator route and the watch routes answer 403 naming the
/// authorization, so a token read from SRS's log cannot drive or watch the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_tokens_open_the_hooks_and_nothing_else() {
    let text = format!(
        "output_template = \"none\"\n[auth]\ntokens = [\"{OPERATOR}\"]\nhook_tokens = [\"{HOOKS}\"]\n\
         [cameras.demo]\ninput = \"demo://\""
    );
    let app = app(&text);
    let boot = Config::from_toml(&text).unwrap().boot_cameras().unwrap();
    app.gateway.restore(boot, vec![]).await;
    let publish = json!({"action": "on_publish", "client_id": "c1", "app": "live", "stream": "demo"});
    for token in [HOOKS, OPERATOR] {
        let hook = request("POST", &format!("/api/v1/srs/on_publish?token={token}"), None, Some(publish.clone()));
        let reply = send(&app, hook, CLIENT).await;
        assert_eq!((reply.status, &reply.body["code"]), (StatusCode::OK, &json!(0)), "{token} in the query");
    }
    let reply = send(&app, request("POST", "/api/v1/srs/on_publish", Some(HOOKS), Some(publish.clone())), CLIENT).await;
    assert_eq!(reply.status, StatusCode::OK, "as a bearer token: {}", reply.body);
    let reply =
        send(&app, request("POST", "/api/v1/srs/on_publish?token=nothing-of-ours-0123", None, Some(publish)), CLIENT)
            .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);

    for (method, uri, body) in [
        ("GET", "/api/v1/cameras", None),
        ("PUT", "/api/v1/cameras/x", Some(json!({"input": "demo://"}))),
        ("DELETE", "/api/v1/cameras/demo", None),
        ("GET", "/api/v1/cameras/demo/viewer_url", None),
        ("GET", "/live/demo.flv", None),
        ("GET", "/api/v1/cameras/demo/snapshot.jpg", None),
    ] {
        let reply = send(&app, request(method, uri, Some(HOOKS), body), CLIENT).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "hook token {method} {uri}: {}", reply.body);
        assert_eq!(reply.body["field"], "authorization", "{method} {uri}");
    }
    let demo: CameraId = "demo".parse().unwrap();
    assert!(app.gateway.status(&demo).is_some(), "the camera is still there");
    app.gateway.shutdown().await;
}

fn query_of(url: &str) -> String {
    url.split_once('?').map(|(_, q)| q.to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_viewer_urls_open_one_camera_until_they_expire() {
    let app =
        build(&format!("output_template = \"none\"\nviewer_secret = \"{SECRET}\"\nviewer_url_ttl_ms = 600000"), true);
    let clock = app.clock.clone().unwrap();
    // The old service's route answers a signed URL.
    let reply = send(&app, form("/play_camera", "id=demo&ip=demo%3A%2F%2F", None), CLIENT).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let flv_data = reply.body["flv_data"].as_str().unwrap().to_owned();
    assert!(flv_data.contains("/live/demo.flv?expires=") && flv_data.contains("&signature="), "{flv_data}");
    send(&app, form("/play_camera", "id=other&ip=demo%3A%2F%2F", None), CLIENT).await;
    let demo: CameraId = "demo".parse().unwrap();
    common::wait_for(Duration::from_secs(10), "a keyframe", || app.gateway.supervisor().preview().cached_gop(&demo));

    let signed = query_of(&flv_data);
    let watch = |camera: &str, query: &str| request("GET", &format!("/live/{camera}.flv?{query}"), None, None);
    let reply = send(&app, watch("demo", &signed), CLIENT).await;
    assert_eq!(reply.status, StatusCode::OK, "a signed URL opens the preview: {}", reply.body);
    drop(reply.response);
    let snapshot = send(
        &app,
        request("GET", &format!("/api/v1/cameras/demo/snapshot.jpg?width=320&{signed}"), None, None),
        CLIENT,
    )
    .await;
    assert_eq!(snapshot.status, StatusCode::OK, "and the snapshot");

    let refused = |reply: &Reply, what: &str| {
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}: {}", reply.body);
        assert_eq!(reply.body["field"], "signature", "{what}");
    };
    refused(&send(&app, watch("other", &signed), "10.0.0.1:1").await, "another camera");
    let tampered = signed.replace("expires=", "expires=9");
    refused(&send(&app, watch("demo", &tampered), "10.0.0.2:1").await, "a pushed-back expiry");
    let flipped = format!("{}{}", &signed[..signed.len() - 1], if signed.ends_with('0') { "1" } else { "0" });
    refused(&send(&app, watch("demo", &flipped), "10.0.0.3:1").await, "a changed signature");
    assert_eq!(send(&app, watch("demo", ""), "10.0.0.4:1").await.status, StatusCode::UNAUTHORIZED, "no signature");

    // An operator asks for a short one; it expires (after the documented 30 s of clock-skew tolerance).
    let urls = send(&app, request("GET", "/api/v1/cameras/demo/viewer_url?ttl=60", None, None), CLIENT).await;
    assert_eq!(urls.status, StatusCode::OK, "{}", urls.body);
    let short = query_of(urls.body["preview_url"].as_str().unwrap());
    assert!(urls.body["expires_at_ms"].as_u64().is_some());
    let bad_ttl = send(&app, request("GET", "/api/v1/cameras/demo/viewer_url?ttl=0", None, None), CLIENT).await;
    assert_eq!((bad_ttl.status, bad_ttl.body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("ttl")));
    clock.advance(Duration::from_secs(60 + 29));
    assert_eq!(send(&app, watch("demo", &short), CLIENT).await.status, StatusCode::OK, "within the skew");
    clock.advance(Duration::from_secs(2));
    refused(&send(&app, watch("demo", &short), "10.0.0.5:1").await, "expired");
    assert_eq!(send(&app, watch("demo", &signed), CLIENT).await.status, StatusCode::OK, "the longer one still works");
    app.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srs_players_need_a_signed_url_too() {
    let app = app(&format!("viewer_secret = \"{SECRET}\"\n[camera_hosts]\nallow = [\"127.0.0.0/8\"]"));
    let put =
        request("PUT", "/api/v1/cameras/7", None, Some(json!({"input": "rtsp://127.0.0.1:9/s", "on_demand": true})));
    assert_eq!(send(&app, put, CLIENT).await.status, StatusCode::ACCEPTED);
    let urls = send(&app, request("GET", "/api/v1/cameras/7/viewer_url", None, None), CLIENT).await;
    let url = urls.body["url"].as_str().unwrap();
    assert!(url.starts_with("http://127.0.0.1:8080/live/livestream7.flv?expires="), "{url}");
    let hook = |param: String| {
        let body = json!({"action": "on_play", "client_id": "c1", "ip": "10.0.0.9", "vhost": "__defaultVhost__",
                          "app": "live", "stream": "livestream7", "param": param});
        request("POST", "/api/v1/srs/on_play", None, Some(body))
    };
    let reply = send(&app, hook(format!("?{}", query_of(url))), CLIENT).await;
    assert_eq!((reply.status, reply.body["code"].as_u64()), (StatusCode::OK, Some(0)), "{}", reply.body);
    for param in [
        String::new(),
        "?expires=1&signature=00".into(),
        format!("?{}", query_of(url).replace("expires=", "expires=1")),
    ] {
        let reply = send(&app, hook(param.clone()), CLIENT).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{param:?}: {}", reply.body);
        assert_eq!(reply.body["code"], 403, "SRS refuses the player on a non-zero code");
    }
    assert_eq!(app.gateway.on_demand()[0].viewers, 1, "only the signed player was counted");
    app.gateway.shutdown().await;
}

#[tokio::test]
async fn failed_authentication_is_throttled_per_address() {
    let app = app(&format!("[auth]\ntokens = [\"{OPERATOR}\"]\nmax_failures_per_minute = 3"));
    for _ in 0..3 {
        let reply = send(&app, request("GET", "/api/v1/cameras", Some("guess-guess-guess-0"), None), CLIENT).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let reply = send(&app, request("GET", "/api/v1/cameras", Some(OPERATOR), None), CLIENT).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "even a right token waits out the minute: {}", reply.body);
    assert_eq!(reply.body["limit"], "auth.max_failures_per_minute");
    let hook = request("POST", "/api/v1/srs/on_publish?token=guess", None, Some(json!({"app": "live", "stream": "x"})));
    assert_eq!(send(&app, hook, CLIENT).await.status, StatusCode::TOO_MANY_REQUESTS, "hooks too");
    let reply = send(&app, request("GET", "/api/v1/cameras", Some(OPERATOR), None), "10.1.1.1:5").await;
    assert_eq!(reply.status, StatusCode::OK, "another address is not held back");
}

#[tokio::test]
async fn a_restricted_origin_list_refuses_cross_origin_form_posts() {
    let app = app("[cors]\nallowed_origins = [\"https://ops.example.com\"]");
    let reply = send(&app, form("/stop_all_camera", "", Some("https://evil.example")), CLIENT).await;
    assert_eq!((reply.status, reply.body["field"].as_str()), (StatusCode::FORBIDDEN, Some("origin")), "{}", reply.body);
    let reply = send(&app, form("/stop_all_camera", "", Some("https://ops.example.com")), CLIENT).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = send(&app, form("/stop_all_camera", "", None), CLIENT).await;
    assert_eq!(reply.status, StatusCode::OK, "no Origin: not a browser's cross-origin request");
    // The default (the old front ends') stays open.
    let open = self::app("");
    let reply = send(&open, form("/stop_all_camera", "", Some("https://anywhere.example")), CLIENT).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn an_open_api_beyond_loopback_is_announced_and_can_be_required_closed() {
    let open = app("");
    let reply = send(&open, request("GET", "/api/v1/gateway", None, None), CLIENT).await;
    let warnings = reply.body["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("needs no token")), "{}", reply.body);
    let local = app("listen = \"127.0.0.1:7000\"");
    let reply = send(&local, request("GET", "/api/v1/gateway", None, None), CLIENT).await;
    assert_eq!(reply.body["warnings"], json!([]));
    let required = Config::from_toml("[auth]\nrequire_tokens = true").unwrap().validate().unwrap_err();
    assert!(required.to_string().contains("auth.require_tokens"), "{required}");
}

fn app(text: &str) -> App {
    build(text, false)
}
