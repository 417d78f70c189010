//! The cluster at scale: what the claim/renew/watch traffic costs etcd, and how fast a cluster converges when
//! a node dies. Starts Debian's etcd, `--nodes` camgate processes in cluster mode and `--cameras` cameras on
//! loopback, then SIGKILLs the node with the most live cameras.
//!
//! ```text
//! cargo run --release --example cluster_bench -- --nodes 10 --cameras 1000 --live 6 --ttl-ms 10000
//! ```
//!
//! Most cameras point at a loopback port nothing listens on, with a long retry backoff: they cost no media
//! work, so one machine can hold a thousand of them and what is measured is the control plane — every camera
//! still has its desired key, its owner key bound to its node's lease, and a thread on its node. `--live`
//! cameras copy the fixture RTSP server's H.264 to nginx-rtmp, and their failover is timed until their stream
//! is readable at nginx again.
//!
//! etcd's load is read from its own Prometheus counters: `grpc_server_msg_received_total` (every unary request
//! and every message on a stream — lease renewals, watch requests) and `etcd_mvcc_put_total` +
//! `etcd_mvcc_delete_total` (keys written or deleted, also inside transactions).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, Etcd, ProbeOptions, RtmpServer, RtspServer, free_port, mount, probe};
use serde_json::{Value, json};

const TOKEN: &str = "cluster-bench-token-0123456789";

struct Args {
    nodes: usize,
    cameras: usize,
    live: usize,
    ttl_ms: u64,
    steady_secs: u64,
    json: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args { nodes: 10, cameras: 1000, live: 6, ttl_ms: 10_000, steady_secs: 30, json: None };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value")).clone();
        match flag.as_str() {
            "--nodes" => args.nodes = value().parse().expect("--nodes N"),
            "--cameras" => args.cameras = value().parse().expect("--cameras N"),
            "--live" => args.live = value().parse().expect("--live N"),
            "--ttl-ms" => args.ttl_ms = value().parse().expect("--ttl-ms MS"),
            "--steady-secs" => args.steady_secs = value().parse().expect("--steady-secs S"),
            "--json" => args.json = Some(value()),
            other => panic!("unknown flag {other} (--nodes --cameras --live --ttl-ms --steady-secs --json)"),
        }
    }
    assert!(args.nodes >= 2 && args.live <= args.cameras, "at least two nodes, and --live <= --cameras");
    args
}

struct Node {
    name: String,
    base: String,
    child: Option<ChildGuard>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(name: &str, etcd: &Etcd, rtmp: &RtmpServer, ttl_ms: u64) -> Node {
        let dir = tempfile::Builder::new().prefix(&format!("cluster-bench-{name}-")).tempdir().unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("camgate.log")).unwrap();
        let mut cmd = Command::new(camgate_binary());
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .env("CAMGATE_CLUSTER_ETCD", etcd.endpoint())
            .env("CAMGATE_NODE", name)
            .env("CAMGATE_ADVERTISE_URL", &base)
            .env("CAMGATE_LEASE_TTL_MS", ttl_ms.to_string())
            .env("CAMGATE_RTMP_BASE", format!("rtmp://127.0.0.1:{}", rtmp.port()))
            .env("CAMGATE_TOKENS", TOKEN)
            .env("CAMGATE_MAX_CAMERAS", "1000")
            .env("CAMGATE_ALLOW_CAMERA_HOSTS", "127.0.0.0/8")
            .env("RUST_LOG", std::env::var("CLUSTER_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = ChildGuard::spawn("camgate", cmd).unwrap();
        child.wait_listening(port, Duration::from_secs(30)).unwrap_or_else(|e| panic!("node {name}: {e}"));
        Node { name: name.to_owned(), base, child: Some(child), _dir: dir }
    }
}

/// The release binary next to this example (built by `cargo build --release` first).
fn camgate_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let binary = dir.join("camgate");
    assert!(binary.exists(), "{} is missing: run `cargo build --release` first", binary.display());
    binary
}

/// etcd's counters that matter here.
#[derive(Debug, Clone, Copy, Default)]
struct EtcdCounters {
    received: f64,
    writes: f64,
}

async fn etcd_counters(http: &reqwest::Client, etcd: &Etcd) -> EtcdCounters {
    let text = http.get(format!("{}/metrics", etcd.endpoint())).send().await.unwrap().text().await.unwrap();
    let mut counters = EtcdCounters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let value: f64 = value.parse().unwrap_or(0.0);
        if name.starts_with("grpc_server_msg_received_total") {
            counters.received += value;
        } else if ["etcd_mvcc_put_total", "etcd_mvcc_delete_total"].contains(&name) {
            counters.writes += value;
        }
    }
    counters
}

async fn cluster_view(http: &reqwest::Client, node: &Node) -> Option<Value> {
    let request = http.get(format!("{}/api/v1/cluster", node.base)).bearer_auth(TOKEN).timeout(Duration::from_secs(5));
    match request.send().await {
        Ok(response) => response.json().await.ok(),
        Err(error) => {
            eprintln!("GET /api/v1/cluster on {}: {error}", node.name);
            None
        }
    }
}

/// Cameras owned per live node, and how many are pending, as `node` sees it.
async fn placement(http: &reqwest::Client, node: &Node) -> (BTreeMap<String, u64>, u64) {
    let Some(view) = cluster_view(http, node).await else { return (BTreeMap::new(), u64::MAX) };
    let owned = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["alive"] == true)
        .map(|n| (n["name"].as_str().unwrap().to_owned(), n["cameras"].as_u64().unwrap()))
        .collect();
    (owned, view["pending"].as_u64().unwrap_or(u64::MAX))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let etcd = Etcd::start();
    let rtmp = RtmpServer::start();
    let rtsp = RtspServer::start();
    eprintln!("starting {} nodes", args.nodes);
    let mut nodes: Vec<Node> =
        (0..args.nodes).map(|n| Node::start(&format!("n{n:02}"), &etcd, &rtmp, args.ttl_ms)).collect();
    let dead = free_port();

    // Place the cameras through every node's API, 32 requests at a time.
    let started = Instant::now();
    let ids: Vec<String> = (0..args.cameras).map(|n| format!("c{n:04}")).collect();
    for chunk in ids.chunks(32).enumerate() {
        let (c, chunk) = chunk;
        let puts = chunk.iter().enumerate().map(|(i, id)| {
            let n = c * 32 + i;
            let node = &nodes[n % nodes.len()];
            let camera = if n < args.live {
                json!({"input": rtsp.url(mount::H264), "video": {"mode": "copy"}, "audio": {"mode": "none"}})
            } else {
                json!({"input": format!("rtsp://127.0.0.1:{dead}/{id}"), "preview": false,
                       "retry": {"initial_backoff_ms": 30000, "max_backoff_ms": 60000}})
            };
            let request = http.put(format!("{}/api/v1/cameras/{id}", node.base)).bearer_auth(TOKEN).json(&camera);
            async move {
                let response = request.send().await.unwrap();
                assert!(response.status().is_success(), "PUT {id}: {}", response.status());
            }
        });
        futures_util::future::join_all(puts).await;
    }
    let put_secs = started.elapsed().as_secs_f64();
    let placed = loop {
        let (owned, pending) = placement(&http, &nodes[0]).await;
        if pending == 0 && owned.values().sum::<u64>() == args.cameras as u64 {
            break owned;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "not placed: {owned:?}, {pending} pending");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let place_secs = started.elapsed().as_secs_f64();
    eprintln!("{} cameras put in {put_secs:.1} s, all owned after {place_secs:.1} s: {placed:?}", args.cameras);

    // Steady state: nothing changes; what does keeping it cost etcd?
    let before = etcd_counters(&http, &etcd).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
    let after = etcd_counters(&http, &etcd).await;
    let secs = t0.elapsed().as_secs_f64();
    let steady_rps = (after.received - before.received) / secs;
    let steady_wps = (after.writes - before.writes) / secs;
    eprintln!("steady: {steady_rps:.1} etcd requests/s ({steady_wps:.2} writes/s)");

    // Kill the busiest node; time until a survivor sees every camera owned again, and the live ones readable.
    // The victim: the node with the most live cameras (so their failover is timed), then the most cameras.
    let all: Value = http
        .get(format!("{}/api/v1/cameras", nodes[0].base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut live_per_node: BTreeMap<String, usize> = BTreeMap::new();
    for camera in all.as_array().unwrap().iter().filter(|c| ids[..args.live].iter().any(|id| c["id"] == json!(id))) {
        *live_per_node.entry(camera["node"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    let (busiest, orphans) = placed
        .iter()
        .max_by_key(|(name, n)| (live_per_node.get(*name).copied().unwrap_or(0), **n))
        .map(|(name, n)| (name.clone(), *n))
        .unwrap();
    let live_on_busiest: Vec<String> = {
        let response = http
            .get(format!("{}/api/v1/cluster/local/cameras", nodes.iter().find(|n| n.name == busiest).unwrap().base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let cameras: Value = response.json().await.unwrap();
        cameras
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .filter(|id| ids[..args.live].contains(id))
            .collect()
    };
    let before = etcd_counters(&http, &etcd).await;
    let killed = Instant::now();
    let killed_at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as f64;
    {
        let node = nodes.iter_mut().find(|n| n.name == busiest).unwrap();
        let mut child = node.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.pid() as i32, libc::SIGKILL) };
        child.terminate(Duration::from_secs(1));
    }
    let survivor = nodes.iter().find(|n| n.child.is_some()).unwrap();
    let converged = loop {
        let (owned, pending) = placement(&http, survivor).await;
        if pending == 0 && !owned.contains_key(&busiest) && owned.values().sum::<u64>() == args.cameras as u64 {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(300), "no convergence: {owned:?} {pending}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The live cameras: when their new node wrote their first frame to nginx again (its own account, from
    // the camera's status), then checked by reading each stream back from nginx.
    let mut live_failover = Vec::new();
    for id in &live_on_busiest {
        let until = Instant::now() + Duration::from_secs(60);
        let publishing_at_ms = loop {
            let response = http.get(format!("{}/api/v1/cameras/{id}", survivor.base)).bearer_auth(TOKEN).send().await;
            if let Ok(response) = response
                && let Ok(status) = response.json::<Value>().await
                && let (Some(started), Some(first)) =
                    (status["started_at_ms"].as_f64(), status["first_frame_after_ms"].as_f64())
                && status["node"] != json!(busiest)
            {
                break started + first;
            }
            assert!(Instant::now() < until, "live camera {id} never published again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        live_failover.push((publishing_at_ms - killed_at_ms) / 1000.0);
        let url = rtmp.url(&format!("livestream{id}"));
        let read = tokio::task::spawn_blocking(move || {
            probe(&url, ProbeOptions::default().with_media_seconds(0.5).with_deadline(Duration::from_secs(20)))
        });
        read.await
            .unwrap()
            .unwrap_or_else(|e| panic!("live camera {id} is not readable at nginx after the failover: {e}"));
    }
    let after = etcd_counters(&http, &etcd).await;
    eprintln!(
        "killed {busiest} ({orphans} cameras): every camera owned again after {:.2} s; live cameras publishing \
         again after {live_failover:.2?} s (each read back from nginx); etcd during the failover: {:.0} requests, \
         {:.0} writes",
        converged.as_secs_f64(),
        after.received - before.received,
        after.writes - before.writes,
    );

    let report = json!({
        "nodes": args.nodes, "cameras": args.cameras, "live": args.live, "ttl_ms": args.ttl_ms,
        "put_secs": put_secs, "placed_secs": place_secs, "placement": placed,
        "steady_etcd_requests_per_sec": steady_rps, "steady_etcd_writes_per_sec": steady_wps,
        "killed": busiest, "orphans": orphans, "converged_secs": converged.as_secs_f64(),
        "live_failover_secs": live_failover,
        "failover_etcd_requests": after.received - before.received, "failover_etcd_writes": after.writes - before.writes,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
}
