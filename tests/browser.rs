//! The web dashboard end to end in headless Chromium: starts the real binary twice (open with a demo boot
//! camera, and token-protected with none) and runs `web/tests/dashboard.test.mjs` under node's test runner,
//! which drives the browser with playwright-core. The page's screenshot lands in the target folder as
//! `dashboard.png`.
//!
//! Needs Debian's `chromium` and `npm ci` in `web/`; `scripts/install-deps.sh` installs both. Set
//! `CAMGATE_SKIP_BROWSER_TEST=1` to skip on a machine that cannot have them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, free_port};

const TOKEN: &str = "browser-token-0123456789";

/// A running gateway on a free port; SIGTERMed on drop.
struct Gateway {
    _child: ChildGuard,
    url: String,
    log: PathBuf,
}

impl Gateway {
    fn start(dir: &Path, name: &str, config: &str, env: &[(&str, &str)]) -> Gateway {
        let port = free_port();
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_camgate"));
        cmd.arg("--config")
            .arg(&config_path)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--web-dir")
            .arg(web_dir())
            .env_remove("CAMGATE_TOKENS")
            // The test rig's cameras are on loopback, which camgate refuses by default.
            .env("CAMGATE_ALLOW_CAMERA_HOSTS", "127.0.0.0/8")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = ChildGuard::spawn(name, cmd).unwrap();
        let up = child.wait_listening(port, Duration::from_secs(20));
        let gateway = Gateway { _child: child, url: format!("http://127.0.0.1:{port}"), log };
        if let Err(why) = up {
            panic!("{why}; log:\n{}", gateway.log());
        }
        gateway
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// What is missing to run the browser test, if anything.
fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    if !chromium().exists() {
        missing.push(format!("{} (Debian package chromium)", chromium().display()));
    }
    for package in ["playwright-core", "mpegts.js"] {
        if !web_dir().join("node_modules").join(package).join("package.json").exists() {
            missing.push(format!("web/node_modules/{package} (npm ci in web/)"));
        }
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node".into());
    }
    missing
}

#[test]
fn dashboard_plays_and_stops_in_headless_chromium() {
    if std::env::var_os("CAMGATE_SKIP_BROWSER_TEST").is_some() {
        eprintln!("CAMGATE_SKIP_BROWSER_TEST is set: browser test skipped");
        return;
    }
    let missing = missing_prerequisites();
    assert!(missing.is_empty(), "missing {}: run scripts/install-deps.sh", missing.join(", "));

    let dir = tempfile::Builder::new().prefix("camgate-browser-").tempdir().unwrap();
    let open =
        Gateway::start(dir.path(), "open", "output_template = \"none\"\n[cameras.demo]\ninput = \"demo://\"\n", &[]);
    let locked = Gateway::start(dir.path(), "locked", "output_template = \"none\"\n", &[("CAMGATE_TOKENS", TOKEN)]);
    // CARGO_TARGET_TMPDIR is <target>/tmp: the picture goes next to it, where people look for build output.
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);

    let output = dir.path().join("node.out");
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-reporter=spec", "tests/dashboard.test.mjs"])
        .current_dir(web_dir())
        .env("CAMGATE_URL", &open.url)
        .env("CAMGATE_TOKEN_URL", &locked.url)
        .env("CAMGATE_TOKEN", TOKEN)
        .env("CAMGATE_SCREENSHOT", &screenshot)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(Stdio::from(std::fs::File::options().append(true).open(&output).unwrap()));
    let mut node = ChildGuard::spawn("node", cmd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = node.try_exit_status() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(&output).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "node --test {}:\n{report}\nopen gateway's log:\n{}\nlocked gateway's log:\n{}",
        status.map_or("timed out".into(), |s| s.to_string()),
        open.log(),
        locked.log(),
    );
    assert!(report.contains("pass 2"), "both browser tests ran:\n{report}");
    assert!(screenshot.exists(), "screenshot saved at {}", screenshot.display());
    eprintln!("screenshot: {}", screenshot.display());
    assert!(!locked.log().contains(TOKEN), "the token is never logged");
}
