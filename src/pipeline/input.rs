//! Opening a camera: RTSP over TCP through libavformat, with bounded probing, a socket timeout, a protocol
//! whitelist, and an interrupt callback so a stop or a silent camera ends the open at once.

use std::sync::Arc;

use ffmpeg_next::format::{self, context::Input};
use ffmpeg_next::{Dictionary, device};

use super::interrupt::Interrupter;
use crate::model::{DemoPreset, SourceUrl, Timeouts};

/// How long stream probing may take, in microseconds. RTSP's SDP already names the codecs; probing only fills
/// in sizes and rates, and every extra millisecond here is a millisecond before the first frame goes out.
const ANALYZE_DURATION_US: &str = "1000000";
/// How many bytes stream probing may read.
const PROBE_SIZE: &str = "1000000";

/// Connects to the camera and probes its streams. The caller arms `interrupter` with the open timeout first.
pub fn open(url: &SourceUrl, timeouts: &Timeouts, interrupter: &Arc<Interrupter>) -> Result<Input, ffmpeg_next::Error> {
    if let Some(preset) = url.demo() {
        return open_demo(preset);
    }
    let mut options = Dictionary::new();
    // Interleaved RTP over the RTSP connection: one TCP socket, works through NAT and firewalls, no UDP loss.
    options.set("rtsp_transport", "tcp");
    // Socket I/O timeout (FFmpeg ≥ 5 calls it `timeout`, in µs). The interrupt deadline is the real watchdog;
    // this only keeps a read from sitting in poll() forever if the callback were never consulted.
    options.set("timeout", &(timeouts.read().as_micros()).to_string());
    options.set("analyzeduration", ANALYZE_DURATION_US);
    options.set("probesize", PROBE_SIZE);
    // RTSP over TCP needs `tcp`, RTSPS needs `tls` on top; nothing else, so no URL can read files or reach
    // other protocols through the demuxer.
    options.set(
        "protocol_whitelist",
        match url.scheme() {
            "rtsps" => "rtsp,rtsps,tls,tcp",
            _ => "rtsp,tcp",
        },
    );
    options.set("user_agent", concat!("camgate/", env!("CARGO_PKG_VERSION")));
    format::input_with_interrupt_and_dictionary(url.expose(), interrupter.callback(), options)
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
