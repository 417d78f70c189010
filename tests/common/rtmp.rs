//! Starts a private nginx + libnginx-mod-rtmp RTMP server on 127.0.0.1 for one test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::net::start_on_free_port;
use super::process::ChildGuard;

const NGINX: &str = "/usr/sbin/nginx";
const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running RTMP server (`application live { live on; }`); stopped on drop.
///
/// Publish to and play from [`RtmpServer::url`]. It relays RTMP only (no
/// HTTP-FLV), and a player of a stream nobody publishes waits forever: give
/// every reader a deadline (see `probe`).
pub struct RtmpServer {
    child: ChildGuard,
    port: u16,
    // nginx writes its logs and pid file here; must outlive the child.
    dir: tempfile::TempDir,
}

impl RtmpServer {
    /// Writes a config into a temp dir, starts nginx in the foreground and
    /// waits until the port accepts. Panics with nginx's error log on failure.
    pub fn start() -> RtmpServer {
        assert!(
            Path::new(RTMP_MODULE).exists(),
            "{RTMP_MODULE} is missing: run scripts/install-deps.sh (libnginx-mod-rtmp)"
        );
        start_on_free_port(|port| RtmpServer::try_start(port, None))
    }

    /// Like [`start`](Self::start), but a publisher that sends nothing for `idle` is dropped (nginx's
    /// `drop_idle_publisher`, like SRS's `publish.normal_timeout`): a frozen publisher then does not hold its
    /// stream against the next one.
    pub fn start_dropping_idle(idle: Duration) -> RtmpServer {
        assert!(Path::new(RTMP_MODULE).exists(), "{RTMP_MODULE} is missing: run scripts/install-deps.sh");
        start_on_free_port(|port| RtmpServer::try_start(port, Some(idle)))
    }

    /// Starts the server on a given port, e.g. to bring a killed server back where publishers push to.
    /// Panics if the port cannot be had.
    pub fn start_on(port: u16) -> RtmpServer {
        RtmpServer::try_start(port, None).unwrap_or_else(|(err, _)| panic!("{err}"))
    }

    fn try_start(port: u16, drop_idle: Option<Duration>) -> Result<RtmpServer, (String, bool)> {
        let dir = tempfile::Builder::new()
            .prefix("rtmp-server-")
            .tempdir()
            .map_err(|e| (format!("cannot create a temp dir: {e}"), false))?;
        let prefix = dir.path();
        std::fs::create_dir(prefix.join("rec"))
            .map_err(|e| (format!("cannot create the recordings' dir: {e}"), false))?;
        let conf = prefix.join("nginx.conf");
        let error_log = prefix.join("error.log");
        std::fs::write(&conf, config(prefix, port, drop_idle))
            .map_err(|e| (format!("cannot write {conf:?}: {e}"), false))?;

        let mut cmd = Command::new(NGINX);
        // -e: nginx opens its compiled-in error log (/var/log/nginx) before it
        // reads the config unless told otherwise on the command line.
        cmd.arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = ChildGuard::spawn("nginx", cmd).map_err(|e| (format!("cannot run {NGINX}: {e}"), false))?;

        let waited = child.wait_listening(port, START_TIMEOUT);
        match waited {
            Ok(()) => Ok(RtmpServer { child, port, dir }),
            Err(why) => {
                child.terminate(Duration::from_secs(1));
                let log = std::fs::read_to_string(&error_log).unwrap_or_default();
                Err((
                    format!("RTMP server (nginx) on 127.0.0.1:{port}: {why}; error.log:\n{log}"),
                    log.contains("Address already in use"),
                ))
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtmp://127.0.0.1:PORT/live/<stream>`, for publishing and playing alike.
    pub fn url(&self, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{}", self.port, stream)
    }

    /// The URL of stream `name` of the recording application: what is published there is written to
    /// [`recording`](Self::recording)`(name)` as the server received it.
    pub fn recorded_url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/rec/{name}", self.port)
    }

    /// The file the server records stream `name` of [`recorded_url`](Self::recorded_url) into; complete once
    /// its publisher has left.
    pub fn recording(&self, name: &str) -> PathBuf {
        self.dir.path().join("rec").join(format!("{name}.flv"))
    }

    /// The nginx process, e.g. to sample its CPU time.
    pub fn process(&self) -> &ChildGuard {
        &self.child
    }

    /// nginx's error log so far (connection and publish events at `info`).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The RTMP access log so far: one line per finished PLAY or PUBLISH session.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// One process in the foreground (`daemon off; master_process off;`) so the
/// pid we hold is the server and SIGTERM stops it; as root nginx then never
/// switches user. No `http` block, so no temp paths under /var/lib/nginx.
///
/// `wait_key on`: a player's video starts at a keyframe, as behind SRS's GOP
/// cache, so "the first video packet is a keyframe" is a stable check.
fn config(prefix: &Path, port: u16, drop_idle: Option<Duration>) -> String {
    let p = prefix.display();
    let drop_idle = drop_idle.map_or(String::new(), |d| format!("drop_idle_publisher {}ms;", d.as_millis()));
    format!(
        "load_module {RTMP_MODULE};
daemon off;
master_process off;
pid {p}/nginx.pid;
error_log {p}/error.log info;
# The benchmark publishes hundreds of cameras at once (each a connection, plus its players).
worker_rlimit_nofile 8192;
events {{
    worker_connections 4096;
}}
rtmp {{
    access_log {p}/access.log;
    server {{
        listen 127.0.0.1:{port};
        application live {{
            live on;
            wait_key on;
            record off;
            {drop_idle}
        }}
        # What a publisher sent, as the server received it: `rec/NAME` is written to `rec/NAME.flv` in
        # the server's directory (see `recording`).
        application rec {{
            live on;
            record all;
            record_path {p}/rec;
            record_unique off;
        }}
    }}
}}
"
    )
}
