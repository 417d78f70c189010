//! What the cluster stores in etcd, as JSON.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

use crate::gateway::config::CameraConfig;
use crate::model::{DEFAULT_READ_BATCH_MS, RtmpWriter, RtspReader};

/// A camera of the desired set, as it was requested: each node that runs it resolves it with its own
/// templates and defaults (its own RTMP origin, for one).
///
/// The request is stored with every setting explicit (`CameraConfig::from_spec`) but three: `read_batch_ms`,
/// `rtsp_reader` and `rtmp_writer` are left out when they are the built-in defaults. Nodes older than those settings refuse
/// fields they do not know, so during a rolling upgrade they can still read every camera that keeps them. Reading a record fills
/// the default back in, the same on every node whatever its `[defaults]` say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraRecord {
    /// The format version (1).
    pub v: u32,
    /// The request.
    #[serde(serialize_with = "store_camera", deserialize_with = "recorded_camera")]
    pub camera: CameraConfig,
}

/// A request as stored: `read_batch_ms`, `rtsp_reader` and `rtmp_writer` left out at their built-in defaults.
fn store_camera<S: Serializer>(camera: &CameraConfig, serializer: S) -> Result<S::Ok, S::Error> {
    let mut stored = camera.clone();
    if stored.read_batch_ms == Some(DEFAULT_READ_BATCH_MS) {
        stored.read_batch_ms = None;
    }
    if stored.rtsp_reader == Some(RtspReader::default()) {
        stored.rtsp_reader = None;
    }
    if stored.rtmp_writer == Some(RtmpWriter::default()) {
        stored.rtmp_writer = None;
    }
    stored.serialize(serializer)
}

/// A stored request, with `read_batch_ms`, `rtsp_reader` and `rtmp_writer` at their built-in defaults where
/// the record leaves them out.
fn recorded_camera<'de, D: Deserializer<'de>>(deserializer: D) -> Result<CameraConfig, D::Error> {
    let mut camera = CameraConfig::deserialize(deserializer)?;
    camera.read_batch_ms.get_or_insert(DEFAULT_READ_BATCH_MS);
    camera.rtsp_reader.get_or_insert_default();
    camera.rtmp_writer.get_or_insert_default();
    Ok(camera)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::RunMode;
    use crate::model::StreamSpec;

    fn recorded(read_batch_ms: u64) -> (serde_json::Value, CameraRecord) {
        let mut spec = StreamSpec::new("cam", "rtsp://192.0.2.1/stream", "rtmp://192.0.2.2/live/cam").unwrap();
        spec.read_batch_ms = read_batch_ms;
        let json = serde_json::to_value(CameraRecord::new(CameraConfig::from_spec(&spec, RunMode::Always))).unwrap();
        let back = serde_json::from_value(json.clone()).unwrap();
        (json, back)
    }

    #[test]
    fn a_record_leaves_the_default_batch_out_and_reads_it_back() {
        // What a node older than the setting can read: no `read_batch_ms` at all.
        let (json, back) = recorded(DEFAULT_READ_BATCH_MS);
        assert!(json["camera"].get("read_batch_ms").is_none(), "{json}");
        assert_eq!(back.camera.read_batch_ms, Some(DEFAULT_READ_BATCH_MS));
        // A record read back and written again (an on-demand camera made always-on) still leaves it out.
        let again = serde_json::to_value(&back).unwrap();
        assert!(again["camera"].get("read_batch_ms").is_none(), "{again}");
        // Any other value is written out, and read back as it was.
        for read_batch_ms in [0, 40] {
            let (json, back) = recorded(read_batch_ms);
            assert_eq!(json["camera"]["read_batch_ms"], read_batch_ms, "{json}");
            assert_eq!(back.camera.read_batch_ms, Some(read_batch_ms));
        }
    }

    #[test]
    fn a_record_leaves_the_default_reader_out_and_reads_it_back() {
        let (json, back) = recorded(DEFAULT_READ_BATCH_MS);
        assert!(json["camera"].get("rtsp_reader").is_none(), "{json}");
        assert_eq!(back.camera.rtsp_reader, Some(RtspReader::Ffmpeg));
        let mut spec = StreamSpec::new("cam", "rtsp://192.0.2.1/stream", "rtmp://192.0.2.2/live/cam").unwrap();
        spec.rtsp_reader = RtspReader::Buffered;
        let json = serde_json::to_value(CameraRecord::new(CameraConfig::from_spec(&spec, RunMode::Always))).unwrap();
        assert_eq!(json["camera"]["rtsp_reader"], "buffered", "{json}");
        let back: CameraRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back.camera.rtsp_reader, Some(RtspReader::Buffered));
    }

    #[test]
    fn a_record_leaves_the_default_writer_out_and_reads_it_back() {
        let (json, back) = recorded(DEFAULT_READ_BATCH_MS);
        assert!(json["camera"].get("rtmp_writer").is_none(), "{json}");
        assert_eq!(back.camera.rtmp_writer, Some(RtmpWriter::Ffmpeg));
        let mut spec = StreamSpec::new("cam", "rtsp://192.0.2.1/stream", "rtmp://192.0.2.2/live/cam").unwrap();
        spec.rtmp_writer = RtmpWriter::Buffered;
        let json = serde_json::to_value(CameraRecord::new(CameraConfig::from_spec(&spec, RunMode::Always))).unwrap();
        assert_eq!(json["camera"]["rtmp_writer"], "buffered", "{json}");
        let back: CameraRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back.camera.rtmp_writer, Some(RtmpWriter::Buffered));
    }
}
