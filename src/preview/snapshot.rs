//! Still pictures of a camera on request, without decoding on every frame.
//!
//! The camera's preview channel keeps the packets sent to its outputs since the last keyframe (see
//! [`super::Channel`]). When someone asks for a picture, only then are the GOP's H.264 packets decoded —
//! keyframe first, to the newest — and the last picture is encoded as JPEG. This works the same in copy mode,
//! where nothing else is ever decoded.

use ffmpeg_next::codec::{self, Id};
use ffmpeg_next::format::Pixel;
use ffmpeg_next::software::scaling;
use ffmpeg_next::{Packet, Rational, decoder, encoder, ffi, frame};
use thiserror::Error;

use super::CachedGop;

/// Why no picture could be made.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// The camera has sent no keyframe yet (or is not running).
    #[error("no picture yet: the camera has not sent a keyframe")]
    NoPicture,
    /// Decoding or JPEG encoding failed.
    #[error("making the picture failed: {0}")]
    Ffmpeg(#[from] ffmpeg_next::Error),
    /// The thread making the picture panicked or was cancelled.
    #[error("making the picture failed unexpectedly")]
    Crashed,
}

/// Decodes `gop` and returns its newest picture as a JPEG, at most `max_width` wide. Tens of milliseconds of
/// CPU: call it off any async runtime's threads.
pub fn jpeg(gop: &CachedGop, max_width: Option<u32>) -> Result<Vec<u8>, SnapshotError> {
    let picture = decode_last(&gop.extradata, &gop.video)?.ok_or(SnapshotError::NoPicture)?;
    encode_jpeg(&picture, max_width)
}

fn decode_last(config: &[u8], packets: &[Packet]) -> Result<Option<frame::Video>, ffmpeg_next::Error> {
    let codec = decoder::find(Id::H264).ok_or(ffmpeg_next::Error::DecoderNotFound)?;
    let mut context = codec::context::Context::new_with_codec(codec);
    // SAFETY: ffmpeg-next has no setter for extradata. The context was just allocated and is not open; the
    // buffer is allocated with av_mallocz (as FFmpeg requires, with the zeroed input padding) and handed to the
    // context, which frees it with itself.
    unsafe {
        let ctx = context.as_mut_ptr();
        let size = config.len();
        let buffer = ffi::av_mallocz(size + ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize) as *mut u8;
        if buffer.is_null() {
            return Err(ffmpeg_next::Error::Other { errno: libc::ENOMEM });
        }
        std::ptr::copy_nonoverlapping(config.as_ptr(), buffer, size);
        (*ctx).extradata = buffer;
        (*ctx).extradata_size = size as i32;
    }
    let mut decoder = context.decoder().video()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded camera's first GOP, as the channel would hand it over.
    fn recorded_gop() -> CachedGop {
        ffmpeg_next::init().unwrap();
        let path = format!("{}/tests/fixtures/recorded/h264_aac_4s.flv", env!("CARGO_MANIFEST_DIR"));
        let mut input = ffmpeg_next::format::input(&path).expect("the recording");
        let stream = input.streams().best(ffmpeg_next::media::Type::Video).unwrap();
        let index = stream.index();
        let extradata = crate::pipeline::extradata(&stream.parameters()).to_vec();
        let mut video = Vec::new();
        for (stream, packet) in input.packets() {
            if stream.index() != index {
                continue;
            }
            if packet.is_key() && !video.is_empty() {
                break;
            }
            video.push(packet);
        }
        CachedGop { extradata, video }
    }

    #[test]
    fn the_newest_picture_of_a_gop_becomes_a_jpeg_of_the_asked_width() {
        let gop = recorded_gop();
        assert!(gop.video.len() > 1 && gop.video[0].is_key());
        let jpeg = jpeg(&gop, Some(320)).unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8], "a JPEG starts with SOI");
        let mut decoder =
            codec::context::Context::new_with_codec(decoder::find(Id::MJPEG).unwrap()).decoder().video().unwrap();
        decoder.send_packet(&Packet::copy(&jpeg)).unwrap();
        let mut picture = frame::Video::empty();
        decoder.receive_frame(&mut picture).unwrap();
        assert_eq!(picture.width(), 320);
    }

    #[test]
    fn no_keyframe_no_picture() {
        let mut gop = recorded_gop();
        gop.video.clear();
        assert!(matches!(jpeg(&gop, None), Err(SnapshotError::NoPicture)));
    }
}
