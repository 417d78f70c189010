//! Splitting the bytes of an RTSP connection into what they carry once PLAY has begun: interleaved binary
//! frames (`$`, channel, 16-bit length, an RTP or RTCP packet; RFC 2326 §10.12) and whole RTSP messages (the
//! answers to keep-alives, or a request of the server's), from one buffer filled by large reads.
//!
//! This is where camgate's reader saves its system calls: libavformat reads each frame's header and then its
//! payload with a `poll` and a `recv` each, while here one `recv` takes in whatever the socket holds and the
//! frames are cut out of it in memory.

/// The buffer: the largest interleaved frame (4 + 65 535 bytes) plus room for the next read.
pub(crate) const BUFFER_BYTES: usize = 72 * 1024;
/// The longest head of an RTSP message (start line and headers) accepted in the stream.
const MAX_HEAD: usize = 8 * 1024;
/// How many stray bytes in a row are skipped, looking for the next frame, before the stream counts as garbled.
const MAX_SKIPPED: usize = 64 * 1024;

/// One item cut from the stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    /// An interleaved frame's payload on `channel`.
    Data { channel: u8, payload: &'a [u8] },
    /// A whole RTSP message: its head (start line and headers, without the blank line) and body.
    Message { head: &'a [u8], body: &'a [u8] },
}

/// Why the stream cannot be read on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FramingError {
    /// Over [`MAX_SKIPPED`] bytes in a row start neither an interleaved frame nor an RTSP message.
    #[error("garbled interleaved stream: {0} bytes in a row start neither a `$` frame nor an RTSP message")]
    Garbled(usize),
    /// An RTSP message whose head does not end within the limit.
    #[error("an RTSP message in the stream has a head over {MAX_HEAD} bytes")]
    HeadTooLong,
    /// An RTSP message whose body would not fit the buffer.
    #[error("an RTSP message in the stream has a body of {0} bytes, over the buffer")]
    BodyTooLong(usize),
    /// A `Content-Length` that is not a number.
    #[error("an RTSP message in the stream has an unreadable Content-Length")]
    BadLength,
}

/// The connection's receive buffer: bytes at `start..end` are unread.
pub(crate) struct Framer {
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    /// Stray bytes skipped since the last item.
    skipped: usize,
}

impl Framer {
    /// An empty buffer of [`BUFFER_BYTES`].
    pub(crate) fn new() -> Framer {
        Framer { buffer: vec![0; BUFFER_BYTES].into_boxed_slice(), start: 0, end: 0, skipped: 0 }
    }

    /// Where the next read may write: moves what is unread to the front first when that makes room.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 && (self.start == self.end || self.buffer.len() - self.end < 8 * 1024) {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buffer[self.end..]
    }

    /// Takes `n` bytes the last read wrote into [`Framer::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buffer.len());
    }

    /// Unread bytes.
    #[cfg(test)]
    fn unread(&self) -> &[u8] {
        &self.buffer[self.start..self.end]
    }

    /// The next whole item, or `None` until more bytes arrive.
    ///
    /// Stray bytes before an item (a camera's padding, the rest of a frame it cut short) are skipped, as
    /// libavformat skips them, up to [`MAX_SKIPPED`] in a row.
    pub(crate) fn next_item(&mut self) -> Result<Option<Item<'_>>, FramingError> {
        let unread = &self.buffer[self.start..self.end];
        let stray = unread.iter().position(|&b| b == b'$' || b.is_ascii_uppercase()).unwrap_or(unread.len());
        self.start += stray;
        self.skipped += stray;
        if self.skipped > MAX_SKIPPED {
            return Err(FramingError::Garbled(self.skipped));
        }
        let unread = &self.buffer[self.start..self.end];
        let Some(&first) = unread.first() else { return Ok(None) };
        self.skipped = 0;
        if first == b'$' {
            if unread.len() < 4 {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([unread[2], unread[3]]));
            if unread.len() < 4 + len {
                return Ok(None);
            }
            let channel = unread[1];
            let at = self.start + 4;
            self.start = at + len;
            return Ok(Some(Item::Data { channel, payload: &self.buffer[at..at + len] }));
        }
        let Some((head_len, body_len)) = message_extent(unread)? else { return Ok(None) };
        if unread.len() < head_len + 4 + body_len {
            return Ok(None);
        }
        let at = self.start;
        self.start = at + head_len + 4 + body_len;
        Ok(Some(Item::Message {
            head: &self.buffer[at..at + head_len],
            body: &self.buffer[at + head_len + 4..at + head_len + 4 + body_len],
        }))
    }
}

/// For an RTSP message at the start of `bytes`: the length of its head (before the blank line) and of its
/// body, once the head is complete.
pub(crate) fn message_extent(bytes: &[u8]) -> Result<Option<(usize, usize)>, FramingError> {
    let Some(head_len) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if bytes.len() > MAX_HEAD { Err(FramingError::HeadTooLong) } else { Ok(None) };
    };
    if head_len > MAX_HEAD {
        return Err(FramingError::HeadTooLong);
    }
    let body_len = match header(&bytes[..head_len], "content-length") {
        None => 0,
        Some(value) => value.trim().parse::<usize>().map_err(|_| FramingError::BadLength)?,
    };
    // The whole message must fit the buffer, or the framer could never return it.
    if head_len + 4 + body_len > BUFFER_BYTES {
        return Err(FramingError::BodyTooLong(body_len));
    }
    Ok(Some((head_len, body_len)))
}

/// The value of header `name` (lower case) in a message head, if present.
pub(crate) fn header<'h>(head: &'h [u8], name: &str) -> Option<&'h str> {
    std::str::from_utf8(head).ok()?.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(channel: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![b'$', channel];
        bytes.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Every item of `stream`, fed to a framer in pieces of `chunk` bytes.
    fn items(stream: &[u8], chunk: usize) -> Result<Vec<(u8, Vec<u8>)>, FramingError> {
        let mut framer = Framer::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            let spare = framer.spare();
            spare[..piece.len()].copy_from_slice(piece);
            framer.filled(piece.len());
            while let Some(item) = framer.next_item()? {
                out.push(match item {
                    Item::Data { channel, payload } => (channel, payload.to_vec()),
                    Item::Message { head, body } => (255, [head, b"|", body].concat()),
                });
            }
        }
        assert!(framer.unread().is_empty(), "bytes left over");
        Ok(out)
    }

    #[test]
    fn frames_and_messages_come_out_whole_however_the_bytes_arrive() {
        let mut stream = frame(0, &[0x80, 96, 1, 2]);
        stream.extend(frame(1, &[0x80, 200]));
        stream.extend_from_slice(b"RTSP/1.0 200 OK\r\nCSeq: 7\r\nContent-Length: 3\r\n\r\nabc");
        stream.extend(frame(2, &vec![7; 1500]));
        stream.extend(frame(0, &[]));
        let whole = items(&stream, stream.len()).unwrap();
        assert_eq!(whole.len(), 5);
        assert_eq!(whole[0], (0, vec![0x80, 96, 1, 2]));
        assert_eq!(whole[2], (255, b"RTSP/1.0 200 OK\r\nCSeq: 7\r\nContent-Length: 3|abc".to_vec()));
        assert_eq!(whole[3].1.len(), 1500);
        for chunk in [1, 2, 3, 5, 64, 1499] {
            assert_eq!(items(&stream, chunk).unwrap(), whole, "in pieces of {chunk}");
        }
    }

    #[test]
    fn stray_bytes_between_items_are_skipped() {
        let mut stream = b"\r\n\x00".to_vec();
        stream.extend(frame(0, &[1, 2, 3]));
        stream.extend_from_slice(&[0x7f; 100]);
        stream.extend(frame(1, &[4]));
        assert_eq!(items(&stream, 7).unwrap(), vec![(0, vec![1, 2, 3]), (1, vec![4])]);
    }

    #[test]
    fn the_largest_frame_fits() {
        let stream = frame(4, &vec![1; 65_535]);
        assert_eq!(items(&stream, 4096).unwrap()[0].1.len(), 65_535);
    }

    #[test]
    fn garbage_and_oversized_messages_are_errors() {
        assert_eq!(items(&vec![0; MAX_SKIPPED + 1], 4096), Err(FramingError::Garbled(MAX_SKIPPED + 1)));
        let long = [b"RTSP/1.0 200 OK\r\nX: ".as_slice(), &vec![b'a'; MAX_HEAD + 1]].concat();
        assert_eq!(items(&long, 1024), Err(FramingError::HeadTooLong));
        assert_eq!(items(b"ANNOUNCE x RTSP/1.0\r\nContent-Length: zz\r\n\r\n", 64), Err(FramingError::BadLength));
        assert_eq!(
            items(b"RTSP/1.0 200 OK\r\nContent-Length: 999999\r\n\r\n", 64),
            Err(FramingError::BodyTooLong(999_999))
        );
    }

    #[test]
    fn headers_are_found_by_name_in_any_case() {
        let head = b"RTSP/1.0 200 OK\r\ncseq: 3\r\nSession:  abc;timeout=30";
        assert_eq!(header(head, "session"), Some("abc;timeout=30"));
        assert_eq!(header(head, "CSeq"), Some("3"));
        assert_eq!(header(head, "public"), None);
    }

    proptest::proptest! {
        /// Whatever a camera sends, in whatever pieces, the framer returns items or an error: it never panics
        /// nor hands out bytes beyond what it was given.
        #[test]
        fn any_bytes_in_any_pieces_are_safe(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096),
                                            chunk in 1usize..600) {
            let mut framer = Framer::new();
            for piece in bytes.chunks(chunk) {
                let spare = framer.spare();
                spare[..piece.len()].copy_from_slice(piece);
                framer.filled(piece.len());
                loop {
                    match framer.next_item() {
                        Ok(Some(Item::Data { payload, .. })) => proptest::prop_assert!(payload.len() <= bytes.len()),
                        Ok(Some(Item::Message { head, body })) => {
                            proptest::prop_assert!(head.len() + body.len() <= bytes.len())
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }

        /// A stream of frames comes out the same whole or in any pieces.
        #[test]
        fn frames_survive_any_chunking(payloads in proptest::collection::vec(
                                           proptest::collection::vec(proptest::num::u8::ANY, 0..2000), 1..20),
                                       chunk in 1usize..3000) {
            let stream: Vec<u8> =
                payloads.iter().enumerate().flat_map(|(i, p)| frame((i % 4) as u8, p)).collect();
            let expected: Vec<(u8, Vec<u8>)> =
                payloads.iter().enumerate().map(|(i, p)| ((i % 4) as u8, p.clone())).collect();
            proptest::prop_assert_eq!(items(&stream, chunk).unwrap(), expected);
        }
    }
}
