//! Still pictures of a camera on request, without decoding on every frame.
//!
//! The pipeline keeps the H.264 it sends since the last keyframe in a [`KeyframeCache`] (packets are
//! reference-counted, so this is a pointer per frame, not a copy). When someone asks for a picture, only then
//! are those packets decoded — from the keyframe to the newest frame — and the last picture encoded as JPEG.
//! This works the same in copy mode, where nothing else is ever decoded.

use std::sync::Mutex;

use ffmpeg_next::codec::{self, Id};
use ffmpeg_next::format::Pixel;
use ffmpeg_next::software::scaling;
use ffmpeg_next::{Packet, Rational, decoder, encoder, frame};
use thiserror::Error;

/// Why no picture could be made.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// The camera has sent no keyframe yet (or is not running).
    #[error("no picture yet: the camera has not sent a keyframe")]
    NoPicture,
    /// Decoding or JPEG encoding failed.
    #[error("making the picture failed: {0}")]
    Ffmpeg(#[from] ffmpeg_next::Error),
}

/// H.264 packets since the last keyframe, with what is needed to decode them.
#[derive(Default)]
pub struct KeyframeCache {
    gop: Mutex<Option<Gop>>,
}

struct Gop {
    parameters: codec::Parameters,
    packets: Vec<Packet>,
}

/// A GOP longer than this is not cached further (a camera with a minutes-long GOP would otherwise grow it).
const MAX_PACKETS: usize = 600;

impl KeyframeCache {
    /// Starts a new session: pictures are decoded with `parameters` (the output stream's H.264 configuration).
    pub fn begin(&self, parameters: codec::Parameters) {
        *self.gop.lock().unwrap_or_else(|e| e.into_inner()) = Some(Gop { parameters, packets: Vec::new() });
    }

    /// Remembers a video packet about to be sent. A keyframe starts the cache over.
    pub fn push(&self, packet: &Packet) {
        let mut gop = self.gop.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gop) = gop.as_mut() else { return };
        if packet.is_key() {
            gop.packets.clear();
        } else if gop.packets.is_empty() || gop.packets.len() >= MAX_PACKETS {
            return;
        }
        gop.packets.push(packet.clone());
    }

    /// Decodes the cached GOP and returns the newest picture as a JPEG, at most `max_width` wide.
    pub fn jpeg(&self, max_width: Option<u32>) -> Result<Vec<u8>, SnapshotError> {
        // Take references under the lock, decode outside it: the camera thread must never wait on a snapshot.
        let (parameters, packets) = {
            let gop = self.gop.lock().unwrap_or_else(|e| e.into_inner());
            let gop = gop.as_ref().filter(|g| !g.packets.is_empty()).ok_or(SnapshotError::NoPicture)?;
            (gop.parameters.clone(), gop.packets.clone())
        };
        let picture = decode_last(parameters, &packets)?.ok_or(SnapshotError::NoPicture)?;
        encode_jpeg(&picture, max_width)
    }
}

fn decode_last(parameters: codec::Parameters, packets: &[Packet]) -> Result<Option<frame::Video>, ffmpeg_next::Error> {
    let mut decoder: decoder::Video = codec::context::Context::from_parameters(parameters)?.decoder().video()?;
    let mut last = None;
    let mut frame = frame::Video::empty();
    let mut drain = |decoder: &mut decoder::Video, last: &mut Option<frame::Video>| {
        while decoder.receive_frame(&mut frame).is_ok() {
            *last = Some(frame.clone());
        }
    };
    for packet in packets {
        // A packet the decoder refuses only costs that frame; the picture comes from the ones it took.
        let _ = decoder.send_packet(packet);
        drain(&mut decoder, &mut last);
    }
    let _ = decoder.send_eof();
    drain(&mut decoder, &mut last);
    Ok(last)
}

fn encode_jpeg(picture: &frame::Video, max_width: Option<u32>) -> Result<Vec<u8>, SnapshotError> {
    let (width, height) = match max_width {
        Some(max) if max < picture.width() && max >= 16 => {
            (max & !1, ((u64::from(picture.height()) * u64::from(max) / u64::from(picture.width())) as u32).max(2) & !1)
        }
        _ => (picture.width(), picture.height()),
    };
    // The MJPEG encoder of FFmpeg 5.1 takes full-range ("J") YUV.
    let mut scaler = scaling::Context::get(
        picture.format(),
        picture.width(),
        picture.height(),
        Pixel::YUVJ420P,
        width,
        height,
        scaling::Flags::BILINEAR,
    )?;
    let mut scaled = frame::Video::empty();
    scaler.run(picture, &mut scaled)?;
    scaled.set_pts(Some(0));
    let codec = encoder::find(Id::MJPEG).ok_or(ffmpeg_next::Error::EncoderNotFound)?;
    let mut enc = codec::context::Context::new_with_codec(codec).encoder().video()?;
    enc.set_width(width);
    enc.set_height(height);
    enc.set_format(Pixel::YUVJ420P);
    enc.set_time_base(Rational(1, 25));
    // Fixed quality (qscale 3 of 2–31): sharp enough to read a clock, ~50 KB at 720p.
    enc.set_flags(codec::Flags::QSCALE);
    enc.set_quality(3 * 118);
    let mut enc = enc.open_as(codec)?;
    enc.send_frame(&scaled)?;
    enc.send_eof()?;
    let mut packet = Packet::empty();
    enc.receive_packet(&mut packet)?;
    Ok(packet.data().map(<[u8]>::to_vec).unwrap_or_default())
}
