//! Starts Debian's `etcd` (package `etcd-server`) as a private single-member cluster on loopback ports with a
//! temporary data directory, for one test; it can be stopped and started again on the same ports and data
//! (an etcd outage), and is killed on drop.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::net::free_port;
use super::process::ChildGuard;

const ETCD: &str = "/usr/bin/etcd";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running etcd; never on the package's default port 2379.
pub struct Etcd {
    child: Option<ChildGuard>,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd on two fresh ports and waits until its client port accepts. Panics with its log if it
    /// does not come up (retrying on new ports when one was taken meanwhile).
    pub fn start() -> Etcd {
        assert!(Path::new(ETCD).exists(), "{ETCD} is missing: run scripts/install-deps.sh (etcd-server)");
        let mut dir = tempfile::Builder::new().prefix("etcd-").tempdir().expect("a temp dir");
        let mut last = String::new();
        for _ in 0..3 {
            let mut etcd = Etcd { child: None, client_port: free_port(), peer_port: free_port(), dir };
            match etcd.launch() {
                Ok(()) => return etcd,
                Err(why) => {
                    last = why;
                    dir = etcd.into_dir();
                    let _ = std::fs::remove_dir_all(dir.path().join("data"));
                }
            }
        }
        panic!("etcd did not start: {last}");
    }

    fn into_dir(self) -> tempfile::TempDir {
        let Etcd { child, dir, .. } = self;
        if let Some(mut child) = child {
            child.terminate(Duration::from_secs(2));
        }
        dir
    }

    fn launch(&mut self) -> Result<(), String> {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(ETCD);
        cmd.args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = ChildGuard::spawn("etcd", cmd).map_err(|e| format!("cannot run {ETCD}: {e}"))?;
        let up = child.wait_listening(self.client_port, START_TIMEOUT);
        self.child = Some(child);
        up.map_err(|why| format!("{why}; log:\n{}", self.log()))
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Stops etcd (SIGTERM, as an operator or a crash-looping supervisor would); its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.terminate(Duration::from_secs(5));
        }
    }

    /// Starts etcd again on the same ports with the same data, after [`stop`](Self::stop).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is still running");
        if let Err(why) = self.launch() {
            panic!("etcd did not restart: {why}");
        }
    }
}
