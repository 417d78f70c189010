//! One camera's live FLV and its GOP: what a player or a snapshot needs to start, and the fan-out to viewers.
//!
//! Two caches, each with one job:
//! - the **packet GOP** ([`GopCache`]): every packet the camera's outputs were sent since the last keyframe,
//!   as references to the camera's own buffers. The camera thread keeps it always (a reference count per
//!   packet, no copy). Snapshots decode it; a warm camera's output and the preview's muxer start from it.
//! - the **FLV side**: only while someone watches the preview does the camera thread run an FLV muxer into
//!   this channel (see `pipeline`). It then keeps the file header, `onMetaData`, the sequence headers and every
//!   tag since the last keyframe, so a second viewer joins at once. Tags are reference-counted [`Bytes`], so
//!   handing the cache to a new viewer copies pointers, never video, and the camera thread — which takes the
//!   same lock for every tag — never waits behind a copy.
//!
//! A viewer arriving while no muxer runs is queued as *awaiting*: [`Channel::watched`] tells the camera thread,
//! which opens the muxer and replays the packet GOP into it, so the viewer's first tag is the file header and
//! its first frame the cached keyframe. When the last viewer has left, the camera thread ends the FLV side
//! ([`Channel::end_flv_if_unwatched`]) — a camera nobody watches pays for no muxer.
//!
//! Each viewer has a bounded queue; one that falls behind by a full queue is dropped rather than buffered
//! without bound (its HTTP response ends; the player reconnects).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ffmpeg_next::{Packet, Rational};
use tokio::sync::mpsc;

use super::flv_tags::{Piece, Tag, TagKind};
use crate::pipeline::{GopCache, Track};

/// Tags a viewer may have queued before it counts as too slow (about 10 s of a 25 fps camera with audio).
pub const VIEWER_QUEUE: usize = 1024;
/// Most bytes of FLV GOP kept for new viewers; a longer GOP is not cached (new viewers wait for the next
/// keyframe).
pub const MAX_GOP_BYTES: usize = 16 << 20;

/// One camera's fan-out point and GOP cache.
#[derive(Debug, Default)]
pub struct Channel {
    state: Mutex<State>,
    packets: Mutex<Packets>,
    /// Viewers in `state` (awaiting ones included), readable without the lock on every packet.
    watching: AtomicUsize,
    dropped_viewers: AtomicU64,
}

/// The FLV side.
#[derive(Debug, Default)]
struct State {
    /// `None`: no muxer runs (tags that still arrive, a finishing muxer's trailer, are not for anyone).
    header: Option<Bytes>,
    script: Option<Bytes>,
    video_config: Option<Bytes>,
    audio_config: Option<Bytes>,
    /// Tags since the last keyframe, keyframe first; empty until the first keyframe or after an overflow.
    gop: Vec<Bytes>,
    gop_bytes: usize,
    viewers: Vec<Slot>,
}

/// The packet side: the session's GOP and what decoding it needs.
#[derive(Default)]
struct Packets {
    cache: GopCache,
    /// The output video's decoder configuration (SPS/PPS), for snapshots.
    video_extradata: Vec<u8>,
}

impl std::fmt::Debug for Packets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packets").field("cached", &self.cache.len()).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Slot {
    queue: mpsc::Sender<Bytes>,
    /// Whether the viewer has had a keyframe; video before it cannot be decoded and is not sent.
    has_keyframe: bool,
    /// Subscribed while no muxer ran: the next file header is its start (any other viewer's stream ends there).
    awaiting_header: bool,
}

/// What a new viewer gets: the cached start of the stream, then the live tags.
#[derive(Debug)]
pub struct Subscription {
    /// Header, metadata, sequence headers and the cached GOP, in order (empty if the muxer is yet to start:
    /// then all of it comes through `live`).
    pub prefix: VecDeque<Bytes>,
    /// Live tags from now on; ends when the camera stops, restarts its session, or the viewer fell behind.
    pub live: mpsc::Receiver<Bytes>,
}

/// What a snapshot decodes: the output video's decoder configuration and its packets since the keyframe.
pub struct CachedGop {
    /// The H.264 decoder configuration (Annex B or `avcC`; may be empty when the camera sends it in-band).
    pub extradata: Vec<u8>,
    /// Video packets from the keyframe on (references to the camera's buffers, not copies).
    pub video: Vec<Packet>,
}

impl std::fmt::Debug for CachedGop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedGop").field("extradata", &self.extradata.len()).field("video", &self.video.len()).finish()
    }
}

impl Channel {
    /// Feeds one piece of the camera's FLV.
    pub fn publish(&self, piece: Piece) {
        let mut state = self.lock();
        let tag = match piece {
            Piece::FileHeader(header) => {
                // A new muxer: viewers of an earlier one end (their player reconnects: timestamps restart and
                // codecs may differ); viewers waiting for this one start here.
                state.restart(Some(header));
                self.count(&state);
                return;
            }
            Piece::Tag(tag) => tag,
        };
        if state.header.is_none() {
            return;
        }
        state.remember(&tag);
        let before = state.viewers.len();
        let mut too_slow = 0;
        state.viewers.retain_mut(|slot| {
            if slot.awaiting_header {
                return !slot.queue.is_closed();
            }
            if tag.kind == TagKind::VideoKeyframe {
                slot.has_keyframe = true;
            }
            if !slot.has_keyframe && matches!(tag.kind, TagKind::Video) {
                return true;
            }
            // Full means too slow, closed means gone: either way the viewer leaves.
            match slot.queue.try_send(tag.bytes.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    too_slow += 1;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if too_slow > 0 {
            self.dropped_viewers.fetch_add(too_slow, Ordering::Relaxed);
        }
        if state.viewers.len() != before {
            self.count(&state);
        }
    }

    /// A new viewer, unless `limit` viewers are watching already (then `None`).
    pub fn subscribe(&self, limit: usize) -> Option<Subscription> {
        let (queue, live) = mpsc::channel(VIEWER_QUEUE);
        let mut state = self.lock();
        state.viewers.retain(|slot| !slot.queue.is_closed());
        if state.viewers.len() >= limit {
            self.count(&state);
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
        let awaiting_header = state.header.is_none();
        state.viewers.push(Slot { queue, has_keyframe, awaiting_header });
        self.count(&state);
        Some(Subscription { prefix, live })
    }

    /// Viewers connected now.
    pub fn viewers(&self) -> usize {
        let mut state = self.lock();
        state.viewers.retain(|slot| !slot.queue.is_closed());
        self.count(&state);
        state.viewers.len()
    }

    /// Whether the camera thread runs the FLV muxer for this channel now.
    pub fn muxing(&self) -> bool {
        self.lock().header.is_some()
    }

    /// Whether anyone watches (or waits to): the camera thread's cue to run the FLV muxer. One atomic load.
    pub fn watched(&self) -> bool {
        self.watching.load(Ordering::Acquire) > 0
    }

    /// Viewers dropped so far because they could not keep up.
    pub fn dropped_viewers(&self) -> u64 {
        self.dropped_viewers.load(Ordering::Relaxed)
    }

    /// Ends every viewer's stream (the camera is gone).
    pub fn close(&self) {
        let mut state = self.lock();
        *state = State::default();
        self.count(&state);
    }

    /// The muxer ended with the camera's session: its viewers' streams end (their players reconnect); viewers
    /// awaiting a muxer stay for the next.
    pub fn end_flv(&self) {
        let mut state = self.lock();
        state.restart(None);
        self.count(&state);
    }

    /// Ends the FLV side if nobody watches or waits (`true`); the muxer may then be closed. With a viewer
    /// (one may have arrived since [`watched`](Self::watched) said no) nothing changes and it answers `false`.
    pub fn end_flv_if_unwatched(&self) -> bool {
        let mut state = self.lock();
        state.viewers.retain(|slot| !slot.queue.is_closed());
        self.count(&state);
        if !state.viewers.is_empty() {
            return false;
        }
        *state = State::default();
        true
    }

    /// A new camera session: its GOP starts empty, with the output video's decoder configuration.
    pub(crate) fn restart_gop(&self, video_extradata: Vec<u8>) {
        *self.packets_lock() = Packets { cache: GopCache::default(), video_extradata };
    }

    /// Keeps `packet` (as sent to the outputs) in the GOP.
    pub(crate) fn remember(&self, track: Track, packet: &Packet, time_base: Rational) {
        self.packets_lock().cache.push(track, packet, time_base);
    }

    /// New references to the GOP's packets, keyframe first, to replay into an output that starts now; and how
    /// old its keyframe is.
    pub(crate) fn gop_packets(&self) -> (Vec<(Track, Packet, Rational)>, Option<Duration>) {
        let packets = self.packets_lock();
        (packets.cache.shared(), packets.cache.age())
    }

    /// The cached GOP's video, for a snapshot; `None` before the first keyframe.
    pub fn cached_gop(&self) -> Option<CachedGop> {
        let packets = self.packets_lock();
        let video: Vec<Packet> = packets.cache.shared_video();
        (!video.is_empty()).then(|| CachedGop { extradata: packets.video_extradata.clone(), video })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn packets_lock(&self) -> std::sync::MutexGuard<'_, Packets> {
        self.packets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, state: &State) {
        self.watching.store(state.viewers.len(), Ordering::Release);
    }
}

impl State {
    /// Starts over for a muxer that starts with `header` (`None`: no muxer). Only viewers awaiting a muxer
    /// stay; with a header they get it now.
    fn restart(&mut self, header: Option<Bytes>) {
        let mut viewers = std::mem::take(&mut self.viewers);
        viewers.retain_mut(|slot| {
            if !slot.awaiting_header {
                return false;
            }
            let Some(header) = &header else { return !slot.queue.is_closed() };
            slot.awaiting_header = false;
            slot.has_keyframe = false;
            slot.queue.try_send(header.clone()).is_ok()
        });
        *self = State { header, viewers, ..State::default() };
    }

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
        // A viewer that leaves is gone, not dropped.
        drop(fast);
        feed(&channel, &mut splitter, &tag(8, &[0xaf, 1, 0]));
        assert_eq!((channel.viewers(), channel.dropped_viewers()), (0, 1));
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

    #[test]
    fn a_viewer_before_the_muxer_starts_gets_the_whole_stream_through_its_queue() {
        let channel = Channel::default();
        assert!(!channel.watched());
        let mut splitter = TagSplitter::default();
        // No muxer: stray tags (a finishing muxer's trailer) are for nobody.
        feed(&channel, &mut splitter, &FILE_HEADER);
        assert!(channel.end_flv_if_unwatched());
        let stray = tag(9, &[0x17, 1, 0, 0, 0, 0xee]);
        feed(&channel, &mut splitter, &stray);
        let mut viewer = channel.subscribe(10).unwrap();
        assert!(viewer.prefix.is_empty(), "nothing to start from yet");
        assert!(channel.watched(), "the camera thread is told to start the muxer");
        let config = tag(9, &[0x17, 0, 0, 0, 0, 1]);
        let key = tag(9, &[0x17, 1, 0, 0, 0, 0xa1]);
        let mut splitter = TagSplitter::default();
        for part in [&FILE_HEADER[..], &config, &key] {
            feed(&channel, &mut splitter, part);
        }
        assert_eq!(drain(&mut viewer), [&FILE_HEADER[..], &config, &key].concat());
        // A second viewer joins this muxer from its cache.
        let mut second = channel.subscribe(10).unwrap();
        assert_eq!(drain(&mut second), [&FILE_HEADER[..], &config, &key].concat());
    }

    #[test]
    fn the_flv_side_ends_only_when_nobody_watches() {
        let channel = Channel::default();
        let mut splitter = TagSplitter::default();
        feed(&channel, &mut splitter, &FILE_HEADER);
        let viewer = channel.subscribe(10).unwrap();
        assert!(!channel.end_flv_if_unwatched(), "a viewer is watching");
        drop(viewer);
        assert!(channel.watched(), "not noticed until the channel looks");
        assert!(channel.end_flv_if_unwatched());
        assert!(!channel.watched());
        let late = channel.subscribe(10).unwrap();
        assert!(late.prefix.is_empty(), "the ended muxer's header is not handed out");
    }

    fn packet(byte: u8, key: bool) -> Packet {
        let mut packet = Packet::copy(&[0, 0, 0, 1, byte]);
        if key {
            packet.set_flags(ffmpeg_next::packet::Flags::KEY);
        }
        packet
    }

    #[test]
    fn the_packet_gop_serves_replays_and_snapshots_from_the_last_keyframe() {
        let channel = Channel::default();
        let tb = Rational(1, 90_000);
        assert!(channel.cached_gop().is_none());
        channel.restart_gop(vec![1, 2, 3]);
        channel.remember(Track::Video, &packet(1, true), tb);
        channel.remember(Track::Video, &packet(2, true), tb);
        channel.remember(Track::Audio, &packet(3, false), tb);
        channel.remember(Track::Video, &packet(4, false), tb);
        let replay: Vec<(Track, u8)> =
            channel.gop_packets().0.iter().map(|(track, p, _)| (*track, p.data().unwrap()[4])).collect();
        assert_eq!(replay, vec![(Track::Video, 2), (Track::Audio, 3), (Track::Video, 4)]);
        let gop = channel.cached_gop().unwrap();
        assert_eq!(gop.extradata, vec![1, 2, 3]);
        let video: Vec<u8> = gop.video.iter().map(|p| p.data().unwrap()[4]).collect();
        assert_eq!(video, vec![2, 4], "video only, keyframe first");
        channel.restart_gop(Vec::new());
        assert!(channel.cached_gop().is_none(), "a new session starts empty");
    }
}
