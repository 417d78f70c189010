//! Cameras as they are in the field, against the fixture RTSP server's misbehaving mounts and nginx-rtmp:
//! a camera that refuses interleaved TCP (461), RTSP failures that must read as advice (401, 403, 404, 503,
//! refused), the HTTP tunnel, a warm on-demand camera whose first viewer starts from the cached keyframe of a
//! 10 s GOP, audio that starts late and goes missing, a clock that moves while the video stalls, and a
//! resolution that changes mid-stream. What arrives at nginx is read back with libavformat.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use camgate::gateway::{Gateway, GatewaySettings, RunMode};
use camgate::{
    AudioMode, CameraId, CameraStatus, RtspReader, StreamSpec, Supervisor, Transport, VideoMode, WorkerState,
};
use common::{
    ClockMove, ClockMoveRelay, FreezableRelay, ProbeOptions, RtmpServer, RtspOptions, RtspServer, decode,
    first_video_packet, free_port, mount, poll_for, probe, record_viewer, wait_for,
};

fn id(s: &str) -> CameraId {
    s.parse().unwrap()
}

fn supervisor() -> Supervisor {
    Supervisor::new(common::rig())
}

fn spec(camera: &str, input: &str, rtmp: &RtmpServer) -> StreamSpec {
    let mut spec = StreamSpec::new(camera, input, &rtmp.url(&format!("livestream{camera}"))).unwrap();
    spec.retry.initial_backoff_ms = 200;
    spec.retry.max_backoff_ms = 1000;
    spec
}

/// Waits until the camera's status satisfies `done`.
fn status_where(
    supervisor: &Supervisor,
    camera: &str,
    what: &str,
    done: impl Fn(&CameraStatus) -> bool,
) -> CameraStatus {
    let mut last = None;
    let reached = poll_for(Duration::from_secs(30), || {
        let status = supervisor.status(&id(camera));
        let reached = status.as_ref().filter(|s| done(s)).cloned();
        last = status.or(last.take());
        reached
    });
    // On a timeout, the status the camera was stuck in says more than the wait's length.
    reached.unwrap_or_else(|| panic!("timed out after 30 s waiting for {what}; camera {camera} last: {last:#?}"))
}

fn read_back(rtmp: &RtmpServer, camera: &str, seconds: f64) -> common::ProbeReport {
    probe(
        &rtmp.url(&format!("livestream{camera}")),
        ProbeOptions::default().with_media_seconds(seconds).with_deadline(Duration::from_secs(30)),
    )
    .unwrap_or_else(|e| panic!("camera {camera} is not readable at nginx: {e}"))
}

#[test]
fn auto_transport_falls_back_to_udp_when_the_camera_refuses_tcp_and_says_so() {
    let rtsp = RtspServer::start();
    let rtmp = RtmpServer::start();
    let supervisor = supervisor();

    // Forced TCP against a camera that allows only UDP: 461, with what to do about it.
    let mut tcp = spec("tcponly", &rtsp.url(mount::H264_UDP_ONLY), &rtmp);
    tcp.transport = Transport::Tcp;
    supervisor.start_blocking(tcp).unwrap();
    let refused = status_where(&supervisor, "tcponly", "461 reported", |s| s.rtsp_status.is_some());
    assert_eq!(refused.rtsp_status, Some(461), "{refused:?}");
    let error = refused.last_error.unwrap();
    assert!(error.contains("RTSP 461 Unsupported Transport") && error.contains("interleaved TCP"), "{error}");
    assert!(error.contains("FFmpeg:"), "FFmpeg's own words stay alongside: {error}");
    assert_eq!(refused.state, WorkerState::Reconnecting);
    // Its retries would keep building and tearing down the fixture's shared pipeline (torn down whenever its
    // last client leaves) under the cameras below, a churn no real camera has.
    supervisor.stop_blocking(&id("tcponly")).unwrap();

    // Auto: TCP, refused, then UDP — and the status says which, and why.
    supervisor.start_blocking(spec("auto", &rtsp.url(mount::H264_UDP_ONLY), &rtmp)).unwrap();
    let running = status_where(&supervisor, "auto", "running over UDP", |s| s.state == WorkerState::Running);
    let session = running.session.unwrap();
    assert_eq!(session.transport, Some(Transport::Udp));
    let note = session.transport_note.unwrap();
    assert!(note.contains("461") && note.contains("using UDP"), "{note}");
    let report = read_back(&rtmp, "auto", 2.0);
    assert_eq!(report.video.map(|v| v.codec), Some("h264".to_owned()));
    assert_eq!(report.audio.map(|a| a.codec), Some("aac".to_owned()));

    // The same with camgate's own reader over TCP: the camera's 461 sends it to UDP just the same.
    let mut own = spec("auto-own", &rtsp.url(mount::H264_UDP_ONLY), &rtmp);
    own.rtsp_reader = RtspReader::Buffered;
    supervisor.start_blocking(own).unwrap();
    let running = status_where(&supervisor, "auto-own", "running over UDP", |s| s.state == WorkerState::Running);
    let session = running.session.unwrap();
    assert_eq!(session.transport, Some(Transport::Udp));
    assert!(session.transport_note.is_some_and(|n| n.contains("461") && n.contains("using UDP")));

    // A camera that takes TCP stays on TCP, with no note.
    supervisor.start_blocking(spec("plain", &rtsp.url(mount::H264_AAC), &rtmp)).unwrap();
    let plain = status_where(&supervisor, "plain", "running", |s| s.state == WorkerState::Running);
    assert_eq!(plain.session.as_ref().and_then(|s| s.transport), Some(Transport::Tcp));
    assert_eq!(plain.session.unwrap().transport_note, None);

    // RTSP tunnelled over HTTP, forced.
    let mut http = spec("tunnel", &rtsp.url(mount::H264_AAC), &rtmp);
    http.transport = Transport::Http;
    supervisor.start_blocking(http).unwrap();
    let tunnel = status_where(&supervisor, "tunnel", "running over HTTP", |s| s.state == WorkerState::Running);
    assert_eq!(tunnel.session.and_then(|s| s.transport), Some(Transport::Http));
    assert_eq!(read_back(&rtmp, "tunnel", 1.0).video.map(|v| v.codec), Some("h264".to_owned()));
}

#[test]
fn rtsp_failures_read_as_what_to_check_with_the_status_code() {
    let rtsp = RtspServer::start_with(RtspOptions {
        auth: Some(("admin".into(), "right-password".into())),
        ..RtspOptions::default()
    });
    let rtmp = RtmpServer::start();
    let port = rtsp.port();
    let cases: [(&str, String, Option<u16>, &str); 5] = [
        (
            "wrongpw",
            format!("rtsp://admin:wrong@127.0.0.1:{port}{}", mount::H264),
            Some(401),
            "wrong user name or password",
        ),
        (
            "nopath",
            format!("rtsp://admin:right-password@127.0.0.1:{port}/no/such/path"),
            Some(404),
            "no stream at /no/such/path",
        ),
        ("busy", format!("rtsp://admin:right-password@127.0.0.1:{port}{}", mount::BUSY), Some(503), "busy"),
        (
            "forbidden",
            format!("rtsp://admin:right-password@127.0.0.1:{port}{}", mount::FORBIDDEN),
            Some(403),
            "may not watch",
        ),
        (
            "refused",
            format!("rtsp://127.0.0.1:{}/x", free_port()),
            None,
            "connection refused: nothing accepts RTSP at 127.0.0.1",
        ),
    ];
    // Each case with libavformat's RTSP reader and with camgate's own: the same status and advice.
    for reader in [RtspReader::Ffmpeg, RtspReader::Buffered] {
        let supervisor = supervisor();
        for (camera, input, _, _) in &cases {
            let mut spec = spec(camera, input, &rtmp);
            spec.rtsp_reader = reader;
            supervisor.start_blocking(spec).unwrap();
        }
        for (camera, _, status, words) in &cases {
            let failed = status_where(&supervisor, camera, "a failure reported", |s| s.last_error.is_some());
            let error = failed.last_error.clone().unwrap();
            assert_eq!(failed.rtsp_status, *status, "{camera} ({reader:?}): {error}");
            assert!(error.contains(words), "{camera} ({reader:?}): {error}");
            let leaked = error.contains("right-password") || error.contains("wrong@");
            assert!(!leaked, "no credentials in errors: {error}");
        }
    }
    // The right credentials: camgate's reader answers the camera's 401 and streams.
    let supervisor = supervisor();
    let mut own = spec("authok-own", &rtsp.url_with_auth(mount::H264), &rtmp);
    own.rtsp_reader = RtspReader::Buffered;
    supervisor.start_blocking(own).unwrap();
    let running = status_where(&supervisor, "authok-own", "running", |s| s.state == WorkerState::Running);
    assert_eq!(running.session.and_then(|s| s.transport_note), None);
    assert_eq!(read_back(&rtmp, "authok-own", 1.0).video.map(|v| v.codec), Some("h264".to_owned()));
}

/// A camera that asks for Digest authentication (as most do): both readers answer it with the URL's
/// credentials, and a wrong password is a 401 with its advice.
#[test]
fn digest_authentication_is_answered_by_both_readers() {
    let rtsp = RtspServer::start_with(RtspOptions {
        auth: Some(("admin".into(), "digest-pw".into())),
        digest: true,
        ..RtspOptions::default()
    });
    let rtmp = RtmpServer::start();
    let supervisor = supervisor();
    let wrong = format!("rtsp://admin:wrong@127.0.0.1:{}{}", rtsp.port(), mount::H264);
    for (reader, name) in [(RtspReader::Ffmpeg, "lavf"), (RtspReader::Buffered, "own")] {
        let mut good = spec(&format!("digest-{name}"), &rtsp.url_with_auth(mount::H264), &rtmp);
        good.rtsp_reader = reader;
        supervisor.start_blocking(good).unwrap();
        let mut bad = spec(&format!("wrong-{name}"), &wrong, &rtmp);
        bad.rtsp_reader = reader;
        supervisor.start_blocking(bad).unwrap();
    }
    for name in ["lavf", "own"] {
        let camera = format!("digest-{name}");
        let running = status_where(&supervisor, &camera, "running", |s| s.state == WorkerState::Running);
        assert_eq!(running.session.and_then(|s| s.transport_note), None, "{camera}");
        assert_eq!(read_back(&rtmp, &camera, 1.0).video.map(|v| v.codec), Some("h264".to_owned()));
        let camera = format!("wrong-{name}");
        let failed = status_where(&supervisor, &camera, "a failure reported", |s| s.last_error.is_some());
        assert_eq!(failed.rtsp_status, Some(401), "{camera}: {:?}", failed.last_error);
        assert!(failed.last_error.unwrap().contains("wrong user name or password"));
    }
}

/// When the camera (the RTSP mount) sends its keyframes, as seen by an RTSP client of its own.
struct KeyframeWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<std::sync::Mutex<Vec<Instant>>>,
}

impl KeyframeWatch {
    fn start(url: String) -> KeyframeWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop2, seen2) = (Arc::clone(&stop), Arc::clone(&seen));
        thread::spawn(move || {
            common::init_ffmpeg();
            let mut options = ffmpeg_next::Dictionary::new();
            options.set("rtsp_transport", "tcp");
            let stop3 = Arc::clone(&stop2);
            let Ok(mut input) = ffmpeg_next::format::input_with_interrupt_and_dictionary(
                &url,
                move || stop3.load(Ordering::Relaxed),
                options,
            ) else {
                return;
            };
            let mut packet = ffmpeg_next::Packet::empty();
            while !stop2.load(Ordering::Relaxed) && packet.read(&mut input).is_ok() {
                if packet.is_key() {
                    seen2.lock().unwrap().push(Instant::now());
                }
            }
        });
        KeyframeWatch { stop, seen }
    }

    /// The first keyframe the camera sent after `after`.
    fn next_after(&self, after: Instant) -> Option<Instant> {
        self.seen.lock().unwrap().iter().copied().find(|at| *at > after)
    }
}

impl Drop for KeyframeWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_camera_starts_its_first_viewer_from_the_cached_keyframe() {
    let rtsp = RtspServer::start();
    let rtmp = RtmpServer::start();
    let settings = GatewaySettings { on_demand_linger: Duration::from_millis(200), ..GatewaySettings::default() };
    let gateway = Gateway::new(supervisor(), settings, None);
    let mut warm = spec("w", &rtsp.url(mount::H264_GOP10), &rtmp);
    warm.video.mode = VideoMode::Copy;
    warm.audio.mode = AudioMode::None;
    let watch = KeyframeWatch::start(rtsp.url(mount::H264_GOP10));
    let registered = gateway.put(warm, RunMode::Warm).await.unwrap();
    assert!(matches!(registered.outcome, camgate::gateway::PutOutcome::Registered(ref c) if c.warm));

    // Connected without viewers: the camera runs (and is counted as running), nothing reaches nginx.
    let supervisor = gateway.supervisor().clone();
    tokio::task::spawn_blocking(move || {
        status_where(&supervisor, "w", "connected", |s| s.state == WorkerState::Running)
    })
    .await
    .unwrap();
    // Let a keyframe be cached: the camera's next one after connecting.
    let connected = Instant::now();
    let cached = wait_for(Duration::from_secs(25), "a keyframe from the camera", || watch.next_after(connected));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = tokio::task::spawn_blocking({
        let url = rtmp.url("livestreamw");
        move || probe(&url, ProbeOptions::default().with_media_seconds(0.5).with_deadline(Duration::from_secs(2)))
    });
    assert!(idle.await.unwrap().is_err(), "nothing is published before a viewer arrives");
    assert!(Instant::now() > cached);

    // A player waits at nginx; the first viewer's hook opens the output.
    let reader = tokio::task::spawn_blocking({
        let url = rtmp.url("livestreamw");
        move || first_video_packet(&url, Duration::from_secs(30))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hook = Instant::now();
    gateway.viewer_joined("live", "livestreamw", "player-1").unwrap();
    let (first_frame, key) = reader.await.unwrap().expect("the warm camera's stream reaches the player");
    assert!(key, "the player's stream starts with a keyframe");
    // The picture came from the cache: the player had it before the camera sent its next keyframe after the
    // hook (a cold start must wait for that one, up to 10 s with this camera's GOP).
    let next = wait_for(Duration::from_secs(25), "the camera's next keyframe", || watch.next_after(hook));
    eprintln!(
        "first frame at the player {:?} after the hook; the camera's next keyframe {:?} after it",
        first_frame.saturating_duration_since(hook),
        next.saturating_duration_since(hook)
    );
    assert!(first_frame < next, "the first frame waited for the camera's next keyframe");
    let stream = read_back(&rtmp, "w", 1.0);
    assert_eq!(stream.video.map(|v| v.codec), Some("h264".to_owned()), "a player joining later reads it too");

    // The last viewer leaves: after the linger the output stops, the camera stays connected.
    gateway.viewer_left("live", "livestreamw", "player-1").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let gone = tokio::task::spawn_blocking({
        let url = rtmp.url("livestreamw");
        move || probe(&url, ProbeOptions::default().with_media_seconds(0.5).with_deadline(Duration::from_secs(2)))
    });
    assert!(gone.await.unwrap().is_err(), "the output stopped after the linger");
    assert_eq!(gateway.status(&id("w")).unwrap().state, WorkerState::Running, "still connected to the camera");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_camera_s_output_failure_is_reported_as_what_it_was() {
    let rtsp = RtspServer::start();
    let rtmp = RtmpServer::start();
    let gateway = Gateway::new(supervisor(), GatewaySettings::default(), None);
    let mut warm = spec("wf", &rtsp.url(mount::H264), &rtmp);
    warm.video.mode = VideoMode::Copy;
    warm.audio.mode = AudioMode::None;
    // Short: the session's own connection deadline has long passed when the output fails.
    warm.timeouts.open_ms = 5000;
    gateway.put(warm, RunMode::Warm).await.unwrap();
    let supervisor = gateway.supervisor().clone();
    let status = move |what: &'static str, done: fn(&CameraStatus) -> bool| {
        let supervisor = supervisor.clone();
        tokio::task::spawn_blocking(move || status_where(&supervisor, "wf", what, done))
    };
    status("connected", |s| s.state == WorkerState::Running).await.unwrap();
    gateway.viewer_joined("live", "livestreamwf", "player-1").unwrap();
    let url = rtmp.url("livestreamwf");
    tokio::task::spawn_blocking(move || first_video_packet(&url, Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the warm camera publishes for its viewer");
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(gateway.status(&id("wf")).unwrap().restarts, 0, "one session throughout");
    // The RTMP server goes away under the output: a write fails with the socket's error, not a deadline.
    drop(rtmp);
    let failed = status("the output failure", |s| s.last_error.is_some()).await.unwrap();
    let error = failed.last_error.unwrap();
    assert!(error.contains("output"), "{error}");
    assert!(!error.contains("timed out"), "a broken connection is not a timeout: {error}");
    gateway.shutdown().await;
}

#[test]
fn late_and_missing_audio_never_stall_the_video() {
    let rtsp = RtspServer::start();
    let rtmp = RtmpServer::start();
    let supervisor = supervisor();
    supervisor.start_blocking(spec("late", &rtsp.url(mount::H264_LATE_AUDIO), &rtmp)).unwrap();
    status_where(&supervisor, "late", "running", |s| s.state == WorkerState::Running);
    // The first seconds have no audio at all, later seconds do: the video flows at its rate throughout, and
    // timestamps only go forward.
    let report = read_back(&rtmp, "late", 8.0);
    let video = report.video.expect("video");
    let span = video.stats.dts_span().unwrap_or(0.0);
    assert!(span >= 7.0, "8 s of video read, dts span {span}");
    assert!(video.stats.dts_monotonic(), "{:?}", video.stats.first_dts_violation);
    let fps = video.fps.unwrap_or(0.0);
    assert!((22.0..=28.0).contains(&fps), "video at its rate while audio is missing: {fps}");
    // The output announced audio: it carries audio from the first seconds on (silence until the camera's own
    // starts), without a hole a player would stall on.
    let audio = report.audio.expect("the output announces the audio track");
    let (audio_first, video_first) = (audio.stats.first_dts.unwrap(), video.stats.first_dts.unwrap());
    assert!(audio_first - video_first < 1.5, "audio from the start: video at {video_first}, audio at {audio_first}");
    let hole = audio.stats.max_dts_step.unwrap_or(f64::MAX);
    assert!(hole < 1.5, "no hole in the audio: largest step {hole} s");
    assert!(audio.stats.dts_monotonic(), "{:?}", audio.stats.first_dts_violation);
    // Past 3 s the camera's own audio takes over (still one continuous track).
    assert!(audio.stats.last_dts.unwrap() - video_first > 6.0);
    // And a player decodes all of it, silence and the switch to the camera's audio included.
    let decoded = decode(&rtmp.url("livestreamlate"), 6.0, Duration::from_secs(30)).unwrap();
    assert_eq!(decoded.errors, 0, "{decoded:?}");
    assert!(decoded.audio_frames > 200, "about 47 AAC frames a second at 48 kHz: {decoded:?}");
}

/// A camera whose clock moves a second forward while its video stalls for as long, as camera servers under
/// load do: the audio's jump arrives at once and is re-based away, the video's arrives with the stall and is
/// kept, as time really passed. Left so, the output has the picture a second ahead of its sound: every video
/// packet waits in the interleaving queue for audio (up to the queue's 0.5 s) and a viewer reads the two
/// streams that far apart. camgate realigns them (`pipeline::timestamps::realign`): the audio takes the video's
/// jump. Both readers, copied and transcoded.
#[test]
fn a_clock_move_during_a_video_stall_leaves_audio_and_video_together() {
    let rtsp = RtspServer::start();
    let rtmp = RtmpServer::start();
    let supervisor = supervisor();
    let clock_move =
        ClockMove { after: Duration::from_secs(3), jump: Duration::from_secs(1), video_stall: Duration::from_secs(1) };
    // H.264 copied by either reader, and H.265 transcoded (its output timestamps come from the encoder).
    let cameras = [
        ("clocklavf", RtspReader::Ffmpeg, mount::H264_AAC),
        ("clockown", RtspReader::Buffered, mount::H264_AAC),
        ("clockhevc", RtspReader::Ffmpeg, mount::H265),
    ];
    let relays: Vec<ClockMoveRelay> = cameras
        .iter()
        .map(|&(camera, reader, path)| {
            let relay = ClockMoveRelay::start(rtsp.port(), clock_move);
            let mut spec = spec(camera, &relay.url(path), &rtmp);
            // The relay sees interleaved media only.
            spec.transport = Transport::Tcp;
            spec.rtsp_reader = reader;
            supervisor.start_blocking(spec).unwrap();
            relay
        })
        .collect();
    for ((camera, ..), relay) in cameras.iter().zip(&relays) {
        wait_for(Duration::from_secs(30), &format!("{camera}'s held video to be released"), || {
            (relay.video_released() > 0).then_some(())
        });
        let (video, audio) = relay.shifted();
        assert!(video > 0 && audio > 0, "{camera}: both streams' clocks moved: {video} video, {audio} audio packets");
    }
    // Read from after the move on: a second stream apart shows as the interleaving queue's bound, 0.5 s.
    let readers: Vec<_> = cameras
        .iter()
        .map(|&(camera, ..)| {
            let url = rtmp.url(&format!("livestream{camera}"));
            thread::spawn(move || {
                probe(&url, ProbeOptions::default().with_media_seconds(4.0).with_deadline(Duration::from_secs(30)))
            })
        })
        .collect();
    for ((camera, ..), reader) in cameras.iter().zip(readers) {
        let report = reader.join().expect("reader thread").unwrap_or_else(|e| panic!("{camera}: {e}"));
        let video = report.video.as_ref().expect("video");
        let audio = report.audio.as_ref().expect("audio");
        assert_eq!(video.codec, "h264", "{camera}");
        assert!(video.stats.dts_monotonic(), "{camera}: {:?}", video.stats.first_dts_violation);
        assert!(audio.stats.dts_monotonic(), "{camera}: {:?}", audio.stats.first_dts_violation);
        assert!(video.stats.packets >= 75 && audio.stats.packets >= 75, "{camera}: {report:?}");
        let gap = report.max_av_dts_gap.expect("both streams");
        assert!(gap < 0.25, "{camera}: audio and video {gap:.3} s apart after the camera's clock moved");
        let status = supervisor.status(&id(camera)).unwrap();
        assert_eq!(status.state, WorkerState::Running, "{camera}: {status:?}");
        // The audio's jump was re-based, then the audio took the video's: both counted in the status. On a
        // loaded machine camgate may read the video before the stall late, so the stall looks shorter than
        // the jump and the video's jump is re-based too; then the streams never came apart and there was
        // nothing to realign (a fresh-clone CI run saw that: two jumps re-based, none realigned, the streams
        // together).
        let totals = &status.totals;
        assert!(totals.timestamp_discontinuities >= 1, "{camera}: {totals:?}");
        assert!(
            totals.timestamp_realignments >= 1 || totals.timestamp_discontinuities >= 2,
            "{camera}: the streams were put back in step, or both jumps were re-based: {totals:?}"
        );
    }
    for (camera, ..) in cameras {
        supervisor.stop_blocking(&id(camera)).unwrap();
    }
}

#[test]
fn a_resolution_change_mid_stream_keeps_playing_copied_and_transcoded() {
    let rtsp = RtspServer::start();
    let rtmp = RtmpServer::start();
    let supervisor = supervisor();
    let mut copy = spec("rcopy", &rtsp.url(mount::H264_RESIZE), &rtmp);
    copy.video.mode = VideoMode::Copy;
    let mut transcode = spec("rtrans", &rtsp.url(mount::H264_RESIZE), &rtmp);
    transcode.video.mode = VideoMode::Transcode;
    transcode.video.encoding.preset = "ultrafast".into();
    supervisor.start_blocking(copy).unwrap();
    supervisor.start_blocking(transcode).unwrap();
    for camera in ["rcopy", "rtrans"] {
        status_where(&supervisor, camera, "running", |s| s.state == WorkerState::Running);
    }
    // The fixture switches size every 6 s: 8 s of reading crosses at least one change. A player decodes
    // every frame, the copied stream in both sizes, the transcoded one in the size it was first encoded at.
    for camera in ["rcopy", "rtrans"] {
        let decoded = decode(&rtmp.url(&format!("livestream{camera}")), 8.0, Duration::from_secs(30)).unwrap();
        assert_eq!(decoded.errors, 0, "{camera}: {decoded:?}");
        let expected = if camera == "rcopy" { 2 } else { 1 };
        assert_eq!(decoded.sizes.len(), expected, "{camera}: {decoded:?}");
        assert!(decoded.video_frames > 180, "{camera}: {decoded:?}");
    }
    for camera in ["rcopy", "rtrans"] {
        let report = read_back(&rtmp, camera, 8.0);
        let video = report.video.expect("video");
        assert!(video.stats.dts_monotonic(), "{camera}: {:?}", video.stats.first_dts_violation);
        let fps = video.fps.unwrap_or(0.0);
        assert!((22.0..=28.0).contains(&fps), "{camera}: plays through the change at its rate: {fps}");
        let status = supervisor.status(&id(camera)).unwrap();
        assert_eq!(status.state, WorkerState::Running, "{camera}: {:?}", status.last_error);
        assert_eq!(status.restarts, 0, "{camera}: no reconnect for a size change: {:?}", status.last_error);
        // camgate chose the transcoder's threads (`threads = 0`): at least one each, none for a copy.
        let threads = status.session.as_ref().and_then(|s| s.video_threads);
        match camera {
            "rtrans" => assert!(threads.is_some_and(|t| t.decoder >= 1 && t.encoder >= 1), "{threads:?}"),
            _ => assert_eq!(threads, None),
        }
    }
}

#[test]
fn two_rtmp_outputs_share_one_session_with_the_camera() {
    let rtsp = RtspServer::start();
    let rtmp = RtmpServer::start();
    let second = RtmpServer::start();
    // Every connection to the camera passes the relay: it counts the camera's sessions.
    let camera = FreezableRelay::start(rtsp.port());
    let mut dual = spec("dual", &format!("rtsp://127.0.0.1:{}{}", camera.port(), mount::H264_AAC), &rtmp);
    dual.extra_outputs = vec![second.url("livestreamdual").parse().unwrap()];
    let supervisor = supervisor();
    supervisor.start_blocking(dual).unwrap();
    status_where(&supervisor, "dual", "running", |s| s.state == WorkerState::Running);
    // Both origins carry the camera, audio and video.
    for origin in [&rtmp, &second] {
        let report = read_back(origin, "dual", 3.0);
        assert!(report.video.is_some() && report.audio.is_some(), "{report:?}");
    }
    assert_eq!(camera.accepted(), 1, "one RTSP session for two outputs");
    let status = supervisor.status(&id("dual")).unwrap();
    assert_eq!(status.restarts, 0, "{:?}", status.last_error);

    // More extra outputs than allowed, or extra outputs without a main one, are refused naming the field.
    let mut many = spec("many", &rtsp.url(mount::H264), &rtmp);
    many.extra_outputs =
        (0..=camgate::model::MAX_EXTRA_OUTPUTS).map(|n| second.url(&format!("extra{n}")).parse().unwrap()).collect();
    let err = supervisor.start_blocking(many).unwrap_err().to_string();
    assert!(err.contains("extra_outputs"), "{err}");
}

#[test]
fn the_offline_slate_keeps_players_attached_while_the_camera_is_away() {
    let rtsp = RtspServer::start();
    let port = rtsp.port();
    // nginx drops a publisher silent for 3 s, as SRS does after 5 s: the slate must really be sending.
    let rtmp = RtmpServer::start_dropping_idle(Duration::from_secs(3));
    let supervisor = supervisor();
    // The same camera copied and transcoded (AAC-LC audio either way, which the slate's silence matches).
    let cameras = ["away", "awayt"];
    for camera in cameras {
        let mut slate = spec(camera, &rtsp.url(mount::H264_AAC), &rtmp);
        slate.offline_slate = true;
        slate.preview = true;
        if camera == "awayt" {
            slate.video.mode = VideoMode::Transcode;
            slate.video.encoding.preset = "ultrafast".into();
        }
        supervisor.start_blocking(slate).unwrap();
    }
    for camera in cameras {
        status_where(&supervisor, camera, "running", |s| s.state == WorkerState::Running);
    }

    // Players attached before the camera goes away read on through the slate and the camera's return.
    let players: Vec<_> = cameras
        .iter()
        .map(|camera| {
            let url = rtmp.url(&format!("livestream{camera}"));
            let _ = first_video_packet(&url, Duration::from_secs(20));
            thread::spawn(move || decode(&url, 16.0, Duration::from_secs(90)))
        })
        .collect();
    drop(rtsp);
    for camera in cameras {
        // The slate starts as the session ends; the failure that ended it follows in the same breath.
        let away = status_where(&supervisor, camera, "the slate, and why", |s| {
            s.offline_slate_since_ms.is_some() && s.last_error.is_some()
        });
        assert_eq!(away.state, WorkerState::Reconnecting, "{away:?}");
    }
    // Away for twice as long as nginx waits for a silent publisher, the player seeing the slate meanwhile.
    let away_since = Instant::now();
    // A preview viewer arriving now (nobody watched the preview before) sees the slate, from a keyframe.
    let dir = tempfile::tempdir().unwrap();
    for camera in cameras {
        let path = dir.path().join(format!("{camera}.flv"));
        record_viewer(supervisor.preview().subscribe(&id(camera)).unwrap(), &path, 4_000, Duration::from_secs(2));
        let report = probe(path.to_str().unwrap(), ProbeOptions::default().until_eof()).expect("the preview reads");
        let video = report.video.expect("the slate's video");
        assert_eq!((video.width, video.height), (640, 360), "{camera}");
        assert!(video.stats.first_is_key, "{camera}: the preview starts at a keyframe");
    }
    thread::sleep(Duration::from_secs(6).saturating_sub(away_since.elapsed()));
    let _rtsp = RtspServer::start_on(port, RtspOptions::default());
    for camera in cameras {
        let back = status_where(&supervisor, camera, "the camera back", |s| {
            s.offline_slate_since_ms.is_none() && s.state == WorkerState::Running
        });
        assert!(back.restarts >= 1, "{back:?}");
    }

    for (camera, player) in cameras.iter().zip(players) {
        let played = player.join().unwrap().expect("the player kept reading");
        // The stream never ended: one play session read 16 s of media across both switches.
        assert!(played.video_seconds >= 15.0, "{camera}: the stream ended early: {played:?}");
        assert_eq!(played.errors, 0, "{camera}: decodes without errors across the switches: {played:?}");
        assert_eq!(played.dts_not_increasing, 0, "{camera}: timestamps only go forward: {played:?}");
        assert!(played.max_video_step < 1.0, "{camera}: no hole in the video: {played:?}");
        assert!(played.max_audio_step < 1.0, "{camera}: no hole in the audio: {played:?}");
        assert_eq!(played.sizes, vec![(640, 360)], "{camera}: the slate keeps the picture size: {played:?}");
    }
}
