//! A camera's memory of its current GOP: every packet sent since the last video keyframe (video and audio, as
//! references to the same buffers, not copies), so an output connected now — a warm camera's RTMP output, the
//! preview's muxer — can start with a picture at once instead of waiting up to a whole GOP for the camera's
//! next keyframe, and a snapshot has something to decode. It lives in the camera's preview channel
//! (`crate::preview::Channel`), which other threads read.
//!
//! Bounded: a camera that sends no keyframe for a long time (or a huge GOP) stops being cached until its next
//! keyframe — a late keyframe then costs the viewer a wait, never the process its memory.

use std::time::{Duration, Instant};

use ffmpeg_next::{Packet, Rational};

use super::output::Track;
use super::share;

/// Most packets kept (a 10 s GOP at 30 fps with audio is about 800).
const MAX_PACKETS: usize = 4096;
/// Most bytes kept (a 10 s GOP at 8 Mbit/s is 10 MB).
const MAX_BYTES: usize = 32 * 1024 * 1024;

/// The packets since the last keyframe, in the order they were sent.
#[derive(Default)]
pub struct GopCache {
    packets: Vec<(Track, Packet, Rational)>,
    bytes: usize,
    /// When the cached keyframe was sent.
    since: Option<Instant>,
    /// Over a bound: nothing is kept until the next keyframe.
    overflowed: bool,
}

impl GopCache {
    /// Remembers `packet` (a video keyframe starts a new GOP; anything before the first keyframe is skipped).
    pub fn push(&mut self, track: Track, packet: &Packet, time_base: Rational) {
        if track == Track::Video && packet.is_key() {
            self.packets.clear();
            self.bytes = 0;
            self.overflowed = false;
            self.since = Some(Instant::now());
        } else if self.since.is_none() || self.overflowed {
            return;
        }
        if self.packets.len() >= MAX_PACKETS || self.bytes + packet.size() > MAX_BYTES {
            self.packets.clear();
            self.bytes = 0;
            self.overflowed = true;
            self.since = None;
            return;
        }
        self.bytes += packet.size();
        self.packets.push((track, share(packet), time_base));
    }

    /// New references to the cached packets, keyframe first (pointers, so they can be written after the
    /// cache's lock is released).
    pub fn shared(&self) -> Vec<(Track, Packet, Rational)> {
        self.packets.iter().map(|(track, packet, time_base)| (*track, share(packet), *time_base)).collect()
    }

    /// New references to the cached video packets, keyframe first.
    pub fn shared_video(&self) -> Vec<Packet> {
        self.packets.iter().filter(|(track, ..)| *track == Track::Video).map(|(_, packet, _)| share(packet)).collect()
    }

    /// How many packets are cached.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// How old the cached keyframe is.
    pub fn age(&self) -> Option<Duration> {
        self.since.map(|since| since.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(size: usize, key: bool) -> Packet {
        let mut packet = Packet::new(size);
        if key {
            packet.set_flags(ffmpeg_next::packet::Flags::KEY);
        }
        packet
    }

    #[test]
    fn keeps_from_the_last_keyframe_and_stays_bounded() {
        let tb = Rational(1, 90_000);
        let mut cache = GopCache::default();
        cache.push(Track::Video, &packet(100, false), tb);
        cache.push(Track::Audio, &packet(10, false), tb);
        assert_eq!(cache.len(), 0, "nothing before the first keyframe");
        cache.push(Track::Video, &packet(100, true), tb);
        cache.push(Track::Audio, &packet(10, false), tb);
        cache.push(Track::Video, &packet(100, false), tb);
        assert_eq!(cache.len(), 3);
        assert!(cache.shared().first().is_some_and(|(track, p, _)| *track == Track::Video && p.is_key()));
        cache.push(Track::Video, &packet(100, true), tb);
        assert_eq!(cache.len(), 1, "a keyframe starts over");
        cache.push(Track::Video, &packet(MAX_BYTES, false), tb);
        assert_eq!(cache.len(), 0, "over the bound: dropped until the next keyframe");
        cache.push(Track::Video, &packet(10, false), tb);
        assert_eq!(cache.len(), 0);
        cache.push(Track::Video, &packet(10, true), tb);
        assert_eq!(cache.len(), 1);
    }
}
