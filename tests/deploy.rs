//! The files that deploy camgate, checked where no Docker engine runs: the configurations the demo and the
//! compose stack start it with are valid, the Dockerfile builds through scripts/install-deps.sh and ends in a
//! health-checked non-root image, and SRS calls the hook routes. (scripts/test.sh also runs
//! `docker compose config -q` on docker-compose.yml when a compose implementation is installed.)

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

#[test]
fn srs_calls_every_hook_on_camgate() {
    let srs = read("deploy/srs.conf");
    for hook in ["on_publish", "on_unpublish", "on_play", "on_stop"] {
        let line = format!("{hook:<16}http://camgate:7000/api/v1/srs/{hook};");
        assert!(srs.contains(&line), "deploy/srs.conf lacks `{line}`");
    }
    for listen in ["listen              1935;", "listen          8080;"] {
        assert!(srs.contains(listen), "deploy/srs.conf lacks `{listen}`");
    }
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
