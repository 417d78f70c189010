//! The supervisor under churn: thousands of start/stop cycles and racing duplicate starts must leave threads,
//! file descriptors and workers exactly as they were.

mod common;

use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};

use camgate::{StartOutcome, StreamSpec, Supervisor, SupervisorConfig};
use common::{SilentServer, free_port};

/// A camera that accepts and never answers, but closes its side once the client has gone — so descriptors
/// still open after the churn are the client's, not the server's.
struct HangingCamera {
    url: String,
    closed: Arc<AtomicUsize>,
}

impl HangingCamera {
    fn start() -> HangingCamera {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("rtsp://{}/stream", listener.local_addr().unwrap());
        let closed = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&closed);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                    counter.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        HangingCamera { url, closed }
    }
}

/// The tests count the process's threads and descriptors, so they must not run at the same time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("procfs")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("procfs");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm resident");
    pages * 4096
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).expect("procfs").count()
}

/// Runs `cycles` start/stop cycles of cameras reading `url` and checks nothing is left behind.
fn churn(url: &str, cycles: usize) {
    let supervisor = Supervisor::new(SupervisorConfig { max_cameras: 8, ..common::rig() });
    let spec = |i: usize| StreamSpec::new(&format!("churn{}", i % 4), url, "out.flv").unwrap();
    // Warm up once so lazily created process-wide state (FFmpeg's network init, thread-locals) is in the baseline.
    supervisor.start_blocking(spec(0)).unwrap();
    supervisor.stop_blocking(&"churn0".parse().unwrap()).unwrap();
    let (threads, fds, memory) = (count("/proc/self/task"), count("/proc/self/fd"), rss());

    for i in 0..cycles {
        supervisor.start_blocking(spec(i)).unwrap();
        // Stop every other camera straight away and the rest one cycle later, so stops overlap starts.
        if i % 2 == 1 {
            supervisor.stop_blocking(&format!("churn{}", (i - 1) % 4).parse().unwrap()).unwrap();
            supervisor.stop_blocking(&format!("churn{}", i % 4).parse().unwrap()).unwrap();
        }
    }
    assert!(supervisor.snapshot().is_empty());
    assert_eq!(threads_named("cam-"), 0, "camera threads left behind");
    // The test camera's reader threads and sockets live in this process too; give them a moment to see the
    // closes before comparing.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let settled = || count("/proc/self/task") <= threads && count("/proc/self/fd") <= fds;
    while !settled() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(count("/proc/self/task") <= threads, "threads: {threads} before, {} after", count("/proc/self/task"));
    assert!(count("/proc/self/fd") <= fds, "file descriptors: {} before, {} after", fds, count("/proc/self/fd"));
    // Allocators keep some memory, so only a real leak fails this: 16 MiB over thousands of cycles is a few
    // kilobytes per cycle at most.
    let grown = rss().saturating_sub(memory);
    assert!(grown < 16 << 20, "resident memory grew by {} KiB over {cycles} cycles", grown >> 10);
}

#[test]
fn thousands_of_start_stop_cycles_leave_no_threads_or_descriptors_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Cameras that refuse the connection: each worker fails its open at once and waits to retry.
    churn(&format!("rtsp://127.0.0.1:{}/s", free_port()), 2000);
}

#[test]
fn stopping_cameras_blocked_in_a_connection_leaks_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Cameras that accept and never answer: each stop interrupts a blocking read inside FFmpeg.
    let camera = HangingCamera::start();
    churn(&camera.url, 200);
    assert!(camera.closed.load(Ordering::SeqCst) >= 200, "every connection was made and closed by the worker");
}

#[test]
fn a_hundred_simultaneous_starts_of_one_id_make_one_worker() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let silent = SilentServer::start();
    let supervisor = Supervisor::new(common::rig());
    let barrier = Arc::new(Barrier::new(100));
    let racers: Vec<_> = (0..100)
        .map(|_| {
            let (supervisor, barrier, url) = (supervisor.clone(), Arc::clone(&barrier), silent.url());
            std::thread::spawn(move || {
                barrier.wait();
                supervisor.start_blocking(StreamSpec::new("same", &url, "out.flv").unwrap()).unwrap()
            })
        })
        .collect();
    let outcomes: Vec<StartOutcome> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let started = outcomes.iter().filter(|o| matches!(o, StartOutcome::Started(_))).count();
    assert_eq!(started, 1, "exactly one start wins");
    assert_eq!(outcomes.len() - started, 100 - 1, "everyone else finds it running");
    assert_eq!(threads_named("cam-same"), 1);
    supervisor.stop_blocking(&"same".parse().unwrap()).unwrap();
    assert_eq!(threads_named("cam-same"), 0);
}
