//! One camera's live FLV fanned out to any number of viewers, each starting at the latest keyframe.
//!
//! The channel keeps what a player needs to start — the file header, `onMetaData`, the AVC and AAC sequence
//! headers, and every tag since the last keyframe (the GOP) — and gives a new viewer all of it in one piece
//! before the live tags. Each viewer has a bounded queue; one that falls behind by a full queue is dropped
//! rather than buffered without bound (its HTTP response ends; the player reconnects).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::flv_tags::{Piece, Tag, TagKind};

/// Tags a viewer may have queued before it counts as too slow (about 10 s of a 25 fps camera with audio).
pub const VIEWER_QUEUE: usize = 1024;
/// Most bytes of GOP kept for new viewers; a longer GOP is not cached (new viewers wait for the next keyframe).
pub const MAX_GOP_BYTES: usize = 16 << 20;

/// A viewer's end: chunks of FLV, the first one starting with the file header. The stream ends when the
/// camera stops, restarts its session, or the viewer fell too far behind.
pub type Viewer = mpsc::Receiver<Bytes>;

/// One camera's fan-out point.
#[derive(Debug, Default)]
pub struct Channel {
    state: Mutex<State>,
    dropped_viewers: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    header: Option<Bytes>,
    script: Option<Bytes>,
    video_config: Option<Bytes>,
    audio_config: Option<Bytes>,
    /// Tags since the last keyframe, keyframe first; empty until the first keyframe or after an overflow.
    gop: Vec<Bytes>,
    gop_bytes: usize,
    viewers: Vec<Slot>,
}

#[derive(Debug)]
struct Slot {
    queue: mpsc::Sender<Bytes>,
    /// Whether the viewer has had a keyframe; video before it cannot be decoded and is not sent.
    has_keyframe: bool,
}

impl Channel {
    /// Feeds one piece of the camera's FLV.
    pub fn publish(&self, piece: Piece) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let tag = match piece {
            Piece::FileHeader(header) => {
                // A new muxer session: timestamps restart at zero and codecs may differ, so viewers of the old
                // one are ended (players reconnect) and the caches start over.
                *state = State { header: Some(header), ..State::default() };
                return;
            }
            Piece::Tag(tag) => tag,
        };
        state.remember(&tag);
        let before = state.viewers.len();
        state.viewers.retain_mut(|slot| {
            if tag.kind == TagKind::VideoKeyframe {
                slot.has_keyframe = true;
            }
            if !slot.has_keyframe && matches!(tag.kind, TagKind::Video) {
                return true;
            }
            // Full means too slow, closed means gone: either way the viewer leaves.
            slot.queue.try_send(tag.bytes.clone()).is_ok()
        });
        let dropped = before - state.viewers.len();
        if dropped > 0 {
            self.dropped_viewers.fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }

    /// A new viewer: it gets header, metadata, sequence headers and the cached GOP at once, then live tags.
    pub fn subscribe(&self) -> Viewer {
        let (queue, viewer) = mpsc::channel(VIEWER_QUEUE);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut prefix = BytesMut::new();
        for part in [&state.header, &state.script, &state.video_config, &state.audio_config].into_iter().flatten() {
            prefix.extend_from_slice(part);
        }
        for tag in &state.gop {
            prefix.extend_from_slice(tag);
        }
        if !prefix.is_empty() {
            // Cannot fail: the queue is new and empty.
            let _ = queue.try_send(prefix.freeze());
        }
        let has_keyframe = !state.gop.is_empty();
        state.viewers.push(Slot { queue, has_keyframe });
        viewer
    }

    /// Viewers connected now.
    pub fn viewers(&self) -> usize {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.viewers.retain(|slot| !slot.queue.is_closed());
        state.viewers.len()
    }

    /// Viewers dropped so far because they could not keep up.
    pub fn dropped_viewers(&self) -> u64 {
        self.dropped_viewers.load(Ordering::Relaxed)
    }

    /// Whether a keyframe is cached, i.e. a new viewer would see a picture at once.
    pub fn has_picture(&self) -> bool {
        !self.state.lock().unwrap_or_else(|e| e.into_inner()).gop.is_empty()
    }

    /// The cached GOP's tags (keyframe first) with the video sequence header, for snapshots.
    pub fn gop_snapshot(&self) -> Option<(Bytes, Vec<Bytes>)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let config = state.video_config.clone()?;
        (!state.gop.is_empty()).then(|| (config, state.gop.clone()))
    }
}

impl State {
    fn remember(&mut self, tag: &Tag) {
        match tag.kind {
            TagKind::Script => self.script = Some(tag.bytes.clone()),
            TagKind::VideoConfig => self.video_config = Some(tag.bytes.clone()),
            TagKind::AudioConfig => self.audio_config = Some(tag.bytes.clone()),
            TagKind::VideoKeyframe => {
                self.gop.clear();
                self.gop_bytes = 0;
                self.push_gop(tag);
            }
            TagKind::Video | TagKind::Audio if !self.gop.is_empty() => self.push_gop(tag),
            _ => {}
        }
    }

    fn push_gop(&mut self, tag: &Tag) {
        self.gop_bytes += tag.bytes.len();
        if self.gop_bytes > MAX_GOP_BYTES {
            self.gop.clear();
            self.gop_bytes = 0;
        } else {
            self.gop.push(tag.bytes.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::flv_tags::TagSplitter;
    use super::super::flv_tags::tests::{FILE_HEADER, tag};
    use super::*;

    fn feed(channel: &Channel, splitter: &mut TagSplitter, bytes: &[u8]) {
        for piece in splitter.push(bytes) {
            channel.publish(piece);
        }
    }

    fn drain(viewer: &mut Viewer) -> Vec<u8> {
        let mut out = Vec::new();
        while let Ok(chunk) = viewer.try_recv() {
            out.extend_from_slice(&chunk);
        }
        out
    }

    #[test]
    fn late_viewer_starts_at_the_latest_keyframe() {
        let channel = Channel::default();
        let mut splitter = TagSplitter::default();
        let config = tag(9, &[0x17, 0, 0, 0, 0, 1]);
        let key1 = tag(9, &[0x17, 1, 0, 0, 0, 0xa1]);
        let inter1 = tag(9, &[0x27, 1, 0, 0, 0, 0xa2]);
        let key2 = tag(9, &[0x17, 1, 0, 0, 0, 0xb1]);
        let audio = tag(8, &[0xaf, 1, 0xb2]);
        for part in [&FILE_HEADER[..], &config, &key1, &inter1, &key2, &audio] {
            feed(&channel, &mut splitter, part);
        }
        let mut viewer = channel.subscribe();
        let expected: Vec<u8> = [&FILE_HEADER[..], &config, &key2, &audio].concat();
        assert_eq!(drain(&mut viewer), expected);
        // Then live tags follow.
        let live = tag(9, &[0x27, 1, 0, 0, 0, 0xb3]);
        feed(&channel, &mut splitter, &live);
        assert_eq!(drain(&mut viewer), live);
        assert!(channel.has_picture());
    }

    #[test]
    fn early_viewer_skips_video_until_a_keyframe() {
        let channel = Channel::default();
        let mut splitter = TagSplitter::default();
        feed(&channel, &mut splitter, &FILE_HEADER);
        let mut viewer = channel.subscribe();
        let inter = tag(9, &[0x27, 1, 0, 0, 0, 1]);
        let key = tag(9, &[0x17, 1, 0, 0, 0, 2]);
        feed(&channel, &mut splitter, &inter);
        feed(&channel, &mut splitter, &key);
        assert_eq!(drain(&mut viewer), [&FILE_HEADER[..], &key].concat());
    }

    #[test]
    fn slow_viewer_is_dropped_and_others_are_not() {
        let channel = Channel::default();
        let mut splitter = TagSplitter::default();
        feed(&channel, &mut splitter, &FILE_HEADER);
        feed(&channel, &mut splitter, &tag(9, &[0x17, 1, 0, 0, 0, 0]));
        let slow = channel.subscribe();
        let mut fast = channel.subscribe();
        for i in 0..(VIEWER_QUEUE + 10) {
            feed(&channel, &mut splitter, &tag(8, &[0xaf, 1, i as u8]));
            drain(&mut fast);
        }
        assert_eq!(channel.viewers(), 1);
        assert_eq!(channel.dropped_viewers(), 1);
        drop(slow);
    }

    #[test]
    fn a_new_session_ends_old_viewers() {
        let channel = Channel::default();
        let mut splitter = TagSplitter::default();
        feed(&channel, &mut splitter, &FILE_HEADER);
        let mut viewer = channel.subscribe();
        drain(&mut viewer);
        // The next session's muxer starts a new stream on a new splitter.
        channel.publish(Piece::FileHeader(Bytes::from_static(&FILE_HEADER)));
        assert!(matches!(viewer.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
        assert_eq!(channel.viewers(), 0);
    }
}
