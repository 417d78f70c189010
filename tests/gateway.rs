//! The gateway's lifecycle guarantees, driven through the library (no HTTP): operations on one camera applied
//! whole and in order, panicking and stuck camera threads, and the policy waits (backoff, linger) on an
//! injected clock so they are tested without sleeping through them.
//!
//! Cameras here point at a closed local port unless a test needs media: their threads start, fail to connect
//! and wait for their backoff, which is all these properties need.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use camgate::gateway::RunMode;
use camgate::gateway::{Gateway, GatewayError, GatewaySettings, PutOutcome};
use camgate::runtime::clock::ManualClock;
use camgate::runtime::{Faults, StartOutcome};
use camgate::{CameraId, RetryPolicy, StreamSpec, Supervisor, SupervisorConfig, SupervisorError, WorkerState};
use common::{RtspServer, mount, wait_for};

/// Nothing listens on port 9 (discard) here: connections are refused at once.
const DEAD_CAMERA: &str = "rtsp://127.0.0.1:9/stream";

fn id(s: &str) -> CameraId {
    s.parse().expect("valid id")
}

/// A camera that never connects, pushing to `live/livestream<id>` (the stream its hooks name).
fn dead_spec(camera: &str) -> StreamSpec {
    let mut spec =
        StreamSpec::new(camera, DEAD_CAMERA, &format!("rtmp://127.0.0.1:1/live/livestream{camera}")).unwrap();
    spec.audio.mode = camgate::AudioMode::None;
    spec
}

fn gateway_with(config: SupervisorConfig, settings: GatewaySettings) -> Gateway {
    Gateway::new(Supervisor::new(config), settings, None)
}

/// Threads named `cam-<camera>` in this process right now.
fn camera_threads(camera: &str) -> usize {
    common::own_threads_named(&format!("cam-{camera}")).len()
}

// ---------------------------------------------------------------------------------------------------------
// Concurrent operations on one camera (100 at once, then 3600 in rounds of 12) leave exactly the state of the
// last one applied.

#[derive(Debug, Clone, Copy)]
enum Op {
    PutAlways,
    PutOnDemand,
    Delete,
    Play,
    Stop,
    OnPlay(u8),
    OnStop(u8),
}

/// What the desired set and the runtime should be after a sequence of operations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Model {
    mode: Option<RunMode>,
    running: bool,
    viewers: BTreeSet<u8>,
}

impl Model {
    fn apply(&mut self, op: Op) {
        match op {
            Op::PutAlways | Op::Play => {
                self.mode = Some(RunMode::Always);
                self.running = true;
            }
            Op::PutOnDemand => {
                self.mode = Some(RunMode::OnDemand);
                self.running = !self.viewers.is_empty();
            }
            Op::Delete => *self = Model::default(),
            Op::Stop => {
                if self.mode == Some(RunMode::Always) {
                    *self = Model::default();
                }
                self.running = false;
            }
            Op::OnPlay(client) if self.mode.is_some() => {
                self.viewers.insert(client);
                if self.mode == Some(RunMode::OnDemand) {
                    self.running = true;
                }
            }
            // The last viewer leaving only schedules a stop a linger time later; the clock never gets there.
            Op::OnStop(client) if self.mode.is_some() => {
                self.viewers.remove(&client);
            }
            Op::OnPlay(_) | Op::OnStop(_) => {}
        }
    }
}

/// A well-mixed pseudo-random number from `seed` (SplitMix64), so every round gets its own mix of operations.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_operations_on_one_camera_leave_the_state_of_the_last_one() {
    let clock = ManualClock::new();
    let config = SupervisorConfig { clock: clock.clone(), ..common::rig() };
    let gateway = gateway_with(config, GatewaySettings::default());
    let camera = "z";

    // At most one thread of this camera at any moment, sampled all through the test.
    let done = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (done, most) = (Arc::clone(&done), Arc::clone(&most));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(camera_threads(camera), Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };

    let mut expected = Model::default();
    // Many short rounds: each round's final state is checked, so a race among the last few operations of a
    // round is caught, not hidden by the operations after it.
    for round in 0..301u64 {
        // A deterministic but varied mix of operations per round; the first round is 100 at once.
        let count = if round == 0 { 100 } else { 12 };
        let ops: Vec<Op> = (0..count)
            .map(|i| {
                let x = splitmix64(round * 1000 + i) >> 11;
                match x % 7 {
                    0 => Op::PutAlways,
                    1 => Op::PutOnDemand,
                    2 => Op::Delete,
                    3 => Op::Play,
                    4 => Op::Stop,
                    5 => Op::OnPlay((x % 3) as u8),
                    _ => Op::OnStop((x % 3) as u8),
                }
            })
            .collect();
        let applied = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for op in ops {
            let (gateway, applied) = (gateway.clone(), Arc::clone(&applied));
            tasks.push(tokio::spawn(async move {
                let client = |c: u8| format!("client-{c}");
                let revision = match op {
                    Op::PutAlways => gateway.put(dead_spec(camera), RunMode::Always).await.map(|a| a.revision),
                    Op::PutOnDemand => gateway.put(dead_spec(camera), RunMode::OnDemand).await.map(|a| a.revision),
                    Op::Delete => gateway.remove(&id(camera)).await.map(|a| a.revision),
                    Op::Play => gateway.play(dead_spec(camera)).await.map(|a| a.revision),
                    Op::Stop => gateway.stop(&id(camera)).await.map(|a| a.revision),
                    Op::OnPlay(c) => match gateway.viewer_joined("live", "livestreamz", &client(c)) {
                        Ok(joined) => {
                            joined.started.await.expect("the start task does not panic");
                            Ok(joined.applied.revision)
                        }
                        Err(error) => Err(error),
                    },
                    Op::OnStop(c) => gateway.viewer_left("live", "livestreamz", &client(c)).map(|a| a.revision),
                };
                match revision {
                    Ok(revision) => applied.lock().unwrap().push((revision, op)),
                    // Refusals change nothing: an unknown camera or stream.
                    Err(GatewayError::NotFound(_) | GatewayError::OnDemand(_)) => {}
                    Err(error) => panic!("{op:?} failed: {error}"),
                }
            }));
        }
        for task in tasks {
            task.await.expect("no operation panics");
        }
        let mut applied = applied.lock().unwrap().clone();
        applied.sort_by_key(|(revision, _)| *revision);
        let revisions: BTreeSet<u64> = applied.iter().map(|(r, _)| *r).collect();
        assert_eq!(revisions.len(), applied.len(), "every applied change has its own revision");
        // The camera carries its state from round to round, and so does the model.
        for (_, op) in &applied {
            expected.apply(*op);
        }

        let desired = gateway.desired_specs();
        let actual_mode = desired.iter().find(|(spec, _)| spec.id == id(camera)).map(|(_, mode)| *mode);
        let status = gateway.status(&id(camera));
        let running = status.as_ref().is_some_and(|s| s.state.is_live());
        let viewers = match actual_mode {
            Some(RunMode::OnDemand) => gateway.on_demand()[0].viewers,
            _ => gateway.supervisor().viewer_counts().get(&id(camera)),
        };
        let last = applied.last().map(|(_, op)| *op);
        let history: Vec<String> = applied.iter().map(|(r, op)| format!("{r}:{op:?}")).collect();
        let last = format!("{last:?} in [{}]", history.join(" "));
        assert_eq!(actual_mode, expected.mode, "round {round}: mode after {} ops, last {last:?}", applied.len());
        assert_eq!(running, expected.running, "round {round}: running after last {last:?}: {status:?}");
        if expected.mode.is_some() {
            assert_eq!(viewers, expected.viewers.len(), "round {round}: viewers after last {last:?}");
        }
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(most.load(Ordering::Relaxed) <= 1, "{} threads of camera {camera} at once", most.load(Ordering::Relaxed));
    gateway.shutdown().await;
    assert_eq!(camera_threads(camera), 0, "shutdown leaves no camera thread");
}

/// The race the rounds above can only hit by chance, forced: on this single-threaded runtime the start a
/// viewer schedules cannot run before the stop that follows it takes the camera's turn, so the stop is applied
/// between the viewer and the start. The stop is the later wish and must win.
#[tokio::test(flavor = "current_thread")]
async fn a_stop_wins_over_the_start_an_earlier_viewer_scheduled() {
    let clock = ManualClock::new();
    let gateway = gateway_with(SupervisorConfig { clock, ..common::rig() }, GatewaySettings::default());
    gateway.put(dead_spec("w"), RunMode::OnDemand).await.unwrap();
    let joined = gateway.viewer_joined("live", "livestreamw", "c1").unwrap();
    let stopped = gateway.stop(&id("w")).await.unwrap();
    assert!(stopped.revision > joined.applied.revision);
    assert!(stopped.outcome.is_none(), "it had not started yet");
    joined.started.await.unwrap();
    assert!(
        gateway.status(&id("w")).is_none(),
        "the scheduled start ran after the stop: {:?}",
        gateway.status(&id("w"))
    );
    // The viewer is still counted, and the next one starts the camera again.
    assert_eq!(gateway.on_demand()[0].viewers, 1);
    gateway.viewer_joined("live", "livestreamw", "c2").unwrap().started.await.unwrap();
    assert!(gateway.status(&id("w")).is_some_and(|s| s.state.is_live()));
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------------
// Panicking camera threads.

fn panicking_on(camera: &'static str, session: u32) -> Faults {
    Faults {
        on_session: Some(Arc::new(move |id: &CameraId, n: u32| {
            if id.as_str() == camera && n == session {
                panic!("injected fault in session {n}");
            }
        })),
    }
}

#[test]
fn a_panicking_session_is_reported_failed_and_retried_by_policy() {
    let rtsp = RtspServer::start();
    let clock = ManualClock::new();
    let supervisor = Supervisor::new(SupervisorConfig {
        clock: clock.clone(),
        faults: panicking_on("p", 1),
        stats_interval: Duration::from_millis(200),
        ..common::rig()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.flv");
    let mut spec = StreamSpec::new("p", &rtsp.url(mount::H264), out.to_str().unwrap()).unwrap();
    spec.retry = RetryPolicy { initial_backoff_ms: 30_000, max_backoff_ms: 30_000, ..RetryPolicy::default() };
    supervisor.start_blocking(spec).unwrap();

    let failed = wait_for(Duration::from_secs(10), "the panic to be reported", || {
        supervisor.status(&id("p")).filter(|s| s.state == WorkerState::Failed)
    });
    let error = failed.last_error.clone().unwrap_or_default();
    assert!(error.contains("panicked") && error.contains("injected fault in session 1"), "{error}");
    assert_eq!(failed.retry.map(|r| r.attempt), Some(1), "retried by the camera's policy: {failed:?}");
    // The backoff runs on the injected clock: half a minute passes at once.
    wait_for(Duration::from_secs(5), "the backoff timer", || (clock.pending_timers() > 0).then_some(()));
    clock.advance(Duration::from_secs(36));
    let running = wait_for(Duration::from_secs(20), "the second session to run", || {
        supervisor.status(&id("p")).filter(|s| s.state == WorkerState::Running)
    });
    assert_eq!(running.restarts, 1);
    supervisor.stop_blocking(&id("p")).expect("a camera that panicked once stops normally");
}

#[test]
fn a_camera_thread_that_gives_up_after_a_panic_frees_its_slot_and_its_id() {
    let supervisor =
        Supervisor::new(SupervisorConfig { max_cameras: 1, faults: panicking_on("p", 1), ..common::rig() });
    let mut spec = dead_spec("p");
    spec.retry = RetryPolicy::never();
    supervisor.start_blocking(spec.clone()).unwrap();
    let failed = wait_for(Duration::from_secs(5), "the panic to end the camera", || {
        supervisor.status(&id("p")).filter(|s| s.state == WorkerState::Failed && s.retry.is_none())
    });
    assert!(failed.last_error.unwrap().contains("injected fault"));
    wait_for(Duration::from_secs(5), "the thread to exit", || (camera_threads("p") == 0).then_some(()));
    // The only slot is free again: another camera starts.
    supervisor.start_blocking(dead_spec("q")).expect("the panicked camera holds no slot");
    supervisor.stop_blocking(&id("q")).unwrap();
    // And the id is usable: this time the fault is not hit (session 1 of a new thread panics again, so the
    // camera fails again — but it starts, instead of answering 409 for ever).
    assert!(matches!(supervisor.start_blocking(spec), Ok(StartOutcome::Started(_))));
    supervisor.stop_blocking(&id("p")).unwrap();
}

// ---------------------------------------------------------------------------------------------------------
// Stuck camera threads: every stop request is answered within stop_timeout.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stop_of_a_stuck_camera_is_answered_within_the_stop_timeout() {
    let stop_timeout = Duration::from_millis(600);
    let release = Arc::new(AtomicBool::new(false));
    let faults = {
        let release = Arc::clone(&release);
        Faults {
            // A session that blocks in a call that never looks at the stop flag.
            on_session: Some(Arc::new(move |_: &CameraId, _: u32| {
                while !release.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            })),
        }
    };
    let supervisor = Supervisor::new(SupervisorConfig { stop_timeout, faults, ..common::rig() });
    let gateway = Gateway::new(supervisor.clone(), GatewaySettings::default(), None);
    gateway.put(dead_spec("s"), RunMode::Always).await.unwrap();
    wait_for(Duration::from_secs(5), "the camera thread", || (camera_threads("s") == 1).then_some(()));

    let asked = Instant::now();
    let first = supervisor.stop(&id("s")).await;
    assert!(matches!(first, Err(SupervisorError::StopTimeout { .. })), "{first:?}");
    let took = asked.elapsed();
    assert!(took >= stop_timeout && took < stop_timeout + Duration::from_secs(1), "first stop answered after {took:?}");
    assert_eq!(supervisor.status(&id("s")).unwrap().state, WorkerState::Stuck);

    // A second and a third stop, at once, through the supervisor and through the gateway: each answered.
    let asked = Instant::now();
    let s = id("s");
    let (second, third) = tokio::join!(supervisor.stop(&s), gateway.remove(&s));
    let took = asked.elapsed();
    assert!(matches!(second, Err(SupervisorError::StopTimeout { .. })), "{second:?}");
    assert!(matches!(third, Err(GatewayError::Camera(SupervisorError::StopTimeout { .. }))), "{third:?}");
    assert!(took < stop_timeout + Duration::from_secs(1), "second and third stops answered after {took:?}");
    assert!(!gateway.is_desired(&id("s")), "removed from the desired set even though its thread is stuck");
    // A start of the stuck id is refused, not queued.
    assert!(matches!(supervisor.start(dead_spec("s")).await, Err(SupervisorError::Stopping(_))));

    // Once the call returns, the thread sees its stop and the camera is gone.
    release.store(true, Ordering::Relaxed);
    wait_for(Duration::from_secs(5), "the stuck camera to exit", || {
        supervisor.status(&id("s")).is_none().then_some(())
    });
    assert_eq!(camera_threads("s"), 0);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_the_disk_refuses_to_save_still_stops_the_camera() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = camgate::gateway::store::StateFile::open(dir.path()).unwrap();
    let gateway = Gateway::new(Supervisor::new(common::rig()), GatewaySettings::default(), Some(store));
    gateway.put(dead_spec("d"), RunMode::Always).await.unwrap();
    wait_for(Duration::from_secs(5), "the camera thread", || (camera_threads("d") == 1).then_some(()));
    // The state file's place taken by a directory: the next save cannot replace it (root or not).
    let state = dir.path().join(camgate::gateway::store::STATE_FILE);
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir_all(state.join("in-the-way")).unwrap();

    let removed = gateway.remove(&id("d")).await;
    assert!(matches!(removed, Err(GatewayError::NotSaved { .. })), "{removed:?}");
    // Applied all the same: gone from the desired set, and its thread stopped.
    assert!(!gateway.is_desired(&id("d")));
    assert!(gateway.supervisor().status(&id("d")).is_none(), "the camera still runs");
    assert_eq!(camera_threads("d"), 0);
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------------
// Policy waits on the injected clock.

#[test]
fn backoff_waits_on_the_injected_clock() {
    let clock = ManualClock::new();
    let supervisor = Supervisor::new(SupervisorConfig { clock: clock.clone(), ..common::rig() });
    let mut spec = dead_spec("b");
    spec.retry = RetryPolicy { initial_backoff_ms: 60_000, max_backoff_ms: 600_000, ..RetryPolicy::default() };
    supervisor.start_blocking(spec).unwrap();
    let attempt = |n: u32| {
        wait_for(Duration::from_secs(5), &format!("retry attempt {n}"), || {
            supervisor.status(&id("b")).filter(|s| s.retry.is_some_and(|r| r.attempt == n))
        })
    };
    attempt(1);
    wait_for(Duration::from_secs(5), "the backoff timer", || (clock.pending_timers() == 1).then_some(()));
    // Nearly a minute passes: no new attempt (±20 % jitter: the first wait is 48–72 s).
    clock.advance(Duration::from_secs(47));
    std::thread::yield_now();
    assert_eq!(supervisor.status(&id("b")).unwrap().restarts, 1, "no attempt before the backoff");
    clock.advance(Duration::from_secs(26));
    let second = attempt(2);
    assert_eq!(second.restarts, 2);
    // The next wait doubles: 96–144 s.
    wait_for(Duration::from_secs(5), "the second backoff timer", || (clock.pending_timers() == 1).then_some(()));
    clock.advance(Duration::from_secs(145));
    attempt(3);
    supervisor.stop_blocking(&id("b")).unwrap();
}

fn on_demand_gateway(clock: &Arc<ManualClock>, linger: Duration) -> Gateway {
    let config = SupervisorConfig { clock: clock.clone(), ..common::rig() };
    let settings = GatewaySettings { on_demand_linger: linger, ..GatewaySettings::default() };
    gateway_with(config, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_camera_lingers_on_the_injected_clock() {
    let clock = ManualClock::new();
    let linger = Duration::from_secs(3600);
    let gateway = on_demand_gateway(&clock, linger);
    let running = |g: &Gateway| g.status(&id("7")).is_some_and(|s| s.state.is_live());
    let registered = gateway.put(dead_spec("7"), RunMode::OnDemand).await.unwrap();
    assert!(matches!(registered.outcome, PutOutcome::Registered(_)));
    assert!(!running(&gateway), "registering does not start");

    let joined = gateway.viewer_joined("live", "livestream7", "c1").unwrap();
    joined.started.await.unwrap();
    assert!(running(&gateway), "the first viewer starts it");
    gateway.viewer_left("live", "livestream7", "c1").unwrap();
    clock.advance(linger - Duration::from_secs(1));
    tokio::task::yield_now().await;
    assert!(running(&gateway), "still running a second before the linger ends");
    clock.advance(Duration::from_secs(2));
    wait_for(Duration::from_secs(5), "the linger stop", || (!running(&gateway)).then_some(()));
    assert!(gateway.on_demand().iter().any(|c| c.id == id("7")), "still registered for the next viewer");

    // A viewer coming back within the linger cancels the pending stop.
    gateway.viewer_joined("live", "livestream7", "c2").unwrap().started.await.unwrap();
    gateway.viewer_left("live", "livestream7", "c2").unwrap();
    clock.advance(linger / 2);
    gateway.viewer_joined("live", "livestream7", "c3").unwrap().started.await.unwrap();
    clock.advance(linger);
    tokio::task::yield_now().await;
    let status = gateway.status(&id("7")).expect("never stopped");
    assert!(status.state.is_live(), "the earlier linger did nothing: {status:?}");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_whose_on_stop_never_came_expire() {
    let clock = ManualClock::new();
    let linger = Duration::from_secs(30);
    let config = SupervisorConfig { clock: clock.clone(), ..common::rig() };
    let mut settings = GatewaySettings { on_demand_linger: linger, ..GatewaySettings::default() };
    settings.limits.on_demand_viewer_ttl_ms = 60_000;
    let gateway = gateway_with(config, settings);
    gateway.put(dead_spec("8"), RunMode::OnDemand).await.unwrap();
    gateway.viewer_joined("live", "livestream8", "lost").unwrap().started.await.unwrap();
    assert_eq!(gateway.on_demand()[0].viewers, 1);
    // No on_stop ever comes. Once the TTL has passed the viewer is forgotten and the camera lingers out.
    // (Time moves in steps so the expiry task, which checks every quarter TTL, sees each one.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut advanced = Duration::ZERO;
    while gateway.on_demand()[0].viewers > 0 {
        assert!(Instant::now() < deadline, "the viewer never expired ({advanced:?} of clock time passed)");
        clock.advance(Duration::from_secs(5));
        advanced += Duration::from_secs(5);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(advanced >= Duration::from_secs(60), "expired after only {advanced:?}");
    assert!(gateway.status(&id("8")).is_some(), "lingering, not stopped at once");
    clock.advance(linger + Duration::from_secs(1));
    wait_for(Duration::from_secs(5), "the camera to stop", || gateway.status(&id("8")).is_none().then_some(()));
    gateway.shutdown().await;
}
