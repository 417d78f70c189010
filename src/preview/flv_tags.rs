//! Cutting an FLV byte stream back into tags, so the hub can cache sequence headers and the current GOP.
//!
//! The muxer writes through an AVIO buffer, so writes do not line up with tags; [`TagSplitter`] buffers
//! partial input and yields whole tags (11-byte header + body + 4-byte back-pointer) as they complete.

use bytes::{Buf, Bytes, BytesMut};

/// The FLV file header plus the first back-pointer.
pub const FILE_HEADER_LEN: usize = 9 + 4;
/// Bytes of an FLV tag header (type, size, timestamp, stream id).
pub const TAG_HEADER_LEN: usize = 11;

/// What a tag carries, as far as a player's start-up needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// `onMetaData` and other script data.
    Script,
    /// AVC/AAC decoder configuration: a player needs it before any frame.
    VideoConfig,
    /// An H.264 keyframe: a player can start here.
    VideoKeyframe,
    /// Any other video frame.
    Video,
    /// AAC decoder configuration.
    AudioConfig,
    /// An audio frame.
    Audio,
    /// Something else (ignored by players).
    Other,
}

/// One complete FLV tag, back-pointer included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// Its classification.
    pub kind: TagKind,
    /// The bytes as they go on the wire.
    pub bytes: Bytes,
}

/// What [`TagSplitter::push`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// The 13-byte file header: a new muxer session starts.
    FileHeader(Bytes),
    /// A tag.
    Tag(Tag),
}

/// Reassembles tags from arbitrary chunks of an FLV stream.
#[derive(Debug, Default)]
pub struct TagSplitter {
    buffer: BytesMut,
    header_seen: bool,
}

impl TagSplitter {
    /// Appends `chunk` and returns every piece it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Piece> {
        self.buffer.extend_from_slice(chunk);
        let mut pieces = Vec::new();
        loop {
            if !self.header_seen {
                if self.buffer.len() < FILE_HEADER_LEN {
                    break;
                }
                self.header_seen = true;
                pieces.push(Piece::FileHeader(self.take(FILE_HEADER_LEN)));
                continue;
            }
            if self.buffer.len() < TAG_HEADER_LEN {
                break;
            }
            let data_size = u32::from_be_bytes([0, self.buffer[1], self.buffer[2], self.buffer[3]]) as usize;
            let total = TAG_HEADER_LEN + data_size + 4;
            if self.buffer.len() < total {
                break;
            }
            let bytes = self.take(total);
            pieces.push(Piece::Tag(Tag { kind: classify(&bytes), bytes }));
        }
        pieces
    }
}

impl TagSplitter {
    /// The first `len` bytes, in an allocation of their own. A tag lives on in the GOP cache for seconds;
    /// sharing the splitter's buffer (`split_to`) would pin whole grown buffers behind every cached tag.
    fn take(&mut self, len: usize) -> Bytes {
        let piece = Bytes::copy_from_slice(&self.buffer[..len]);
        self.buffer.advance(len);
        piece
    }
}

fn classify(tag: &[u8]) -> TagKind {
    let body = &tag[TAG_HEADER_LEN..];
    match (tag[0] & 0x1f, body.first(), body.get(1)) {
        (18, _, _) => TagKind::Script,
        // Video: high nibble of the first byte is the frame type, low nibble the codec (7 = AVC); the second
        // byte is the AVC packet type (0 = sequence header).
        (9, Some(&first), Some(&packet_type)) if first & 0x0f == 7 && packet_type == 0 => TagKind::VideoConfig,
        (9, Some(&first), _) if first >> 4 == 1 => TagKind::VideoKeyframe,
        (9, _, _) => TagKind::Video,
        // Audio: sound format 10 (AAC) in the high nibble; the second byte is the AAC packet type.
        (8, Some(&first), Some(&0)) if first >> 4 == 10 => TagKind::AudioConfig,
        (8, _, _) => TagKind::Audio,
        _ => TagKind::Other,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tag of `kind` (8 audio, 9 video, 18 script) with `body`, as the FLV muxer writes it.
    pub(crate) fn tag(kind: u8, body: &[u8]) -> Vec<u8> {
        let size = body.len() as u32;
        let mut out = vec![kind, (size >> 16) as u8, (size >> 8) as u8, size as u8, 0, 0, 0, 0, 0, 0, 0];
        out.extend_from_slice(body);
        out.extend_from_slice(&(TAG_HEADER_LEN as u32 + size).to_be_bytes());
        out
    }

    pub(crate) const FILE_HEADER: [u8; 13] = *b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00";

    fn kinds(pieces: &[Piece]) -> Vec<Option<TagKind>> {
        pieces
            .iter()
            .map(|p| match p {
                Piece::FileHeader(_) => None,
                Piece::Tag(t) => Some(t.kind),
            })
            .collect()
    }

    fn stream() -> Vec<u8> {
        let mut s = FILE_HEADER.to_vec();
        s.extend(tag(18, b"\x02\x00\x0aonMetaData"));
        s.extend(tag(9, &[0x17, 0, 0, 0, 0, 1, 2, 3]));
        s.extend(tag(8, &[0xaf, 0, 0x12, 0x10]));
        s.extend(tag(9, &[0x17, 1, 0, 0, 0, 9, 9, 9, 9]));
        s.extend(tag(8, &[0xaf, 1, 7, 7]));
        s.extend(tag(9, &[0x27, 1, 0, 0, 0, 8]));
        s
    }

    #[test]
    fn whole_stream_at_once() {
        let pieces = TagSplitter::default().push(&stream());
        use TagKind::*;
        assert_eq!(
            kinds(&pieces),
            [None, Some(Script), Some(VideoConfig), Some(AudioConfig), Some(VideoKeyframe), Some(Audio), Some(Video)]
        );
    }

    #[test]
    fn byte_by_byte_gives_the_same_tags() {
        let all = TagSplitter::default().push(&stream());
        let mut splitter = TagSplitter::default();
        let mut pieces = Vec::new();
        for b in stream() {
            pieces.extend(splitter.push(&[b]));
        }
        assert_eq!(pieces, all);
        let total: usize = pieces
            .iter()
            .map(|p| match p {
                Piece::FileHeader(b) => b.len(),
                Piece::Tag(t) => t.bytes.len(),
            })
            .sum();
        assert_eq!(total, stream().len(), "no byte lost or duplicated");
    }
}
