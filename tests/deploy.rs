//! The files that deploy camgate, checked where no Docker engine runs: the configurations the demo and the
//! compose stack start it with are valid, the Dockerfile builds through scripts/install-deps.sh and ends in a
//! health-checked non-root image, and SRS — configured as docker-compose.yml configures it — calls hook routes
//! that exist, with a token camgate accepts. (scripts/test.sh also runs `docker compose config -q` on
//! docker-compose.yml when a compose implementation is installed.)

use std::path::Path;

use camgate::gateway::config::Config;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn config(path: &str) -> Config {
    let config = Config::from_toml(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    config.validate().unwrap_or_else(|e| panic!("{path}: {e}"));
    config
}

#[test]
fn the_demo_configuration_previews_a_demo_camera_on_port_7000() {
    let demo = config("demo.toml");
    assert_eq!(demo.listen.to_string(), "127.0.0.1:7000");
    assert_eq!(demo.output_template, "none");
    assert_eq!(demo.cameras["demo"].input, "demo://");
    let specs = demo.boot_specs().unwrap();
    assert!(specs[0].output.is_none() && specs[0].preview, "preview only: {:?}", specs[0]);
}

#[test]
fn no_configuration_keeps_the_old_service_defaults() {
    let defaults = Config::default();
    assert_eq!(defaults.listen.to_string(), "0.0.0.0:7000");
    assert_eq!(defaults.rtmp_base, "rtmp://127.0.0.1:1935");
    assert_eq!(defaults.web_dir, Path::new("web"));
}

#[test]
fn the_compose_configuration_pushes_to_srs() {
    let compose = config("deploy/camgate.toml");
    assert_eq!(compose.rtmp_base, "rtmp://srs:1935");
    assert!(compose.public_host.is_none(), "viewer URLs follow the Host header");
    assert_eq!(compose.web_dir, Path::new("/app/web"), "where the Dockerfile puts web/");
    let stack = read("docker-compose.yml");
    for needle in ["ossrs/srs:5", "./deploy/srs.conf:", "./deploy/camgate.toml:/etc/camgate/camgate.toml", "7000:7000"]
    {
        assert!(stack.contains(needle), "docker-compose.yml lacks {needle}");
    }
}

/// `KEY: "value"` lines of a service's `environment:` in docker-compose.yml (the file is simple enough to read
/// line by line; no YAML library is needed for it).
fn compose_environment(service: &str) -> Vec<(String, String)> {
    compose_environment_in("docker-compose.yml", service)
}

/// [`compose_environment`] of another compose file.
fn compose_environment_in(file: &str, service: &str) -> Vec<(String, String)> {
    let compose = read(file);
    let mut lines = compose.lines().skip_while(|l| l.trim_end() != format!("  {service}:"));
    lines.next();
    let mut in_environment = false;
    let mut environment = Vec::new();
    for line in lines.take_while(|l| l.starts_with("    ") || l.trim().is_empty()) {
        let trimmed = line.trim();
        if line.starts_with("    ") && !line.starts_with("      ") {
            in_environment = trimmed == "environment:";
            continue;
        }
        if in_environment
            && !trimmed.starts_with('#')
            && let Some((key, value)) = trimmed.split_once(": ")
        {
            environment.push((key.to_owned(), value.trim_matches('"').to_owned()));
        }
    }
    environment
}

/// Compose's `${NAME:?message}` and `${NAME:-default}` with `NAME` set to `value` (or unset).
fn interpolate(text: &str, name: &str, value: Option<&str>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed") + start;
        let expression = &rest[start + 2..end];
        let (var, default) = match expression.split_once(":-") {
            Some((var, default)) => (var, Some(default)),
            None => (expression.split(":?").next().unwrap(), None),
        };
        assert_eq!(var, name, "only {name} is interpolated in these files, not {var}");
        out.push_str(value.or(default).unwrap_or_else(|| panic!("{name} is required by {expression}")));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn the_deployment_files_agree_with_the_code_when_tokens_are_on() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use camgate::api::{ApiSettings, AppState, router};
    use camgate::gateway::Gateway;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const TOKEN: &str = "deploy-test-token-0123456789";
    const HOOK_TOKEN: &str = "deploy-test-hook-token-0123456789";
    // camgate as the compose file configures it: its TOML, then its environment.
    let camgate_env = compose_environment("camgate");
    let env = |key: &str| camgate_env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let mut config = config("deploy/camgate.toml");
    let tokens = interpolate(
        &env("CAMGATE_TOKENS").expect("the compose file sets CAMGATE_TOKENS"),
        "CAMGATE_TOKEN",
        Some(TOKEN),
    );
    config.auth.tokens = tokens.split(',').map(str::to_owned).collect();
    let hook_tokens = interpolate(
        &env("CAMGATE_HOOK_TOKENS").expect("the compose file sets CAMGATE_HOOK_TOKENS"),
        "CAMGATE_HOOK_TOKEN",
        Some(HOOK_TOKEN),
    );
    config.auth.hook_tokens = hook_tokens.split(',').map(str::to_owned).collect();
    config.auth.require_tokens = env("CAMGATE_REQUIRE_TOKENS").as_deref() == Some("true");
    assert!(config.auth.require_tokens, "the stack demands a token");
    config.validate().expect("the compose configuration is valid");
    let gateway = Gateway::from_config(&config, None);
    gateway.restore(config.boot_cameras().unwrap(), vec![]).await;
    let app = router(AppState::new(gateway.clone(), ApiSettings::from_config(&config)));

    // SRS as the compose file configures it: every hook it calls, with SRS's own body.
    let srs_env = compose_environment("srs");
    let hooks: Vec<(String, String)> = srs_env
        .iter()
        .filter(|(k, _)| k.starts_with("SRS_VHOST_HTTP_HOOKS_ON_"))
        .map(|(k, v)| {
            (
                k.trim_start_matches("SRS_VHOST_HTTP_HOOKS_").to_ascii_lowercase(),
                interpolate(v, "CAMGATE_HOOK_TOKEN", Some(HOOK_TOKEN)),
            )
        })
        .collect();
    let actions: Vec<&str> = hooks.iter().map(|(action, _)| action.as_str()).collect();
    assert_eq!(actions, ["on_publish", "on_unpublish", "on_play", "on_stop"], "SRS calls every hook");
    assert!(srs_env.iter().any(|(k, v)| k == "SRS_VHOST_HTTP_HOOKS_ENABLED" && v == "on"));
    let srs_conf = read("deploy/srs.conf");
    let mut configured = srs_conf.lines().filter(|l| !l.trim_start().starts_with('#'));
    assert!(configured.all(|l| !l.contains("http://camgate")), "no hook URL without the token in srs.conf");
    for (action, url) in &hooks {
        let path =
            url.strip_prefix("http://camgate:7000").unwrap_or_else(|| panic!("{url}: camgate's service and port"));
        // The demo camera of deploy/camgate.toml publishes live/livestreamdemo.
        let body = serde_json::json!({"action": action, "client_id": "107", "ip": "172.18.0.1", "vhost": "__defaultVhost__",
                                      "app": "live", "stream": "livestreamdemo", "param": ""});
        let request = |path: &str| {
            Request::post(path).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap()
        };
        let response = app.clone().oneshot(request(path)).await.unwrap();
        let status = response.status();
        let answer: serde_json::Value =
            serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!((status, answer["code"].as_u64()), (StatusCode::OK, Some(0)), "{action} via {path}: {answer}");
        // And without the token the hook is refused: the token in the URL is what lets SRS through.
        let bare = path.split('?').next().unwrap();
        assert_eq!(app.clone().oneshot(request(bare)).await.unwrap().status(), StatusCode::UNAUTHORIZED, "{bare}");
    }
    // What SRS's URLs carry, and SRS logs, opens nothing else: the operator routes refuse it.
    let cameras = Request::get("/api/v1/cameras").header("authorization", format!("Bearer {HOOK_TOKEN}"));
    let status = app.clone().oneshot(cameras.body(Body::empty()).unwrap()).await.unwrap().status();
    assert_eq!(status, StatusCode::FORBIDDEN, "the hook token is not an operator's");
    gateway.shutdown().await;
}

#[test]
fn the_image_is_built_with_install_deps_and_runs_unprivileged_and_health_checked() {
    let dockerfile = read("Dockerfile");
    for needle in [
        "FROM rust:1-bookworm AS build",
        "scripts/install-deps.sh --build",
        "npm ci --omit=dev",
        "FROM debian:bookworm-slim",
        "install-deps.sh --runtime",
        "USER camgate",
        "EXPOSE 7000",
        "HEALTHCHECK",
        "/healthz",
        "COPY --from=web /web /app/web",
        "CAMGATE_WEB_DIR=/app/web",
    ] {
        assert!(dockerfile.contains(needle), "Dockerfile lacks {needle}");
    }
    let ignored = read(".dockerignore");
    assert!(ignored.lines().any(|l| l == "target/"), "the build context leaves target/ out");
}

#[test]
fn the_cluster_stack_runs_three_nodes_on_etcd_each_with_its_own_srs_origin_behind_one_edge() {
    let node = config("deploy/cluster/camgate.toml");
    let cluster = node.cluster.as_ref().expect("the nodes' configuration is in cluster mode");
    assert_eq!(cluster.etcd_endpoints, ["http://etcd:2379"]);
    assert!(node.viewer_url_template.contains(":8080/"), "viewers play through the edge");
    let stack = read("docker-compose.cluster.yml");
    for n in 1..=3 {
        let environment = compose_environment_in("docker-compose.cluster.yml", &format!("camgate{n}"));
        let get = |key: &str| environment.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        assert_eq!(get("CAMGATE_NODE"), Some(format!("node{n}")));
        assert_eq!(get("CAMGATE_ADVERTISE_URL"), Some(format!("http://camgate{n}:7000")));
        assert_eq!(
            get("CAMGATE_RTMP_BASE"),
            Some(format!("rtmp://origin{n}:1935")),
            "each node publishes to its origin"
        );
        // The origin's publish hooks go to the node that publishes there.
        let origin = compose_environment_in("docker-compose.cluster.yml", &format!("origin{n}"));
        let hook = origin.iter().find(|(k, _)| k == "SRS_VHOST_HTTP_HOOKS_ON_PUBLISH").map(|(_, v)| v.clone());
        assert!(hook.is_some_and(|h| h.starts_with(&format!("http://camgate{n}:7000/api/v1/srs/on_publish?token="))
            && h.contains("${CAMGATE_HOOK_TOKEN:?")));
        let tokens = get("CAMGATE_HOOK_TOKENS").expect("each node accepts the hook token");
        assert!(tokens.starts_with("${CAMGATE_HOOK_TOKEN:?"), "{tokens}");
        let conf = read(&format!("deploy/cluster/srs-origin{n}.conf"));
        assert!(conf.contains("origin_cluster  on;"), "origin {n} is in the origin cluster");
        for m in (1..=3).filter(|m| *m != n) {
            assert!(conf.contains(&format!("origin{m}:1985")), "origin {n} asks origin {m}");
        }
    }
    let edge = read("deploy/cluster/srs-edge.conf");
    assert!(edge.contains("mode            remote;") && edge.contains("origin1:1935 origin2:1935 origin3:1935"));
    for needle in ["quay.io/coreos/etcd", "./deploy/cluster/srs-edge.conf:", "8080:8080", "7002:7000"] {
        assert!(stack.contains(needle), "docker-compose.cluster.yml lacks {needle}");
    }
}
