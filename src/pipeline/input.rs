//! Opening a camera: RTSP over TCP through libavformat, with bounded probing, a socket timeout, a protocol
//! whitelist, and an interrupt callback so a stop or a silent camera ends the open at once.

use std::sync::Arc;

use ffmpeg_next::Dictionary;
use ffmpeg_next::format::{self, context::Input};

use super::interrupt::Interrupter;
use crate::spec::{SourceUrl, Timeouts};

/// How long stream probing may take, in microseconds. RTSP's SDP already names the codecs; probing only fills
/// in sizes and rates, and every extra millisecond here is a millisecond before the first frame goes out.
const ANALYZE_DURATION_US: &str = "1000000";
/// How many bytes stream probing may read.
const PROBE_SIZE: &str = "1000000";

/// Connects to the camera and probes its streams. The caller arms `interrupter` with the open timeout first.
pub fn open(url: &SourceUrl, timeouts: &Timeouts, interrupter: &Arc<Interrupter>) -> Result<Input, ffmpeg_next::Error> {
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
