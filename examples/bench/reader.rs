//! Watching streams from outside: when the first video frame of an RTMP stream reaches a player, and when the
//! camera (the RTSP mount) sends its keyframes.
//!
//! Both read packets straight after `avformat_open_input`, without `avformat_find_stream_info`: stream
//! analysis would hold the first packets back and every wall-clock time taken here would come late.
//!
//! For the same reason both run at real-time priority where the system allows it ([`observe_promptly`]). When
//! hundreds of cameras start at once the machine is saturated for seconds, and an observer at normal priority
//! notes a keyframe (or a first frame) only when the scheduler gets round to it, and the time between the two
//! is off by however long each waited. Each observer reads one stream, some 70 packets a second, so its
//! priority takes next to nothing from the systems being measured.

use std::ffi::CString;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ffmpeg_next::format::context::Input;
use ffmpeg_next::{Dictionary, Packet, ffi, media};

use crate::sys::unix_us;

/// Opens `url` with an interrupt callback that fires at `deadline` or when `stop` is raised, and nothing more.
fn open_raw(url: &str, options: Dictionary, deadline: Instant, stop: Arc<AtomicBool>) -> Result<Input, String> {
    let c_url = CString::new(url).map_err(|_| "URL with a NUL".to_owned())?;
    let interrupt =
        ffmpeg_next::util::interrupt::new(Box::new(move || Instant::now() >= deadline || stop.load(Ordering::Relaxed)));
    // SAFETY: as `ffmpeg_next::format::input_with_interrupt_and_dictionary`, minus the stream analysis. The
    // context is freed by FFmpeg on a failed open; on success `Input` owns it and the interrupt state together.
    unsafe {
        let mut ps = ffi::avformat_alloc_context();
        if ps.is_null() {
            return Err("out of memory".into());
        }
        (*ps).interrupt_callback = interrupt.interrupt;
        let mut opts = options.disown();
        let ret = ffi::avformat_open_input(&mut ps, c_url.as_ptr(), ptr::null(), &mut opts);
        drop(Dictionary::own(opts));
        if ret < 0 {
            return Err(format!("cannot open {url}: {}", ffmpeg_next::Error::from(ret)));
        }
        Ok(Input::wrap_with_interrupt(ps, interrupt.guard))
    }
}

/// How long an observer waits when libavformat has nothing to read yet. It is 1 ms, short beside the figures
/// taken, and an observer at real-time priority must not spin a core on "try again".
const EAGAIN_WAIT: Duration = Duration::from_millis(1);

/// Whether the observers could be given real-time priority (see the module documentation), for the report.
pub static PRIORITY: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Gives the calling thread real-time priority (`SCHED_FIFO`, the lowest level), or failing that the highest
/// `nice` it may take, so that it runs as soon as a packet arrives.
fn observe_promptly() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain system calls on the calling thread (pid 0) with a valid parameter block.
    let fifo = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
    // SAFETY: as above; `gettid` names the calling thread.
    let niced = fifo || unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -10) } == 0;
    let _ = PRIORITY.set(match (fifo, niced) {
        (true, _) => "real-time (SCHED_FIFO)",
        (false, true) => "nice -10",
        (false, false) => "normal: not allowed to raise it, so keyframe and first-frame times may come late",
    });
}

fn is_video(input: &Input, index: usize) -> bool {
    input.stream(index).is_some_and(|s| s.parameters().medium() == media::Type::Video)
}

/// A player of one RTMP stream, started before anything publishes there; notes when the first video frame
/// arrives (nginx-rtmp holds a player of an unpublished stream until a publisher comes).
pub struct FirstFrameReader {
    thread: JoinHandle<Result<u64, String>>,
}

impl FirstFrameReader {
    pub fn start(url: String, within: Duration) -> FirstFrameReader {
        let thread = thread::Builder::new()
            .name("first-frame".into())
            .spawn(move || {
                observe_promptly();
                let deadline = Instant::now() + within;
                let mut options = Dictionary::new();
                options.set("rw_timeout", &within.as_micros().to_string());
                let mut input = open_raw(&url, options, deadline, Arc::new(AtomicBool::new(false)))?;
                let mut packet = Packet::empty();
                loop {
                    match packet.read(&mut input) {
                        Ok(()) if is_video(&input, packet.stream()) => return Ok(unix_us()),
                        Ok(()) => {}
                        Err(ffmpeg_next::Error::Other { errno: ffmpeg_next::error::EAGAIN }) => {
                            thread::sleep(EAGAIN_WAIT);
                        }
                        Err(e) => return Err(format!("reading {url}: {e}")),
                    }
                }
            })
            .expect("cannot start a reader thread");
        FirstFrameReader { thread }
    }

    /// The Unix time (µs) the first video frame arrived.
    pub fn wait(self) -> Result<u64, String> {
        self.thread.join().map_err(|_| "reader panicked".to_owned())?
    }
}

/// An RTSP client of a camera mount that records when each keyframe arrives.
pub struct KeyframeMonitor {
    stop: Arc<AtomicBool>,
    keyframes: Arc<Mutex<Vec<u64>>>,
    thread: Option<JoinHandle<()>>,
}

impl KeyframeMonitor {
    pub fn start(url: String) -> KeyframeMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let keyframes = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, keyframes) = (Arc::clone(&stop), Arc::clone(&keyframes));
            thread::Builder::new()
                .name("keyframes".into())
                .spawn(move || {
                    observe_promptly();
                    let mut options = Dictionary::new();
                    options.set("rtsp_transport", "tcp");
                    options.set("timeout", "10000000");
                    let deadline = Instant::now() + Duration::from_secs(3600);
                    let Ok(mut input) = open_raw(&url, options, deadline, Arc::clone(&stop)) else { return };
                    let mut packet = Packet::empty();
                    while !stop.load(Ordering::Relaxed) {
                        match packet.read(&mut input) {
                            Ok(()) if packet.is_key() && is_video(&input, packet.stream()) => {
                                keyframes.lock().expect("keyframe list").push(unix_us());
                            }
                            Ok(()) => {}
                            Err(ffmpeg_next::Error::Other { errno: ffmpeg_next::error::EAGAIN }) => {
                                thread::sleep(EAGAIN_WAIT);
                            }
                            Err(_) => return,
                        }
                    }
                })
                .expect("cannot start a monitor thread")
        };
        KeyframeMonitor { stop, keyframes, thread: Some(thread) }
    }

    /// Keyframe arrival times so far (Unix µs).
    pub fn keyframes(&self) -> Vec<u64> {
        self.keyframes.lock().expect("keyframe list").clone()
    }

    /// How many keyframes have arrived so far.
    pub fn keyframe_count(&self) -> usize {
        self.keyframes.lock().expect("keyframe list").len()
    }
}

impl Drop for KeyframeMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
