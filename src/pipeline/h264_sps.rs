//! What an H.264 sequence parameter set (SPS) says about a camera's pictures: their size, and whether the
//! camera may send frames out of display order. Read from the parameter sets a camera announces in its SDP
//! (`sprop-parameter-sets`), so that stream probing need not decode pictures to learn either (`probe`).
//!
//! Only what that needs is read (H.264 7.3.2.1.1 and E.1.1); everything else is skipped by its syntax. The
//! input is the camera's, so every read is bounded: a short, malformed or unusual SPS gives `None`, never a
//! panic, and the caller then probes as it always did. Interlaced, non-4:2:0 and deeper than 8-bit streams
//! count as unusual.

/// What a sequence parameter set says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SequenceInfo {
    /// Displayed width in pixels (after cropping).
    pub width: u32,
    /// Displayed height in pixels (after cropping).
    pub height: u32,
    /// `Some(false)` when the SPS guarantees that pictures are output in decoding order: picture order count
    /// type 2, or a bitstream restriction of zero reordered frames. `Some(true)` when it announces reordering,
    /// `None` when it says nothing either way.
    pub reorders: Option<bool>,
    /// Whether the samples use the full 0–255 range (`video_full_range_flag`), which FFmpeg's decoder reports
    /// as the `yuvj420p` pixel format.
    pub full_range: bool,
}

/// The largest picture side accepted, in pixels: well beyond any camera, and small enough that no product
/// below overflows.
const MAX_SIDE: u32 = 16_384;

/// The first SPS in Annex B `extradata` (start-code separated NAL units, as libavformat stores
/// `sprop-parameter-sets`), read; `None` if there is none or it cannot be read.
pub(crate) fn from_extradata(extradata: &[u8]) -> Option<SequenceInfo> {
    nal_units(extradata).find(|nal| nal.first().is_some_and(|b| b & 0x1f == 7)).and_then(|nal| parse(&nal[1..]))
}

/// The NAL units of an Annex B byte stream (each without its start code).
fn nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    StartCodeUnits { rest: stream }
}

/// Iterates the NAL units between `00 00 01` start codes (a leading zero of a 4-byte start code is trailing
/// zero bytes of the unit before, which the parser ignores).
struct StartCodeUnits<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for StartCodeUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = find_start_code(self.rest)? + 3;
        let body = &self.rest[start..];
        let end = find_start_code(body).unwrap_or(body.len());
        self.rest = &body[end..];
        Some(&body[..end])
    }
}

fn find_start_code(data: &[u8]) -> Option<usize> {
    data.windows(3).position(|w| w == [0, 0, 1])
}

/// Reads an SPS's payload (after the one-byte NAL header).
fn parse(payload: &[u8]) -> Option<SequenceInfo> {
    let rbsp = unescape(payload);
    let mut r = Bits::new(&rbsp);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        let chroma_format_idc = r.ue()?;
        if chroma_format_idc != 1 {
            return None;
        }
        if (r.ue()?, r.ue()?) != (0, 0) {
            // bit_depth_luma_minus8, bit_depth_chroma_minus8: more than 8 bits.
            return None;
        }
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? {
            // seq_scaling_matrix_present_flag: 8 lists for 4:2:0, 6 of 16 entries and 2 of 64.
            for list in 0..8 {
                if r.bit()? {
                    skip_scaling_list(&mut r, if list < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    let poc_type = r.ue()?;
    match poc_type {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_map_units = r.ue()?.checked_add(1)?;
    if !r.bit()? {
        // frame_mbs_only_flag 0: fields, whose sizes and order the probe is better left to work out.
        return None;
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bit()? {
        // frame_cropping_flag, in units of 2 luma samples each way for progressive 4:2:0.
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        crop_x = left.checked_add(right)?.checked_mul(2)?;
        crop_y = top.checked_add(bottom)?.checked_mul(2)?;
    }
    let (full_width, full_height) = (width_mbs.checked_mul(16)?, height_map_units.checked_mul(16)?);
    if full_width > MAX_SIDE || full_height > MAX_SIDE || crop_x >= full_width || crop_y >= full_height {
        return None;
    }
    let mut reorders = (poc_type == 2).then_some(false);
    let mut full_range = false;
    if r.bit()? {
        let vui = read_vui(&mut r)?;
        full_range = vui.full_range;
        if let Some(max_num_reorder_frames) = vui.max_num_reorder_frames {
            reorders = reorders.or(Some(max_num_reorder_frames > 0));
        }
    }
    Some(SequenceInfo { width: full_width - crop_x, height: full_height - crop_y, reorders, full_range })
}

/// What the VUI says that matters here.
struct Vui {
    full_range: bool,
    /// From the bitstream restriction, if there is one.
    max_num_reorder_frames: Option<u32>,
}

/// Reads the VUI through its bitstream restriction; `None` if it cannot be read.
fn read_vui(r: &mut Bits<'_>) -> Option<Vui> {
    let mut full_range = false;
    if r.bit()? {
        // aspect_ratio_info_present_flag
        if r.bits(8)? == 255 {
            r.bits(32)?; // sar_width, sar_height
        }
    }
    if r.bit()? {
        r.bit()?; // overscan_appropriate_flag
    }
    if r.bit()? {
        // video_signal_type_present_flag
        r.bits(3)?; // video_format
        full_range = r.bit()?;
        if r.bit()? {
            r.bits(24)?; // colour_primaries, transfer_characteristics, matrix_coefficients
        }
    }
    if r.bit()? {
        r.ue()?; // chroma_sample_loc_type_top_field
        r.ue()?; // chroma_sample_loc_type_bottom_field
    }
    if r.bit()? {
        r.bits(32)?; // num_units_in_tick
        r.bits(32)?; // time_scale
        r.bit()?; // fixed_frame_rate_flag
    }
    let nal_hrd = r.bit()?;
    if nal_hrd {
        skip_hrd(r)?;
    }
    let vcl_hrd = r.bit()?;
    if vcl_hrd {
        skip_hrd(r)?;
    }
    if nal_hrd || vcl_hrd {
        r.bit()?; // low_delay_hrd_flag
    }
    r.bit()?; // pic_struct_present_flag
    if !r.bit()? {
        return Some(Vui { full_range, max_num_reorder_frames: None });
    }
    r.bit()?; // motion_vectors_over_pic_boundaries_flag
    for _ in 0..4 {
        r.ue()?; // max_bytes_per_pic_denom, max_bits_per_mb_denom, log2_max_mv_length_horizontal/vertical
    }
    let max_num_reorder_frames = r.ue()?;
    r.ue()?; // max_dec_frame_buffering
    Some(Vui { full_range, max_num_reorder_frames: Some(max_num_reorder_frames) })
}

fn skip_hrd(r: &mut Bits<'_>) -> Option<()> {
    let cpb_count = r.ue()?.checked_add(1)?;
    if cpb_count > 32 {
        return None;
    }
    r.bits(8)?; // bit_rate_scale, cpb_size_scale
    for _ in 0..cpb_count {
        r.ue()?; // bit_rate_value_minus1
        r.ue()?; // cpb_size_value_minus1
        r.bit()?; // cbr_flag
    }
    r.bits(20)?; // four delay and offset lengths of 5 bits
    Some(())
}

fn skip_scaling_list(r: &mut Bits<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// The RBSP of a NAL unit: its bytes without the emulation prevention bytes (`00 00 03` → `00 00`).
fn unescape(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    let mut zeros = 0;
    for &b in payload {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// A big-endian bit reader that answers `None` past the end.
struct Bits<'a> {
    data: &'a [u8],
    /// Position in bits.
    at: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Bits<'a> {
        Bits { data, at: 0 }
    }

    fn bit(&mut self) -> Option<bool> {
        let byte = *self.data.get(self.at / 8)?;
        let bit = byte >> (7 - self.at % 8) & 1;
        self.at += 1;
        Some(bit == 1)
    }

    /// Up to 32 bits.
    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |value, _| Some(value << 1 | u32::from(self.bit()?)))
    }

    /// An unsigned Exp-Golomb code, at most 32 bits of value.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        u32::try_from((1u64 << zeros) - 1 + u64::from(rest)).ok()
    }

    /// A signed Exp-Golomb code.
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// SPS NAL units from `ffmpeg -f lavfi -i testsrc2=size=WxH -c:v libx264 …` (Debian 12's x264), with what
    /// `ffprobe` and the `trace_headers` bitstream filter read in them.
    const X264: &[(&str, &str, SequenceInfo)] = &[
        (
            "-profile:v baseline, 1920x1080: cropped from 1088, POC type 2",
            "6742c028d900780227e5c044000003000400000300c83c60c920",
            SequenceInfo { width: 1920, height: 1080, reorders: Some(false), full_range: false },
        ),
        (
            "-bf 2, 1280x720: POC type 0, 2 reordered frames",
            "6764001facd9405005bb011000000300100000030320f1831960",
            SequenceInfo { width: 1280, height: 720, reorders: Some(true), full_range: false },
        ),
        (
            "-bf 0 -tune zerolatency, 640x360: POC type 2",
            "6764001eacb201405ff2e022000003000200000300651e2c5c90",
            SequenceInfo { width: 640, height: 360, reorders: Some(false), full_range: false },
        ),
        (
            "-bf 0, 1366x768: cropped from 1376x768",
            "67640020acb200ac0c3cde0220000003002000000641e30649",
            SequenceInfo { width: 1366, height: 768, reorders: Some(false), full_range: false },
        ),
        (
            "-bf 3, full range, BT.709, NAL HRD (VBV): the VUI read through to its bitstream restriction",
            "6764001facd9405005bb016e0404028000000300800000193130007a12000f425261803c60c658",
            SequenceInfo { width: 1280, height: 720, reorders: Some(true), full_range: true },
        ),
    ];

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter().flat_map(|nal| [&[0, 0, 0, 1][..], nal].concat()).collect()
    }

    #[test]
    fn reads_x264_parameter_sets_as_ffmpeg_does() {
        for (what, sps, expected) in X264 {
            let pps = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
            assert_eq!(from_extradata(&annex_b(&[&hex(sps), &pps])), Some(*expected), "{what}");
        }
    }

    #[test]
    fn leaves_interlaced_4_2_2_and_10_bit_streams_to_the_probe() {
        // `-flags +ildct+ilme -x264-params interlaced=1` at 720x576, then `-pix_fmt yuv422p` and `-pix_fmt
        // yuv420p10le` at 640x360.
        for sps in [
            "6764001eacd940b424d8088000000300800000190f8a14cb",
            "677a001ebcd940a02ff89c0440000003004000000c83c58b6580",
            "676e001ea6cd940a02ff97011000000300100000030320f162d960",
        ] {
            assert_eq!(from_extradata(&annex_b(&[&hex(sps)])), None, "{sps}");
        }
    }

    #[test]
    fn finds_the_sps_wherever_it_is_and_only_an_sps() {
        let (_, sps, expected) = &X264[2];
        let sei = [0x06, 0x05, 0x01, 0xff, 0x80];
        assert_eq!(from_extradata(&annex_b(&[&sei, &hex(sps)])), Some(*expected));
        // Three-byte start codes too.
        assert_eq!(from_extradata(&[&[0, 0, 1][..], &hex(sps)].concat()), Some(*expected));
        assert_eq!(from_extradata(&annex_b(&[&sei])), None);
        assert_eq!(from_extradata(&hex(sps)), None, "no start code: not Annex B");
        assert_eq!(from_extradata(&[]), None);
    }

    /// Writes an SPS field by field, for the syntax x264 never produces (scaling matrices, POC type 1, a
    /// sample aspect ratio of its own, VCL HRD).
    #[derive(Default)]
    struct Writer {
        bits: Vec<bool>,
    }

    impl Writer {
        fn u(&mut self, n: u32, value: u32) -> &mut Self {
            self.bits.extend((0..n).rev().map(|i| value >> i & 1 == 1));
            self
        }
        fn ue(&mut self, value: u32) -> &mut Self {
            let coded = u64::from(value) + 1;
            let len = 64 - coded.leading_zeros();
            self.bits.extend(std::iter::repeat_n(false, len as usize - 1));
            self.bits.extend((0..len).rev().map(|i| coded >> i & 1 == 1));
            self
        }
        fn se(&mut self, value: i32) -> &mut Self {
            self.ue(if value > 0 { 2 * value as u32 - 1 } else { 2 * value.unsigned_abs() })
        }
        /// The NAL unit: header, the bits with a stop bit, emulation prevention added.
        fn nal(&mut self) -> Vec<u8> {
            self.bits.push(true);
            while self.bits.len() % 8 != 0 {
                self.bits.push(false);
            }
            let rbsp: Vec<u8> =
                self.bits.chunks(8).map(|c| c.iter().fold(0, |b, &bit| b << 1 | u8::from(bit))).collect();
            let mut nal = vec![0x67];
            let mut zeros = 0;
            for b in rbsp {
                if zeros >= 2 && b <= 3 {
                    nal.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                nal.push(b);
            }
            nal
        }
    }

    /// A High profile SPS with every optional part this reader skips, `reorder` in its bitstream restriction.
    /// FFmpeg's `trace_headers` reads the same fields in it (checked when this test was written).
    fn everything(reorder: u32) -> Vec<u8> {
        let mut w = Writer::default();
        w.u(8, 100).u(8, 0).u(8, 40).ue(0); // profile, constraints, level, id
        w.ue(1).ue(0).ue(0).u(1, 0); // 4:2:0, 8 bits, no bypass
        w.u(1, 1); // seq_scaling_matrix_present_flag
        for list in 0..8 {
            w.u(1, 1);
            let size = if list < 6 { 16 } else { 64 };
            // Deltas that end the list early (a next scale of 0) in half the lists.
            let mut last = 8;
            for j in 0..size {
                if list % 2 == 1 && j == 3 {
                    w.se(-last);
                    break;
                }
                let delta = if j % 2 == 0 { 3 } else { -2 };
                w.se(delta);
                last += delta;
            }
        }
        w.ue(0).ue(1).u(1, 0).se(-2).se(-1).ue(3).se(1).se(-1).se(2); // frame num, POC type 1 and its cycle
        w.ue(4).u(1, 0).ue(119).ue(67).u(1, 1).u(1, 1); // refs, 1920x1088 progressive
        w.u(1, 1).ue(0).ue(0).ue(0).ue(4); // cropped to 1080
        w.u(1, 1); // vui_parameters_present_flag
        w.u(1, 1).u(8, 255).u(16, 4).u(16, 3); // SAR 4:3
        w.u(1, 1).u(1, 0); // overscan
        w.u(1, 1).u(3, 5).u(1, 1).u(1, 1).u(8, 1).u(8, 1).u(8, 1); // signal type, full range, BT.709
        w.u(1, 1).ue(0).ue(0); // chroma location
        w.u(1, 1).u(32, 1).u(32, 50).u(1, 1); // timing
        w.u(1, 0); // no NAL HRD
        w.u(1, 1).ue(1).u(4, 0).u(4, 0); // VCL HRD, two CPB
        for _ in 0..2 {
            w.ue(1000).ue(2000).u(1, 0);
        }
        w.u(5, 23).u(5, 23).u(5, 23).u(5, 24);
        w.u(1, 0).u(1, 0); // low delay, pic struct
        w.u(1, 1).u(1, 1).ue(2).ue(1).ue(16).ue(16).ue(reorder).ue(4); // bitstream restriction
        w.nal()
    }

    #[test]
    fn skips_every_optional_part_of_the_syntax() {
        for (reorder, reorders) in [(0, false), (2, true)] {
            let sps = everything(reorder);
            assert_eq!(
                from_extradata(&annex_b(&[&sps])),
                Some(SequenceInfo { width: 1920, height: 1080, reorders: Some(reorders), full_range: true }),
                "{reorder} reordered frames"
            );
        }
    }

    #[test]
    fn without_a_bitstream_restriction_reordering_is_unknown() {
        let mut w = Writer::default();
        w.u(8, 77).u(8, 0).u(8, 30).ue(0); // Main profile
        w.ue(0).ue(0).ue(2).ue(1).u(1, 0).ue(39).ue(22).u(1, 1).u(1, 1).u(1, 0); // POC type 0, 640x368
        w.u(1, 0); // no VUI
        assert_eq!(
            from_extradata(&annex_b(&[&w.nal()])),
            Some(SequenceInfo { width: 640, height: 368, reorders: None, full_range: false })
        );
    }

    #[test]
    fn every_truncation_of_a_parameter_set_is_refused_or_read_without_panicking() {
        let sps = everything(0);
        for len in 0..sps.len() {
            // Cut off before the VUI's end, the restriction is unread: never a guess of "no reordering"
            // except by POC type 2, which this SPS does not have.
            if let Some(info) = from_extradata(&annex_b(&[&sps[..len]])) {
                assert_ne!(info.reorders, Some(false), "{len} bytes");
            }
        }
    }

    proptest! {
        #[test]
        fn any_bytes_are_refused_or_read_within_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let nal = [&[0x67][..], &bytes].concat();
            if let Some(info) = from_extradata(&annex_b(&[&nal])) {
                prop_assert!(info.width > 0 && info.width <= MAX_SIDE);
                prop_assert!(info.height > 0 && info.height <= MAX_SIDE);
            }
        }
    }
}
