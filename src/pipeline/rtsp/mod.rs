//! camgate's own RTSP reader (`rtsp_reader = "buffered"`): RTSP over one TCP connection with RTP interleaved,
//! read in large pieces, its packets handed to libavformat's SDP demuxer through a custom I/O context
//! (`sdp_flags=custom_io`), which depacketizes them exactly as libavformat's RTSP demuxer would — the same
//! `rtpdec` code, codec handlers and timestamp logic behind both.
//!
//! Why: a copied camera costs almost nothing but system calls. libavformat's RTSP demuxer reads each
//! interleaved frame's 4-byte header and then its payload, each behind its own `poll` and `recv`: about ten
//! system calls per packet a camera sends (BENCHMARKS.md, "Where copy's CPU goes"). Here one `recv` takes what
//! the socket holds — a whole batch of a copying camera's packets after `read_batch_ms` — and the frames are cut
//! out of the buffer in memory.
//!
//! What it does not do is left to libavformat's reader, which then opens the camera instead (logged): RTSPS,
//! UDP and HTTP tunnelling, redirects, cameras whose media share a payload type. A camera that refuses TCP
//! (461) fails as it does with libavformat, so `transport = "auto"` falls back to UDP as before.
//!
//! Seeing the packets before libavformat also lets it spare libavformat's H.264 parser the picture parameter
//! set most cameras repeat at every keyframe, and put it back after ([`parameter_sets`]).
//!
//! Layout: [`framing`] cuts the byte stream, [`sdp`] reads the description, [`auth`] answers 401s,
//! [`connection`] runs the session, [`parameter_sets`] handles the repeated PPS, and this file joins it to
//! libavformat.

mod auth;
mod connection;
mod framing;
mod parameter_sets;
mod sdp;

use std::os::raw::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use ffmpeg_next::ffi;

use self::connection::Connection;
pub(crate) use self::connection::RtspError;
use self::parameter_sets::RepeatedPps;
use super::interrupt::Interrupter;
use super::rtmp::Outbox;

/// The custom I/O context's own buffer. libavformat reads the SDP and every packet straight into its own
/// buffers (the context is a "direct" one), so this only backs the receiver reports it writes, which are
/// dropped.
const AVIO_BUFFER: c_int = 4096;
/// Blank lines before the description. `avformat_open_input` first reads 10 bytes of any custom input looking
/// for an ID3 tag, then tries to seek back, which a live connection cannot: what it takes must be bytes the
/// SDP parser skips anyway (it skips leading white space on every line).
const LEADING_BLANK: &[u8] = b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n";

/// The largest payload of an interleaved frame.
const LARGEST_PACKET: usize = 65_535;

/// What the custom I/O context reads from: the description first, then the session's packets.
struct Bridge {
    connection: Connection,
    description: Vec<u8>,
    /// How much of `description` has been read.
    read: usize,
    /// Whether libavformat has begun reading packets (see [`read`]).
    reading_packets: bool,
    /// The last error, for the camera's diagnosis.
    error: Option<RtspError>,
    /// Repeated H.264 PPS kept from libavformat's parser (see [`parameter_sets`]).
    parameter_sets: RepeatedPps,
}

/// A playing session joined to a custom I/O context, for a format context to read. Must outlive that
/// context (libavformat does not free a caller's I/O context): declare it after the `Input` it feeds.
pub(crate) struct Attached {
    avio: *mut ffi::AVIOContext,
    bridge: *mut Bridge,
}

impl Attached {
    /// Plays `url` (its host settled by the caller) and makes the I/O context.
    pub(crate) fn play(url: &str, interrupter: &Arc<Interrupter>) -> Result<Attached, RtspError> {
        let (connection, sdp) = Connection::play(url, interrupter)?;
        let parameter_sets = RepeatedPps::new(&sdp);
        let description = [LEADING_BLANK, &sdp].concat();
        let bridge = Box::into_raw(Box::new(Bridge {
            connection,
            description,
            read: 0,
            reading_packets: false,
            error: None,
            parameter_sets,
        }));
        // SAFETY: av_malloc's block is given to the new context, which owns it from then on (freed in `Drop`);
        // `bridge` stays valid until `Drop`, after the context is gone. The callbacks match the signature
        // libavformat calls.
        let avio = unsafe {
            let buffer = ffi::av_malloc(AVIO_BUFFER as usize) as *mut u8;
            if buffer.is_null() {
                drop(Box::from_raw(bridge));
                return Err(RtspError::Io(std::io::Error::from_raw_os_error(libc::ENOMEM)));
            }
            // write_flag 1 with no write callback: libavformat hands packet-based custom input one packet per
            // read call only in this mode; what it writes (RTCP receiver reports) goes nowhere.
            let avio = ffi::avio_alloc_context(buffer, AVIO_BUFFER, 1, bridge as *mut c_void, Some(read), None, None);
            if avio.is_null() {
                ffi::av_free(buffer as *mut c_void);
                drop(Box::from_raw(bridge));
                return Err(RtspError::Io(std::io::Error::from_raw_os_error(libc::ENOMEM)));
            }
            (*avio).direct = 1;
            avio
        };
        Ok(Attached { avio, bridge })
    }

    /// The I/O context, for `AVFormatContext::pb`.
    pub(crate) fn avio(&self) -> *mut ffi::AVIOContext {
        self.avio
    }

    /// Lets the camera's packets gather for `linger` whenever a read finds the socket empty
    /// (`pipeline::read_batch`); zero: a read waits for the next packet at once.
    pub(crate) fn set_linger(&mut self, linger: Duration) {
        // SAFETY: as in `take_error`: `bridge` is valid until `Drop`, and no read is running while the caller
        // holds `&mut self`.
        unsafe { (*self.bridge).connection.set_linger(linger) }
    }

    /// Holds `outbox`'s media until this reader is about to wait (`pipeline::held_sends`).
    pub(crate) fn hold_sends(&mut self, outbox: &Outbox) {
        // SAFETY: as in `take_error`: `bridge` is valid until `Drop`, and no read is running while the caller
        // holds `&mut self`.
        unsafe { (*self.bridge).connection.hold_sends(outbox) }
    }

    /// Puts back, in a video packet the demuxer handed out, the repeated PPS this reader kept from its parser
    /// (see [`parameter_sets`]): from then on the packet is byte for byte what the camera sent.
    pub(crate) fn restore_parameter_sets(&mut self, packet: &mut ffmpeg_next::Packet) {
        use ffmpeg_next::packet::Mut;
        // SAFETY: as in `take_error`: `bridge` is valid until `Drop`, and no read is running while the caller
        // holds `&mut self`.
        let repeats = unsafe { &mut (*self.bridge).parameter_sets };
        if !repeats.is_waiting() {
            return;
        }
        // SAFETY: `packet` is a valid AVPacket the caller owns; this gives it data of its own if it shares it.
        if unsafe { ffi::av_packet_make_writable(packet.as_mut_ptr()) } < 0 {
            return;
        }
        if let Some(data) = packet.data_mut() {
            repeats.restore(data);
        }
    }

    /// The error that ended the last read, if it was the session's.
    pub(crate) fn take_error(&mut self) -> Option<RtspError> {
        // SAFETY: `bridge` is valid until `Drop`; libavformat uses it only inside a read call on this thread,
        // and none is running while the caller holds `&mut self`.
        unsafe { (*self.bridge).error.take() }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // SAFETY: the format context that used `avio` is closed (the caller's contract); the context and its
        // buffer were allocated by libavformat and are freed once, here; `bridge` came from `Box::into_raw`.
        unsafe {
            if !self.avio.is_null() {
                ffi::av_freep(&mut (*self.avio).buffer as *mut *mut u8 as *mut c_void);
                ffi::avio_context_free(&mut self.avio);
            }
            drop(Box::from_raw(self.bridge));
        }
    }
}

/// libavformat's read callback: the description, then end-of-file to every read of it, then one RTP/RTCP
/// packet per call.
///
/// libavformat reads the description until end-of-file in small pieces (1 KiB in FFmpeg 5.1, up to 16 KiB
/// elsewhere), and may ask once more after the first end-of-file; then it reads packets into its receive
/// buffer, 80 KiB. A read too small for the largest interleaved packet is therefore still one of the
/// description's, and gets end-of-file; the first large one starts the packets.
unsafe extern "C" fn read(opaque: *mut c_void, buf: *mut u8, size: c_int) -> c_int {
    if opaque.is_null() || buf.is_null() || size <= 0 {
        return ffi::AVERROR(libc::EINVAL);
    }
    // SAFETY: `opaque` is the `Bridge` this context was made with, alive until after the context; libavformat
    // calls this from the camera's thread only, with `buf` writable for `size` bytes.
    let (bridge, out) = unsafe { (&mut *(opaque as *mut Bridge), std::slice::from_raw_parts_mut(buf, size as usize)) };
    if !bridge.reading_packets {
        let rest = &bridge.description[bridge.read..];
        if !rest.is_empty() {
            let n = rest.len().min(out.len());
            out[..n].copy_from_slice(&rest[..n]);
            bridge.read += n;
            return n as c_int;
        }
        if out.len() < LARGEST_PACKET {
            return ffi::AVERROR_EOF;
        }
        bridge.reading_packets = true;
    }
    match catch_unwind(AssertUnwindSafe(|| bridge.connection.read_packet(out))) {
        Ok(Ok(n)) => {
            bridge.parameter_sets.hide(&mut out[..n]);
            n as c_int
        }
        Ok(Err(error)) => {
            let code = error.to_ffmpeg().into();
            bridge.error = Some(error);
            code
        }
        Err(_) => ffi::AVERROR_BUG,
    }
}

/// Options for the SDP demuxer reading an [`Attached`] session.
pub(crate) fn demuxer_options(options: &mut ffmpeg_next::Dictionary) {
    options.set("sdp_flags", "custom_io");
    // TCP delivers in order: nothing to reorder, and a queue would only hold packets back.
    options.set("reorder_queue_size", "0");
    // The demuxer opens nothing itself with custom I/O; refuse every protocol should it try.
    options.set("protocol_whitelist", "none");
}

/// The SDP demuxer.
pub(crate) fn sdp_format() -> *const ffi::AVInputFormat {
    // SAFETY: a lookup in libavformat's static table by a NUL-terminated name.
    unsafe { ffi::av_find_input_format(c"sdp".as_ptr()) }
}
