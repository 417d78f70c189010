//! Starts a private SRS (ossrs, the RTMP/HTTP-FLV server camgate is usually deployed with) on 127.0.0.1 for a
//! test or the benchmark.
//!
//! Debian does not package SRS, so the test suite cannot install it and CI does not run it: the tests that
//! need it are `#[ignore]`d, and run against an SRS binary built by hand (its `objs/srs`) whose path is in
//! `CAMGATE_SRS`:
//!
//! ```sh
//! CAMGATE_SRS=/path/to/srs/trunk/objs/srs cargo test --test pipeline --test ops_e2e -- --ignored srs
//! ```
//!
//! An ignored test run without `CAMGATE_SRS` fails and says so; it never passes without a server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::net::free_port;
use super::process::ChildGuard;

/// The environment variable naming the SRS binary.
pub const SRS_ENV: &str = "CAMGATE_SRS";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 5;

/// What the server does besides relaying.
#[derive(Debug, Clone, Default)]
pub struct SrsOptions {
    /// Base URL of a camgate API (`http://127.0.0.1:PORT`): SRS then calls its `/api/v1/srs/on_*` hooks on every
    /// publish and play, as docs/OPERATIONS.md configures it, and refuses what they refuse.
    pub hooks: Option<String>,
    /// With `hooks`: the operator token each hook URL carries (`?token=`), as SRS cannot send a header.
    pub hooks_token: Option<String>,
    /// Record every stream of the `rec` application (DVR, one FLV per publish) into
    /// [`SrsServer::recording`].
    pub record: bool,
}

/// A running SRS: RTMP in and out on [`url`](Self::url), HTTP-FLV on [`flv_url`](Self::flv_url), its HTTP API
/// on [`api_url`](Self::api_url). Stopped on drop.
///
/// Like nginx-rtmp it holds a player of a stream nobody publishes until a publisher comes: give every reader a
/// deadline.
pub struct SrsServer {
    child: ChildGuard,
    rtmp_port: u16,
    http_port: u16,
    api_port: u16,
    // The config, the log and the recordings; must outlive the child.
    dir: tempfile::TempDir,
}

impl SrsServer {
    /// The SRS binary `CAMGATE_SRS` names. Panics, saying how to run the test, when it is unset or missing.
    pub fn binary() -> PathBuf {
        let path = std::env::var_os(SRS_ENV).map(PathBuf::from).unwrap_or_else(|| {
            panic!(
                "this test needs SRS, which Debian does not package: build it (the ossrs/srs repository, \
                 `./configure && make` in trunk/) and set {SRS_ENV} to its objs/srs"
            )
        });
        assert!(path.is_file(), "{SRS_ENV}={} is not a file", path.display());
        path
    }

    /// Writes a config into a temp dir, starts [`binary`](Self::binary) in the foreground and waits until its
    /// RTMP and HTTP ports accept. Panics with SRS's log on failure.
    pub fn start(options: SrsOptions) -> SrsServer {
        let binary = SrsServer::binary();
        let mut last = String::new();
        // Three ports are picked free and bound by SRS later: another process may take one in between, so a
        // start that fails is tried again on new ports.
        for _ in 0..START_ATTEMPTS {
            match SrsServer::try_start(&binary, &options) {
                Ok(server) => return server,
                Err(why) => last = why,
            }
        }
        panic!("SRS did not start in {START_ATTEMPTS} attempts; the last: {last}");
    }

    fn try_start(binary: &Path, options: &SrsOptions) -> Result<SrsServer, String> {
        let dir = tempfile::Builder::new().prefix("srs-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let (rtmp_port, http_port, api_port) = (free_port(), free_port(), free_port());
        let conf = dir.path().join("srs.conf");
        std::fs::write(&conf, config(dir.path(), rtmp_port, http_port, api_port, options))
            .map_err(|e| format!("cannot write {conf:?}: {e}"))?;
        let mut cmd = Command::new(binary);
        // SRS resolves relative paths against its working directory; everything it writes goes to `dir`.
        cmd.arg("-c")
            .arg(&conf)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).map_err(|e| format!("stderr log: {e}"))?);
        let mut child = ChildGuard::spawn("srs", cmd).map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let up = child
            .wait_listening(rtmp_port, START_TIMEOUT)
            .and_then(|()| child.wait_listening(http_port, START_TIMEOUT));
        match up {
            Ok(()) => Ok(SrsServer { child, rtmp_port, http_port, api_port, dir }),
            Err(why) => {
                child.terminate(Duration::from_secs(1));
                let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
                Err(format!("SRS on 127.0.0.1:{rtmp_port}: {why}; log:\n{}{}", read("srs.log"), read("stderr.log")))
            }
        }
    }

    /// `rtmp://127.0.0.1:PORT/live/<stream>`, for publishing and playing alike.
    pub fn url(&self, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{stream}", self.rtmp_port)
    }

    /// `http://127.0.0.1:PORT/live/<stream>.flv`: the stream as SRS serves it to browsers.
    pub fn flv_url(&self, stream: &str) -> String {
        format!("http://127.0.0.1:{}/live/{stream}.flv", self.http_port)
    }

    /// `http://127.0.0.1:PORT`: SRS's HTTP API (`/api/v1/streams/`, `/api/v1/clients/`).
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The URL of stream `name` of the recording application (with [`SrsOptions::record`]): what is published
    /// there is written to [`recording`](Self::recording)`(name)` as SRS received it.
    pub fn recorded_url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/rec/{name}", self.rtmp_port)
    }

    /// `http://127.0.0.1:PORT/rec/<name>.flv`: stream `name` of the recording application through HTTP-FLV.
    pub fn recorded_flv_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/rec/{name}.flv", self.http_port)
    }

    /// The file SRS records stream `name` of [`recorded_url`](Self::recorded_url) into. SRS writes to a
    /// temporary name and gives it this one when the publisher leaves, so it is complete once it exists.
    pub fn recording(&self, name: &str) -> PathBuf {
        self.dir.path().join("rec").join(format!("{name}.flv"))
    }

    /// The SRS process, e.g. to sample its CPU time.
    pub fn process(&self) -> &ChildGuard {
        &self.child
    }

    /// SRS's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("srs.log")).unwrap_or_default()
    }
}

/// One process in the foreground (`daemon off`), so the pid we hold is the server and SIGTERM stops it.
fn config(dir: &Path, rtmp: u16, http: u16, api: u16, options: &SrsOptions) -> String {
    let d = dir.display();
    // SRS refuses to start when max_connections (plus its reserve of 128) reaches the open-files limit; the
    // benchmark publishes a thousand cameras and plays some of them.
    // SAFETY: sysconf only reads a limit of this process.
    let open_files = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    let max_connections = (open_files - 256).clamp(64, 10_000);
    let query = options.hooks_token.as_deref().map_or(String::new(), |token| format!("?token={token}"));
    let hooks = options.hooks.as_deref().map_or(String::new(), |base| {
        format!(
            "http_hooks {{
        enabled on;
        on_publish {base}/api/v1/srs/on_publish{query};
        on_unpublish {base}/api/v1/srs/on_unpublish{query};
        on_play {base}/api/v1/srs/on_play{query};
        on_stop {base}/api/v1/srs/on_stop{query};
    }}"
        )
    });
    let dvr = if options.record {
        format!(
            "dvr {{
        enabled on;
        dvr_apply all;
        dvr_plan session;
        dvr_path {d}/[app]/[stream].flv;
    }}"
        )
    } else {
        String::new()
    };
    format!(
        "listen 127.0.0.1:{rtmp};
max_connections {max_connections};
daemon off;
pid {d}/srs.pid;
srs_log_tank file;
srs_log_file {d}/srs.log;
srs_log_level_v2 warn;
http_api {{
    enabled on;
    listen 127.0.0.1:{api};
}}
http_server {{
    enabled on;
    listen 127.0.0.1:{http};
    dir {d};
}}
vhost __defaultVhost__ {{
    # guess_has_av off: SRS (5 and later) otherwise writes an HTTP-FLV header's audio and video flags from the
    # first messages a player gets, and a player that joins between a keyframe and the next audio frame is
    # told there is no audio (3-12 % of 60 joins, with each of camgate's writers, docs/OPERATIONS.md). The
    # tests' cameras all have audio, and what they check is what camgate sent, not SRS's guess.
    http_remux {{
        enabled on;
        mount [vhost]/[app]/[stream].flv;
        guess_has_av off;
    }}
    {hooks}
    {dvr}
}}
"
    )
}
