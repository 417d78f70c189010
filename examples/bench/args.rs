//! Command-line options of the bench and the scenario vocabulary (sources, systems).

use std::path::PathBuf;
use std::str::FromStr;

use camgate::{RtmpWriter, RtspReader, VideoMode};
use serde::{Deserialize, Serialize};

pub const USAGE: &str = "\
usage: bench [options]
  --cameras LIST      camera counts to run, e.g. 1,2,4 (default 1)
  --source SRC        RES-CODEC-AUDIO[-busy]: RES 360p|720p|1080p, CODEC h264|h265, AUDIO aac|alaw|none
                      (h265 only with aac); -busy: moving detail, noise and text instead of a moving
                      ball (as hard to encode as a real scene); default 720p-h264-aac
  --mode MODE         camgate's video mode: auto (its default), copy or transcode (default auto)
  --systems LIST      what to run: camgate, ffmpeg-same (ffmpeg CLI with camgate's settings),
                      ffmpeg-old (the old service's command); default camgate,ffmpeg-same,ffmpeg-old
  --seconds T         measurement window per run (default 10)
  --warmup W          seconds between all cameras running and the window (default 3)
  --threads N         x264 threads per camera, 0 = x264's choice (default 0, camgate's default)
  --preview on|off    also feed the built-in HTTP-FLV preview hub, as the binary does by default (default off)
  --read-batch-ms M   camgate's read_batch_ms for copied video (default 100, camgate's default; 0 = off)
  --rtsp-reader R     camgate's rtsp_reader: ffmpeg (libavformat's, camgate's default) or buffered
                      (camgate's own); default ffmpeg
  --rtmp-writer W     camgate's rtmp_writer: ffmpeg (libavformat's, camgate's default) or buffered
                      (camgate's own); default ffmpeg
  --audio-rate HZ     camgate's audio.encoding.sample_rate when it transcodes the audio (G.711 sources);
                      default: camgate's choice (48000 for G.711)
  --source-aac-rate HZ
                      sample rate of the synthetic cameras' AAC audio, one of AAC's: 8000 to 96000
                      (default 48000)
  --source-gop N      keyframe interval of the synthetic cameras in frames (default 50 = 2 s)
  --rtsp-servers K    camera server processes, cameras spread over them (default 1)
  --rtsp-source S     what serves the cameras: gstreamer (the test fixture, one live pipeline a server) or
                      replay (a recording of the fixture's first GOPs played round and round, for a
                      thousand sessions: the fixture costs ~0.14 % of a core a session); default gstreamer
  --replay-seconds T  with replay: the recording's length, whole GOPs (default 8)
  --rtmp-server S     where the cameras publish: nginx (nginx-rtmp, Debian's) or srs (SRS, the usual
                      production server, from the binary CAMGATE_SRS names: Debian does not package it);
                      default nginx
  --replay-tick-ms M  with replay: how often its sender writes what fell due, to every session (default 10)
  --ttff-sample S     cameras per run whose first frame is timed at the RTMP server (default 8); a run's
                      cameras start just after their camera servers' keyframes, so each has a GOP to get
                      ready for its next one, and the observers run at real-time priority where allowed
  --hung-stop K       also time stopping K cameras that stopped answering (default 0 = skip)
  --system-cpus LIST  run the system under test (camgate's process, or every ffmpeg) on these CPUs only,
                      e.g. 0 (default: any)
  --servers-cpus LIST run the camera servers, nginx and the bench's own observers on these CPUs only, e.g. 1;
                      with --system-cpus, measures what a system carries on cores of its own (default: any)
  --check             exit with status 3 unless every target of issue 13 this run measures is met (and it
                      measures at least one); the report lists each target, met or not, either way
  --json PATH         write every figure as JSON
  --plot PATH         write an SVG of CPU (cores) against cameras
";

/// The sample rates AAC defines, one of which the fixture's AAC mounts must use.
const AAC_RATES: [u32; 12] = [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000];

/// A synthetic camera: picture size, video codec, audio codec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video: String,
    pub audio: String,
    /// The busy picture (moving detail, noise, text) instead of the moving ball.
    #[serde(default)]
    pub busy: bool,
}

impl Source {
    /// The fixture's mount serving this codec pair.
    pub fn mount(&self) -> &'static str {
        match (self.video.as_str(), self.audio.as_str()) {
            ("h264", "aac") => "/h264_aac",
            ("h264", "alaw") => "/h264_alaw",
            ("h264", "none") => "/h264",
            _ => "/h265",
        }
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Source, String> {
        let (base, busy) = match s.strip_suffix("-busy") {
            Some(base) => (base, true),
            None => (s, false),
        };
        let parts: Vec<&str> = base.split('-').collect();
        let [res, video, audio] = parts[..] else {
            return Err(format!("source {s:?}: expected RES-CODEC-AUDIO[-busy]"));
        };
        let (width, height) = match res {
            "360p" => (640, 360),
            "720p" => (1280, 720),
            "1080p" => (1920, 1080),
            _ => return Err(format!("source {s:?}: resolution must be 360p, 720p or 1080p")),
        };
        match (video, audio) {
            ("h264", "aac" | "alaw" | "none") | ("h265", "aac") => {}
            _ => return Err(format!("source {s:?}: the fixture serves h264 with aac/alaw/none, and h265 with aac")),
        }
        Ok(Source { name: s.to_owned(), width, height, fps: 25, video: video.into(), audio: audio.into(), busy })
    }
}

/// What serves the synthetic cameras.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspSource {
    /// The GStreamer fixture (tests/fixtures/rtsp_server.py): one live encoder a server, a session's packets
    /// written by GStreamer.
    Gstreamer,
    /// A recording of the fixture played round and round (tests/common/replay.rs) in a process of its own.
    Replay,
}

impl FromStr for RtspSource {
    type Err = String;
    fn from_str(s: &str) -> Result<RtspSource, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("--rtsp-source {s:?}: gstreamer or replay"))
    }
}

/// What the cameras publish to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtmpServerKind {
    /// nginx with libnginx-mod-rtmp (tests/common/rtmp.rs).
    Nginx,
    /// SRS, from the binary `CAMGATE_SRS` names (tests/common/srs.rs).
    Srs,
}

impl FromStr for RtmpServerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<RtmpServerKind, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("--rtmp-server {s:?}: nginx or srs"))
    }
}

/// What runs the cameras.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum System {
    /// camgate's library, all cameras in one process.
    Camgate,
    /// One ffmpeg CLI process per camera with the settings camgate used.
    FfmpegSame,
    /// One ffmpeg CLI process per camera with the old service's exact command.
    FfmpegOld,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Camgate => "camgate",
            System::FfmpegSame => "ffmpeg-same",
            System::FfmpegOld => "ffmpeg-old",
        }
    }
}

impl FromStr for System {
    type Err = String;
    fn from_str(s: &str) -> Result<System, String> {
        [System::Camgate, System::FfmpegSame, System::FfmpegOld]
            .into_iter()
            .find(|sys| sys.name() == s)
            .ok_or_else(|| format!("unknown system {s:?} (camgate, ffmpeg-same, ffmpeg-old)"))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Args {
    pub cameras: Vec<usize>,
    pub source: Source,
    #[serde(serialize_with = "display")]
    pub mode: VideoMode,
    pub systems: Vec<System>,
    pub seconds: f64,
    pub warmup: f64,
    pub threads: u32,
    /// Also feed camgate's built-in preview hub (the binary's default), not only RTMP.
    pub preview: bool,
    /// camgate's `read_batch_ms`.
    pub read_batch_ms: u64,
    /// camgate's `rtsp_reader`.
    pub rtsp_reader: RtspReader,
    /// camgate's `rtmp_writer`.
    pub rtmp_writer: RtmpWriter,
    /// camgate's `audio.encoding.sample_rate` (`None`: camgate's choice).
    pub audio_rate: Option<u32>,
    /// Sample rate of the synthetic cameras' AAC audio.
    pub source_aac_rate: u32,
    pub source_gop: u32,
    pub rtsp_servers: usize,
    pub rtsp_source: RtspSource,
    pub rtmp_server: RtmpServerKind,
    /// With the replay source: the recording's length, and its sender's tick.
    pub replay_seconds: f64,
    pub replay_tick_ms: u64,
    pub ttff_sample: usize,
    pub hung_stop: usize,
    /// CPUs the system under test may run on (`None`: any).
    pub system_cpus: Option<Vec<usize>>,
    /// CPUs the camera servers, nginx and the bench's observers may run on (`None`: any).
    pub servers_cpus: Option<Vec<usize>>,
    /// Exit with a failure unless every target the run measures is met.
    pub check: bool,
    pub json: Option<PathBuf>,
    pub plot: Option<PathBuf>,
}

fn display<S: serde::Serializer>(mode: &VideoMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mode.to_string())
}

impl Args {
    pub fn parse(args: &[String]) -> Result<Args, String> {
        let mut out = Args {
            cameras: vec![1],
            source: "720p-h264-aac".parse()?,
            mode: VideoMode::Auto,
            systems: vec![System::Camgate, System::FfmpegSame, System::FfmpegOld],
            seconds: 10.0,
            warmup: 3.0,
            threads: 0,
            preview: false,
            read_batch_ms: camgate::model::DEFAULT_READ_BATCH_MS,
            rtsp_reader: RtspReader::default(),
            rtmp_writer: RtmpWriter::default(),
            audio_rate: None,
            source_aac_rate: 48000,
            source_gop: 50,
            rtsp_servers: 1,
            rtsp_source: RtspSource::Gstreamer,
            rtmp_server: RtmpServerKind::Nginx,
            replay_seconds: 8.0,
            replay_tick_ms: 10,
            ttff_sample: 8,
            hung_stop: 0,
            system_cpus: None,
            servers_cpus: None,
            check: false,
            json: None,
            plot: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                return Err(String::new());
            }
            if flag == "--check" {
                out.check = true;
                continue;
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let num = |what: &str| value.parse::<f64>().map_err(|e| format!("{what} {value:?}: {e}"));
            match flag.as_str() {
                "--cameras" => {
                    out.cameras = list(value)?;
                    if out.cameras.contains(&0) {
                        return Err("--cameras: counts must be at least 1".into());
                    }
                }
                "--source" => out.source = value.parse()?,
                "--mode" => out.mode = value.parse()?,
                "--systems" => out.systems = list(value)?,
                "--seconds" => out.seconds = num("--seconds")?,
                "--warmup" => out.warmup = num("--warmup")?,
                "--threads" => out.threads = num("--threads")? as u32,
                "--preview" => out.preview = matches!(value.as_str(), "on" | "true" | "1"),
                "--read-batch-ms" => out.read_batch_ms = num("--read-batch-ms")? as u64,
                "--rtsp-reader" => {
                    out.rtsp_reader = serde_json::from_value(serde_json::Value::String(value.clone()))
                        .map_err(|_| format!("--rtsp-reader {value:?}: ffmpeg or buffered"))?
                }
                "--rtmp-writer" => {
                    out.rtmp_writer = serde_json::from_value(serde_json::Value::String(value.clone()))
                        .map_err(|_| format!("--rtmp-writer {value:?}: ffmpeg or buffered"))?
                }
                "--audio-rate" => out.audio_rate = Some(num("--audio-rate")? as u32),
                "--source-aac-rate" => {
                    out.source_aac_rate = num("--source-aac-rate")? as u32;
                    if !AAC_RATES.contains(&out.source_aac_rate) {
                        return Err(format!("--source-aac-rate {value}: AAC's rates are {AAC_RATES:?}"));
                    }
                }
                "--source-gop" => out.source_gop = (num("--source-gop")? as u32).max(1),
                "--rtsp-servers" => out.rtsp_servers = (num("--rtsp-servers")? as usize).max(1),
                "--rtsp-source" => out.rtsp_source = value.parse()?,
                "--rtmp-server" => out.rtmp_server = value.parse()?,
                "--replay-seconds" => {
                    out.replay_seconds = num("--replay-seconds")?;
                    if !(1.0..=600.0).contains(&out.replay_seconds) {
                        return Err(format!("--replay-seconds {value}: 1 to 600"));
                    }
                }
                "--replay-tick-ms" => {
                    out.replay_tick_ms = num("--replay-tick-ms")? as u64;
                    if !(1..=1000).contains(&out.replay_tick_ms) {
                        return Err(format!("--replay-tick-ms {value}: 1 to 1000"));
                    }
                }
                "--ttff-sample" => out.ttff_sample = num("--ttff-sample")? as usize,
                "--hung-stop" => out.hung_stop = num("--hung-stop")? as usize,
                "--system-cpus" => out.system_cpus = Some(cpus(value)?),
                "--servers-cpus" => out.servers_cpus = Some(cpus(value)?),
                "--json" => out.json = Some(value.into()),
                "--plot" => out.plot = Some(value.into()),
                other => return Err(format!("unknown option {other}")),
            }
        }
        Ok(out)
    }

    /// camgate's video mode with `auto` resolved the way camgate resolves it for this source.
    pub fn effective_mode(&self) -> VideoMode {
        match self.mode {
            VideoMode::Auto if self.source.video == "h264" => VideoMode::Copy,
            VideoMode::Auto => VideoMode::Transcode,
            other => other,
        }
    }
}

/// A non-empty list of CPU numbers this machine has.
fn cpus(s: &str) -> Result<Vec<usize>, String> {
    let cpus: Vec<usize> = list(s)?;
    let have = crate::sys::online_cpus();
    if let Some(c) = cpus.iter().find(|&&c| c >= have) {
        return Err(format!("CPU {c}: this machine has CPUs 0 to {}", have - 1));
    }
    Ok(cpus)
}

fn list<T: FromStr>(s: &str) -> Result<Vec<T>, String>
where
    T::Err: std::fmt::Display,
{
    s.split(',').map(|x| x.trim().parse::<T>().map_err(|e| format!("{x:?}: {e}"))).collect()
}
