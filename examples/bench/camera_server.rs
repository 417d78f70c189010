//! The bench's camera servers: the GStreamer fixture itself, or a replay of it (`--rtsp-source replay`) in a
//! child process of its own, so that its CPU is counted apart from the bench's observers, like the fixture's.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::args::{Args, RtspSource};
use crate::common::{ChildGuard, ReplayOptions, ReplayServer, RtspOptions, RtspServer};

/// How long a replay child may take to record its camera and start serving.
const REPLAY_READY_WITHIN: Duration = Duration::from_secs(60);

/// One camera server.
pub enum CameraServer {
    Live(RtspServer),
    Replay { child: ChildGuard, port: u16 },
}

impl CameraServer {
    /// Starts what `args.rtsp_source` says. A replay records from a fixture server started for it, which is
    /// stopped once the recording is made.
    pub fn start(args: &Args, opts: &RtspOptions) -> Result<CameraServer, String> {
        let live = RtspServer::start_with(opts.clone());
        if args.rtsp_source == RtspSource::Gstreamer {
            return Ok(CameraServer::Live(live));
        }
        let exe = std::env::current_exe().map_err(|e| format!("the bench's own path: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "--replay-child",
            &live.url(args.source.mount()),
            &args.replay_seconds.to_string(),
            &args.replay_tick_ms.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = ChildGuard::spawn("bench replay", cmd).map_err(|e| format!("cannot start a replay: {e}"))?;
        let stdout = child.child_mut().stdout.take().ok_or("the replay's stdout was not piped")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let (Some(port), Some(tx)) =
                    (line.strip_prefix("REPLAY ").and_then(|p| p.parse::<u16>().ok()), tx.take())
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(REPLAY_READY_WITHIN)
            .map_err(|_| format!("the replay of {} did not start within {REPLAY_READY_WITHIN:?}", live.url("")))?;
        drop(live);
        Ok(CameraServer::Replay { child, port })
    }

    /// The camera's URL (a replay serves its recording on any path).
    pub fn url(&self, mount: &str) -> String {
        match self {
            CameraServer::Live(server) => server.url(mount),
            CameraServer::Replay { port, .. } => format!("rtsp://127.0.0.1:{port}{mount}"),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            CameraServer::Live(server) => server.port(),
            CameraServer::Replay { port, .. } => *port,
        }
    }

    pub fn pid(&self) -> u32 {
        match self {
            CameraServer::Live(server) => server.process().pid(),
            CameraServer::Replay { child, .. } => child.pid(),
        }
    }
}

/// The replay child (`bench --replay-child URL SECONDS TICK_MS`): records, says `REPLAY <port>` on stdout, and
/// serves until the bench kills it.
pub fn replay_child(argv: &[String]) -> Result<(), String> {
    let [url, seconds, tick_ms] = argv else { return Err("--replay-child URL SECONDS TICK_MS".into()) };
    let seconds: f64 = seconds.parse().map_err(|e| format!("SECONDS {seconds:?}: {e}"))?;
    let tick_ms: u64 = tick_ms.parse().map_err(|e| format!("TICK_MS {tick_ms:?}: {e}"))?;
    let options =
        ReplayOptions { length: Duration::from_secs_f64(seconds), tick: Duration::from_millis(tick_ms.max(1)) };
    let server = ReplayServer::record(url, options)?;
    eprintln!("bench: replaying {:.3} s of {url} on port {}", server.length().as_secs_f64(), server.port());
    println!("REPLAY {}", server.port());
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
