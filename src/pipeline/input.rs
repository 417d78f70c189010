//! Opening a camera: RTSP through libavformat (or, over interleaved TCP, camgate's own reader feeding
//! libavformat's SDP demuxer) over the camera's transport (interleaved TCP by default, UDP
//! when the camera refuses TCP, an HTTP tunnel when UDP fails too), with bounded probing, a socket timeout, a
//! protocol whitelist, and an interrupt callback so a stop or a silent camera ends the open at once.

use std::ffi::CString;
use std::net::{IpAddr, ToSocketAddrs};
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use ffmpeg_next::format::{self, context::Input};
use ffmpeg_next::util::interrupt;
use ffmpeg_next::{Dictionary, device, ffi};

use super::diagnosis::transport_words;
use super::ffmpeg_log;
use super::interrupt::{Interrupter, Interruption};
use super::probe::{self, VideoAudio};
use super::rtsp::{self, Attached, RtspError};
use crate::model::host_policy::{HostPolicy, NameVerdict};
use crate::model::url::UrlHost;
use crate::model::{DemoPreset, RtspReader, SourceUrl, Timeouts, Transport};

/// Why the camera's address could not be settled.
#[derive(Debug)]
pub enum TargetError {
    /// Stopped while resolving.
    Stop,
    /// The open deadline passed while resolving.
    Timeout,
    /// The name does not resolve.
    Resolve { host: String, reason: String },
    /// The host policy refuses the host or every address it resolves to.
    Refused(String),
}

/// The URL to hand FFmpeg for `url`, after the host policy: the URL itself for an allowed address or a name
/// the policy trusts; for any other name, the URL with the name replaced by the first resolved address the
/// policy allows — so FFmpeg connects exactly where the check was made, and a name that resolves elsewhere a
/// moment later (DNS rebinding) cannot slip past. `None` for the demo camera.
///
/// Resolution runs on a helper thread so a stop or the open deadline (armed by the caller) ends the wait at
/// once; the helper finishes on its own.
pub fn settle_target(
    url: &SourceUrl,
    policy: &HostPolicy,
    interrupter: &Interrupter,
) -> Result<Option<String>, TargetError> {
    let Some((host, port)) = url.host_port() else { return Ok(None) };
    let name = match host {
        UrlHost::V4(ip) => return check(policy, IpAddr::V4(ip)).map(|()| Some(url.expose().to_owned())),
        UrlHost::V6(ip) => return check(policy, IpAddr::V6(ip)).map(|()| Some(url.expose().to_owned())),
        UrlHost::Name(name) => name,
    };
    match policy.check_name(&name) {
        NameVerdict::Allowed => return Ok(Some(url.expose().to_owned())),
        NameVerdict::Refused(refusal) => return Err(TargetError::Refused(refusal.to_string())),
        NameVerdict::ByAddress => {}
    }
    let port = port.unwrap_or(if url.scheme() == "rtsps" { 322 } else { 554 });
    let addresses = resolve(&name, port, interrupter)?;
    let mut refusals = Vec::new();
    for ip in &addresses {
        match policy.check_ip(*ip) {
            Ok(()) => return Ok(Some(url.with_ip(*ip))),
            Err(refusal) => refusals.push(refusal.to_string()),
        }
    }
    Err(TargetError::Refused(format!("{name} resolves only to refused addresses: {}", refusals.join("; "))))
}

/// After the open: if the camera redirected FFmpeg elsewhere (RTSP 301/302 — FFmpeg follows them itself), the
/// host it ended up on must pass the policy too. The redirect target has already been asked for the stream by
/// then; refusing here keeps camgate from streaming from it, and the attempt is reported.
pub fn check_redirect(input: &Input, opened: &str, policy: &HostPolicy) -> Result<(), TargetError> {
    // SAFETY: the context is open and owned by `input`; `url` is a NUL-terminated string it owns (or NULL).
    let url = unsafe {
        let url = (*input.as_ptr()).url;
        if url.is_null() {
            return Ok(());
        }
        std::ffi::CStr::from_ptr(url).to_string_lossy().into_owned()
    };
    if url == opened {
        return Ok(());
    }
    let Ok(parsed) = ::url::Url::parse(&url) else {
        return Err(TargetError::Refused(format!(
            "the camera redirected to an unreadable URL ({})",
            crate::model::redact_url(&url)
        )));
    };
    let host = match parsed.host() {
        Some(::url::Host::Ipv4(ip)) => return check(policy, IpAddr::V4(ip)),
        Some(::url::Host::Ipv6(ip)) => return check(policy, IpAddr::V6(ip)),
        Some(::url::Host::Domain(name)) => name.to_owned(),
        None => return Err(TargetError::Refused("the camera redirected to a URL without a host".into())),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return check(policy, ip);
    }
    match policy.check_name(&host) {
        NameVerdict::Allowed => Ok(()),
        NameVerdict::Refused(refusal) => Err(TargetError::Refused(format!("redirected: {refusal}"))),
        NameVerdict::ByAddress => {
            let port = parsed.port().unwrap_or(554);
            let addresses = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| TargetError::Resolve { host: host.clone(), reason: e.to_string() })?;
            for address in addresses {
                check(policy, address.ip()).map_err(|e| match e {
                    TargetError::Refused(r) => TargetError::Refused(format!("redirected: {r}")),
                    other => other,
                })?;
            }
            Ok(())
        }
    }
}

fn check(policy: &HostPolicy, ip: IpAddr) -> Result<(), TargetError> {
    policy.check_ip(ip).map_err(|refusal| TargetError::Refused(refusal.to_string()))
}

fn resolve(name: &str, port: u16, interrupter: &Interrupter) -> Result<Vec<IpAddr>, TargetError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let query = (name.to_owned(), port);
    std::thread::Builder::new()
        .name("camgate-resolve".into())
        .spawn(move || {
            let _ = tx.send(query.to_socket_addrs().map(|a| a.map(|s| s.ip()).collect::<Vec<_>>()));
        })
        .map_err(|e| TargetError::Resolve { host: name.to_owned(), reason: e.to_string() })?;
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(Ok(addresses)) if !addresses.is_empty() => return Ok(addresses),
            Ok(Ok(_)) => {
                return Err(TargetError::Resolve { host: name.to_owned(), reason: "no addresses".into() });
            }
            Ok(Err(e)) => return Err(TargetError::Resolve { host: name.to_owned(), reason: e.to_string() }),
            Err(_) => match interrupter.check() {
                // A fenced node stops its cameras: as good as a stop.
                Some(Interruption::Stop | Interruption::Fenced) => return Err(TargetError::Stop),
                Some(Interruption::Deadline) => return Err(TargetError::Timeout),
                None => {}
            },
        }
    }
}

/// How long stream probing may take, in microseconds. RTSP's SDP already names the codecs; probing only fills
/// in sizes and rates, and every extra millisecond here is a millisecond before the first frame goes out.
const ANALYZE_DURATION_US: &str = "1000000";
/// How many bytes stream probing may read.
const PROBE_SIZE: &str = "1000000";

/// An open camera, and how it is reached.
pub struct Opened {
    /// The demuxer, streams probed.
    pub input: Input,
    /// The streams whose format probing took from the camera's description, decoding nothing of them.
    pub described: VideoAudio,
    /// camgate's own RTSP session feeding `input`, when it reads the camera: must outlive `input`.
    pub session: Option<Attached>,
    /// The transport in use (`None` for the demo camera).
    pub transport: Option<Transport>,
    /// Why that transport, when `auto` had to fall back.
    pub note: Option<String>,
}

/// A demuxer whose streams are probed.
struct Probed {
    input: Input,
    /// The streams probing did not decode (see `probe`).
    described: VideoAudio,
}

/// Why [`open_camera`] failed: the last error, the transport it happened on, and what `auto` tried before.
pub struct OpenFailure {
    /// FFmpeg's error of the last attempt.
    pub error: ffmpeg_next::Error,
    /// The transport of the last attempt.
    pub transport: Transport,
    /// Each earlier attempt of `auto`, in words (`interleaved TCP: RTSP 461 …`).
    pub tried: Vec<String>,
}

/// Connects to the camera at `target` (from [`settle_target`]; `None` for the demo camera) over `wanted`, and
/// probes its streams. With [`Transport::Auto`]: interleaved TCP; if the camera refuses it (RTSP 461), UDP;
/// if UDP cannot be set up either, RTSP tunnelled over HTTP. Each attempt gets the whole open timeout. With
/// [`RtspReader::Buffered`], interleaved TCP is read by camgate's own reader (`pipeline::rtsp`).
pub fn open_camera(
    url: &SourceUrl,
    target: Option<&str>,
    wanted: Transport,
    timeouts: &Timeouts,
    reader: RtspReader,
    copies: VideoAudio,
    interrupter: &Arc<Interrupter>,
) -> Result<Opened, OpenFailure> {
    let (Some(target), None) = (target, url.demo()) else {
        let input = url.demo().map_or(Err(ffmpeg_next::Error::Bug), open_demo);
        return input
            .map(|input| Opened { input, described: VideoAudio::default(), session: None, transport: None, note: None })
            .map_err(|error| OpenFailure { error, transport: wanted, tried: Vec::new() });
    };
    let attempt = |transport| attempt(url, target, transport, timeouts, reader, copies, interrupter);
    // RTSPS is TLS on TCP: there is nothing to fall back to.
    let wanted = if url.scheme() == "rtsps" && wanted == Transport::Auto { Transport::Tcp } else { wanted };
    if wanted != Transport::Auto {
        return attempt(wanted).map(|a| a.opened(wanted, None)).map_err(|error| OpenFailure {
            error,
            transport: wanted,
            tried: Vec::new(),
        });
    }
    let mut tried = Vec::new();
    let error = match attempt(Transport::Tcp) {
        Ok(attempt) => return Ok(attempt.opened(Transport::Tcp, None)),
        // 461 Unsupported Transport, as FFmpeg reports it; anything else is not about the transport.
        Err(error @ ffmpeg_next::Error::Other { errno: libc::EPROTONOSUPPORT }) if interrupter.check().is_none() => {
            error
        }
        Err(error) => return Err(OpenFailure { error, transport: Transport::Tcp, tried }),
    };
    tried.push(format!("{}: {error} (RTSP 461 Unsupported Transport)", transport_words(Transport::Tcp)));
    for transport in [Transport::Udp, Transport::Http] {
        interrupter.arm(timeouts.open());
        match attempt(transport) {
            Ok(attempt) => {
                let note = format!(
                    "{}; using {}",
                    tried.iter().map(|t| format!("refused {t}")).collect::<Vec<_>>().join("; "),
                    transport_words(transport)
                );
                return Ok(attempt.opened(transport, Some(note)));
            }
            Err(error) if interrupter.check().is_some() || transport == Transport::Http => {
                return Err(OpenFailure { error, transport, tried });
            }
            Err(error) => tried.push(format!("{}: {error}", transport_words(transport))),
        }
    }
    unreachable!("the HTTP attempt returns either way")
}

/// A successful attempt.
struct Attempt {
    probed: Probed,
    session: Option<Attached>,
    /// Why camgate's reader left the camera to libavformat's, if it did.
    note: Option<String>,
}

impl Attempt {
    fn opened(self, transport: Transport, note: Option<String>) -> Opened {
        let note = match (self.note, note) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        let Probed { input, described } = self.probed;
        Opened { input, described, session: self.session, transport: Some(transport), note }
    }
}

/// One attempt over a forced transport, with camgate's reader where it applies (plain RTSP over interleaved
/// TCP) and the camera needs nothing only libavformat's does. The caller arms `interrupter` first.
fn attempt(
    url: &SourceUrl,
    target: &str,
    transport: Transport,
    timeouts: &Timeouts,
    reader: RtspReader,
    copies: VideoAudio,
    interrupter: &Arc<Interrupter>,
) -> Result<Attempt, ffmpeg_next::Error> {
    let mut note = None;
    if reader == RtspReader::Buffered && url.scheme() == "rtsp" && transport == Transport::Tcp {
        match open_buffered(target, copies, interrupter) {
            Ok((probed, session)) => return Ok(Attempt { probed, session: Some(session), note: None }),
            Err(Buffered::Failed(error)) => return Err(error),
            Err(Buffered::LeftToFfmpeg(reason)) => {
                interrupter.arm(timeouts.open());
                note = Some(format!("camgate's RTSP reader leaves this camera to libavformat's: {reason}"));
            }
        }
    }
    open(url, target, transport, timeouts, copies, interrupter).map(|probed| Attempt { probed, session: None, note })
}

/// How camgate's reader failed.
enum Buffered {
    /// For good: what libavformat's reader would have failed with too.
    Failed(ffmpeg_next::Error),
    /// The camera needs something only libavformat's reader does.
    LeftToFfmpeg(String),
}

/// Opens the camera with camgate's own RTSP reader, joined to libavformat's SDP demuxer (see `pipeline::rtsp`).
fn open_buffered(
    target: &str,
    copies: VideoAudio,
    interrupter: &Arc<Interrupter>,
) -> Result<(Probed, Attached), Buffered> {
    let failed = |error: RtspError| match error {
        RtspError::Unsupported(reason) => Buffered::LeftToFfmpeg(reason),
        other => {
            if !matches!(other, RtspError::Interrupted) {
                super::ffmpeg_log::reader_error(&other.to_string());
            }
            Buffered::Failed(other.to_ffmpeg())
        }
    };
    let mut session = Attached::play(target, interrupter).map_err(failed)?;
    let mut options = Dictionary::new();
    rtsp::demuxer_options(&mut options);
    options.set("analyzeduration", ANALYZE_DURATION_US);
    options.set("probesize", PROBE_SIZE);
    options.set("fpsprobesize", "0");
    match open_context(target, options, rtsp::sdp_format(), Some(session.avio()), copies, interrupter) {
        Ok(probed) => Ok((probed, session)),
        Err(error) => Err(session.take_error().map_or(Buffered::Failed(error), failed)),
    }
}

/// One attempt over a forced transport. The caller arms `interrupter` with the open timeout first.
fn open(
    url: &SourceUrl,
    target: &str,
    transport: Transport,
    timeouts: &Timeouts,
    copies: VideoAudio,
    interrupter: &Arc<Interrupter>,
) -> Result<Probed, ffmpeg_next::Error> {
    let mut options = Dictionary::new();
    options.set("rtsp_transport", transport.ffmpeg_name());
    // Socket I/O timeout (FFmpeg ≥ 5 calls it `timeout`, in µs). The interrupt deadline is the real watchdog;
    // this only keeps a read from sitting in poll() forever if the callback were never consulted.
    options.set("timeout", &(timeouts.read().as_micros()).to_string());
    options.set("analyzeduration", ANALYZE_DURATION_US);
    options.set("probesize", PROBE_SIZE);
    // Probing's own wait for the frame rate: by default FFmpeg wants 20 frames with timestamps, and on RTSP
    // (whose first packets carry none) that wait ran into the analysis limit, a full second before a camera
    // could send its first frame. The rate still comes from the SPS's timing, or from the frames read while
    // the other parameters are found. Only worth it with `probe_decoder_options`: without it, probing waits
    // for the keyframe to learn the picture size anyway.
    options.set("fpsprobesize", "0");
    // What each transport needs and nothing else, so no URL can read files or reach other protocols through
    // the demuxer: RTSP over TCP needs `tcp`, RTSPS `tls` on top, UDP `rtp` and `udp`, the tunnel `http`.
    options.set(
        "protocol_whitelist",
        match (url.scheme(), transport) {
            ("rtsps", _) => "rtsp,rtsps,tls,tcp",
            (_, Transport::Udp | Transport::UdpMulticast) => "rtsp,tcp,rtp,udp",
            (_, Transport::Http) => "rtsp,tcp,http",
            _ => "rtsp,tcp",
        },
    );
    options.set("user_agent", concat!("camgate/", env!("CARGO_PKG_VERSION")));
    open_context(target, options, ptr::null(), None, copies, interrupter)
}

/// Opens `target` with `options` — with demuxer `format` reading from `avio` when given, else as the URL
/// says — and probes its streams.
fn open_context(
    target: &str,
    options: Dictionary,
    format: *const ffi::AVInputFormat,
    avio: Option<*mut ffi::AVIOContext>,
    copies: VideoAudio,
    interrupter: &Arc<Interrupter>,
) -> Result<Probed, ffmpeg_next::Error> {
    let target = CString::new(target).map_err(|_| ffmpeg_next::Error::InvalidData)?;
    let interrupt = interrupt::new(Box::new(interrupter.callback()));
    // SAFETY: `format::input_with_interrupt_and_dictionary` by hand, because it probes without decoder options
    // and camgate needs them (`probe::decoder_options`). `ps` is checked after allocation;
    // `avformat_open_input` frees it on failure; on success ownership passes to `Input::wrap_with_interrupt`,
    // which keeps the callback's state alive as long as the context and closes the context when dropped.
    // A caller's `avio` is marked as such (`AVFMT_FLAG_CUSTOM_IO`), so closing the context leaves it to its
    // owner; `format` is NULL or a demuxer from libavformat's static table.
    let mut input = unsafe {
        let mut ps = ffi::avformat_alloc_context();
        if ps.is_null() {
            return Err(ffmpeg_next::Error::Other { errno: libc::ENOMEM });
        }
        (*ps).interrupt_callback = interrupt.interrupt;
        if let Some(avio) = avio {
            (*ps).pb = avio;
            (*ps).flags |= ffi::AVFMT_FLAG_CUSTOM_IO;
        }
        let mut opts = options.disown();
        let ret = ffi::avformat_open_input(&mut ps, target.as_ptr(), format, &mut opts);
        drop(Dictionary::own(opts));
        if ret < 0 {
            return Err(ffmpeg_next::Error::from(ret));
        }
        Input::wrap_with_interrupt(ps, interrupt.guard)
    };
    let probe::Plan { options: mut decoder_options, described: candidates } = probe::plan(&mut input, copies);
    // SAFETY: the context is open and owned by `input`, alive across the call. `decoder_options` holds one
    // dictionary (or NULL) per stream, as the call requires; FFmpeg may replace entries, and whatever it leaves
    // is freed right after, once.
    let (ret, refused) = ffmpeg_log::with_refused_decoders(|| unsafe {
        ffi::avformat_find_stream_info(input.as_mut_ptr(), decoder_options.as_mut_ptr())
    });
    probe::finish(&mut input);
    let described = probe::confirmed(candidates, &refused);
    for dictionary in decoder_options {
        // SAFETY: an entry FFmpeg left in the array (or NULL); nothing else refers to it.
        drop(unsafe { Dictionary::own(dictionary) });
    }
    if ret < 0 {
        return Err(ffmpeg_next::Error::from(ret));
    }
    // Stream probing cut short by the interrupter still "succeeds" (FFmpeg takes the interrupted read for the
    // end of the stream) and leaves a demuxer whose next read says end of stream: report the interruption —
    // a timeout or a stop — instead of a camera that ended.
    if interrupter.check().is_some() {
        return Err(ffmpeg_next::Error::Exit);
    }
    Ok(Probed { input, described })
}

/// Opens the built-in synthetic camera: libavfilter's `lavfi` input running a fixed graph — a moving test
/// pattern with the wall clock burnt in and a 440 Hz tone — paced to real time like a live camera.
fn open_demo(preset: DemoPreset) -> Result<Input, ffmpeg_next::Error> {
    let DemoPreset { width, height, fps } = preset;
    let font_size = height / 14;
    let graph = format!(
        "testsrc2=size={width}x{height}:rate={fps},\
         drawtext=text='camgate demo %{{localtime\\:%T}}':fontsize={font_size}:fontcolor=white:\
         box=1:boxcolor=black@0.6:boxborderw=8:x=(w-text_w)/2:y=h-2*text_h,\
         realtime[out0];\
         sine=frequency=440:sample_rate=48000:samples_per_frame=1024,arealtime[out1]"
    );
    let lavfi = device::input::video().find(|f| f.name() == "lavfi").ok_or(ffmpeg_next::Error::DemuxerNotFound)?;
    match format::open_with(&graph, &lavfi, Dictionary::new())? {
        format::context::Context::Input(input) => Ok(input),
        format::context::Context::Output(_) => Err(ffmpeg_next::Error::Bug),
    }
}
