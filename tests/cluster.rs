//! The cluster, end to end with real parts: Debian's etcd on loopback ports, several real `camgate` processes
//! in cluster mode, the fixture RTSP server and nginx-rtmp, which is also the judge of who publishes — it
//! refuses a second publisher of a live stream and logs `already publishing`, so a camera that ever ran on
//! two nodes at once shows up in its error log. Streams are read back from nginx with libavformat.
//!
//! nginx drops a publisher idle for [`IDLE_DROP`] (as SRS drops one after `publish.normal_timeout`), well
//! under the lease TTL: a frozen node's open but silent connection must not be mistaken for a live publisher
//! when its cameras move.
//!
//! The scenarios share the two cores of a CI machine, so they take turns ([`SERIAL`]).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, Etcd, ProbeOptions, RtmpServer, RtspServer, free_port, mount, probe};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "cluster-test-token-0123456789";
/// The nodes' lease: a dead node's cameras move this long after its last renewal.
const TTL: Duration = Duration::from_millis(4000);
/// How long nginx keeps a publisher that sends nothing.
const IDLE_DROP: Duration = Duration::from_millis(1500);
/// The claim delay of the k-th best node (`agent::CLAIM_STEP`).
const CLAIM_STEP: Duration = Duration::from_millis(500);
/// The fixture's GOP (25 frames at 25 fps).
const GOP: Duration = Duration::from_secs(1);

// A tokio mutex: each test has its own runtime, and the turn is held across awaits.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One camgate process in cluster mode.
struct Node {
    name: String,
    child: Option<ChildGuard>,
    base: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Node {
    /// Starts node `name` with `cpu_cores` × `cpu_budget` of capacity, publishing to `rtmp`.
    fn start(name: &str, etcd: &Etcd, rtmp: &RtmpServer, cpu_cores: u32, cpu_budget: f64) -> Node {
        Node::start_with(name, etcd, rtmp, cpu_cores, cpu_budget, &[])
    }

    /// [`start`](Self::start) with more environment.
    fn start_with(
        name: &str,
        etcd: &Etcd,
        rtmp: &RtmpServer,
        cpu_cores: u32,
        cpu_budget: f64,
        env: &[(&str, String)],
    ) -> Node {
        let dir = tempfile::Builder::new().prefix(&format!("camgate-{name}-")).tempdir().unwrap();
        let config = dir.path().join("camgate.toml");
        std::fs::write(&config, format!("cpu_cores = {cpu_cores}\ncpu_budget = {cpu_budget}\n")).unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("camgate.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_camgate"));
        cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&config)
            .env("CAMGATE_CLUSTER_ETCD", etcd.endpoint())
            .env("CAMGATE_NODE", name)
            .env("CAMGATE_ADVERTISE_URL", &base)
            .env("CAMGATE_LEASE_TTL_MS", TTL.as_millis().to_string())
            .env("CAMGATE_RTMP_BASE", format!("rtmp://127.0.0.1:{}", rtmp.port()))
            .env("CAMGATE_TOKENS", TOKEN)
            .env("CAMGATE_MAX_CAMERAS", "50")
            .env("CAMGATE_STOP_TIMEOUT_MS", "3000")
            .env("CAMGATE_ALLOW_CAMERA_HOSTS", "127.0.0.0/8")
            .env("RUST_LOG", "info,camgate::gateway::cluster=debug")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = ChildGuard::spawn("camgate", cmd).unwrap();
        let up = child.wait_listening(port, Duration::from_secs(20));
        let node = Node { name: name.to_owned(), child: Some(child), base, dir, http: reqwest::Client::new() };
        if let Err(why) = up {
            panic!("{why}; log:\n{}", node.log());
        }
        node
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("camgate.log")).unwrap_or_default()
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("the node runs").pid() as i32
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let sent = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(sent, 0, "cannot signal node {}", self.name);
    }

    /// SIGKILL, as a power cut would: no goodbye to etcd, no stopping of cameras.
    fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            child.terminate(Duration::from_secs(1));
        }
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value, Option<u64>) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.timeout(Duration::from_secs(20)).send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status();
        let revision =
            response.headers().get("x-camgate-revision").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        (status, response.json().await.unwrap_or(Value::Null), revision)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body, _) = self.request(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path} on {}: {body}", self.name);
        body
    }

    async fn put(&self, id: &str, camera: &Value) -> (StatusCode, Value, Option<u64>) {
        self.request(reqwest::Method::PUT, &format!("/api/v1/cameras/{id}"), Some(camera)).await
    }

    async fn delete(&self, id: &str) -> (StatusCode, Value, Option<u64>) {
        self.request(reqwest::Method::DELETE, &format!("/api/v1/cameras/{id}"), None).await
    }

    /// The cameras this node runs itself that are alive (not stopped or failed).
    async fn running_here(&self) -> BTreeSet<String> {
        let cameras = self.get("/api/v1/cluster/local/cameras").await;
        cameras
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| ["starting", "running", "reconnecting"].contains(&c["state"].as_str().unwrap_or("")))
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every camera of the cluster as this node answers for it.
    async fn cameras(&self) -> BTreeMap<String, Value> {
        let cameras = self.get("/api/v1/cameras").await;
        cameras.as_array().unwrap().iter().map(|c| (c["id"].as_str().unwrap().to_owned(), c.clone())).collect()
    }

    /// The node running camera `id`, once this node knows it (its view follows etcd's watch, so a write made
    /// through another node reaches it a moment later).
    async fn owner_of(&self, id: &str, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            let cameras = self.cameras().await;
            if let Some(owner) = cameras.get(id).and_then(|c| c["node"].as_str()) {
                return owner.to_owned();
            }
            assert!(
                Instant::now() < until,
                "node {} does not know {id}'s owner within {within:?}: {cameras:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The servers every scenario needs, and its nodes.
struct Rig {
    etcd: Etcd,
    rtmp: RtmpServer,
    rtsp: RtspServer,
    nodes: Vec<Node>,
}

impl Rig {
    fn start(nodes: &[(&str, u32, f64)]) -> Rig {
        let etcd = Etcd::start();
        let rtmp = RtmpServer::start_dropping_idle(IDLE_DROP);
        let rtsp = RtspServer::start();
        let nodes =
            nodes.iter().map(|(name, cores, budget)| Node::start(name, &etcd, &rtmp, *cores, *budget)).collect();
        Rig { etcd, rtmp, rtsp, nodes }
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    fn live_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// A camera copying the fixture's H.264 to `livestream<id>`.
    fn copy_camera(&self) -> Value {
        json!({"input": self.rtsp.url(mount::H264), "video": {"mode": "copy"}, "audio": {"mode": "none"}})
    }

    /// Publishing attempts nginx refused because the stream already had a publisher: each one a camera that
    /// ran on two nodes at once.
    fn duplicates(&self) -> Vec<String> {
        self.rtmp.error_log().lines().filter(|l| l.contains("already publishing")).map(str::to_owned).collect()
    }

    /// Which node runs each camera, from every live node's own list; panics if a camera runs on two.
    ///
    /// The lists are read one after the other, so a camera handed over between two reads shows on both: when
    /// one shows on a second node, the first is asked again, and only if it still runs it did both run it at
    /// the time of the second read. (nginx's "already publishing", [`Rig::duplicates`], is the other witness.)
    async fn runners(&self) -> BTreeMap<String, String> {
        let mut runners = BTreeMap::new();
        for node in self.live_nodes() {
            for id in node.running_here().await {
                if let Some(other) = runners.insert(id.clone(), node.name.clone())
                    && self.node(&other).running_here().await.contains(&id)
                {
                    panic!("camera {id} runs on {other} and {}\n{}", node.name, self.logs());
                }
            }
        }
        runners
    }

    /// Waits until `done` holds for the runners, or panics with every node's log.
    async fn wait_for_runners(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> BTreeMap<String, String> {
        let until = Instant::now() + within;
        loop {
            let runners = self.runners().await;
            if done(&runners) {
                return runners;
            }
            if Instant::now() > until {
                panic!("{what}: not within {within:?}; runners {runners:?}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs(&self) -> String {
        let mut logs = String::new();
        for node in &self.nodes {
            let log = node.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            logs += &format!(
                "--- node {} (last lines)\n{}\n",
                node.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        logs + &format!("--- nginx error.log\n{}", self.rtmp.error_log())
    }

    /// Reads a second of each stream back from nginx, all at once.
    async fn assert_published(&self, ids: &BTreeSet<String>) {
        let reads = ids.iter().map(|id| {
            let url = self.rtmp.url(&format!("livestream{id}"));
            let id = id.clone();
            tokio::task::spawn_blocking(move || {
                let options = ProbeOptions::default().with_media_seconds(1.0).with_deadline(Duration::from_secs(15));
                (id, probe(&url, options))
            })
        });
        for read in futures_util::future::join_all(reads).await {
            let (id, report) = read.unwrap();
            let report =
                report.unwrap_or_else(|e| panic!("stream of camera {id} not readable at nginx: {e}\n{}", self.logs()));
            assert_eq!(report.video.map(|v| v.codec), Some("h264".to_owned()), "camera {id}");
        }
    }
}

/// Puts every camera through the given nodes at once.
async fn put_all(rig: &Rig, cameras: &[(&str, Value)]) {
    let puts = cameras.iter().enumerate().map(|(n, (id, camera))| {
        let node = &rig.nodes[n % rig.nodes.len()];
        async move { (id, node.put(id, camera).await) }
    });
    for (id, (status, body, revision)) in futures_util::future::join_all(puts).await {
        assert!(status.is_success(), "PUT {id}: {status} {body}");
        assert!(revision.is_some(), "PUT {id} answers the revision");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn placement_by_cost_pending_with_reason_no_move_on_join_and_drain() {
    let _turn = SERIAL.lock().await;
    // Each node may fill a tenth of one core: one 360p transcode (estimated 0.0875 cores) and two copies
    // (0.005 each) fit; a 1080p demo camera (0.79) fits nowhere.
    let mut rig = Rig::start(&[("a", 1, 0.1), ("b", 1, 0.1), ("c", 1, 0.1)]);
    let transcode = json!({
        "input": rig.rtsp.url(mount::H264), "audio": {"mode": "none"},
        "video": {"mode": "transcode", "encoding": {"width": 640, "height": 360, "preset": "ultrafast"}},
    });
    // The expensive cameras first: each node has room for one. Then the copies fill what is left, two each.
    let expensive = [
        ("t1", transcode.clone()),
        ("t2", transcode.clone()),
        ("t3", transcode),
        ("big", json!({"input": "demo://1080p"})),
    ];
    put_all(&rig, &expensive).await;
    rig.wait_for_runners(Duration::from_secs(30), "three transcodes placed", |r| r.len() == 3).await;
    let copies: Vec<(&str, Value)> =
        ["c1", "c2", "c3", "c4", "c5", "c6"].iter().map(|id| (*id, rig.copy_camera())).collect();
    put_all(&rig, &copies).await;

    let placed = rig.wait_for_runners(Duration::from_secs(30), "nine cameras placed", |r| r.len() == 9).await;
    for node in ["a", "b", "c"] {
        let here: Vec<&String> = placed.iter().filter(|(_, n)| n.as_str() == node).map(|(id, _)| id).collect();
        assert_eq!(here.iter().filter(|id| id.starts_with('t')).count(), 1, "one transcode on {node}: {placed:?}");
        assert_eq!(here.iter().filter(|id| id.starts_with('c')).count(), 2, "two copies on {node}: {placed:?}");
    }
    // Every node answers for the whole cluster, with each camera's node; the one that fits nowhere is pending
    // with the reason.
    for node in &rig.nodes {
        let all = node.cameras().await;
        assert_eq!(all.len(), 10, "{} lists every camera: {:?}", node.name, all.keys());
        for (id, runner) in &placed {
            assert_eq!(all[id]["node"], json!(runner), "{} reports camera {id}'s node", node.name);
        }
        assert_eq!(all["big"]["state"], "pending", "{}", all["big"]);
        let reason = all["big"]["last_error"].as_str().unwrap_or_default();
        assert!(reason.contains("no node has room") && reason.contains("cpu_budget"), "{reason}");
    }
    let overview = rig.node("b").get("/api/v1/cluster").await;
    assert_eq!(overview["pending"], 1, "{overview}");
    assert_eq!(overview["nodes"].as_array().unwrap().len(), 3, "{overview}");
    let ids: BTreeSet<String> = placed.keys().cloned().collect();
    rig.assert_published(&ids).await;

    // A node joins: it gets no camera from the others (nothing moves, nothing flaps), though it has room.
    rig.nodes.push(Node::start("d", &rig.etcd, &rig.rtmp, 1, 0.1));
    let until = Instant::now() + Duration::from_secs(20);
    while !rig.node("a").get("/api/v1/cluster").await["nodes"].as_array().unwrap().iter().any(|n| n["name"] == "d") {
        assert!(Instant::now() < until, "node d never showed up\n{}", rig.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Watched over several claim rounds of every node: the placement stays exactly as it was.
    let watch_until = Instant::now() + CLAIM_STEP * 8;
    while Instant::now() < watch_until {
        assert_eq!(rig.runners().await, placed, "a joining node made cameras move\n{}", rig.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Drain a: its cameras go elsewhere (d has room for all three), a ends with none.
    let (status, body, _) = rig.node("c").request(reqwest::Method::POST, "/api/v1/cluster/nodes/a/drain", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let from_a: BTreeSet<String> = placed.iter().filter(|(_, n)| n.as_str() == "a").map(|(id, _)| id.clone()).collect();
    let drained = rig
        .wait_for_runners(Duration::from_secs(40), "a drained", |r| r.len() == 9 && r.values().all(|n| n != "a"))
        .await;
    assert!(rig.node("a").running_here().await.is_empty());
    for id in &from_a {
        let camera = &rig.node("b").cameras().await[id];
        assert_eq!(camera["moved_from"], "a", "the move is reported: {camera}");
        assert_ne!(drained[id], "a");
    }
    rig.assert_published(&from_a).await;
    let overview = rig.node("a").get("/api/v1/cluster").await;
    let a = overview["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "a").unwrap().clone();
    assert_eq!((a["draining"].as_bool(), a["cameras"].as_u64()), (Some(true), Some(0)), "{overview}");
    // Bad node names are refused with the field named.
    let (status, body, _) =
        rig.node("a").request(reqwest::Method::POST, "/api/v1/cluster/nodes/a%2Fb/drain", None).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("node")), "{body}");
    let (status, _, _) = rig.node("a").request(reqwest::Method::POST, "/api/v1/cluster/nodes/nobody/drain", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(rig.duplicates().is_empty(), "{:?}", rig.duplicates());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_s_cameras_publish_again_elsewhere_within_the_bound() {
    let _turn = SERIAL.lock().await;
    let mut rig = Rig::start(&[("a", 4, 0.9), ("b", 4, 0.9), ("c", 4, 0.9)]);
    let camera = rig.copy_camera();
    let ids = ["k1", "k2", "k3", "k4", "k5", "k6"];
    let cameras: Vec<(&str, Value)> = ids.iter().map(|id| (*id, camera.clone())).collect();
    put_all(&rig, &cameras).await;
    let placed = rig.wait_for_runners(Duration::from_secs(30), "six cameras placed", |r| r.len() == 6).await;
    let all: BTreeSet<String> = placed.keys().cloned().collect();
    rig.assert_published(&all).await;

    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for node in placed.values() {
        *load.entry(node.as_str()).or_default() += 1;
    }
    let busiest = load.iter().max_by_key(|(_, n)| **n).map(|(name, _)| (*name).to_owned()).unwrap();
    let orphans: BTreeSet<String> = placed.iter().filter(|(_, n)| **n == busiest).map(|(id, _)| id.clone()).collect();

    let killed = Instant::now();
    let killed_at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as f64;
    rig.nodes.iter_mut().find(|n| n.name == busiest).unwrap().kill();
    // The issue's bound: the lease, the camera's start on its new node (fresh: no backoff) and one GOP; plus the
    // claim steps of nodes that are not first in line and the RTSP session set-up.
    let bound = TTL + CLAIM_STEP * 2 + GOP + Duration::from_secs(2);
    let moved = rig
        .wait_for_runners(bound, "the killed node's cameras run elsewhere", |r| {
            orphans.iter().all(|id| r.get(id).is_some_and(|n| *n != busiest))
        })
        .await;
    eprintln!("owned and started elsewhere after {:?}", killed.elapsed());
    // When each camera wrote its first frame to nginx again, by its new node's account...
    let survivor = rig.live_nodes().next().unwrap();
    let until = Instant::now() + bound;
    let statuses = loop {
        let statuses = survivor.cameras().await;
        if orphans.iter().all(|id| statuses[id]["first_frame_after_ms"].is_u64()) {
            break statuses;
        }
        assert!(Instant::now() < until, "no first frame within {bound:?}: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for id in &orphans {
        let status = &statuses[id];
        let publishing_at =
            status["started_at_ms"].as_f64().unwrap() + status["first_frame_after_ms"].as_f64().unwrap();
        let took = Duration::from_secs_f64((publishing_at - killed_at_ms).max(0.0) / 1000.0);
        eprintln!("camera {id}: publishing again from {} {took:?} after the kill (bound {bound:?})", status["node"]);
        assert!(took < bound, "camera {id} took {took:?} to fail over, bound {bound:?}");
        assert_eq!(status["moved_from"], json!(busiest), "the move is reported: {status}");
        assert_eq!(status["node"], json!(moved[id]));
    }
    // ...and what nginx really serves.
    rig.assert_published(&orphans).await;
    let overview = survivor.get("/api/v1/cluster").await;
    assert!(!overview["nodes"].as_array().unwrap().iter().any(|n| n["name"] == json!(busiest)), "{overview}");
    assert!(rig.duplicates().is_empty(), "{:?}", rig.duplicates());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_node_is_fenced_and_resumes_nothing_when_it_wakes() {
    let _turn = SERIAL.lock().await;
    let rig = Rig::start(&[("a", 4, 0.9), ("b", 4, 0.9), ("c", 4, 0.9)]);
    let camera = rig.copy_camera();
    let ids = ["f1", "f2", "f3", "f4", "f5", "f6"];
    let cameras: Vec<(&str, Value)> = ids.iter().map(|id| (*id, camera.clone())).collect();
    put_all(&rig, &cameras).await;
    let placed = rig.wait_for_runners(Duration::from_secs(30), "six cameras placed", |r| r.len() == 6).await;
    let frozen_name = placed.values().next().unwrap().clone();
    let frozen = rig.node(&frozen_name);
    let former: BTreeSet<String> =
        placed.iter().filter(|(_, n)| **n == frozen_name).map(|(id, _)| id.clone()).collect();

    frozen.signal(libc::SIGSTOP);
    // While it is frozen (it cannot answer, so ask the others), its cameras move.
    let others: Vec<&Node> = rig.nodes.iter().filter(|n| n.name != frozen_name).collect();
    let until = Instant::now() + TTL * 3;
    loop {
        let mut running = BTreeSet::new();
        for node in &others {
            running.extend(node.running_here().await);
        }
        if former.is_subset(&running) {
            break;
        }
        assert!(Instant::now() < until, "the frozen node's cameras did not move\n{}", rig.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.assert_published(&former).await;

    frozen.signal(libc::SIGCONT);
    // It wakes with its fence long passed: it stops its cameras before writing, learns its lease is gone, and
    // joins again with a new one — owning nothing.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let overview = frozen.get("/api/v1/cluster").await;
        let back =
            overview["nodes"].as_array().unwrap().iter().any(|n| n["name"] == json!(frozen_name) && n["alive"] == true);
        if back && frozen.request(reqwest::Method::GET, "/readyz", None).await.0 == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < until, "the woken node never rejoined\n{}", rig.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let watch_until = Instant::now() + CLAIM_STEP * 8;
    while Instant::now() < watch_until {
        let runners = rig.runners().await;
        assert_eq!(runners.len(), 6, "{runners:?}");
        assert!(
            runners.values().all(|n| *n != frozen_name),
            "the woken node resumed a camera: {runners:?}\n{}",
            rig.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all: BTreeSet<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    rig.assert_published(&all).await;
    assert!(rig.duplicates().is_empty(), "two publishers of one stream: {:?}\n{}", rig.duplicates(), rig.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_outage_stops_every_camera_and_they_resume_on_their_owners() {
    let _turn = SERIAL.lock().await;
    let mut rig = Rig::start(&[("a", 4, 0.9), ("b", 4, 0.9), ("c", 4, 0.9)]);
    let camera = rig.copy_camera();
    let ids = ["e1", "e2", "e3", "e4"];
    let cameras: Vec<(&str, Value)> = ids.iter().map(|id| (*id, camera.clone())).collect();
    put_all(&rig, &cameras).await;
    let placed = rig.wait_for_runners(Duration::from_secs(30), "four cameras placed", |r| r.len() == 4).await;

    // The documented choice: without etcd no node can prove it still owns its cameras, so each stops them
    // when its fence closes (a lease TTL, less a fifth, after its last renewal)...
    rig.etcd.stop();
    rig.wait_for_runners(TTL * 3, "every camera stopped while etcd is down", BTreeMap::is_empty).await;
    for node in rig.live_nodes() {
        let (status, body, _) = node.request(reqwest::Method::GET, "/readyz", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        // Reads of the node's own state still answer; writes need etcd and say so.
        let (status, body, _) = node.put("e9", &camera).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body["message"].as_str().unwrap_or_default().contains("etcd"), "{body}");
    }

    // ...and when etcd is back, it extends every lease: each owner renews the lease it had and runs the same
    // cameras again. Nothing moved, nothing ran twice.
    rig.etcd.restart();
    let resumed = rig.wait_for_runners(Duration::from_secs(30), "every camera running again", |r| r.len() == 4).await;
    assert_eq!(resumed, placed, "cameras resume on the nodes that own them");
    let all: BTreeSet<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    rig.assert_published(&all).await;
    assert!(rig.duplicates().is_empty(), "{:?}", rig.duplicates());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_puts_and_deletes_on_every_node_end_at_the_last_writes() {
    let _turn = SERIAL.lock().await;
    let rig = Rig::start(&[("a", 4, 0.9), ("b", 4, 0.9), ("c", 4, 0.9)]);
    // Cameras that never connect (nothing listens there) cost nothing; each PUT names its own path, so the
    // final input tells which write won.
    let dead = free_port();
    let ids: Vec<String> = (0..8).map(|n| format!("r{n}")).collect();
    // A fixed pseudo-random schedule (xorshift): 100 operations, a third of them deletes.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let ops: Vec<(usize, String, Option<String>)> = (0..100)
        .map(|n| {
            let node = (next() % 3) as usize;
            let id = ids[(next() % ids.len() as u64) as usize].clone();
            let input = (next() % 3 != 0).then(|| format!("rtsp://127.0.0.1:{dead}/op{n}"));
            (node, id, input)
        })
        .collect();
    let results = futures_util::future::join_all(ops.iter().map(|(node, id, input)| {
        let node = &rig.nodes[*node];
        async move {
            match input {
                Some(input) => node.put(id, &json!({"input": input, "retry": {"initial_backoff_ms": 1000}})).await,
                None => node.delete(id).await,
            }
        }
    }))
    .await;

    // The last write of each camera is the one with the highest revision; a delete of a camera that was not
    // there (404) wrote nothing.
    let mut last: BTreeMap<&String, (u64, Option<&String>)> = BTreeMap::new();
    for ((_, id, input), (status, body, revision)) in ops.iter().zip(&results) {
        match (status.as_u16(), revision) {
            (200..=299, Some(revision)) => {
                if last.get(id).is_none_or(|(r, _)| r < revision) {
                    last.insert(id, (*revision, input.as_ref()));
                }
            }
            (404, None) if input.is_none() => {}
            _ => panic!("{id}: {status} {body}"),
        }
    }
    let expected: BTreeMap<String, String> =
        last.iter().filter_map(|(id, (_, input))| input.map(|input| ((*id).clone(), input.clone()))).collect();
    eprintln!("{} of {} cameras remain after 100 operations", expected.len(), ids.len());

    // Every node answers the same final set, each camera with the last PUT's input (once its owner has
    // restarted it with that request)...
    for node in &rig.nodes {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let cameras = node.cameras().await;
            let inputs: BTreeMap<String, String> = cameras
                .iter()
                .map(|(id, c)| (id.clone(), c["input"].as_str().unwrap_or_default().to_owned()))
                .collect();
            if inputs == expected {
                break;
            }
            assert!(Instant::now() < until, "node {}: {inputs:?} != {expected:?}\n{}", node.name, rig.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // ...and exactly those cameras run, each on one node.
    let wanted: BTreeSet<String> = expected.keys().cloned().collect();
    rig.wait_for_runners(Duration::from_secs(20), "the final set runs", |r| {
        r.keys().cloned().collect::<BTreeSet<_>>() == wanted
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_answers_for_the_camera_s_node_old_routes_hooks_and_previews_included() {
    let _turn = SERIAL.lock().await;
    let etcd = Etcd::start();
    let rtmp = RtmpServer::start_dropping_idle(IDLE_DROP);
    let rtsp = RtspServer::start();
    // Each node has its own origin, so its own viewer URL.
    let template =
        |node: &str| ("CAMGATE_VIEWER_URL_TEMPLATE", format!("http://origin-{node}:8080/live/livestream{{id}}.flv"));
    let nodes: Vec<Node> =
        ["a", "b"].iter().map(|name| Node::start_with(name, &etcd, &rtmp, 4, 0.9, &[template(name)])).collect();
    let other = |owner: &str| nodes.iter().find(|n| n.name != owner).unwrap();
    let by_name = |name: &str| nodes.iter().find(|n| n.name == name).unwrap();

    // The old play_camera on either node answers with the viewer URL of the origin of the node that took it.
    let response = nodes[0]
        .http
        .post(format!("{}/play_camera", nodes[0].base))
        .bearer_auth(TOKEN)
        .form(&[("id", "old"), ("ip", &rtsp.url(mount::H264))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let owner = nodes[1].owner_of("old", Duration::from_secs(10)).await;
    assert_eq!(body["flv_data"], format!("http://origin-{owner}:8080/live/livestreamold.flv"), "{body}");

    // The preview and snapshots of a camera are where it runs: the other node redirects there.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response =
        no_redirects.get(format!("{}/live/old.flv?x=1", other(&owner).base)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(response.headers()["location"], format!("{}/live/old.flv?x=1", by_name(&owner).base).as_str());

    // The old stop_camera through the other node stops it on its node.
    let response = other(&owner)
        .http
        .post(format!("{}/stop_camera", other(&owner).base))
        .bearer_auth(TOKEN)
        .form(&[("id", "old")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.text().await);
    rig_wait(|| async { by_name(&owner).running_here().await.is_empty() }, "the old camera stopped").await;

    // An on-demand camera: SRS's hooks may reach any node; the camera's node counts the viewer and starts it.
    let camera = json!({"input": rtsp.url(mount::H264), "video": {"mode": "copy"}, "audio": {"mode": "none"}, "on_demand": true});
    let (status, body, _) = nodes[0].put("od", &camera).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["stream"], "live/livestreamod", "{body}");
    // An idle on-demand camera is listed by its node's `GET /api/v1/on_demand`.
    let until = Instant::now() + Duration::from_secs(20);
    let owner = 'found: loop {
        for node in &nodes {
            if node.get("/api/v1/on_demand").await.as_array().unwrap().iter().any(|c| c["id"] == "od") {
                break 'found node.name.clone();
            }
        }
        assert!(Instant::now() < until, "no node took the on-demand camera");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let hook = |action: &str, stream: &str| {
        json!({"action": action, "client_id": "player-1", "ip": "127.0.0.1", "vhost": "__defaultVhost__",
               "app": "live", "stream": stream, "param": ""})
    };
    let stranger = other(&owner);
    let (status, body, _) =
        stranger.request(reqwest::Method::POST, "/api/v1/srs/on_play", Some(&hook("on_play", "livestreamod"))).await;
    assert_eq!((status, body["code"].as_u64()), (StatusCode::OK, Some(0)), "{body}");
    rig_wait(
        || async { by_name(&owner).running_here().await.contains("od") },
        "the on-demand camera started on its node",
    )
    .await;
    let on_demand = by_name(&owner).get("/api/v1/on_demand").await;
    assert_eq!(on_demand[0]["viewers"], 1, "the viewer is counted on the camera's node: {on_demand}");
    assert!(stranger.running_here().await.is_empty(), "nothing runs on the node the hook reached");
    let (status, body, _) =
        stranger.request(reqwest::Method::POST, "/api/v1/srs/on_stop", Some(&hook("on_stop", "livestreamod"))).await;
    assert_eq!((status, body["code"].as_u64()), (StatusCode::OK, Some(0)), "{body}");
    assert_eq!(by_name(&owner).get("/api/v1/on_demand").await[0]["viewers"], 0);
    // A stream no camera publishes is refused wherever the hook lands.
    let (status, body, _) =
        stranger.request(reqwest::Method::POST, "/api/v1/srs/on_play", Some(&hook("on_play", "livestreamnone"))).await;
    assert_eq!((status, body["code"].as_u64()), (StatusCode::NOT_FOUND, Some(404)), "{body}");
}

/// Polls `done` until it holds, for up to 20 s.
async fn rig_wait<F, Fut>(done: F, what: &str)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < until, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node built with the library, as an embedder builds one, with the fault hook only a library user has.
async fn library_node(
    name: &str,
    etcd: &Etcd,
    rtmp: &RtmpServer,
    faults: camgate::runtime::Faults,
) -> (std::sync::Arc<camgate::gateway::cluster::ClusterNode>, camgate::Gateway) {
    library_node_stopping_within(name, etcd, rtmp, faults, 600).await
}

/// [`library_node`] with `stop_timeout_ms`.
async fn library_node_stopping_within(
    name: &str,
    etcd: &Etcd,
    rtmp: &RtmpServer,
    faults: camgate::runtime::Faults,
    stop_timeout_ms: u64,
) -> (std::sync::Arc<camgate::gateway::cluster::ClusterNode>, camgate::Gateway) {
    let config = camgate::gateway::config::Config::from_toml(&format!(
        r#"
rtmp_base = "rtmp://127.0.0.1:{rtmp}"
max_cameras = 10
cpu_cores = 2
stop_timeout_ms = {stop_timeout_ms}
[camera_hosts]
allow = ["127.0.0.0/8"]
[cluster]
etcd_endpoints = ["{etcd}"]
node = "{name}"
advertise_url = "http://127.0.0.1:9"
lease_ttl_ms = {ttl}
"#,
        rtmp = rtmp.port(),
        etcd = etcd.endpoint(),
        ttl = TTL.as_millis(),
    ))
    .unwrap();
    let supervisor = camgate::Supervisor::new(camgate::SupervisorConfig { faults, ..config.supervisor_config() });
    let fence = supervisor.config().fence.clone();
    let gateway = camgate::Gateway::new(supervisor, camgate::gateway::GatewaySettings::from_config(&config), None);
    let node = camgate::gateway::cluster::ClusterNode::start(&config, gateway.clone(), fence).await.unwrap();
    (node, gateway)
}

/// Camera sessions that block in a call that never looks at the stop flag, until the flag returned is cleared:
/// a stop of such a camera times out (the library nodes' `stop_timeout_ms` is 600) and its thread stays, as a
/// stuck driver's would.
fn stuck_sessions() -> (camgate::runtime::Faults, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let hold = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let held = std::sync::Arc::clone(&hold);
    let faults = camgate::runtime::Faults {
        on_session: Some(std::sync::Arc::new(move |_: &camgate::CameraId, _: u32| {
            while held.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
        })),
    };
    (faults, hold)
}

/// Whether `node` runs camera `id` itself (alive: not stopped or failed).
fn runs_here(node: &camgate::gateway::cluster::ClusterNode, id: &str) -> bool {
    node.local_statuses().iter().any(|s| {
        s.id.as_str() == id
            && matches!(
                s.state,
                camgate::WorkerState::Starting
                    | camgate::WorkerState::Running
                    | camgate::WorkerState::Reconnecting
                    | camgate::WorkerState::Stopping
                    | camgate::WorkerState::Stuck
            )
    })
}

/// Two library nodes: a runs camera `stuck`, whose session will not stop until `hold` is cleared; b has
/// joined and knows that a runs it.
struct StuckOnA {
    _etcd: Etcd,
    _rtmp: RtmpServer,
    hold: std::sync::Arc<std::sync::atomic::AtomicBool>,
    id: camgate::CameraId,
    a: std::sync::Arc<camgate::gateway::cluster::ClusterNode>,
    gateway_a: camgate::Gateway,
    b: std::sync::Arc<camgate::gateway::cluster::ClusterNode>,
    gateway_b: camgate::Gateway,
}

impl StuckOnA {
    async fn start() -> StuckOnA {
        StuckOnA::start_with_b_stopping_within(600).await
    }

    /// [`start`](Self::start), b with `stop_timeout_ms`.
    async fn start_with_b_stopping_within(stop_timeout_ms: u64) -> StuckOnA {
        let etcd = Etcd::start();
        let rtmp = RtmpServer::start();
        let (faults, hold) = stuck_sessions();
        let (a, gateway_a) = library_node("a", &etcd, &rtmp, faults).await;
        let id: camgate::CameraId = "stuck".parse().unwrap();
        let request = serde_json::from_value(json!({"input": "demo://360p"})).unwrap();
        gateway_a.put_request(id.clone(), &request).await.unwrap();
        rig_wait(|| async { runs_here(&a, "stuck") }, "the camera runs on a").await;
        let (b, gateway_b) =
            library_node_stopping_within("b", &etcd, &rtmp, camgate::runtime::Faults::default(), stop_timeout_ms).await;
        // b answers from its own view of the cluster, which follows etcd's watch: once it knows who runs it.
        rig_wait(|| async { b.remote_owner(&id).is_some() }, "b to know the camera's node").await;
        StuckOnA { _etcd: etcd, _rtmp: rtmp, hold, id, a, gateway_a, b, gateway_b }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_camera_whose_thread_will_not_stop_is_not_handed_over_until_it_has() {
    let _turn = SERIAL.lock().await;
    let StuckOnA { _etcd, _rtmp, hold, id, a, gateway_a, b, .. } = StuckOnA::start().await;

    // Drain a: its stop of the camera times out, and the thread is still there.
    a.set_draining("a", true).await.unwrap();
    rig_wait(
        || async { gateway_a.supervisor().status(&id).is_some_and(|s| s.state == camgate::WorkerState::Stuck) },
        "a's stop to time out",
    )
    .await;
    // Over several reconcile rounds of both nodes and claim steps of b: a keeps the camera, b does not run it.
    let watch_until = Instant::now() + CLAIM_STEP * 8;
    while Instant::now() < watch_until {
        assert!(!runs_here(&b, "stuck"), "b started the camera while a's thread still runs it");
        assert!(b.remote_owner(&id).is_some(), "a gave the camera up while its thread still runs it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(runs_here(&a, "stuck"));

    // The call returns, the thread exits: a hands the camera over and b runs it.
    hold.store(false, std::sync::atomic::Ordering::Relaxed);
    rig_wait(|| async { runs_here(&b, "stuck") }, "the camera to move to b once a's thread exited").await;
    assert!(gateway_a.supervisor().status(&id).is_none(), "a's thread is gone");
    b.leave().await;
    a.leave().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_camera_whose_thread_will_not_stop_answers_the_timeout_from_any_node() {
    let _turn = SERIAL.lock().await;
    let StuckOnA { _etcd, _rtmp, hold, id, a, gateway_a, b, gateway_b } = StuckOnA::start().await;

    // Removed through b: a cannot stop it, so b cannot say it stopped; it is gone from the desired set anyway.
    let removed = gateway_b.remove(&id).await;
    assert!(
        matches!(removed, Err(camgate::gateway::GatewayError::Camera(camgate::SupervisorError::StopTimeout { .. }))),
        "{removed:?}"
    );
    assert!(b.remote_owner(&id).is_some(), "a keeps the camera while its thread runs");
    assert!(!runs_here(&b, "stuck"));

    // Once the thread exits, a lets the camera go, and nobody runs it.
    hold.store(false, std::sync::atomic::Ordering::Relaxed);
    rig_wait(|| async { b.remote_owner(&id).is_none() && gateway_a.supervisor().status(&id).is_none() }, "a to let go")
        .await;
    assert!(!runs_here(&b, "stuck") && !runs_here(&a, "stuck"));
    let again = gateway_b.remove(&id).await;
    assert!(matches!(again, Err(camgate::gateway::GatewayError::NotFound(_))), "{again:?}");
    b.leave().await;
    a.leave().await;
}

/// A DELETE overtaken by a later PUT — the camera put back before its node could stop it — answers once the PUT
/// is seen: the node keeps running the camera for that write, so its owner key stays, and waiting for the key
/// would only end at the stop timeout. Here a's thread will not stop and b's stop timeout is a minute, so only
/// seeing the PUT lets b answer within the 20 s allowed.
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_overtaken_by_a_later_put_answers_once_the_put_is_seen() {
    let _turn = SERIAL.lock().await;
    let StuckOnA { _etcd, _rtmp, hold, id, a, b, gateway_b, .. } = StuckOnA::start_with_b_stopping_within(60_000).await;

    let removing = {
        let (gateway_b, id) = (gateway_b.clone(), id.clone());
        tokio::spawn(async move { gateway_b.remove(&id).await })
    };
    // The DELETE has been written once the camera's key is gone from etcd; then the PUT puts it back.
    let etcd = etcd_client::Client::connect([_etcd.endpoint()], None).await.unwrap();
    let key = format!("/camgate/cameras/{id}");
    rig_wait(
        || {
            let (mut etcd, key) = (etcd.clone(), key.clone());
            async move { etcd.get(key, None).await.unwrap().kvs().is_empty() }
        },
        "the DELETE to reach etcd",
    )
    .await;
    let request = serde_json::from_value(json!({"input": "demo://360p"})).unwrap();
    gateway_b.put_request(id.clone(), &request).await.unwrap();

    let removed = tokio::time::timeout(Duration::from_secs(20), removing)
        .await
        .expect("the DELETE answered once the PUT was seen, not at its one-minute stop timeout")
        .unwrap();
    assert!(removed.is_ok(), "{removed:?}");
    // The later write stands: a still owns and runs the camera.
    assert!(b.remote_owner(&id).is_some(), "b knows the camera's node");
    assert!(runs_here(&a, "stuck"));

    hold.store(false, std::sync::atomic::Ordering::Relaxed);
    b.leave().await;
    a.leave().await;
}
