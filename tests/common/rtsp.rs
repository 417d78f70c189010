//! Starts tests/fixtures/rtsp_server.py (synthetic live RTSP cameras) for one test.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::net::start_on_free_port;
use super::process::ChildGuard;

/// Mount points served by the fixture (see the script's docstring).
pub mod mount {
    /// H.264 + AAC 48 kHz mono.
    pub const H264_AAC: &str = "/h264_aac";
    /// H.264 + G.711 A-law 8 kHz mono.
    pub const H264_ALAW: &str = "/h264_alaw";
    /// H.264 without audio.
    pub const H264: &str = "/h264";
    /// H.265 + AAC 48 kHz mono.
    pub const H265: &str = "/h265";
    /// Like [`H264_AAC`], but every new client's PLAY re-seeks the shared
    /// pipeline: clients already playing see their timestamps jump back.
    pub const H264_AAC_SEEKFAULT: &str = "/h264_aac_seekfault";
    /// Like [`H264_AAC`], but RTP over UDP only: a SETUP asking for
    /// interleaved TCP (or the HTTP tunnel) gets `461 Unsupported Transport`.
    pub const H264_UDP_ONLY: &str = "/h264_udp_only";
    /// Like [`H264`], but a keyframe only every 10 seconds (`fps * 10`
    /// frames, whatever [`super::RtspOptions::gop`] says): a reader may wait
    /// that long for its first decodable picture.
    pub const H264_GOP10: &str = "/h264_gop10";
    /// Like [`H264_AAC`], SDP with both streams, but no audio RTP for the
    /// first 3 s of the client's media, then 3 s without audio every 20 s
    /// (silent 0-3 s, audio 3-20 s, silent 20-23 s, ...), counted from the
    /// client's DESCRIBE. Audio timestamps stay true across the gaps. Not
    /// shared: every client gets its own timeline.
    pub const H264_LATE_AUDIO: &str = "/h264_late_audio";
    /// Like [`H264`], but the picture size flips every 6 s between the
    /// configured width x height and half of it (rounded down to even),
    /// starting full size; each flip starts with an IDR and new SPS/PPS.
    /// Not shared: every client gets its own timeline.
    pub const H264_RESIZE: &str = "/h264_resize";
    /// Like [`H264`], but Main profile with two B-frames between references
    /// (a fixed P B B pattern): RTP carries presentation times only, so a
    /// reader works out decoding times itself.
    pub const H264_BFRAMES: &str = "/h264_bframes";
    /// DESCRIBE answers `503 Service Unavailable` (its media cannot start),
    /// like a camera out of streaming sessions. With auth, anonymous
    /// clients get 401 first.
    pub const BUSY: &str = "/busy";
    /// Only when the server requires auth ([`super::RtspOptions::auth`]):
    /// DESCRIBE with the right credentials answers `403 Forbidden`, without
    /// (or with wrong ones) `401 Unauthorized`. Without auth it is not
    /// mounted (404).
    pub const FORBIDDEN: &str = "/forbidden";

    /// Every mount whose clients get clean, monotonic timestamps.
    pub const CLEAN: [&str; 4] = [H264_AAC, H264_ALAW, H264, H265];
}

/// Python with python3-gi; another `python3` earlier on PATH may lack `gi`.
const PYTHON: &str = "/usr/bin/python3";
/// GStreamer start-up (gi import, registry scan) is slow on a busy machine.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Picture and stream settings for [`RtspServer::start_with`].
#[derive(Debug, Clone)]
pub struct RtspOptions {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Keyframe interval in frames.
    pub gop: u32,
    /// Require HTTP Basic auth with (user, password) on every mount.
    pub auth: Option<(String, String)>,
    /// With `auth`: require Digest auth (MD5) instead of Basic.
    pub digest: bool,
    /// The picture: a moving ball (cheap to encode), or with `busy` moving fine detail, noise and text, as
    /// hard for an encoder as a real camera's scene (benchmarks).
    pub busy: bool,
    /// Sample rate of the AAC mounts' audio, in Hz.
    pub aac_rate: u32,
}

impl Default for RtspOptions {
    fn default() -> Self {
        RtspOptions {
            width: 640,
            height: 360,
            fps: 25,
            gop: 25,
            auth: None,
            digest: false,
            busy: false,
            aac_rate: 48000,
        }
    }
}

/// A running fixture RTSP server on 127.0.0.1; stopped and reaped on drop.
pub struct RtspServer {
    child: ChildGuard,
    port: u16,
    opts: RtspOptions,
    // Holds the stderr log; must outlive the child, which writes into it.
    dir: tempfile::TempDir,
}

impl RtspServer {
    /// 640x360 @ 25 fps, GOP 25, no auth.
    pub fn start() -> RtspServer {
        RtspServer::start_with(RtspOptions::default())
    }

    /// Starts the server and waits for its `READY` line.
    ///
    /// Panics with the script's stderr if it does not come up.
    pub fn start_with(opts: RtspOptions) -> RtspServer {
        start_on_free_port(|port| RtspServer::try_start(&opts, port))
    }

    /// Starts the server on a given port, e.g. to bring a killed camera back where its clients look for it.
    /// Panics if the port cannot be had.
    pub fn start_on(port: u16, opts: RtspOptions) -> RtspServer {
        RtspServer::try_start(&opts, port).unwrap_or_else(|(err, _)| panic!("{err}"))
    }

    /// Err carries a message and whether the failure was a taken port.
    fn try_start(opts: &RtspOptions, port: u16) -> Result<RtspServer, (String, bool)> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rtsp_server.py");
        let dir = tempfile::Builder::new()
            .prefix("rtsp-server-")
            .tempdir()
            .map_err(|e| (format!("cannot create a temp dir: {e}"), false))?;
        let log_path = dir.path().join("stderr.log");
        // stderr goes to a file, not a pipe: nobody reads a pipe after start-up
        // and a chatty GStreamer would block once it filled.
        let log = File::create(&log_path).map_err(|e| (format!("cannot create {log_path:?}: {e}"), false))?;

        let mut cmd = Command::new(PYTHON);
        cmd.arg(&script)
            .args(["--port", &port.to_string()])
            .args(["--width", &opts.width.to_string()])
            .args(["--height", &opts.height.to_string()])
            .args(["--fps", &opts.fps.to_string()])
            .args(["--gop", &opts.gop.to_string()])
            .args(["--pattern", if opts.busy { "busy" } else { "ball" }])
            .args(["--aac-rate", &opts.aac_rate.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some((user, password)) = &opts.auth {
            cmd.args(["--user", user, "--password", password]);
            if opts.digest {
                cmd.arg("--digest");
            }
        }
        let mut child = ChildGuard::spawn("rtsp_server.py", cmd)
            .map_err(|e| (format!("cannot run {PYTHON} {script:?}: {e}"), false))?;

        let stdout = child
            .child_mut()
            .stdout
            .take()
            .ok_or_else(|| ("rtsp_server.py stdout was not piped".to_string(), false))?;
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::Builder::new()
            .name(format!("rtsp-server-{port}-stdout"))
            .spawn(move || {
                let mut ready_tx = Some(ready_tx);
                // Keep draining after READY so a print in the script can
                // never block it on a full pipe.
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.starts_with("READY ")
                        && let Some(tx) = ready_tx.take()
                    {
                        let _ = tx.send(());
                    }
                }
            })
            .map_err(|e| (format!("cannot start a stdout reader thread: {e}"), false))?;

        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => Ok(RtspServer { child, port, opts: opts.clone(), dir }),
            Err(why) => {
                let status = child.terminate(Duration::from_secs(1));
                let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
                let what = match why {
                    mpsc::RecvTimeoutError::Timeout => format!("no READY within {READY_TIMEOUT:?}"),
                    mpsc::RecvTimeoutError::Disconnected => "exited before READY".to_string(),
                };
                Err((
                    format!("rtsp_server.py on port {port}: {what} (status {status:?}); stderr:\n{stderr}"),
                    stderr.contains("cannot listen"),
                ))
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtsp://127.0.0.1:PORT/<mount>`; `mount` with or without the leading `/`.
    ///
    /// Carries no credentials even if the server requires them: see
    /// [`RtspServer::url_with_auth`].
    pub fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{}", self.port, mount.trim_start_matches('/'))
    }

    /// Like [`RtspServer::url`] with the configured `user:password@` in it.
    pub fn url_with_auth(&self, mount: &str) -> String {
        match &self.opts.auth {
            Some((user, password)) => {
                format!("rtsp://{user}:{password}@127.0.0.1:{}/{}", self.port, mount.trim_start_matches('/'))
            }
            None => self.url(mount),
        }
    }

    pub fn options(&self) -> &RtspOptions {
        &self.opts
    }

    /// The server process, e.g. to sample its CPU time.
    pub fn process(&self) -> &ChildGuard {
        &self.child
    }

    /// What the script wrote to stderr so far (GStreamer warnings land here).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}
