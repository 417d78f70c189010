//! Real faults against real servers: the RTSP server killed and brought back, the RTMP server killed and
//! brought back, the RTSP server frozen (SIGSTOP) with the socket left open, and a camera that is down when
//! it is started. Each test uses short configured timeouts and backoffs, polls states with deadlines, and
//! checks what the RTMP server (or a recording) receives after the recovery.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use camgate::{
    AudioMode, CameraId, CameraStatus, RetryPolicy, RtmpWriter, RtspReader, StreamSpec, Supervisor, SupervisorConfig,
    Timeouts, VideoMode, WorkerState,
};
use common::{
    FreezableRelay, ProbeOptions, ProbeReport, RtmpServer, RtspOptions, RtspServer, free_port, mount, probe, wait_for,
};

fn supervisor() -> Supervisor {
    Supervisor::new(SupervisorConfig { stats_interval: Duration::from_millis(200), ..common::rig() })
}

fn id(s: &str) -> CameraId {
    s.parse().expect("valid id")
}

/// A cheap camera (H.264 copied, no audio) with short timeouts and a fast, capped backoff.
fn resilient(camera: &str, input: &str, output: &str) -> StreamSpec {
    let mut spec = StreamSpec::new(camera, input, output).expect("valid spec");
    spec.video.mode = VideoMode::Copy;
    spec.audio.mode = AudioMode::None;
    spec.timeouts = Timeouts { open_ms: 2_000, read_ms: 1_000, write_ms: 2_000 };
    spec.retry =
        RetryPolicy { max_retries: None, initial_backoff_ms: 200, max_backoff_ms: 1_000, healthy_after_ms: 60_000 };
    spec
}

fn state_is(supervisor: &Supervisor, camera: &str, state: WorkerState) -> Option<CameraStatus> {
    supervisor.status(&id(camera)).filter(|s| s.state == state)
}

fn wait_state(supervisor: &Supervisor, camera: &str, state: WorkerState, within: Duration) -> CameraStatus {
    wait_for(within, &format!("camera {camera} to be {state:?}"), || state_is(supervisor, camera, state))
}

fn read_back(url: &str, seconds: f64) -> ProbeReport {
    probe(url, ProbeOptions::default().with_media_seconds(seconds).with_deadline(Duration::from_secs(15)))
        .unwrap_or_else(|e| panic!("reading {url} back failed: {e}"))
}

fn assert_h264_from_a_keyframe(report: &ProbeReport) {
    let video = report.video.as_ref().expect("a video stream");
    assert_eq!(video.codec, "h264");
    assert!(video.stats.first_is_key, "starts at a keyframe");
    assert!(video.stats.dts_monotonic(), "dts not increasing: {:?}", video.stats.first_dts_violation);
    assert!(video.stats.packets >= 25, "only {} packets", video.stats.packets);
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a child of this process that has not been reaped.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0, "kill({pid}, {signal})");
}

/// The recording after a reconnect is a new file: it starts with its own header at a keyframe, its timestamps
/// start at zero, and it spans no more than the time since the camera came back.
fn assert_fresh_recording(path: &Path, at_most: Duration) {
    let report = probe(&path.display().to_string(), ProbeOptions::default().until_eof()).expect("readable recording");
    let video = report.video.as_ref().expect("video in the recording");
    assert!(video.stats.first_is_key, "the new session starts at a keyframe");
    let first = video.stats.first_dts.expect("timestamps");
    assert!(first.abs() < 0.1, "the new session's timestamps start at zero, not {first:.3}");
    let span = video.stats.dts_span().expect("a span");
    assert!(
        span <= at_most.as_secs_f64(),
        "the recording spans {span:.1} s but the camera came back only {at_most:?} ago: the old session is in it"
    );
}

#[test]
fn rtsp_server_killed_and_brought_back_recovers_with_a_fresh_output() {
    let rtsp = RtspServer::start();
    let port = rtsp.port();
    let rtmp = RtmpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("f.flv");
    let supervisor = supervisor();
    let input = rtsp.url(mount::H264);
    supervisor.start_blocking(resilient("a", &input, &rtmp.url("a"))).unwrap();
    supervisor.start_blocking(resilient("f", &input, &recording.display().to_string())).unwrap();
    // A long first session, so a recording that kept it would be visibly too long.
    wait_for(Duration::from_secs(30), "5 s of frames", || {
        supervisor.status(&id("f")).filter(|s| s.totals.video_frames_out >= 125)
    });

    drop(rtsp);
    for camera in ["a", "f"] {
        let status = wait_state(&supervisor, camera, WorkerState::Reconnecting, Duration::from_secs(10));
        assert!(status.restarts >= 1 && status.last_error.is_some(), "{status:?}");
        let retry = status.retry.expect("next attempt reported");
        assert!(retry.attempt >= 1 && retry.at_ms + 2_000 >= unix_ms(), "{retry:?}");
    }

    let back = Instant::now();
    let _rtsp = RtspServer::start_on(port, RtspOptions::default());
    for camera in ["a", "f"] {
        wait_state(&supervisor, camera, WorkerState::Running, Duration::from_secs(20));
    }
    assert_h264_from_a_keyframe(&read_back(&rtmp.url("a"), 2.0));
    supervisor.stop_blocking(&id("f")).unwrap();
    assert_fresh_recording(&recording, back.elapsed());
    supervisor.stop_blocking(&id("a")).unwrap();
}

/// How a camera publishes: with libavformat's RTMP client, with camgate's own, or with camgate's own holding a
/// copied camera's media until camgate's RTSP reader is about to wait (`held_sends`), where a failing server is
/// met by the reader's send rather than a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Libavformat,
    Own,
    OwnHeld,
}

const WRITERS: [Writer; 3] = [Writer::Libavformat, Writer::Own, Writer::OwnHeld];

impl Writer {
    fn apply(self, spec: &mut StreamSpec) {
        spec.rtmp_writer = if self == Writer::Libavformat { RtmpWriter::Ffmpeg } else { RtmpWriter::Buffered };
        if self == Writer::OwnHeld {
            spec.rtsp_reader = RtspReader::Buffered;
            spec.video.mode = VideoMode::Copy;
        }
    }
}

#[test]
fn rtmp_server_killed_and_brought_back_gets_the_stream_again() {
    for writer in WRITERS {
        rtmp_server_killed_and_brought_back(writer);
    }
}

fn rtmp_server_killed_and_brought_back(writer: Writer) {
    let rtsp = RtspServer::start();
    let rtmp = RtmpServer::start();
    let port = rtmp.port();
    let supervisor = supervisor();
    let mut spec = resilient("r", &rtsp.url(mount::H264), &rtmp.url("r"));
    writer.apply(&mut spec);
    supervisor.start_blocking(spec).unwrap();
    wait_state(&supervisor, "r", WorkerState::Running, Duration::from_secs(20));

    drop(rtmp);
    let status = wait_state(&supervisor, "r", WorkerState::Reconnecting, Duration::from_secs(10));
    assert!(status.last_error.is_some(), "{status:?}");
    // While the server is gone every attempt fails at the output: the attempt count climbs.
    wait_for(Duration::from_secs(10), "a second failed attempt", || {
        supervisor.status(&id("r")).filter(|s| s.retry.is_some_and(|r| r.attempt >= 2))
    });

    let rtmp = RtmpServer::start_on(port);
    wait_state(&supervisor, "r", WorkerState::Running, Duration::from_secs(20));
    assert_h264_from_a_keyframe(&read_back(&rtmp.url("r"), 2.0));
    supervisor.stop_blocking(&id("r")).unwrap();
}

#[test]
fn frozen_camera_trips_the_watchdog_and_a_stop_during_the_freeze_is_fast() {
    let rtsp = RtspServer::start();
    let dir = tempfile::tempdir().unwrap();
    let supervisor = supervisor();
    let spec = resilient("z", &rtsp.url(mount::H264), &dir.path().join("z.flv").display().to_string());
    let read_timeout = spec.timeouts.read();
    supervisor.start_blocking(spec).unwrap();
    wait_state(&supervisor, "z", WorkerState::Running, Duration::from_secs(20));

    // SIGSTOP: the server's sockets stay open and the kernel keeps accepting, but nothing is sent.
    let pid = rtsp.process().pid();
    signal(pid, libc::SIGSTOP);
    let frozen = Instant::now();
    let status = wait_state(&supervisor, "z", WorkerState::Reconnecting, read_timeout + Duration::from_secs(5));
    let noticed = frozen.elapsed();
    let error = status.last_error.clone().unwrap_or_default();
    assert!(error.contains("timed out"), "the watchdog ended the read: {error}");
    assert!(noticed >= read_timeout - Duration::from_millis(100), "noticed after {noticed:?}, before the watchdog");

    // Let the next attempt begin, so the stop finds the worker blocked in an open that will never be answered.
    let due = status.retry.expect("retry reported").at_ms;
    wait_for(Duration::from_secs(5), "the next attempt to be under way", || (unix_ms() > due + 300).then_some(()));
    let asked = Instant::now();
    let stopped = supervisor.stop_blocking(&id("z")).expect("stops");
    let took = asked.elapsed();
    signal(pid, libc::SIGCONT);
    assert!(took < Duration::from_secs(1), "stop during the freeze took {took:?}");
    assert!(stopped.restarts >= 1, "{stopped:?}");
}

#[test]
fn camera_down_when_started_is_retried_until_it_comes_up() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("late.flv");
    let supervisor = supervisor();
    let input = format!("rtsp://127.0.0.1:{port}{}", mount::H264);
    supervisor.start_blocking(resilient("late", &input, &recording.display().to_string())).unwrap();
    let status = wait_for(Duration::from_secs(10), "two failed attempts", || {
        supervisor.status(&id("late")).filter(|s| s.retry.is_some_and(|r| r.attempt >= 2))
    });
    assert_eq!(status.state, WorkerState::Reconnecting);
    assert!(status.last_error.as_deref().is_some_and(|e| e.contains("late")), "{status:?}");

    let back = Instant::now();
    let _rtsp = RtspServer::start_on(port, RtspOptions::default());
    wait_state(&supervisor, "late", WorkerState::Running, Duration::from_secs(20));
    wait_for(Duration::from_secs(10), "a second of frames", || {
        supervisor.status(&id("late")).filter(|s| s.totals.video_frames_out >= 25)
    });
    supervisor.stop_blocking(&id("late")).unwrap();
    assert_fresh_recording(&recording, back.elapsed());
}

/// A camera whose RTMP server stops reading (a relay that accepts and then reads nothing more): once its
/// writes block, a stop must still return within `stop_timeout`, though a single write may block for 10 s.
/// The camera encodes losslessly so that it fills the socket buffers within a second or two, and its encoders
/// hold frames back so the stop has packets left to write.
#[test]
fn a_stop_with_an_rtmp_server_that_stopped_reading_returns_within_the_stop_timeout() {
    for writer in WRITERS {
        a_stop_with_a_stalled_rtmp_server(writer);
    }
}

fn a_stop_with_a_stalled_rtmp_server(writer: Writer) {
    let rtsp = RtspServer::start_with(RtspOptions { width: 1280, height: 720, ..RtspOptions::default() });
    let rtmp = RtmpServer::start();
    let relay = FreezableRelay::start(rtmp.port());
    let stop_timeout = Duration::from_secs(3);
    let supervisor =
        Supervisor::new(SupervisorConfig { stop_timeout, stats_interval: Duration::from_millis(200), ..common::rig() });
    let output = format!("rtmp://127.0.0.1:{}/live/stall", relay.port());
    let mut spec = StreamSpec::new("stall", &rtsp.url(mount::H264_AAC), &output).unwrap();
    spec.video.mode = VideoMode::Transcode;
    spec.video.encoding.preset = "ultrafast".into();
    spec.video.encoding.rate = camgate::RateControl::Crf(0);
    // Encoders that hold frames back (x264 frame threads without zerolatency, AAC's priming delay): after the
    // stop, flushing them writes packets — each write arming its full write timeout against the stalled server.
    spec.video.encoding.tune = None;
    spec.audio.mode = camgate::AudioMode::Aac;
    // Writes may block for 10 s (the default), far longer than a stop may take: only the finishing deadline
    // keeps the stop in bounds.
    assert!(spec.timeouts.write() > stop_timeout);
    // Held media needs copied video: the camera's own stream then fills the buffers, more slowly.
    writer.apply(&mut spec);
    supervisor.start_blocking(spec).unwrap();
    wait_for(Duration::from_secs(20), "frames out", || {
        supervisor.status(&id("stall")).filter(|s| s.totals.video_frames_out >= 25)
    });

    relay.freeze();
    // Wait until the camera's writes are blocked: its output stops growing.
    let mut last = (0, Instant::now());
    wait_for(Duration::from_secs(30), "the output to stall", || {
        let status = supervisor.status(&id("stall"))?;
        if status.totals.bytes_out != last.0 {
            last = (status.totals.bytes_out, Instant::now());
        }
        (last.1.elapsed() >= Duration::from_secs(1) && status.state == WorkerState::Running).then_some(())
    });
    let asked = Instant::now();
    let stopped = supervisor.stop_blocking(&id("stall"));
    let took = asked.elapsed();
    eprintln!("{writer:?}: stop with a stalled RTMP server took {took:?}");
    assert!(stopped.is_ok(), "{stopped:?}");
    assert!(took < stop_timeout, "{writer:?}: the stop took {took:?}");
}
