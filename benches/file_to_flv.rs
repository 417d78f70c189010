//! The FFmpeg work under camgate's per-frame path, from a short file into FLV: decode → libx264 with
//! camgate's default settings (veryfast, zerolatency, CRF 23, GOP 2 s, no B-frames, one thread) → FLV, and
//! packet copy → FLV.
//!
//! camgate's pipeline itself only opens `rtsp://` cameras (by design: no request may make it read files), so
//! these benches drive the same libraries with the same settings directly. They are the floor camgate's
//! per-frame CPU (examples/bench) is compared against: what camgate costs above them is its own.
//!
//! `cargo bench --bench file_to_flv`; needs the `ffmpeg` CLI to make the input clip.

use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ffmpeg_next::{Dictionary, Packet, Rational, codec, encoder, format, media};

const FRAMES: u64 = 50;

/// A 2 s 720p25 H.264 + AAC clip with a 1 s GOP, made once per run.
fn clip(dir: &Path) -> PathBuf {
    let path = dir.join("clip.mp4");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=1280x720:rate=25:duration={}", FRAMES / 25))
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-bf", "0", "-c:a", "aac"])
        .arg(&path)
        .status()
        .expect("the ffmpeg CLI makes the input clip");
    assert!(status.success(), "ffmpeg could not make the clip");
    path
}

fn open_flv(path: &Path) -> format::context::Output {
    format::output_as(path, "flv").expect("an FLV output")
}

/// Packets of the clip's video stream copied into FLV.
fn copy(input: &Path, output: &Path) -> u64 {
    let mut ictx = format::input(input).expect("clip opens");
    let video = ictx.streams().best(media::Type::Video).expect("video").index();
    let in_tb = ictx.stream(video).expect("video").time_base();
    let mut octx = open_flv(output);
    {
        let mut ost = octx.add_stream(encoder::find(codec::Id::None)).expect("stream");
        ost.set_parameters(ictx.stream(video).expect("video").parameters());
        // SAFETY: codec_tag 0 lets the FLV muxer choose its own tag, as ffmpeg's remux example does.
        unsafe { (*ost.parameters().as_mut_ptr()).codec_tag = 0 };
    }
    octx.write_header().expect("header");
    let out_tb = octx.stream(0).expect("stream").time_base();
    let mut n = 0;
    for (stream, mut packet) in ictx.packets() {
        if stream.index() != video {
            continue;
        }
        packet.rescale_ts(in_tb, out_tb);
        packet.set_stream(0);
        packet.set_position(-1);
        packet.write_interleaved(&mut octx).expect("write");
        n += 1;
    }
    octx.write_trailer().expect("trailer");
    n
}

/// The clip's video decoded and encoded as camgate encodes it, into FLV.
fn transcode(input: &Path, output: &Path) -> u64 {
    let mut ictx = format::input(input).expect("clip opens");
    let stream = ictx.streams().best(media::Type::Video).expect("video");
    let (video, in_tb) = (stream.index(), stream.time_base());
    let mut decoder = codec::context::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().video())
        .expect("decoder");
    let mut octx = open_flv(output);
    let x264 = encoder::find_by_name("libx264").expect("libx264");
    let mut ctx = codec::context::Context::new_with_codec(x264);
    ctx.set_threading(codec::threading::Config::count(1));
    let mut enc = ctx.encoder().video().expect("video encoder");
    enc.set_width(decoder.width());
    enc.set_height(decoder.height());
    enc.set_format(format::Pixel::YUV420P);
    enc.set_time_base(in_tb);
    enc.set_frame_rate(Some(Rational(25, 1)));
    enc.set_gop(50);
    enc.set_max_b_frames(0);
    enc.set_flags(codec::Flags::GLOBAL_HEADER);
    let mut options = Dictionary::new();
    for (k, v) in [("preset", "veryfast"), ("tune", "zerolatency"), ("crf", "23"), ("sc_threshold", "0")] {
        options.set(k, v);
    }
    let mut enc = enc.open_with(options).expect("libx264 opens");
    octx.add_stream(x264).expect("stream").set_parameters(&enc);
    octx.write_header().expect("header");
    let out_tb = octx.stream(0).expect("stream").time_base();
    let mut frame = ffmpeg_next::frame::Video::empty();
    let mut encoded = Packet::empty();
    let mut n = 0;
    let mut drain = |enc: &mut encoder::Video, octx: &mut format::context::Output, n: &mut u64| {
        while enc.receive_packet(&mut encoded).is_ok() {
            encoded.rescale_ts(in_tb, out_tb);
            encoded.set_stream(0);
            encoded.write_interleaved(octx).expect("write");
            *n += 1;
        }
    };
    let packets: Vec<Packet> = ictx.packets().filter(|(s, _)| s.index() == video).map(|(_, p)| p).collect();
    for packet in packets.iter().map(Some).chain([None]) {
        match packet {
            Some(p) => decoder.send_packet(p).expect("decode"),
            None => decoder.send_eof().expect("decoder eof"),
        }
        while decoder.receive_frame(&mut frame).is_ok() {
            let pts = frame.timestamp();
            frame.set_pts(pts);
            frame.set_kind(ffmpeg_next::picture::Type::None);
            enc.send_frame(&frame).expect("encode");
            drain(&mut enc, &mut octx, &mut n);
        }
    }
    enc.send_eof().expect("encoder eof");
    drain(&mut enc, &mut octx, &mut n);
    octx.write_trailer().expect("trailer");
    n
}

fn file_to_flv(c: &mut Criterion) {
    ffmpeg_next::init().expect("FFmpeg initializes");
    ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    let dir = tempfile::tempdir().expect("a temp dir");
    let input = clip(dir.path());
    let output = dir.path().join("out.flv");
    let mut group = c.benchmark_group("file_to_flv_720p");
    group.throughput(Throughput::Elements(FRAMES));
    group.sample_size(10);
    group.bench_function("copy_50_frames", |b| b.iter(|| assert_eq!(copy(&input, &output), FRAMES)));
    group.bench_function("transcode_50_frames_x264_veryfast_1_thread", |b| {
        b.iter(|| assert_eq!(transcode(&input, &output), FRAMES))
    });
    group.finish();
}

criterion_group!(benches, file_to_flv);
criterion_main!(benches);
