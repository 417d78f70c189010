//! One camera's live FLV: the cache of what a player needs to start, and the fan-out to its viewers.
//!
//! The channel keeps the file header, `onMetaData`, the AVC and AAC sequence headers, and every tag since the
//! last keyframe (the GOP). This is the camera's one GOP cache: new viewers start from it, and snapshots decode
//! its video tags. Tags are reference-counted [`Bytes`], so handing the cache to a new viewer copies pointers,
//! not video, and the camera thread — which takes the same lock for every tag — never waits behind a copy.
//!
//! Each viewer has a bounded queue; one that falls behind by a full queue is dropped rather than buffered
//! without bound (its HTTP response ends; the player reconnects).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::flv_tags::{Piece, Tag, TagKind};

/// Tags a viewer may have queued before it counts as too slow (about 10 s of a 25 fps camera with audio).
pub const VIEWER_QUEUE: usize = 1024;
/// Most bytes of GOP kept for new viewers and snapshots; a longer GOP is not cached (new viewers wait for the
/// next keyframe, snapshots answer "no picture yet").
pub const MAX_GOP_BYTES: usize = 16 << 20;

/// One camera's fan-out point and GOP cache.
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

/// What a new viewer gets: the cached start of the stream, then the live tags.
#[derive(Debug)]
pub struct Subscription {
    /// Header, metadata, sequence headers and the cached GOP, in order.
    pub prefix: VecDeque<Bytes>,
    /// Live tags from now on; ends when the camera stops, restarts its session, or the viewer fell behind.
    pub live: mpsc::Receiver<Bytes>,
}

/// What a snapshot decodes: the AVC sequence header tag and the video tags of the GOP, keyframe first.
#[derive(Debug, Clone)]
pub struct CachedGop {
    /// The AVC sequence header tag (its body carries the decoder configuration).
    pub video_config: Bytes,
    /// Video tags from the keyframe on.
    pub video: Vec<Bytes>,
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

    /// A new viewer, unless `limit` viewers are watching already (then `None`).
    pub fn subscribe(&self, limit: usize) -> Option<Subscription> {
        let (queue, live) = mpsc::channel(VIEWER_QUEUE);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.viewers.retain(|slot| !slot.queue.is_closed());
        if state.viewers.len() >= limit {
            return None;
        }
        // Reference counts only: the lock is held for pointer copies, never for copying video.
        let mut prefix: VecDeque<Bytes> = [&state.header, &state.script, &state.video_config, &state.audio_config]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        prefix.extend(state.gop.iter().cloned());
        let has_keyframe = !state.gop.is_empty();
        state.viewers.push(Slot { queue, has_keyframe });
        Some(Subscription { prefix, live })
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

    /// Ends every viewer's stream (the camera is gone).
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).viewers.clear();
    }

    /// The cached GOP's video, for a snapshot; `None` before the first keyframe.
    pub fn cached_gop(&self) -> Option<CachedGop> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let video_config = state.video_config.clone()?;
        let video: Vec<Bytes> =
            state.gop.iter().filter(|tag| tag.first().is_some_and(|kind| kind & 0x1f == 9)).cloned().collect();
        (!video.is_empty()).then_some(CachedGop { video_config, video })
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

    fn drain(viewer: &mut Subscription) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = viewer.prefix.pop_front() {
            out.extend_from_slice(&chunk);
        }
        while let Ok(chunk) = viewer.live.try_recv() {
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
        let mut viewer = channel.subscribe(10).unwrap();
        let expected: Vec<u8> = [&FILE_HEADER[..], &config, &key2, &audio].concat();
        assert_eq!(drain(&mut viewer), expected);
        // Then live tags follow.
        let live = tag(9, &[0x27, 1, 0, 0, 0, 0xb3]);
        feed(&channel, &mut splitter, &live);
        assert_eq!(drain(&mut viewer), live);
        // The snapshot sees the same GOP: the config and the video tags only.
        let gop = channel.cached_gop().unwrap();
        assert_eq!(gop.video_config, config);
        assert_eq!(gop.video, vec![Bytes::from(key2), Bytes::from(live)]);
    }

    #[test]
    fn early_viewer_skips_video_until_a_keyframe() {
        let channel = Channel::default();
        let mut splitter = TagSplitter::default();
        feed(&channel, &mut splitter, &FILE_HEADER);
        let mut viewer = channel.subscribe(10).unwrap();
        let inter = tag(9, &[0x27, 1, 0, 0, 0, 1]);
        let key = tag(9, &[0x17, 1, 0, 0, 0, 2]);
        feed(&channel, &mut splitter, &inter);
        feed(&channel, &mut splitter, &key);
        assert_eq!(drain(&mut viewer), [&FILE_HEADER[..], &key].concat());
        assert!(channel.cached_gop().is_none(), "no sequence header yet: nothing to decode");
    }

    #[test]
    fn slow_viewer_is_dropped_and_others_are_not() {
        let channel = Channel::default();
        let mut splitter = TagSplitter::default();
        feed(&channel, &mut splitter, &FILE_HEADER);
        feed(&channel, &mut splitter, &tag(9, &[0x17, 1, 0, 0, 0, 0]));
        let slow = channel.subscribe(10).unwrap();
        let mut fast = channel.subscribe(10).unwrap();
        for i in 0..(VIEWER_QUEUE + 10) {
            feed(&channel, &mut splitter, &tag(8, &[0xaf, 1, i as u8]));
            drain(&mut fast);
        }
        assert_eq!(channel.viewers(), 1);
        assert_eq!(channel.dropped_viewers(), 1);
        drop(slow);
    }

    #[test]
    fn the_viewer_limit_refuses_the_next_and_frees_on_leave() {
        let channel = Channel::default();
        let first = channel.subscribe(2).unwrap();
        let _second = channel.subscribe(2).unwrap();
        assert!(channel.subscribe(2).is_none());
        drop(first);
        assert!(channel.subscribe(2).is_some(), "a viewer that left frees its place");
    }

    #[test]
    fn a_new_session_ends_old_viewers() {
        let channel = Channel::default();
        let mut splitter = TagSplitter::default();
        feed(&channel, &mut splitter, &FILE_HEADER);
        let mut viewer = channel.subscribe(10).unwrap();
        drain(&mut viewer);
        // The next session's muxer starts a new stream on a new splitter.
        channel.publish(Piece::FileHeader(Bytes::from_static(&FILE_HEADER)));
        assert!(matches!(viewer.live.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
        assert_eq!(channel.viewers(), 0);
    }
}
