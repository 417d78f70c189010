//! The old way: one `ffmpeg` CLI process per camera, measured from /proc like camgate.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::args::{Source, System};
use crate::sys;

/// The arguments after `ffmpeg` for one camera.
///
/// `-hide_banner -nostdin -loglevel error -nostats -progress pipe:1` are the harness's plumbing (quiet, and
/// frame counts on stdout); everything from `-rtsp_transport` on is the command being compared.
pub fn command(system: System, copy: bool, source: &Source, threads: u32, input: &str, output: &str) -> Vec<String> {
    let mut args: Vec<String> =
        ["-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1"].map(String::from).into();
    args.extend(["-rtsp_transport", "tcp", "-i", input].map(String::from));
    match system {
        System::FfmpegOld => args.extend(["-c:v", "libx264", "-c:a", "aac"].map(String::from)),
        _ => {
            if copy {
                args.extend(["-c:v", "copy"].map(String::from));
            } else {
                // camgate's defaults: veryfast, zerolatency, CRF 23, a keyframe every 2 s exactly, no B-frames.
                let gop = (source.fps * 2).to_string();
                args.extend(
                    [
                        "-c:v",
                        "libx264",
                        "-preset",
                        "veryfast",
                        "-tune",
                        "zerolatency",
                        "-crf",
                        "23",
                        "-g",
                        &gop,
                        "-sc_threshold",
                        "0",
                        "-bf",
                        "0",
                        "-threads",
                        &threads.to_string(),
                    ]
                    .map(String::from),
                );
            }
            // camgate copies AAC and turns G.711 into 64 kbit/s AAC at 48 kHz.
            match source.audio.as_str() {
                "aac" => args.extend(["-c:a", "copy"].map(String::from)),
                "alaw" => args.extend(["-c:a", "aac", "-b:a", "64k", "-ar", "48000"].map(String::from)),
                _ => {}
            }
        }
    }
    args.extend(["-f", "flv", output].map(String::from));
    args
}

/// One running ffmpeg and the frame count its `-progress` output last reported.
pub struct FfmpegProcess {
    child: Child,
    /// (when read, `frame=` value)
    progress: Arc<Mutex<(Instant, u64)>>,
}

impl FfmpegProcess {
    /// Starts `ffmpeg ARGS`, on the CPUs in `cpus` only if given.
    pub fn spawn(args: &[String], cpus: Option<&[usize]>) -> std::io::Result<FfmpegProcess> {
        let mut command = Command::new("ffmpeg");
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        if let Some(cpus) = cpus {
            let set = sys::cpu_set(cpus).map_err(std::io::Error::other)?;
            // SAFETY: the closure runs in the forked child before exec and only calls `set_affinity`, which is
            // async-signal-safe, on a set copied into it.
            unsafe {
                command.pre_exec(move || sys::set_affinity(0, &set));
            }
        }
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let progress = Arc::new(Mutex::new((Instant::now(), 0u64)));
        {
            let progress = Arc::clone(&progress);
            thread::Builder::new().name("ffmpeg-progress".into()).spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(frames) = line.strip_prefix("frame=").and_then(|v| v.trim().parse().ok()) {
                        *progress.lock().expect("progress") = (Instant::now(), frames);
                    }
                }
            })?;
        }
        Ok(FfmpegProcess { child, progress })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn progress(&self) -> (Instant, u64) {
        *self.progress.lock().expect("progress")
    }

    /// SIGTERM (what a service manager sends), then the time until the process has exited; SIGKILL after 10 s.
    pub fn stop(mut self) -> f64 {
        let t = Instant::now();
        // SAFETY: kill(2) on our own child's pid, which is not reaped before the wait below.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return t.elapsed().as_secs_f64() * 1000.0;
            }
            thread::sleep(Duration::from_millis(1));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        -1.0
    }

    pub fn cpu_secs(&self) -> f64 {
        sys::process_cpu_secs(Some(self.pid())).unwrap_or(0.0)
    }
}

impl Drop for FfmpegProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
