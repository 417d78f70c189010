//! RTMP's chunk stream: a message cut into chunks for the server ([`put_message`]), and the server's chunks put
//! back together into messages ([`ChunkReader`]).
//!
//! Every message camgate sends starts with a full (type 0) header and goes on in type 3 chunks, as SRS sends
//! its own: the few bytes header compression would save are not worth a state machine that must agree with
//! the server's. What the server sends is read with every header type, since servers do compress.

use std::collections::HashMap;

/// The chunk size both sides start with, until a Set Chunk Size says otherwise.
pub(crate) const DEFAULT_CHUNK_SIZE: usize = 128;
/// The largest message read from the server. What a server sends a publisher is commands and control
/// messages of a few hundred bytes; anything near this is not an RTMP server speaking.
pub(crate) const MAX_INCOMING_MESSAGE: usize = 64 * 1024;
/// The most chunk streams of the server's whose state is kept (servers use three or four).
const MAX_CHUNK_STREAMS: usize = 64;
/// A 24-bit timestamp field with this value means a 32-bit one follows the header.
const EXTENDED: u32 = 0xFF_FFFF;

/// A message of the chunk stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) type_id: u8,
    pub(crate) stream_id: u32,
    pub(crate) timestamp: u32,
    pub(crate) payload: Vec<u8>,
}

/// Appends `payload` as one message on chunk stream `csid` (2–63), cut into chunks of `chunk_size`.
pub(crate) fn put_message(out: &mut Vec<u8>, csid: u8, message: (u8, u32, u32), payload: &[u8], chunk_size: usize) {
    debug_assert!((2..64).contains(&csid), "one-byte chunk stream ids only");
    let (type_id, stream_id, timestamp) = message;
    let extended = timestamp >= EXTENDED;
    let field = if extended { EXTENDED } else { timestamp };
    out.reserve(payload.len() + 16 + payload.len() / chunk_size.max(1) * 5);
    out.push(csid & 0x3f);
    out.extend_from_slice(&field.to_be_bytes()[1..]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&stream_id.to_le_bytes());
    if extended {
        out.extend_from_slice(&timestamp.to_be_bytes());
    }
    let mut chunks = payload.chunks(chunk_size.max(1));
    if let Some(first) = chunks.next() {
        out.extend_from_slice(first);
    }
    for chunk in chunks {
        out.push(0xC0 | (csid & 0x3f));
        // As FFmpeg and Flash write it (and nginx-rtmp and SRS read it): a continuation repeats the extended
        // timestamp.
        if extended {
            out.extend_from_slice(&timestamp.to_be_bytes());
        }
        out.extend_from_slice(chunk);
    }
}

/// Why the server's chunk stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkError {
    #[error("a chunk on stream {0} continues a message that never began")]
    NoPreviousHeader(u32),
    #[error("a {0}-byte message from the server (at most {MAX_INCOMING_MESSAGE})")]
    TooLarge(usize),
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams from the server")]
    TooManyStreams,
}

/// The last header seen on one of the server's chunk streams, and the message being put together on it.
#[derive(Debug, Default)]
struct StreamState {
    timestamp: u32,
    delta: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
    /// Whether the last header's timestamp field was extended: then type 3 chunks carry it again.
    extended: bool,
    partial: Vec<u8>,
}

/// Puts the server's chunks back together into messages.
#[derive(Debug)]
pub(crate) struct ChunkReader {
    /// Bytes received and not yet parsed: at most one chunk's worth plus whatever the last read brought.
    buffer: Vec<u8>,
    chunk_size: usize,
    streams: HashMap<u32, StreamState>,
}

impl Default for ChunkReader {
    fn default() -> ChunkReader {
        ChunkReader { buffer: Vec::new(), chunk_size: DEFAULT_CHUNK_SIZE, streams: HashMap::new() }
    }
}

impl ChunkReader {
    /// Adds what was received.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The server's Set Chunk Size (1 to 2³¹−1; what a message may hold stays bounded by
    /// [`MAX_INCOMING_MESSAGE`] whatever this is).
    pub(crate) fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = (size & 0x7fff_ffff).max(1) as usize;
    }

    /// The next complete message, if the bytes pushed so far hold one.
    pub(crate) fn next_message(&mut self) -> Result<Option<Message>, ChunkError> {
        loop {
            let Some((consumed, complete)) = self.parse_chunk()? else { return Ok(None) };
            self.buffer.drain(..consumed);
            if let Some(message) = complete {
                return Ok(Some(message));
            }
        }
    }

    /// Parses the chunk at the start of the buffer: how many bytes it took and the message it completed, or
    /// `None` if the buffer does not hold all of it yet (nothing is changed then).
    fn parse_chunk(&mut self) -> Result<Option<(usize, Option<Message>)>, ChunkError> {
        let b = &self.buffer;
        let Some(&first) = b.first() else { return Ok(None) };
        let fmt = first >> 6;
        let (csid, mut at) = match first & 0x3f {
            0 => match b.get(1) {
                Some(&x) => (64 + u32::from(x), 2),
                None => return Ok(None),
            },
            1 => match (b.get(1), b.get(2)) {
                (Some(&x), Some(&y)) => (64 + u32::from(x) + 256 * u32::from(y), 3),
                _ => return Ok(None),
            },
            id => (u32::from(id), 1),
        };
        let header_len = [11, 7, 3, 0][usize::from(fmt)];
        if b.len() < at + header_len {
            return Ok(None);
        }
        let h = &b[at..at + header_len];
        at += header_len;
        let be24 = |x: &[u8]| u32::from_be_bytes([0, x[0], x[1], x[2]]);
        if !self.streams.contains_key(&csid) && self.streams.len() >= MAX_CHUNK_STREAMS {
            return Err(ChunkError::TooManyStreams);
        }
        let known = self.streams.get(&csid);
        if fmt != 0 && known.is_none() {
            return Err(ChunkError::NoPreviousHeader(csid));
        }
        let previous_extended = known.is_some_and(|s| s.extended);
        let mid_message = known.is_some_and(|s| !s.partial.is_empty());
        // The timestamp field of this header (fmt 0–2), and whether a 32-bit one follows.
        let field = (fmt <= 2).then(|| be24(h));
        let extended = field.map_or(previous_extended, |f| f == EXTENDED);
        let extended_value = if extended {
            let Some(x) = b.get(at..at + 4) else { return Ok(None) };
            at += 4;
            Some(u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
        } else {
            None
        };
        let state = self.streams.entry(csid).or_default();
        let mut next = StreamState { partial: Vec::new(), ..*state };
        next.extended = extended;
        match fmt {
            0 => {
                next.timestamp = extended_value.unwrap_or(be24(h));
                next.delta = 0;
                next.length = be24(&h[3..]) as usize;
                next.type_id = h[6];
                next.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
            }
            1 | 2 => {
                next.delta = extended_value.unwrap_or(be24(h));
                if fmt == 1 {
                    next.length = be24(&h[3..]) as usize;
                    next.type_id = h[6];
                }
            }
            _ => {}
        }
        if next.length > MAX_INCOMING_MESSAGE {
            return Err(ChunkError::TooLarge(next.length));
        }
        // A chunk with a message header begins a message (one cut short before it is dropped); a type 3 chunk
        // continues the message in progress, or begins one exactly like the last.
        let starts = fmt != 3 || !mid_message;
        if starts && fmt != 0 {
            next.timestamp = next.timestamp.wrapping_add(next.delta);
        }
        let have = if starts { 0 } else { state.partial.len() };
        let take = (next.length - have.min(next.length)).min(self.chunk_size);
        if b.len() < at + take {
            return Ok(None);
        }
        let mut partial = std::mem::take(&mut state.partial);
        if starts {
            partial.clear();
        }
        partial.extend_from_slice(&b[at..at + take]);
        *state = next;
        let consumed = at + take;
        if partial.len() >= state.length {
            let message = Message {
                type_id: state.type_id,
                stream_id: state.stream_id,
                timestamp: state.timestamp,
                payload: partial,
            };
            return Ok(Some((consumed, Some(message))));
        }
        state.partial = partial;
        Ok(Some((consumed, None)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn read_back(bytes: &[u8], chunk_size: u32, split: usize) -> Vec<Message> {
        let mut reader = ChunkReader::default();
        reader.set_chunk_size(chunk_size);
        let mut messages = Vec::new();
        for piece in bytes.chunks(split.max(1)) {
            reader.push(piece);
            while let Some(message) = reader.next_message().unwrap() {
                messages.push(message);
            }
        }
        messages
    }

    #[test]
    fn a_message_written_in_chunks_reads_back_whole() {
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        put_message(&mut out, 6, (9, 1, 40), &payload, 128);
        // 12-byte header, 1000 bytes, and a one-byte header before each of the 7 further chunks.
        assert_eq!(out.len(), 12 + 1000 + 7);
        let messages = read_back(&out, 128, 7);
        assert_eq!(messages, vec![Message { type_id: 9, stream_id: 1, timestamp: 40, payload }]);
    }

    #[test]
    fn an_extended_timestamp_is_repeated_in_each_continuation() {
        let payload = vec![7u8; 300];
        let mut out = Vec::new();
        put_message(&mut out, 4, (8, 1, 0x0100_0000), &payload, 128);
        assert_eq!(&out[1..4], &[0xff, 0xff, 0xff]);
        assert_eq!(out.len(), 12 + 4 + 300 + 2 * (1 + 4));
        let messages = read_back(&out, 128, 1);
        assert_eq!(messages[0].timestamp, 0x0100_0000);
        assert_eq!(messages[0].payload, payload);
    }

    #[test]
    fn compressed_headers_as_servers_send_them_are_read() {
        // Type 0, then type 1 (new length), type 2 (new delta), type 3 (all as before) on chunk stream 3.
        let mut bytes = vec![0x03, 0, 0, 10, 0, 0, 2, 20, 0, 0, 0, 0, b'a', b'b'];
        bytes.extend_from_slice(&[0x43, 0, 0, 5, 0, 0, 1, 20, b'c']);
        bytes.extend_from_slice(&[0x83, 0, 0, 7, b'd']);
        bytes.extend_from_slice(&[0xC3, b'e']);
        let messages = read_back(&bytes, 128, 3);
        let seen: Vec<(u32, Vec<u8>)> = messages.into_iter().map(|m| (m.timestamp, m.payload)).collect();
        assert_eq!(seen, vec![(10, b"ab".to_vec()), (15, b"c".to_vec()), (22, b"d".to_vec()), (29, b"e".to_vec())]);
    }

    #[test]
    fn hostile_chunk_streams_are_refused() {
        let mut reader = ChunkReader::default();
        reader.push(&[0x43, 0, 0, 0, 0, 0, 1, 20, 0]);
        assert_eq!(reader.next_message(), Err(ChunkError::NoPreviousHeader(3)));
        let mut reader = ChunkReader::default();
        reader.push(&[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0]);
        assert_eq!(reader.next_message(), Err(ChunkError::TooLarge(0xff_ffff)));
        let mut reader = ChunkReader::default();
        for id in 0..=255u8 {
            reader.push(&[0x00, id, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 0]);
        }
        assert!(std::iter::from_fn(|| Some(reader.next_message())).take(300).any(|r| r.is_err()));
    }

    proptest! {
        #[test]
        fn any_bytes_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), chunk in 1u32..300) {
            let mut reader = ChunkReader::default();
            reader.set_chunk_size(chunk);
            reader.push(&bytes);
            while let Ok(Some(_)) = reader.next_message() {}
        }

        #[test]
        fn messages_read_back_whatever_the_pieces(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 1..6),
            chunk in 1usize..400,
            split in 1usize..300,
            timestamp in any::<u32>(),
        ) {
            let mut out = Vec::new();
            for (n, payload) in payloads.iter().enumerate() {
                put_message(&mut out, 3 + (n % 3) as u8, (9, 1, timestamp.wrapping_add(n as u32)), payload, chunk);
            }
            let messages = read_back(&out, chunk as u32, split);
            prop_assert_eq!(messages.len(), payloads.len());
            for (n, (message, payload)) in messages.iter().zip(&payloads).enumerate() {
                prop_assert_eq!(&message.payload, payload);
                prop_assert_eq!(message.timestamp, timestamp.wrapping_add(n as u32));
            }
        }
    }
}
