//! Tests of the test harness itself (tests/common, tests/fixtures) against the
//! real servers: if these fail, camgate's integration tests cannot be trusted.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    ChildGuard, ProbeOptions, ProbeReport, ReplayOptions, ReplayServer, RtmpServer, RtspOptions, RtspServer,
    SilentServer, StopReason, mount, probe,
};

/// Slack for a deadline-bounded probe to notice its deadline and clean up.
const DEADLINE_SLACK: Duration = Duration::from_secs(2);

fn assert_video(r: &ProbeReport, codec: &str, width: u32, height: u32, fps: (f64, f64)) {
    let v = r.video.as_ref().unwrap_or_else(|| panic!("no video stream: {r:#?}"));
    assert_eq!(v.codec, codec, "video codec: {r:#?}");
    assert_eq!((v.width, v.height), (width, height), "video size: {r:#?}");
    assert_eq!(v.pix_fmt, "yuv420p", "pixel format: {r:#?}");
    let measured = v.fps.unwrap_or_else(|| panic!("no frame rate measured: {r:#?}"));
    assert!((fps.0..=fps.1).contains(&measured), "frame rate {measured:.2} outside {fps:?}: {r:#?}");
    assert!(v.stats.dts_monotonic(), "video dts not monotonic: {r:#?}");
}

fn assert_audio(r: &ProbeReport, codec: &str, sample_rate: u32, channels: u16) {
    let a = r.audio.as_ref().unwrap_or_else(|| panic!("no audio stream: {r:#?}"));
    assert_eq!(a.codec, codec, "audio codec: {r:#?}");
    assert_eq!(a.sample_rate, sample_rate, "sample rate: {r:#?}");
    assert_eq!(a.channels, channels, "channels: {r:#?}");
    assert!(a.stats.packets > 0, "no audio packets: {r:#?}");
    assert!(a.stats.dts_monotonic(), "audio dts not monotonic: {r:#?}");
}

/// Probes one mount of a fresh server for 3 s of media and checks the promises
/// every clean mount makes: 640x360, ~25 fps, a keyframe a second, monotonic dts.
fn probe_clean_mount(mount: &str) -> ProbeReport {
    let server = RtspServer::start();
    let r = probe(&server.url(mount), ProbeOptions::default().with_media_seconds(3.0))
        .unwrap_or_else(|e| panic!("probe of {mount} failed: {e}\nserver stderr:\n{}", server.stderr()));
    assert_eq!(r.stopped, StopReason::MediaTime, "{r:#?}");
    let v = r.video.as_ref().expect("video stream");
    assert!((2..=5).contains(&v.stats.keyframes), "GOP 25 at 25 fps should give ~3 keyframes in 3 s: {r:#?}");
    r
}

#[test]
fn rtsp_h264_aac_mount() {
    let r = probe_clean_mount(mount::H264_AAC);
    assert_video(&r, "h264", 640, 360, (22.0, 28.0));
    assert_eq!(r.video.as_ref().map(|v| v.stats.pts_backsteps), Some(0), "no B-frames here: {r:#?}");
    assert_audio(&r, "aac", 48000, 1);
    let gap = r.max_av_dts_gap.expect("both streams read");
    assert!(gap < 1.0, "audio and video {gap:.3} s apart: {r:#?}");
}

#[test]
fn rtsp_h264_alaw_mount() {
    let r = probe_clean_mount(mount::H264_ALAW);
    assert_video(&r, "h264", 640, 360, (22.0, 28.0));
    assert_audio(&r, "pcm_alaw", 8000, 1);
}

#[test]
fn rtsp_h264_mount_has_no_audio() {
    let r = probe_clean_mount(mount::H264);
    assert_video(&r, "h264", 640, 360, (22.0, 28.0));
    assert!(r.audio.is_none(), "audio on a video-only mount: {r:#?}");
    assert_eq!(r.stream_count, 1, "{r:#?}");
}

#[test]
fn rtsp_h265_mount() {
    let r = probe_clean_mount(mount::H265);
    assert_video(&r, "hevc", 640, 360, (22.0, 28.0));
    assert_audio(&r, "aac", 48000, 1);
}

#[test]
fn rtsp_h264_bframes_mount_reorders_its_frames() {
    let r = probe_clean_mount(mount::H264_BFRAMES);
    assert_video(&r, "h264", 640, 360, (22.0, 28.0));
    let stats = &r.video.as_ref().expect("video stream").stats;
    // P B B: a third of the frames are shown before the frame decoded ahead of them.
    assert!(stats.pts_backsteps * 4 >= stats.packets, "too few frames reordered: {r:#?}");
    assert_eq!(stats.shown_before_decoded, 0, "libavformat's decoding times: {r:#?}");
}

#[test]
fn rtsp_size_fps_and_gop_options_apply() {
    let server =
        RtspServer::start_with(RtspOptions { width: 320, height: 240, fps: 15, gop: 30, ..RtspOptions::default() });
    let r = probe(&server.url(mount::H264), ProbeOptions::default().with_media_seconds(4.0))
        .expect("probe of a 320x240@15 camera");
    assert_video(&r, "h264", 320, 240, (13.5, 16.5));
    // GOP 30 at 15 fps: a keyframe every 2 s, so at most 3 in 4 s.
    let keyframes = r.video.as_ref().map_or(0, |v| v.stats.keyframes);
    assert!((1..=3).contains(&keyframes), "{keyframes} keyframes: {r:#?}");
}

/// Probes `mount` for 5 s while a second client connects and plays once the
/// first is receiving media; returns the first client's report.
fn probe_with_late_joiner(server: &RtspServer, mount: &str) -> ProbeReport {
    let url = server.url(mount);
    let progress = Arc::new(AtomicUsize::new(0));
    let first = {
        let url = url.clone();
        let opts = ProbeOptions::default()
            .with_media_seconds(5.0)
            .with_deadline(Duration::from_secs(20))
            .with_progress(progress.clone());
        thread::spawn(move || probe(&url, opts))
    };
    // ~1 s of audio and video: the first client is past its PLAY and playing.
    let until = Instant::now() + Duration::from_secs(15);
    while progress.load(Ordering::SeqCst) < 60 {
        assert!(Instant::now() < until, "first client got no media within 15 s");
        assert!(!first.is_finished(), "first client stopped early: {:?}", first.join());
        thread::sleep(Duration::from_millis(20));
    }
    let joined_at = progress.load(Ordering::SeqCst);
    let second = probe(&url, ProbeOptions::default().with_media_seconds(1.0)).expect("second client of a shared mount");
    assert!(second.video.is_some(), "{second:#?}");
    let r = first.join().expect("first probe thread panicked").expect("first client");
    let read = r.video.as_ref().map_or(0, |v| v.stats.packets) + r.audio.as_ref().map_or(0, |a| a.stats.packets);
    assert!(
        read > joined_at + 25,
        "first client ended before the second joined ({read} packets, joined at {joined_at}): {r:#?}"
    );
    r
}

#[test]
fn rtsp_shared_mount_keeps_timestamps_clean_when_a_client_joins() {
    let server = RtspServer::start();
    let r = probe_with_late_joiner(&server, mount::H264_AAC);
    assert_eq!(r.stopped, StopReason::MediaTime, "{r:#?}");
    assert_video(&r, "h264", 640, 360, (22.0, 28.0));
    assert_audio(&r, "aac", 48000, 1);
}

#[test]
fn rtsp_seekfault_mount_makes_timestamps_jump_back_when_a_client_joins() {
    let server = RtspServer::start();
    let r = probe_with_late_joiner(&server, mount::H264_AAC_SEEKFAULT);
    let v = r.video.as_ref().expect("video stream");
    let violation =
        v.stats.first_dts_violation.as_ref().unwrap_or_else(|| panic!("the seek left video dts monotonic: {r:#?}"));
    assert!(
        violation.previous_dts - violation.dts > 0.5,
        "expected a jump back of the joiner's offset, got {violation:?}"
    );
}

#[test]
fn rtsp_basic_auth_is_required_when_configured() {
    let server =
        RtspServer::start_with(RtspOptions { auth: Some(("cam".into(), "s3cret".into())), ..RtspOptions::default() });
    let opts = ProbeOptions::default().with_media_seconds(1.0).with_deadline(Duration::from_secs(10));
    let err = probe(&server.url(mount::H264), opts.clone()).expect_err("anonymous client must be refused");
    assert!(err.contains("401") || err.contains("Unauthorized"), "{err}");
    let r = probe(&server.url_with_auth(mount::H264), opts).expect("client with credentials");
    assert_eq!(r.video.as_ref().map(|v| v.codec.as_str()), Some("h264"), "{r:#?}");
}

#[test]
fn rtmp_server_relays_a_published_stream() {
    let rtsp = RtspServer::start();
    let rtmp = RtmpServer::start();
    let target = rtmp.url("relay");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i"])
        .arg(rtsp.url(mount::H264_AAC))
        .args(["-c", "copy", "-f", "flv"])
        .arg(&target)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let _publisher = ChildGuard::spawn("ffmpeg publisher", cmd).expect("run the ffmpeg CLI");
    // nginx-rtmp holds a player until the publisher arrives, so no wait here.
    let r = probe(&target, ProbeOptions::default().with_media_seconds(3.0).with_deadline(Duration::from_secs(20)))
        .unwrap_or_else(|e| panic!("{e}\nnginx error.log:\n{}", rtmp.error_log()));
    assert_eq!(r.format, "flv", "{r:#?}");
    assert_eq!(r.stopped, StopReason::MediaTime, "{r:#?}");
    assert_video(&r, "h264", 640, 360, (22.0, 28.0));
    assert_audio(&r, "aac", 48000, 1);
    // `wait_key on` in the server config: players start at a keyframe.
    let v = r.video.as_ref().expect("video stream");
    assert!(v.stats.first_is_key, "{r:#?}");
}

#[test]
fn rtmp_probe_without_publisher_fails_at_its_deadline() {
    let rtmp = RtmpServer::start();
    let deadline = Duration::from_secs(3);
    let start = Instant::now();
    let result = probe(&rtmp.url("nobody"), ProbeOptions::default().with_deadline(deadline));
    let elapsed = start.elapsed();
    assert!(result.is_err(), "no publisher, yet media: {result:?}");
    // Not earlier: the server accepts the play, so only the deadline ends it.
    assert!(
        elapsed >= deadline - Duration::from_millis(200) && elapsed <= deadline + DEADLINE_SLACK,
        "took {elapsed:?} for a {deadline:?} deadline: {result:?}"
    );
}

#[test]
fn silent_camera_makes_probe_fail_at_its_deadline() {
    let silent = SilentServer::start();
    let deadline = Duration::from_secs(2);
    let start = Instant::now();
    let result = probe(&silent.url(), ProbeOptions::default().with_deadline(deadline));
    let elapsed = start.elapsed();
    assert!(result.is_err(), "a silent server gave media: {result:?}");
    assert!(silent.accepted() >= 1, "the probe never connected");
    assert!(
        elapsed >= deadline - Duration::from_millis(200) && elapsed <= deadline + DEADLINE_SLACK,
        "took {elapsed:?} for a {deadline:?} deadline: {result:?}"
    );
}

#[test]
fn flv_file_probe_reads_to_eof() {
    let server = RtspServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("cam.flv");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i"])
        .arg(server.url(mount::H264_AAC))
        .args(["-t", "3", "-c", "copy"])
        .arg(&file)
        .stdin(Stdio::null());
    let mut recorder = ChildGuard::spawn("ffmpeg recorder", cmd).expect("run the ffmpeg CLI");
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = recorder.try_exit_status() {
            break status;
        }
        assert!(Instant::now() < until, "ffmpeg took over 20 s to record 3 s");
        thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "ffmpeg recorder: {status}");

    let r = probe(file.to_str().expect("utf-8 temp path"), ProbeOptions::default().until_eof())
        .expect("probe of the recorded file");
    assert_eq!(r.format, "flv", "{r:#?}");
    assert_eq!(r.stopped, StopReason::Eof, "{r:#?}");
    assert_video(&r, "h264", 640, 360, (22.0, 28.0));
    assert_audio(&r, "aac", 48000, 1);
    let v = r.video.as_ref().expect("video stream");
    // The ffmpeg CLI drops leading non-keyframes when stream-copying.
    assert!(v.stats.first_is_key, "{r:#?}");
    let span = v.stats.dts_span().expect("video dts");
    assert!((2.5..=3.1).contains(&span), "recorded {span:.2} s of video: {r:#?}");
}

#[test]
fn servers_are_stopped_and_reaped_on_drop() {
    let rtsp = RtspServer::start();
    let rtmp = RtmpServer::start();
    let pids = [rtsp.process().pid(), rtmp.process().pid()];
    for pid in pids {
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    drop(rtsp);
    drop(rtmp);
    // Reaped children leave no /proc entry (a zombie would keep one).
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} still exists after drop");
    }
}

/// A replay of `mount` of a fresh fixture server, `seconds` long; the server is gone once it is recorded.
fn replay_of(mount: &str, seconds: u64) -> ReplayServer {
    let camera = RtspServer::start();
    let options = ReplayOptions { length: Duration::from_secs(seconds), ..ReplayOptions::default() };
    ReplayServer::record(&camera.url(mount), options).expect("recording the camera")
}

/// The bench's source for a thousand sessions plays a recording round and round: across its seams a player sees
/// one live camera — every frame, rising timestamps, audio beside the video — and the camera it was recorded
/// from is gone by then.
#[test]
fn replay_server_plays_a_recorded_camera_round_without_a_seam() {
    let replay = replay_of(mount::H264_AAC, 2);
    // Whole GOPs of a second: 2 s, to the RTP clock's tick.
    let length = replay.length().as_secs_f64();
    assert!((2.0..2.001).contains(&length), "recorded {length} s");

    // Two players at once, each over more than two rounds.
    let url = replay.url();
    let decoding = {
        let url = url.clone();
        thread::spawn(move || common::decode(&url, 5.0, Duration::from_secs(20)))
    };
    let r = probe(&url, ProbeOptions::default().with_media_seconds(5.0).with_deadline(Duration::from_secs(20)))
        .expect("probing the replay");
    let d = decoding.join().expect("decoding thread").expect("decoding the replay");
    assert_eq!(r.stopped, StopReason::MediaTime, "{r:#?}");
    assert_video(&r, "h264", 640, 360, (24.0, 26.0));
    assert_audio(&r, "aac", 48000, 1);
    let v = &r.video.as_ref().expect("video").stats;
    assert!((4..=6).contains(&v.keyframes), "a keyframe a second for 5 s: {r:#?}");
    assert!(v.max_dts_step.is_some_and(|s| s < 0.1), "a hole in the video: {r:#?}");
    let a = &r.audio.as_ref().expect("audio").stats;
    assert!(a.max_dts_step.is_some_and(|s| s < 0.1), "a hole in the audio: {r:#?}");
    let gap = r.max_av_dts_gap.expect("both streams read");
    assert!(gap < 0.2, "audio and video {gap:.3} s apart: {r:#?}");
    // Every frame of 5 s decoded (a player joining mid-GOP may lose the frames before the first keyframe), the
    // audio's 48000 / 1024 a second too.
    assert_eq!(d.dts_not_increasing, 0, "{d:#?}");
    assert!(d.video_frames >= 100 && d.video_seconds > 4.9, "{d:#?}");
    assert!(d.audio_frames >= 220, "{d:#?}");
    assert!(d.max_video_step < 0.1 && d.max_audio_step < 0.1, "{d:#?}");
    assert_eq!(replay.dropped(), 0);
    // libavformat does not look at sequence numbers over TCP; a client that does sees each stream's run on.
    let headers = common::replay::rtp_headers(&url, Duration::from_secs(5)).expect("reading RTP headers");
    for channel in [0, 2] {
        let seqs: Vec<u16> = headers.iter().filter(|h| h.0 == channel).map(|h| h.1).collect();
        assert!(seqs.len() > 100, "channel {channel}: {} packets in 5 s", seqs.len());
        let skips = seqs.windows(2).filter(|w| w[1] != w[0].wrapping_add(1)).count();
        assert_eq!(skips, 0, "channel {channel}: sequence numbers skip or go back {skips} times");
    }
    // Both players left; the replay noticed.
    common::wait_for(Duration::from_secs(5), "the replay to see both players leave", || {
        (replay.playing() == 0).then_some(())
    });
    // Stopping it cuts every client, one still in its handshake too.
    let mut waiting = std::net::TcpStream::connect(("127.0.0.1", replay.port())).expect("connecting to the replay");
    waiting.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
    common::wait_for(Duration::from_secs(5), "the replay to take the connection", || {
        (replay.connections() == 1).then_some(())
    });
    drop(replay);
    let mut byte = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut waiting, &mut byte).expect("an end, not a timeout"), 0);
}

/// The replay of an H.265 camera, whose keyframes in the fixture are CRA pictures, not IDR:
/// a player sees the recording go round with its timestamps rising.
#[test]
fn replay_server_plays_an_h265_camera_round() {
    let replay = replay_of(mount::H265, 1);
    let r =
        probe(&replay.url(), ProbeOptions::default().with_media_seconds(3.0).with_deadline(Duration::from_secs(20)))
            .expect("probing the replay");
    assert_eq!(r.stopped, StopReason::MediaTime, "{r:#?}");
    assert_video(&r, "hevc", 640, 360, (24.0, 26.0));
    assert_audio(&r, "aac", 48000, 1);
    let v = &r.video.as_ref().expect("video").stats;
    assert!(v.max_dts_step.is_some_and(|s| s < 0.1), "a hole in the video: {r:#?}");
}
