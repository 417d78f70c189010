//! The offline slate's picture: a few lines of text ("CAMERA OFFLINE", the camera's name, how long it has been
//! away) drawn with a built-in 5×7 bitmap font on a dark frame and encoded with libx264.
//!
//! A font file would have to be found on the host (a container image often has none) and FreeType linked in;
//! block letters need neither and read fine at any size. The picture is drawn straight into the Y plane of a
//! YUV 4:2:0 frame (chroma stays neutral grey): a handful of rectangles per second.

use ffmpeg_next::codec::{self, Id};
use ffmpeg_next::format::Pixel;
use ffmpeg_next::{Dictionary, Packet, Rational, encoder, frame};

/// Frames per second of the slate: enough for players, almost free to encode.
pub const FPS: i32 = 5;
/// The time base of the slate's packets (milliseconds).
pub const TIME_BASE: Rational = Rational(1, 1000);

const BACKGROUND: u8 = 40;
const INK: u8 = 230;
const GLYPH_W: usize = 5;
const GLYPH_H: usize = 7;

/// An x264 encoder for the slate at the output's picture size.
pub struct SlateEncoder {
    encoder: encoder::video::Encoder,
    frame: frame::Video,
    width: usize,
    height: usize,
    drawn: Vec<String>,
}

impl SlateEncoder {
    /// Opens libx264 at `width`×`height` (rounded down to even), a keyframe every second.
    pub fn new(width: u32, height: u32) -> Result<SlateEncoder, ffmpeg_next::Error> {
        let (width, height) = ((width.max(16)) & !1, (height.max(16)) & !1);
        let codec = encoder::find(Id::H264).ok_or(ffmpeg_next::Error::EncoderNotFound)?;
        let mut ctx = codec::context::Context::new_with_codec(codec);
        ctx.set_threading(codec::threading::Config::count(1));
        let mut enc = ctx.encoder().video()?;
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(TIME_BASE);
        enc.set_frame_rate(Some(Rational(FPS, 1)));
        enc.set_gop(FPS as u32);
        enc.set_max_b_frames(0);
        // The sequence header goes out once, as new extradata on the first packet (see `pipeline::slate`).
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
        let mut options = Dictionary::new();
        options.set("preset", "ultrafast");
        options.set("tune", "zerolatency");
        options.set("crf", "30");
        let encoder = enc.open_with(options)?;
        let frame = frame::Video::new(Pixel::YUV420P, width, height);
        Ok(SlateEncoder { encoder, frame, width: width as usize, height: height as usize, drawn: Vec::new() })
    }

    /// The encoder's SPS/PPS, for the output's new sequence header.
    pub fn extradata(&self) -> Vec<u8> {
        super::extradata(&codec::Parameters::from(&self.encoder)).to_vec()
    }

    /// Encodes one frame showing `lines` at `at_ms` (milliseconds, increasing) and hands out what the encoder
    /// returns (with zerolatency: that frame).
    pub fn encode(
        &mut self,
        lines: &[String],
        at_ms: i64,
        emit: &mut dyn FnMut(&mut Packet) -> Result<(), super::Halt>,
    ) -> Result<(), super::Halt> {
        if self.drawn != lines {
            self.draw(lines);
            self.drawn = lines.to_vec();
        }
        self.frame.set_pts(Some(at_ms));
        let failed = |e| super::Halt::ffmpeg(crate::model::Stage::EncodeVideo, e);
        self.encoder.send_frame(&self.frame).map_err(failed)?;
        let mut packet = Packet::empty();
        loop {
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => emit(&mut packet)?,
                Err(ffmpeg_next::Error::Other { errno: ffmpeg_next::error::EAGAIN }) | Err(ffmpeg_next::Error::Eof) => {
                    return Ok(());
                }
                Err(e) => return Err(failed(e)),
            }
        }
    }

    /// Draws `lines`, centred, the first one twice as large as the rest.
    fn draw(&mut self, lines: &[String]) {
        let (width, height) = (self.width, self.height);
        let stride = self.frame.stride(0);
        let luma = self.frame.data_mut(0);
        for row in luma.chunks_mut(stride).take(height) {
            row[..width].fill(BACKGROUND);
        }
        for plane in 1..3 {
            self.frame.data_mut(plane).fill(128);
        }
        let widest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(1).max(1);
        // The small lines' scale: fit the widest line (at double size for the first) and all the rows (the first
        // counts twice), with a margin of a row above and below.
        let rows = lines.len() + 1;
        let by_width = width / ((widest * (GLYPH_W + 1) + 2) * 2).max(1);
        let by_height = height / ((rows + 2) * (GLYPH_H + 2)).max(1);
        let small = by_width.min(by_height).max(1);
        let luma = self.frame.data_mut(0);
        let mut y = (height.saturating_sub(rows * (GLYPH_H + 2) * small)) / 2;
        for (n, line) in lines.iter().enumerate() {
            let scale = if n == 0 { small * 2 } else { small };
            let text_width = line.chars().count() * (GLYPH_W + 1) * scale;
            let x = width.saturating_sub(text_width) / 2;
            draw_text(luma, stride, (width, height), (x, y), scale, line);
            y += (GLYPH_H + 2) * scale;
        }
    }
}

/// Draws `text` with its top-left corner at `at`, each font pixel `scale` pixels square, clipped to `size`.
fn draw_text(luma: &mut [u8], stride: usize, size: (usize, usize), at: (usize, usize), scale: usize, text: &str) {
    for (n, c) in text.chars().enumerate() {
        let left = at.0 + n * (GLYPH_W + 1) * scale;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits & (1 << (GLYPH_W - 1 - col)) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    let y = at.1 + row * scale + dy;
                    if y >= size.1 {
                        break;
                    }
                    let x0 = left + col * scale;
                    let x1 = (x0 + scale).min(size.0);
                    if x0 < x1 {
                        luma[y * stride + x0..y * stride + x1].fill(INK);
                    }
                }
            }
        }
    }
}

/// The 5×7 bitmap of `c` (rows top to bottom, bit 4 the leftmost pixel); lower case is drawn as upper case,
/// anything the font lacks as `?`.
fn glyph(c: char) -> [u8; GLYPH_H] {
    match c.to_ascii_uppercase() {
        ' ' => [0; 7],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inked(encoder: &SlateEncoder) -> usize {
        let stride = encoder.frame.stride(0);
        let luma = encoder.frame.data(0);
        (0..encoder.height)
            .map(|y| luma[y * stride..y * stride + encoder.width].iter().filter(|&&p| p == INK).count())
            .sum()
    }

    #[test]
    fn draws_the_text_inside_the_picture_and_encodes_a_keyframe_first() {
        crate::pipeline::init();
        let mut encoder = SlateEncoder::new(640, 360).expect("libx264");
        let lines = ["CAMERA OFFLINE".to_owned(), "lobby-2".to_owned(), "FOR 0:00:07".to_owned()];
        let mut packets = Vec::new();
        encoder
            .encode(&lines, 0, &mut |p| {
                packets.push((p.is_key(), p.size()));
                Ok(())
            })
            .unwrap();
        let ink = inked(&encoder);
        // "CAMERA OFFLINE" alone has well over a hundred lit font pixels, each scale² screen pixels.
        assert!(ink > 2000, "text drawn: {ink} pixels");
        assert!(ink < 640 * 360 / 4, "mostly background: {ink} pixels");
        assert_eq!(packets.first().map(|p| p.0), Some(true), "zerolatency: the first frame out, a keyframe");
        assert!(!encoder.extradata().is_empty(), "SPS/PPS for the sequence header");
        // Different text, different picture; a tiny output still fits without panicking.
        let before = ink;
        encoder.draw(&["X".to_owned()]);
        assert_ne!(inked(&encoder), before);
        let mut tiny = SlateEncoder::new(16, 16).expect("libx264");
        tiny.encode(&lines, 0, &mut |_| Ok(())).unwrap();
    }

    #[test]
    fn every_camera_id_character_has_a_glyph() {
        let unknown = glyph('\u{1}');
        for c in ('a'..='z').chain('0'..='9').chain(['-', '_', ':', '.']) {
            assert_ne!(glyph(c), unknown, "{c}");
        }
    }
}
