//! What the cluster stores in etcd, as JSON.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::gateway::config::CameraConfig;

/// A camera of the desired set, as it was requested: each node that runs it resolves it with its own
/// templates and defaults (its own RTMP origin, for one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraRecord {
    /// The format version (1).
    pub v: u32,
    /// The request.
    pub camera: CameraConfig,
}

impl CameraRecord {
    /// The record of `camera`.
    pub fn new(camera: CameraConfig) -> CameraRecord {
        CameraRecord { v: 1, camera }
    }
}

/// A node as the cluster sees it; kept under the node's lease, rewritten when its load changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeRecord {
    /// The node's name.
    pub name: String,
    /// Where its API is.
    pub url: String,
    /// Cores it may fill with cameras.
    pub capacity: f64,
    /// Cores its cameras use (measured, or estimated until measured).
    pub load: f64,
    /// Cameras it runs.
    pub cameras: usize,
    /// Cameras it may run (`max_cameras`, or `limits.cameras` if lower).
    pub max_cameras: usize,
    /// Whether it is handing its cameras over.
    pub draining: bool,
    /// camgate's version on it.
    pub version: String,
    /// Its viewer URL template (`{host}`, `{id}`).
    pub viewer_url_template: String,
    /// Its public host, if configured.
    pub public_host: Option<String>,
    /// The port of its built-in preview.
    pub preview_port: u16,
}
