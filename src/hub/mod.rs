//! The built-in preview: every camera's FLV served by camgate itself to any number of HTTP-FLV viewers, so a
//! single box needs no RTMP server to show video.
//!
//! The pipeline writes its FLV into a [`HubWriter`] (an `io::Write` the muxer uses as its AVIO), which cuts the
//! stream into tags ([`flv_tags`]) and publishes them to the camera's [`Channel`]. A web handler calls
//! [`PreviewHub::subscribe`] and streams what the [`Viewer`] yields.

mod channel;
pub mod flv_tags;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, RwLock};

pub use self::channel::{Channel, MAX_GOP_BYTES, VIEWER_QUEUE, Viewer};
use self::flv_tags::TagSplitter;
use crate::spec::CameraId;

/// All cameras' preview channels.
#[derive(Debug, Default)]
pub struct PreviewHub {
    channels: RwLock<HashMap<CameraId, Arc<Channel>>>,
}

impl PreviewHub {
    /// The channel a camera publishes to, created on first use.
    pub fn channel(&self, id: &CameraId) -> Arc<Channel> {
        if let Some(channel) = self.channels.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Arc::clone(channel);
        }
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(channels.entry(id.clone()).or_default())
    }

    /// Forgets a camera's channel; its viewers' streams end.
    pub fn remove(&self, id: &CameraId) {
        self.channels.write().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// A new viewer of `id`'s preview, or `None` if the camera publishes none.
    pub fn subscribe(&self, id: &CameraId) -> Option<Viewer> {
        let channel = Arc::clone(self.channels.read().unwrap_or_else(|e| e.into_inner()).get(id)?);
        Some(channel.subscribe())
    }

    /// Viewers of `id`'s preview now.
    pub fn viewers(&self, id: &CameraId) -> usize {
        self.channels.read().unwrap_or_else(|e| e.into_inner()).get(id).map_or(0, |c| c.viewers())
    }

    /// The camera's channel, if it has one.
    pub fn get(&self, id: &CameraId) -> Option<Arc<Channel>> {
        self.channels.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }
}

/// The muxer's side of a channel: bytes in, tags out to viewers. Never blocks.
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
