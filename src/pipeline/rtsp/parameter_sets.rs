//! Repeated H.264 picture parameter sets, kept from libavformat's parser and put back after it.
//!
//! Most cameras send their SPS and PPS again before every keyframe. libavformat's H.264 parser, which assembles
//! the RTP demuxer's NAL units into access units, decodes every PPS it meets into a fresh 173,904-byte
//! structure (its dequantisation tables) and frees the one before: a new memory mapping, 43 page faults and an
//! `munmap` with its TLB shootdown per keyframe per camera, about a tenth of a copying camera's CPU in `perf`
//! (BENCHMARKS.md, "the H.264 parser mapping memory at every keyframe"). A PPS identical to the one the parser
//! already holds teaches it nothing, so camgate's reader disguises it before the demuxer sees it — its NAL type
//! 8 (PPS) becomes 9 (access unit delimiter), one bit — and puts the bit back in the access unit the parser
//! hands out, before anything else reads the packet. What leaves camgate is byte for byte what it would have
//! been.
//!
//! Why an access unit delimiter: the parser ends an access unit at an SEI, SPS, PPS or delimiter alike, so the
//! units it cuts are the same, and it decodes nothing of a delimiter. Only a repeat of the last PPS delivered
//! is disguised, and never after an SPS that differs from the last one delivered (the parser drops the PPS
//! that depend on a replaced SPS): the parser always holds exactly the PPS it is spared. H.265 and other codecs
//! pass untouched.

use std::collections::VecDeque;

/// NAL unit types (H.264 table 7-1).
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const NAL_STAP_A: u8 = 24;
/// Flips a PPS's NAL type (8) to an access unit delimiter's (9) and back, keeping `nal_ref_idc`.
const PPS_TO_AUD: u8 = NAL_PPS ^ NAL_AUD;
/// Disguised PPS waiting to be put back. They come back within an access unit or two; more waiting means the
/// demuxer did something unforeseen, and the reader stops disguising for the session.
const MAX_WAITING: usize = 8;
/// Access units that may pass without the oldest disguised PPS before it counts as lost. It usually comes in
/// the first or second after its own packets were read, but stream probing reads ahead (up to a second of
/// video, handed out afterwards), so the allowance is ten seconds at 25 fps. Then the reader stops disguising:
/// it would otherwise scan every access unit for a PPS that will not come.
const MAX_MISSES: u32 = 250;

/// One session's disguised repeats (see the module's doc).
#[derive(Debug, Default)]
pub(crate) struct RepeatedPps {
    /// The H.264 stream's RTP payload type; `None`: no H.264 video, nothing is touched.
    payload_type: Option<u8>,
    last_sps: Vec<u8>,
    last_pps: Vec<u8>,
    /// Disguised PPS, as they now read (NAL type 9), oldest first.
    waiting: VecDeque<Vec<u8>>,
    /// Access units scanned in vain since a disguised PPS was last put back.
    misses: u32,
    /// Set when one could not be put back in time: from then on everything passes untouched.
    given_up: bool,
}

impl RepeatedPps {
    /// For a session described by `sdp`.
    pub(crate) fn new(sdp: &[u8]) -> RepeatedPps {
        RepeatedPps { payload_type: h264_payload_type(sdp), ..RepeatedPps::default() }
    }

    /// Looks at one RTP or RTCP packet before the demuxer does, and disguises a repeated PPS in it.
    pub(crate) fn hide(&mut self, packet: &mut [u8]) {
        let Some(payload_type) = self.payload_type.filter(|_| !self.given_up) else { return };
        let Some(payload) = rtp_payload(packet, payload_type) else { return };
        let Some(&header) = payload.first() else { return };
        if header & 0x1f == NAL_STAP_A {
            // Aggregated units, each behind its 16-bit size.
            let mut at = 1;
            while let Some(size) = payload.get(at..at + 2).map(|s| usize::from(u16::from_be_bytes([s[0], s[1]]))) {
                let Some(nal) = payload.get_mut(at + 2..at + 2 + size) else { break };
                self.look_at(nal);
                at += 2 + size;
            }
        } else {
            self.look_at(payload);
        }
    }

    fn look_at(&mut self, nal: &mut [u8]) {
        match nal.first().map(|h| h & 0x1f) {
            Some(NAL_SPS) if nal != self.last_sps.as_slice() => {
                self.last_sps = nal.to_vec();
                self.last_pps.clear();
            }
            Some(NAL_PPS) if !self.last_pps.is_empty() && nal == self.last_pps.as_slice() => {
                if self.waiting.len() >= MAX_WAITING {
                    self.give_up();
                    return;
                }
                nal[0] ^= PPS_TO_AUD;
                self.waiting.push_back(nal.to_vec());
            }
            Some(NAL_PPS) => self.last_pps = nal.to_vec(),
            _ => {}
        }
    }

    /// Whether a disguised PPS waits to be put back.
    pub(crate) fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Puts back the disguised PPS that `access_unit` (Annex B, as the demuxer hands H.264 out) carries, oldest
    /// first; returns how many.
    pub(crate) fn restore(&mut self, access_unit: &mut [u8]) -> usize {
        let mut restored = 0;
        let mut at = 0;
        while let Some(front) = self.waiting.front() {
            let Some(start) = find_start_code(access_unit, at) else { break };
            let nal = start + 3;
            at = nal;
            let rest = &access_unit[nal..];
            let ends_there = rest.get(front.len()..).is_some_and(|after| {
                after.is_empty() || after.starts_with(&[0, 0, 1]) || after.starts_with(&[0, 0, 0, 1])
            });
            if rest.first().is_some_and(|h| h & 0x1f == NAL_AUD) && rest.starts_with(front) && ends_there {
                access_unit[nal] ^= PPS_TO_AUD;
                self.waiting.pop_front();
                restored += 1;
                at = nal + 1;
            }
        }
        if restored > 0 {
            self.misses = 0;
        } else if self.is_waiting() {
            self.misses += 1;
            if self.misses > MAX_MISSES {
                self.give_up();
            }
        }
        restored
    }

    fn give_up(&mut self) {
        self.given_up = true;
        self.waiting.clear();
        tracing::warn!(
            camera = %crate::pipeline::ffmpeg_log::thread_camera_id(),
            "a disguised H.264 PPS did not come back from the demuxer: repeats now reach its parser"
        );
    }
}

/// The offset of the next `00 00 01` in `data` from `from` on.
fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?.windows(3).position(|w| w == [0, 0, 1]).map(|p| from + p)
}

/// The payload of `packet` if it is an RTP packet of `payload_type` (RFC 3550: version 2, CSRCs, header
/// extension and padding skipped).
fn rtp_payload(packet: &mut [u8], payload_type: u8) -> Option<&mut [u8]> {
    let (&first, &second) = (packet.first()?, packet.get(1)?);
    if first >> 6 != 2 || second & 0x7f != payload_type {
        return None;
    }
    let mut start = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = packet.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = packet.len();
    if first & 0x20 != 0 {
        end = end.checked_sub(usize::from(*packet.last()?))?;
    }
    packet.get_mut(start..end)
}

/// The RTP payload type of the description's H.264 video, if it has one of the dynamic range (96–127), as
/// H.264 always is: RTCP's packet types never read as one of those.
fn h264_payload_type(sdp: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(sdp).ok()?;
    let mut video: Vec<u8> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(media) = line.strip_prefix("m=") {
            let mut words = media.split_ascii_whitespace();
            video = if words.next() == Some("video") {
                words.skip(2).filter_map(|w| w.parse().ok()).collect()
            } else {
                Vec::new()
            };
        } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let (pt, encoding) = map.split_once(' ')?;
            let pt: u8 = pt.trim().parse().ok()?;
            if video.contains(&pt)
                && (96..=127).contains(&pt)
                && encoding.trim().to_ascii_uppercase().starts_with("H264/")
            {
                return Some(pt);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &[u8] = b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n";
    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01];
    const SPS2: &[u8] = &[0x67, 0x42, 0xc0, 0x28, 0xda, 0x02];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33];

    fn rtp(payload_type: u8, payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x80, payload_type, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        packet.extend_from_slice(payload);
        packet
    }

    fn payload(packet: &[u8]) -> &[u8] {
        &packet[12..]
    }

    /// What the demuxer makes of single NAL units: each behind a 4-byte start code.
    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter().flat_map(|nal| [&[0, 0, 0, 1][..], nal].concat()).collect()
    }

    #[test]
    fn the_h264_payload_type_comes_from_the_video_section() {
        assert_eq!(h264_payload_type(SDP), Some(96));
        assert_eq!(h264_payload_type(b"m=video 0 RTP/AVP 98\r\na=rtpmap:98 H265/90000\r\n"), None);
        assert_eq!(h264_payload_type(b"m=audio 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"), None);
        assert_eq!(h264_payload_type(b"m=video 0 RTP/AVP 35\r\na=rtpmap:35 H264/90000\r\n"), None, "not dynamic");
    }

    #[test]
    fn only_a_repeat_of_the_last_pps_is_disguised_and_it_comes_back_in_its_access_unit() {
        let mut repeats = RepeatedPps::new(SDP);
        let mut first = [rtp(96, SPS), rtp(96, PPS), rtp(96, IDR)];
        for packet in &mut first {
            repeats.hide(packet);
        }
        assert_eq!(payload(&first[1]), PPS, "the first PPS reaches the parser");
        assert!(!repeats.is_waiting());

        let mut again = [rtp(96, SPS), rtp(96, PPS), rtp(96, IDR)];
        for packet in &mut again {
            repeats.hide(packet);
        }
        assert_eq!(payload(&again[0]), SPS, "SPS are never touched");
        assert_eq!(payload(&again[1])[0] & 0x1f, NAL_AUD, "the repeat reads as a delimiter");
        assert_eq!(&payload(&again[1])[1..], &PPS[1..]);
        assert!(repeats.is_waiting());

        let mut unit = annex_b(&[SPS, payload(&again[1]), IDR]);
        assert_eq!(repeats.restore(&mut unit), 1);
        assert_eq!(unit, annex_b(&[SPS, PPS, IDR]), "byte for byte what the camera sent");
        assert!(!repeats.is_waiting());
    }

    #[test]
    fn a_new_sps_or_pps_reaches_the_parser() {
        let mut repeats = RepeatedPps::new(SDP);
        for nal in [SPS, PPS] {
            repeats.hide(&mut rtp(96, nal));
        }
        // A new SPS makes the parser drop its PPS: the same PPS after it is needed again.
        let mut pps_after_new_sps = rtp(96, PPS);
        repeats.hide(&mut rtp(96, SPS2));
        repeats.hide(&mut pps_after_new_sps);
        assert_eq!(payload(&pps_after_new_sps), PPS);
        let other = [0x68, 0xce, 0x3c, 0x81];
        let mut changed = rtp(96, &other);
        repeats.hide(&mut changed);
        assert_eq!(payload(&changed), other);
        assert!(!repeats.is_waiting());
    }

    #[test]
    fn other_streams_rtcp_and_fragments_pass_untouched() {
        let mut repeats = RepeatedPps::new(SDP);
        repeats.hide(&mut rtp(96, PPS));
        for mut packet in
            [rtp(97, PPS), vec![0x80, 200, 0, 6, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80], rtp(96, &[0x7c, 0x88])]
        {
            let before = packet.clone();
            repeats.hide(&mut packet);
            assert_eq!(packet, before);
        }
        let mut h265 = RepeatedPps::new(b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\n");
        for _ in 0..2 {
            let mut packet = rtp(96, PPS);
            h265.hide(&mut packet);
            assert_eq!(payload(&packet), PPS);
        }
    }

    #[test]
    fn a_repeat_inside_an_aggregation_packet_is_disguised_in_place() {
        let stap = |nals: &[&[u8]]| {
            let mut payload = vec![0x78];
            for nal in nals {
                payload.extend_from_slice(&(nal.len() as u16).to_be_bytes());
                payload.extend_from_slice(nal);
            }
            rtp(96, &payload)
        };
        let mut repeats = RepeatedPps::new(SDP);
        repeats.hide(&mut stap(&[SPS, PPS]));
        let mut again = stap(&[SPS, PPS]);
        repeats.hide(&mut again);
        let pps_at = 12 + 1 + 2 + SPS.len() + 2;
        assert_eq!(again[pps_at] & 0x1f, NAL_AUD);
        assert_eq!(again.len(), stap(&[SPS, PPS]).len(), "nothing added or removed");
        let mut unit = annex_b(&[SPS, &again[pps_at..pps_at + PPS.len()], IDR]);
        assert_eq!(repeats.restore(&mut unit), 1);
        assert_eq!(unit, annex_b(&[SPS, PPS, IDR]));
    }

    #[test]
    fn a_real_delimiter_is_left_alone() {
        let mut repeats = RepeatedPps::new(SDP);
        repeats.hide(&mut rtp(96, PPS));
        let mut again = rtp(96, PPS);
        repeats.hide(&mut again);
        // The access unit the parser hands out first starts with a camera's own delimiter (2 bytes).
        let mut earlier = annex_b(&[&[0x09, 0xf0], IDR]);
        let before = earlier.clone();
        assert_eq!(repeats.restore(&mut earlier), 0);
        assert_eq!(earlier, before);
        assert!(repeats.is_waiting(), "still waiting for its own access unit");
        let mut own = annex_b(&[&[0x09, 0xf0], payload(&again), IDR]);
        assert_eq!(repeats.restore(&mut own), 1);
        assert_eq!(own, annex_b(&[&[0x09, 0xf0], PPS, IDR]));
    }

    #[test]
    fn too_many_waiting_stops_the_disguise() {
        let mut repeats = RepeatedPps::new(SDP);
        repeats.hide(&mut rtp(96, PPS));
        for _ in 0..MAX_WAITING {
            repeats.hide(&mut rtp(96, PPS));
        }
        let mut more = rtp(96, PPS);
        repeats.hide(&mut more);
        assert_eq!(payload(&more), PPS, "given up: passes as sent");
        assert!(!repeats.is_waiting());
        let mut later = rtp(96, PPS);
        repeats.hide(&mut later);
        assert_eq!(payload(&later), PPS);
    }

    #[test]
    fn a_disguised_pps_that_never_comes_back_ends_the_disguise() {
        let mut repeats = RepeatedPps::new(SDP);
        repeats.hide(&mut rtp(96, PPS));
        repeats.hide(&mut rtp(96, PPS));
        assert!(repeats.is_waiting());
        for _ in 0..=MAX_MISSES {
            assert_eq!(repeats.restore(&mut annex_b(&[IDR])), 0);
        }
        assert!(!repeats.is_waiting(), "no longer scanning every access unit");
        let mut later = rtp(96, PPS);
        repeats.hide(&mut later);
        assert_eq!(payload(&later), PPS, "repeats reach the parser again");
    }

    proptest::proptest! {
        /// Whatever a camera sends, disguising and restoring never panic nor change a packet's length.
        #[test]
        fn any_bytes_are_safe(mut packet in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                              mut unit in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                              rtp_like in proptest::bool::ANY) {
            if rtp_like && packet.len() >= 2 {
                packet[0] = 0x80 | (packet[0] & 0x3f);
                packet[1] = 96;
            }
            let mut repeats = RepeatedPps::new(SDP);
            let (packet_len, unit_len) = (packet.len(), unit.len());
            repeats.hide(&mut packet);
            repeats.hide(&mut packet.clone());
            repeats.restore(&mut unit);
            proptest::prop_assert_eq!((packet.len(), unit.len()), (packet_len, unit_len));
        }

        /// Any sequence of parameter sets and pictures comes out of disguise and restoration as it went in,
        /// and a PPS is only ever disguised while the parser (modelled: it drops its PPS when the SPS changes)
        /// holds exactly that PPS.
        #[test]
        fn access_units_come_back_as_sent(units in proptest::collection::vec(
                                              proptest::collection::vec(0usize..6, 1..5), 1..40)) {
            let nal = |kind: usize| -> &[u8] {
                [SPS, SPS2, PPS, &[0x68, 0xce, 0x3c, 0x81][..], IDR, &[0x09, 0xf0][..]][kind]
            };
            let mut repeats = RepeatedPps::new(SDP);
            let (mut parser_sps, mut parser_pps): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
            for kinds in &units {
                let sent: Vec<&[u8]> = kinds.iter().map(|&k| nal(k)).collect();
                let mut delivered = Vec::new();
                for nal in &sent {
                    let mut packet = rtp(96, nal);
                    repeats.hide(&mut packet);
                    let seen = payload(&packet).to_vec();
                    match seen[0] & 0x1f {
                        NAL_SPS => {
                            if parser_sps.as_deref() != Some(&seen[..]) {
                                parser_pps = None;
                            }
                            parser_sps = Some(seen.clone());
                        }
                        NAL_PPS => parser_pps = Some(seen.clone()),
                        NAL_AUD if seen.len() > 2 => {
                            let mut original = seen.clone();
                            original[0] ^= PPS_TO_AUD;
                            proptest::prop_assert_eq!(parser_pps.as_deref(), Some(&original[..]));
                        }
                        _ => {}
                    }
                    delivered.push(seen);
                }
                let delivered: Vec<&[u8]> = delivered.iter().map(Vec::as_slice).collect();
                let mut unit = annex_b(&delivered);
                repeats.restore(&mut unit);
                proptest::prop_assert_eq!(unit, annex_b(&sent));
            }
            proptest::prop_assert!(!repeats.is_waiting());
        }
    }

    #[test]
    fn malformed_packets_are_harmless() {
        let mut repeats = RepeatedPps::new(SDP);
        for mut packet in [vec![], vec![0x80], vec![0x90, 96, 0, 0], vec![0xa0, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]]
        {
            repeats.hide(&mut packet);
        }
        // A STAP-A whose sizes overrun the packet.
        repeats.hide(&mut rtp(96, &[0x78, 0x00, 0x40, 0x68]));
        let mut unit = vec![0, 0, 1];
        assert_eq!(repeats.restore(&mut unit), 0);
    }
}
