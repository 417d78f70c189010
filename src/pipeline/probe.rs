//! Stream probing (`avformat_find_stream_info`): which of a camera's streams it decodes, and with what.
//!
//! Probing fills in what the camera's SDP leaves out by decoding a little of each stream. Each decoder it
//! opens zero-fills a context of several hundred KiB (an AAC decoder's is 1.3 MiB), an H.264 decoder then
//! decodes at least seven pictures into buffers of a megabyte or more (720p) to measure how deep the camera
//! reorders frames, and all of it is freed when probing ends. glibc maps blocks that large afresh and unmaps
//! them on free, so every camera start paid page faults for all of it and unmaps that stop every thread of
//! the process for a TLB shootdown. With 200 cameras starting at once that was some 60 % of the page faults
//! of the start, on a machine whose cores the starting cameras already filled (BENCHMARKS.md, "First frames:
//! what the start costs").
//!
//! A stream camgate copies needs none of it when the camera's description already says what probing would
//! find ([`describe`]):
//! - H.264 video: the picture size and pixel format, from the SPS of the SDP's `sprop-parameter-sets`
//!   (`h264_sps`), provided that SPS also rules out reordering (picture order count type 2, or a bitstream
//!   restriction of zero reordered frames): the reorder depth is what libavformat's timestamps for a copied
//!   stream need, and the one thing only decoding would otherwise tell.
//! - AAC-LC audio: the sample rate and channel count, which the SDP gives, the frame length, which its
//!   configuration gives, and the sample format of FFmpeg's decoder.
//!
//! FFmpeg has no option to probe a stream without decoding it. Decoders its `codec_whitelist` refuses are
//! the way: the probe then takes the streams' parameters as they stand, and still reads the first packets
//! for their timestamps. It is all the camera's streams or none ([`plan`]). FFmpeg's lines about the
//! refusals are camgate's doing and are not logged as errors, and they tell which streams probing really did
//! not decode (`ffmpeg_log::with_refused_decoders`, [`confirmed`]); the session reports those
//! (`SessionInfo::described_by_sdp`). Every other camera is probed as before.

use std::ptr;

use ffmpeg_next::format::context::Input;
use ffmpeg_next::{Dictionary, ffi};

use super::h264_sps;

/// A yes or no for a camera's video and for its audio: which streams camgate will copy if their codecs allow
/// (H.264 video, AAC audio), as its settings say before the camera is opened; which streams probing did not
/// decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VideoAudio {
    pub video: bool,
    pub audio: bool,
}

/// How probing is to run on one camera's streams (see [`plan`]).
pub(crate) struct Plan {
    /// Decoder options for each stream, in stream order, as dictionaries for FFmpeg to take (NULL for none).
    pub options: Vec<*mut ffi::AVDictionary>,
    /// The streams probing is meant not to decode: all of the camera's video and audio, or none. Whether
    /// FFmpeg did refuse their decoders, [`confirmed`] says after probing.
    pub described: VideoAudio,
}

/// Plans probing for `input`'s streams. When the camera's description says everything probing would decode
/// its video and audio streams for ([`describe`]), their parameters are filled in and the format context's
/// `codec_whitelist` is set to refuse every decoder, until [`finish`]. Otherwise every stream is probed as
/// before, with nothing changed.
///
/// All or nothing, because FFmpeg 5.1 to 7 hand each decoder they open while probing the options of the first
/// stream still lacking information, not those of the stream the decoder is for: a refusal in one stream's
/// options would refuse, or fail to refuse, the wrong decoder. The format context's whitelist applies to all.
pub(crate) fn plan(input: &mut Input, copies: VideoAudio) -> Plan {
    // SAFETY: `input` owns an open format context; its `streams` array holds `nb_streams` valid streams, each
    // with its own valid codec parameters, which nothing else touches while `input` is borrowed mutably here.
    let mut parameters: Vec<&mut ffi::AVCodecParameters> = unsafe {
        let context = &*input.as_mut_ptr();
        std::slice::from_raw_parts(context.streams, context.nb_streams as usize)
            .iter()
            .map(|&stream| &mut *(*stream).codecpar)
            .collect()
    };
    let is_av = |p: &ffi::AVCodecParameters| {
        matches!(p.codec_type, ffi::AVMediaType::AVMEDIA_TYPE_VIDEO | ffi::AVMediaType::AVMEDIA_TYPE_AUDIO)
    };
    let fills: Vec<Option<Fill>> =
        parameters.iter().map(|p| if is_av(p) { describe(p, copies) } else { Some(Fill::Nothing) }).collect();
    if parameters.iter().any(|p| is_av(p)) && fills.iter().all(Option::is_some) {
        let mut described = VideoAudio::default();
        for (p, fill) in parameters.iter_mut().zip(fills) {
            match fill {
                Some(Fill::Video(sps)) => {
                    fill_video(p, &sps);
                    described.video = true;
                }
                Some(Fill::Audio { frame_size }) => {
                    fill_audio(p, frame_size);
                    described.audio = true;
                }
                _ => {}
            }
        }
        // SAFETY: the context is open and owned by `input`; `codec_whitelist` is one of its string options,
        // copied by FFmpeg. `finish` clears it.
        let set =
            unsafe { ffi::av_opt_set(input.as_mut_ptr().cast(), c"codec_whitelist".as_ptr(), c"none".as_ptr(), 0) };
        if set >= 0 {
            return Plan { options: vec![ptr::null_mut(); parameters.len()], described };
        }
        // Not refused after all: probing decodes as before and overwrites what was filled in.
    }
    let options = parameters
        .iter()
        .map(|p| {
            if p.codec_type != ffi::AVMediaType::AVMEDIA_TYPE_VIDEO {
                return ptr::null_mut();
            }
            // Probing decodes the camera's video only to learn the picture's size and pixel format, which the
            // first decoded slice gives. But until the decoder has put out a few pictures (7 for H.264) it
            // decodes every frame it reads, and an H.264 decoder puts out nothing before the camera's next
            // keyframe: every frame of the wait is decoded, for nothing. `showall` lets those frames out (grey,
            // and thrown away with the probe), so the count is reached after a few frames and the rest are only
            // parsed: 40 % less CPU for a camera waiting for its keyframe (BENCHMARKS.md, "First frames when
            // 200 cameras start at once"). (FFmpeg adds one thread to these options itself, as it does without
            // them.)
            let mut options = Dictionary::new();
            options.set("flags2", "+showall");
            // SAFETY: `disown` hands the dictionary over; the caller passes it to FFmpeg and frees what is left.
            unsafe { options.disown() }
        })
        .collect();
    Plan { options, described: VideoAudio::default() }
}

/// Undoes what [`plan`] set on the format context, once probing is over.
pub(crate) fn finish(input: &mut Input) {
    // SAFETY: the context is open and owned by `input`; a NULL string option is FFmpeg's default.
    unsafe { ffi::av_opt_set(input.as_mut_ptr().cast(), c"codec_whitelist".as_ptr(), ptr::null(), 0) };
}

/// Which of the streams [`plan`] meant to keep from decoding (`candidates`) probing did keep from it: those
/// whose decoder FFmpeg reported refusing (`refused`, from `ffmpeg_log::with_refused_decoders`).
pub(crate) fn confirmed(candidates: VideoAudio, refused: &[String]) -> VideoAudio {
    let refused = |codec: &str| refused.iter().any(|r| r == codec);
    VideoAudio { video: candidates.video && refused("h264"), audio: candidates.audio && refused("aac") }
}

/// What to fill in for one stream.
enum Fill {
    /// A stream probing decodes nothing of anyway (data, subtitles): nothing.
    Nothing,
    Video(h264_sps::SequenceInfo),
    Audio {
        frame_size: i32,
    },
}

/// What probing would decode the stream of `parameters` to learn, when camgate copies the stream and the
/// camera's description says it (see the module documentation); `None` when it does not.
fn describe(parameters: &ffi::AVCodecParameters, copies: VideoAudio) -> Option<Fill> {
    let extradata = if parameters.extradata.is_null() || parameters.extradata_size <= 0 {
        &[][..]
    } else {
        // SAFETY: `extradata` points to `extradata_size` readable bytes, owned by the parameters.
        unsafe { std::slice::from_raw_parts(parameters.extradata, parameters.extradata_size as usize) }
    };
    match parameters.codec_id {
        ffi::AVCodecID::AV_CODEC_ID_H264 if copies.video => {
            h264_sps::from_extradata(extradata).filter(|sps| sps.reorders == Some(false)).map(Fill::Video)
        }
        ffi::AVCodecID::AV_CODEC_ID_AAC if copies.audio => {
            let frame_size = aac_lc_frame_size(extradata)?;
            (parameters.sample_rate > 0 && parameters.ch_layout.nb_channels > 0).then_some(Fill::Audio { frame_size })
        }
        _ => None,
    }
}

fn fill_video(parameters: &mut ffi::AVCodecParameters, sps: &h264_sps::SequenceInfo) {
    // `h264_sps` caps both sides at 16384.
    (parameters.width, parameters.height) = (sps.width as i32, sps.height as i32);
    parameters.video_delay = 0;
    // What FFmpeg's H.264 decoder reports for 8-bit 4:2:0, the only kind `h264_sps` describes.
    let format =
        if sps.full_range { ffi::AVPixelFormat::AV_PIX_FMT_YUVJ420P } else { ffi::AVPixelFormat::AV_PIX_FMT_YUV420P };
    parameters.format = format as i32;
}

fn fill_audio(parameters: &mut ffi::AVCodecParameters, frame_size: i32) {
    parameters.frame_size = frame_size;
    // The sample format of FFmpeg's AAC decoder.
    parameters.format = ffi::AVSampleFormat::AV_SAMPLE_FMT_FLTP as i32;
}

/// The frame length of an AAC-LC stream from its AudioSpecificConfig (ISO 14496-3 1.6.2.1): 1024 samples, or
/// 960 with `frameLengthFlag`. `None` for other object types or a configuration too short to say.
fn aac_lc_frame_size(config: &[u8]) -> Option<i32> {
    let bits = u64::from_be_bytes(std::array::from_fn(|i| config.get(i).copied().unwrap_or(0)));
    let have = config.len().min(8) * 8;
    let object_type = bits >> 59;
    if object_type != 2 {
        return None;
    }
    // After the object type (5 bits): a 4-bit frequency index, followed by a 24-bit frequency when it is 15;
    // then the 4-bit channel configuration and the GASpecificConfig, whose first bit is frameLengthFlag.
    let frequency_index = bits >> 55 & 0xf;
    let flag_at = if frequency_index == 15 { 5 + 4 + 24 + 4 } else { 5 + 4 + 4 };
    if flag_at >= have {
        return None;
    }
    Some(if bits >> (63 - flag_at) & 1 == 1 { 960 } else { 1024 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aac_lc_configurations_give_their_frame_length() {
        // 48 kHz mono AAC-LC, as the fixture's cameras announce it (`config=1188`).
        assert_eq!(aac_lc_frame_size(&[0x11, 0x88]), Some(1024));
        // The same with frameLengthFlag set.
        assert_eq!(aac_lc_frame_size(&[0x11, 0x8c]), Some(960));
        // An explicit 24-bit frequency (index 15) moves the flag 24 bits on: 0b00010_1111, 48000, 0001, 1.
        let explicit = (2u64 << 59) | (15 << 55) | (48_000 << 31) | (1 << 27) | (1 << 26);
        assert_eq!(aac_lc_frame_size(&explicit.to_be_bytes()[..5]), Some(960));
        assert_eq!(aac_lc_frame_size(&explicit.to_be_bytes()[..4]), None, "cut before the flag");
    }

    #[test]
    fn other_aac_object_types_and_short_configurations_are_probed() {
        // HE-AAC (object type 5, `config=2b11…`) and AAC Main (1).
        assert_eq!(aac_lc_frame_size(&[0x2b, 0x11, 0x88, 0x00]), None);
        assert_eq!(aac_lc_frame_size(&[0x09, 0x88]), None);
        assert_eq!(aac_lc_frame_size(&[0x11]), None);
        assert_eq!(aac_lc_frame_size(&[]), None);
    }
}
