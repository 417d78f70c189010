//! FFmpeg's own log (`av_log`) routed into `tracing`, attributed to the camera whose thread logged it.
//!
//! FFmpeg explains failures in its log, not in its error codes: an RTSP camera's `401 Unauthorized` or
//! `454 Session Not Found` status line, an SDP it could not parse, a codec parameter it refused — the call
//! itself only returns "invalid data" or "server returned 4XX". So every line FFmpeg logs goes to `tracing`
//! (target `ffmpeg`, with the camera id and the FFmpeg component), and the last error-level line of each
//! camera thread is kept and attached to that camera's next error ([`take_last_error`]).
//!
//! Levels are chosen so that a healthy camera stays quiet and a failing one is explained: FFmpeg errors are
//! `warn`, its warnings (packet loss, timestamp repairs it did itself) `debug`, the rest `trace`. A camera
//! that floods errors or warnings (a broken stream can log hundreds a second) is held to [`LINES_PER_WINDOW`]
//! of them per [`WINDOW`], and how many were held back is logged when the window ends. `CAMGATE_FFMPEG_LOG` (`error`,
//! `warning`, `info`, `verbose`, `debug`) changes which FFmpeg levels are formatted at all; the default is
//! `warning`. Camera credentials in logged URLs are redacted.

use std::cell::RefCell;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use ffmpeg_next::ffi;

use crate::model::{CameraId, redact_url};

/// Most lines one thread may log per window.
pub const LINES_PER_WINDOW: u32 = 20;
/// The window the line budget applies to.
pub const WINDOW: Duration = Duration::from_secs(10);

/// FFmpeg levels above this (less severe) are dropped before formatting.
static MAX_LEVEL: AtomicI32 = AtomicI32::new(ffi::AV_LOG_WARNING);

#[derive(Default)]
struct ThreadLog {
    camera: Option<CameraId>,
    /// Strings never to log from this thread: the camera's credentials and stream key, which FFmpeg prints in
    /// its debug lines (`fname = <stream key>`, an RTSP `Authorization` it echoes).
    secrets: Vec<String>,
    last_error: Option<String>,
    window_start: Option<Instant>,
    lines: u32,
    held_back: u32,
    /// While stream probing runs with decoders camgate refused on purpose (see [`with_refused_decoders`]): the
    /// codecs FFmpeg reported refusing so far.
    refused: Option<Vec<String>>,
}

thread_local! {
    static THREAD_LOG: RefCell<ThreadLog> = RefCell::new(ThreadLog::default());
}

/// Names the camera whose pipeline runs on this thread, so FFmpeg's lines are attributed to it.
pub fn set_thread_camera(camera: Option<CameraId>) {
    THREAD_LOG.with(|log| log.borrow_mut().camera = camera);
}

/// The camera whose pipeline runs on this thread, for camgate's own lines from code that does not know it
/// (empty when none is set).
pub(crate) fn thread_camera_id() -> String {
    THREAD_LOG.with(|log| log.borrow().camera.as_ref().map(|c| c.as_str().to_owned())).unwrap_or_default()
}

/// Strings FFmpeg may print that must never reach the log from this thread (replaced by `***`). Strings
/// shorter than 3 characters are ignored (they would blank out ordinary text).
pub fn set_thread_secrets(secrets: Vec<String>) {
    let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 3).collect();
    // Longest first, so a secret containing another is hidden whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    THREAD_LOG.with(|log| log.borrow_mut().secrets = secrets);
}

/// FFmpeg's last error-level line on this thread since the last call, credentials hidden.
pub fn take_last_error() -> Option<String> {
    THREAD_LOG.with(|log| log.borrow_mut().last_error.take())
}

/// Forgets this thread's last error line (before a new operation, so an old line is not blamed for it).
pub fn clear_last_error() {
    THREAD_LOG.with(|log| log.borrow_mut().last_error = None);
}

/// Runs `probe` — stream probing that refuses its decoders on purpose (`codec_whitelist` `none`, see
/// `pipeline::probe`) — with FFmpeg's lines about those refusals logged at trace level and not kept as this
/// thread's last error: they are camgate's doing, not the camera's. Returns `probe`'s result and the codecs
/// FFmpeg refused to open (`h264`, `aac`), once for each refusal.
pub(crate) fn with_refused_decoders<T>(probe: impl FnOnce() -> T) -> (T, Vec<String>) {
    THREAD_LOG.with(|log| log.borrow_mut().refused = Some(Vec::new()));
    let result = probe();
    let refused = THREAD_LOG.with(|log| log.borrow_mut().refused.take()).unwrap_or_default();
    (result, refused)
}

/// The codec of one of FFmpeg's lines about a decoder refused by `codec_whitelist` `none`.
fn refused_codec(text: &str) -> Option<&str> {
    text.strip_prefix("Codec (")?.strip_suffix(") not on whitelist 'none'")
}

/// Installs the callback; called once from `pipeline::init`.
pub(crate) fn install() {
    let level = match std::env::var("CAMGATE_FFMPEG_LOG").as_deref() {
        Ok("quiet") => ffi::AV_LOG_QUIET,
        Ok("error") => ffi::AV_LOG_ERROR,
        Ok("info") => ffi::AV_LOG_INFO,
        Ok("verbose") => ffi::AV_LOG_VERBOSE,
        Ok("debug") => ffi::AV_LOG_DEBUG,
        _ => ffi::AV_LOG_WARNING,
    };
    MAX_LEVEL.store(level, Ordering::Relaxed);
    // SAFETY: plain calls; `callback` has the signature av_log expects and never unwinds.
    unsafe {
        ffi::av_log_set_level(level);
        ffi::av_log_set_callback(Some(callback));
    }
}

#[cfg(target_arch = "x86_64")]
type VaList = *mut ffi::__va_list_tag;
#[cfg(not(target_arch = "x86_64"))]
type VaList = ffi::va_list;

unsafe extern "C" fn callback(avcl: *mut c_void, level: c_int, fmt: *const c_char, vl: VaList) {
    if level > MAX_LEVEL.load(Ordering::Relaxed) || fmt.is_null() {
        return;
    }
    let mut line = [0 as c_char; 1024];
    let mut print_prefix: c_int = 0;
    // SAFETY: `fmt` and `vl` come from av_log and are consumed once, here; the buffer is large enough for
    // the size given (FFmpeg truncates and NUL-terminates).
    let written = unsafe {
        ffi::av_log_format_line2(avcl, level, fmt, vl, line.as_mut_ptr(), line.len() as c_int, &mut print_prefix)
    };
    if written < 0 {
        return;
    }
    // SAFETY: av_log_format_line2 NUL-terminated the buffer.
    let text = unsafe { CStr::from_ptr(line.as_ptr()) }.to_string_lossy();
    let component = component(avcl);
    // Never unwind into FFmpeg's C frames: that would abort the process.
    let _ = std::panic::catch_unwind(|| emit(level, component, text.trim_end()));
}

/// An error of camgate's own RTSP reader (`pipeline::rtsp`), which stands in for libavformat's: logged and kept
/// for the camera's next error as FFmpeg's lines are (component `rtsp`), so one path explains both readers.
/// Cut to 300 characters: the text may quote what a camera sent.
pub(crate) fn reader_error(text: &str) {
    let text: String = text.chars().take(300).collect();
    emit(ffi::AV_LOG_ERROR, "rtsp", &text);
}

/// An error of camgate's own RTMP writer (`pipeline::rtmp`), kept like [`reader_error`]'s (component `rtmp`);
/// the thread's secrets (the stream key) are hidden as in FFmpeg's lines. Cut to 300 characters: the text
/// may quote what a server sent.
pub(crate) fn writer_error(text: &str) {
    let text: String = text.chars().take(300).collect();
    emit(ffi::AV_LOG_ERROR, "rtmp", &text);
}

/// The name of the FFmpeg component that logged (`rtsp`, `h264`, `flv` …).
fn component(avcl: *mut c_void) -> &'static str {
    if avcl.is_null() {
        return "ffmpeg";
    }
    // SAFETY: av_log's context argument is, by FFmpeg's contract, a pointer to a struct whose first member is
    // a `const AVClass *` (or NULL); class_name is a static string.
    unsafe {
        let class = *(avcl as *const *const ffi::AVClass);
        if class.is_null() || (*class).class_name.is_null() {
            return "ffmpeg";
        }
        CStr::from_ptr((*class).class_name).to_str().unwrap_or("ffmpeg")
    }
}

fn emit(level: c_int, component: &str, text: &str) {
    if text.is_empty() {
        return;
    }
    let mut text = redact_line(text);
    THREAD_LOG.with(|cell| {
        let Ok(mut log) = cell.try_borrow_mut() else { return };
        let log = &mut *log;
        if let Some(refused) = log.refused.as_mut() {
            let codec = refused_codec(&text);
            if codec.is_some() || text.starts_with("Failed to open codec in avformat_find_stream_info") {
                refused.extend(codec.map(str::to_owned));
                log_line(ffi::AV_LOG_TRACE, log.camera.as_ref(), component, &text);
                return;
            }
        }
        for secret in &log.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        if level <= ffi::AV_LOG_ERROR {
            log.last_error = Some(text.clone());
        }
        let now = Instant::now();
        if log.window_start.is_none_or(|start| now.duration_since(start) >= WINDOW) {
            if log.held_back > 0 {
                let held_back = log.held_back;
                log_line(
                    ffi::AV_LOG_WARNING,
                    log.camera.as_ref(),
                    "ffmpeg",
                    &format!("{held_back} more lines held back"),
                );
            }
            log.window_start = Some(now);
            log.lines = 0;
            log.held_back = 0;
        }
        // The budget is for what is logged by default (errors, warnings): a broken stream can flood those.
        // Levels below exist only when an operator asked for them (CAMGATE_FFMPEG_LOG), and get everything.
        if level <= ffi::AV_LOG_WARNING {
            if log.lines >= LINES_PER_WINDOW {
                log.held_back += 1;
                return;
            }
            log.lines += 1;
        }
        log_line(level, log.camera.as_ref(), component, &text);
    });
}

fn log_line(level: c_int, camera: Option<&CameraId>, component: &str, text: &str) {
    let camera = camera.map(CameraId::as_str).map(str::to_owned).or_else(thread_camera).unwrap_or_default();
    if level <= ffi::AV_LOG_ERROR {
        tracing::warn!(target: "ffmpeg", camera, component, "{text}");
    } else if level <= ffi::AV_LOG_WARNING {
        tracing::debug!(target: "ffmpeg", camera, component, "{text}");
    } else {
        tracing::trace!(target: "ffmpeg", camera, component, "{text}");
    }
}

/// The camera of a thread FFmpeg started itself (decoder and encoder threads): Linux threads inherit their
/// creator's name, `cam-<id>` (truncated to 15 bytes by the kernel).
fn thread_camera() -> Option<String> {
    let mut name = [0 as c_char; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL-terminated, into the buffer.
    let ok = unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) } == 0;
    if !ok {
        return None;
    }
    // SAFETY: NUL-terminated by the kernel.
    let name = unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned();
    name.strip_prefix("cam-").map(str::to_owned)
}

/// Hides credentials in every URL-looking word of a line.
fn redact_line(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    text.split(' ')
        .map(|word| if word.contains("://") { redact_url(word) } else { word.to_owned() })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_lines_are_redacted() {
        assert_eq!(
            redact_line("Unable to open rtsp://admin:hunter2@10.0.0.5/s for reading"),
            "Unable to open rtsp://***:***@10.0.0.5/s for reading"
        );
        assert_eq!(redact_line("method DESCRIBE failed: 401 Unauthorized"), "method DESCRIBE failed: 401 Unauthorized");
    }

    #[test]
    fn thread_secrets_never_reach_the_log() {
        set_thread_secrets(vec!["stream-key-abc".into(), "pw".into()]);
        emit(ffi::AV_LOG_ERROR, "rtmp", "Proto = rtmp, path = /live/stream-key-abc, fname = stream-key-abc");
        assert_eq!(take_last_error().as_deref(), Some("Proto = rtmp, path = /live/***, fname = ***"));
        emit(ffi::AV_LOG_ERROR, "rtsp", "the password pw is too short to hide");
        assert!(take_last_error().unwrap().contains("pw"), "two-letter strings are not treated as secrets");
        set_thread_secrets(Vec::new());
    }

    #[test]
    fn error_lines_are_kept_for_the_next_error_and_floods_are_held_back() {
        set_thread_camera(Some("t".parse().unwrap()));
        emit(ffi::AV_LOG_ERROR, "rtsp", "method DESCRIBE failed: 404 Not Found");
        assert_eq!(take_last_error().as_deref(), Some("method DESCRIBE failed: 404 Not Found"));
        assert_eq!(take_last_error(), None, "taken once");
        for _ in 0..(LINES_PER_WINDOW + 5) {
            emit(ffi::AV_LOG_WARNING, "rtp", "missed packets");
        }
        THREAD_LOG.with(|log| assert_eq!(log.borrow().held_back, 5 + 1));
        set_thread_camera(None);
    }

    #[test]
    fn refusals_camgate_asked_for_are_not_the_cameras_errors() {
        let refusal = "Codec (h264) not on whitelist 'none'";
        let ((), refused) = with_refused_decoders(|| {
            emit(ffi::AV_LOG_ERROR, "h264", refusal);
            emit(ffi::AV_LOG_WARNING, "rtsp", "Failed to open codec in avformat_find_stream_info");
            emit(ffi::AV_LOG_ERROR, "aac", "Codec (aac) not on whitelist 'none'");
        });
        assert_eq!(refused, ["h264", "aac"]);
        assert_eq!(take_last_error(), None, "expected refusals are not kept");
        let ((), refused) = with_refused_decoders(|| emit(ffi::AV_LOG_ERROR, "rtsp", "method PLAY failed: 454"));
        assert!(refused.is_empty());
        assert_eq!(take_last_error().as_deref(), Some("method PLAY failed: 454"), "other errors still are");
        emit(ffi::AV_LOG_ERROR, "h264", refusal);
        assert_eq!(take_last_error().as_deref(), Some(refusal), "outside probing, a refusal is an error");
    }
}
