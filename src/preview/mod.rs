//! The built-in preview: every camera's FLV served by camgate itself to any number of HTTP-FLV viewers (so a
//! single box needs no RTMP server to show video), and still pictures decoded on request.
//!
//! Every camera's thread keeps its current GOP (references to the packets it sent) in the camera's
//! [`Channel`]: [`snapshot`] decodes it, and a warm camera's output starts from it. While someone watches, and
//! only then, the thread also runs an FLV muxer into a [`HubWriter`] (an `io::Write` the muxer uses as its
//! AVIO), which cuts the stream into tags ([`flv_tags`]) and publishes them to the channel; the first viewer's
//! muxer starts from the cached GOP, so every viewer's first frame is a keyframe. A web handler calls
//! [`PreviewHub::subscribe`] and streams what the [`Viewer`] yields.
//!
//! Every camera has a channel (snapshots need the GOP); whether viewers may watch it is the camera's
//! `preview` setting. Viewers are bounded per camera and in total ([`PreviewLimits`]).

mod channel;
#[doc(hidden)]
pub mod flv_tags;
pub mod snapshot;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::mpsc;

/// Exposed for the benchmark harness only (the hub's fan-out is measured directly); not a supported API.
#[doc(hidden)]
pub use self::channel::Channel;
pub use self::channel::{CachedGop, MAX_GOP_BYTES, VIEWER_QUEUE};
use self::flv_tags::TagSplitter;
pub use self::snapshot::SnapshotError;
use crate::model::CameraId;

/// How many preview viewers are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviewLimits {
    /// Viewers of all cameras together.
    pub max_viewers: usize,
    /// Viewers of one camera.
    pub max_viewers_per_camera: usize,
}

impl Default for PreviewLimits {
    /// 100 in all, 20 per camera: each viewer may hold up to [`VIEWER_QUEUE`] tags (seconds of video) in
    /// memory, and a preview is for operators, not for an audience (that is the RTMP server's job).
    fn default() -> Self {
        PreviewLimits { max_viewers: 100, max_viewers_per_camera: 20 }
    }
}

/// Why a viewer was not admitted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SubscribeError {
    /// No such camera running.
    #[error("camera {0} is not running")]
    Unknown(CameraId),
    /// The camera runs without the preview.
    #[error("camera {0} runs without the preview")]
    Disabled(CameraId),
    /// Too many viewers of this camera.
    #[error("camera {camera} has {limit} preview viewers already (limits.preview_viewers_per_camera)")]
    CameraFull {
        /// The camera.
        camera: CameraId,
        /// The limit.
        limit: usize,
    },
    /// Too many viewers in all.
    #[error("the gateway serves {limit} preview viewers already (limits.preview_viewers)")]
    Full {
        /// The limit.
        limit: usize,
    },
}

/// One camera's entry: its channel and whether viewers may watch.
#[derive(Debug)]
struct Entry {
    channel: Arc<Channel>,
    viewable: bool,
}

/// All cameras' preview channels.
#[derive(Debug)]
pub struct PreviewHub {
    channels: RwLock<HashMap<CameraId, Entry>>,
    limits: PreviewLimits,
    viewers: Arc<AtomicUsize>,
}

impl Default for PreviewHub {
    fn default() -> Self {
        PreviewHub::new(PreviewLimits::default())
    }
}

impl PreviewHub {
    /// A hub with these viewer limits.
    pub fn new(limits: PreviewLimits) -> PreviewHub {
        PreviewHub { channels: RwLock::default(), limits, viewers: Arc::default() }
    }

    /// A fresh channel for a camera that is starting; `viewable` says whether viewers may watch it.
    pub(crate) fn open(&self, id: &CameraId, viewable: bool) -> Arc<Channel> {
        let channel = Arc::new(Channel::default());
        let entry = Entry { channel: Arc::clone(&channel), viewable };
        if let Some(old) = self.channels.write().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), entry) {
            old.channel.close();
        }
        channel
    }

    /// Forgets a camera's channel; its viewers' streams end.
    pub(crate) fn remove(&self, id: &CameraId) {
        if let Some(entry) = self.channels.write().unwrap_or_else(|e| e.into_inner()).remove(id) {
            entry.channel.close();
        }
    }

    /// A new viewer of `id`'s preview, within the limits.
    pub fn subscribe(&self, id: &CameraId) -> Result<Viewer, SubscribeError> {
        let channel = {
            let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
            let entry = channels.get(id).ok_or_else(|| SubscribeError::Unknown(id.clone()))?;
            if !entry.viewable {
                return Err(SubscribeError::Disabled(id.clone()));
            }
            Arc::clone(&entry.channel)
        };
        let limit = self.limits.max_viewers;
        // Reserve a place in the total first, so concurrent viewers cannot overshoot it.
        if self.viewers.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)).is_err() {
            return Err(SubscribeError::Full { limit });
        }
        let place = ViewerPlace(Arc::clone(&self.viewers));
        let per_camera = self.limits.max_viewers_per_camera;
        let subscription = channel
            .subscribe(per_camera)
            .ok_or_else(|| SubscribeError::CameraFull { camera: id.clone(), limit: per_camera })?;
        Ok(Viewer { prefix: subscription.prefix, live: subscription.live, _place: place })
    }

    /// Viewers of `id`'s preview now, and viewers dropped so far for falling behind.
    pub fn viewer_stats(&self, id: &CameraId) -> (usize, u64) {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map_or((0, 0), |e| (e.channel.viewers(), e.channel.dropped_viewers()))
    }

    /// Whether `id`'s preview muxer runs now: while someone watches, and for a few seconds after the last left.
    pub fn is_muxing(&self, id: &CameraId) -> bool {
        self.channels.read().unwrap_or_else(|e| e.into_inner()).get(id).is_some_and(|e| e.channel.muxing())
    }

    /// Preview viewers of all cameras now.
    pub fn total_viewers(&self) -> usize {
        self.viewers.load(Ordering::Acquire)
    }

    /// The limits it enforces.
    pub fn limits(&self) -> PreviewLimits {
        self.limits
    }

    /// The camera's cached GOP, for a snapshot.
    pub fn cached_gop(&self, id: &CameraId) -> Option<CachedGop> {
        self.channels.read().unwrap_or_else(|e| e.into_inner()).get(id).and_then(|e| e.channel.cached_gop())
    }
}

/// A viewer's place in the hub's total; given back when the viewer is dropped.
#[derive(Debug)]
struct ViewerPlace(Arc<AtomicUsize>);

impl Drop for ViewerPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A viewer's end: chunks of FLV, the first one starting with the file header. The stream ends when the
/// camera stops, restarts its session, or the viewer fell too far behind.
#[derive(Debug)]
pub struct Viewer {
    prefix: VecDeque<Bytes>,
    live: mpsc::Receiver<Bytes>,
    _place: ViewerPlace,
}

impl Viewer {
    /// The next chunk, or `None` when the stream has ended.
    pub async fn recv(&mut self) -> Option<Bytes> {
        match self.prefix.pop_front() {
            Some(chunk) => Some(chunk),
            None => self.live.recv().await,
        }
    }

    /// The next chunk if one is ready, for callers outside an async runtime.
    pub fn try_recv(&mut self) -> Result<Bytes, mpsc::error::TryRecvError> {
        match self.prefix.pop_front() {
            Some(chunk) => Ok(chunk),
            None => self.live.try_recv(),
        }
    }
}

/// The muxer's side of a channel: bytes in, tags out to viewers. Never blocks, never panics (FFmpeg calls it
/// through a C callback, where a panic would abort the process). Public for the benchmark harness only.
#[doc(hidden)]
pub struct HubWriter {
    splitter: TagSplitter,
    channel: Arc<Channel>,
}

impl HubWriter {
    /// A writer publishing to `channel`.
    pub fn new(channel: Arc<Channel>) -> HubWriter {
        HubWriter { splitter: TagSplitter::default(), channel }
    }
}

impl io::Write for HubWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for piece in self.splitter.push(buf) {
            self.channel.publish(piece);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_per_camera_limits() {
        let hub = PreviewHub::new(PreviewLimits { max_viewers: 3, max_viewers_per_camera: 2 });
        let (a, b): (CameraId, CameraId) = ("a".parse().unwrap(), "b".parse().unwrap());
        hub.open(&a, true);
        hub.open(&b, true);
        let hidden: CameraId = "h".parse().unwrap();
        hub.open(&hidden, false);
        assert_eq!(hub.subscribe(&hidden).unwrap_err(), SubscribeError::Disabled(hidden));
        let a1 = hub.subscribe(&a).unwrap();
        let _a2 = hub.subscribe(&a).unwrap();
        assert!(matches!(hub.subscribe(&a), Err(SubscribeError::CameraFull { limit: 2, .. })));
        let _b1 = hub.subscribe(&b).unwrap();
        assert_eq!(hub.subscribe(&b).unwrap_err(), SubscribeError::Full { limit: 3 });
        assert_eq!(hub.total_viewers(), 3);
        drop(a1);
        assert_eq!(hub.total_viewers(), 2);
        hub.subscribe(&b).expect("a place was freed");
        assert!(matches!(hub.subscribe(&"zz".parse().unwrap()), Err(SubscribeError::Unknown(_))));
    }
}
