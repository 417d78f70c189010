//! The desired set: which cameras should exist, how each should run (all the time, or while watched), and who
//! watches them. Pure state — no threads, no files, no clocks of its own — owned by the [`Gateway`], which
//! applies each change under the camera's lock and then makes the runtime match.
//!
//! Viewers are what the RTMP server's `on_play`/`on_stop` hooks report, counted by the hook's client id so a
//! repeated hook does not count twice. They are bounded per camera, and each expires `viewer_ttl` after it was
//! last reported: a viewer whose `on_stop` never came (the RTMP server restarted, a hook was lost) cannot keep
//! an on-demand camera running for ever.
//!
//! [`Gateway`]: super::Gateway

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use utoipa::ToSchema;

use crate::model::{CameraId, StreamSpec};

/// How a camera in the desired set runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// All the time.
    Always,
    /// Only while the RTMP server reports viewers (and a linger time after the last one left).
    OnDemand,
    /// Connected to the camera all the time, its current GOP cached, but pushed to the RTMP server only while
    /// viewers are reported: the first viewer's stream starts at once from the cached keyframe.
    Warm,
}

impl RunMode {
    /// Whether viewers drive it (`OnDemand` or `Warm`).
    pub fn is_on_demand(self) -> bool {
        matches!(self, RunMode::OnDemand | RunMode::Warm)
    }

    /// How a request asks for this mode.
    pub fn on_demand(self) -> OnDemand {
        match self {
            RunMode::Always => OnDemand::Off,
            RunMode::OnDemand => OnDemand::Cold,
            RunMode::Warm => OnDemand::Warm,
        }
    }
}

/// A camera's `on_demand` setting: `false` (the default: it runs all the time), `true` (it runs while watched)
/// or `"warm"` (it stays connected, and is pushed while watched, starting at once from its cached keyframe).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OnDemand {
    /// `false`: all the time.
    #[default]
    Off,
    /// `true`: connected when the first viewer arrives.
    Cold,
    /// `"warm"`: connected all the time, pushed while watched.
    Warm,
}

impl OnDemand {
    /// The run mode it asks for.
    pub fn mode(self) -> RunMode {
        match self {
            OnDemand::Off => RunMode::Always,
            OnDemand::Cold => RunMode::OnDemand,
            OnDemand::Warm => RunMode::Warm,
        }
    }

    /// Whether it is `false`.
    pub fn is_off(&self) -> bool {
        *self == OnDemand::Off
    }
}

impl Serialize for OnDemand {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            OnDemand::Off => serializer.serialize_bool(false),
            OnDemand::Cold => serializer.serialize_bool(true),
            OnDemand::Warm => serializer.serialize_str("warm"),
        }
    }
}

impl<'de> Deserialize<'de> for OnDemand {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<OnDemand, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = OnDemand;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or \"warm\"")
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<OnDemand, E> {
                Ok(if value { OnDemand::Cold } else { OnDemand::Off })
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<OnDemand, E> {
                match value {
                    "warm" => Ok(OnDemand::Warm),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Where a camera of the desired set came from, which decides whether it is saved to the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The configuration file, which is persistent by itself.
    Config,
    /// The API (or a restored state file): saved so it runs again after a restart.
    Api,
}

/// An on-demand request that cannot be honoured.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OnDemandError {
    /// No camera publishes to this stream.
    #[error("no camera publishes stream {0}")]
    UnknownStream(String),
    /// Only a camera pushed to an RTMP server can be started by that server's hooks.
    #[error("camera {0}: on-demand needs an RTMP output")]
    NoRtmpOutput(CameraId),
    /// Another camera already publishes to this stream.
    #[error("stream {stream} is already camera {other}'s")]
    StreamTaken {
        /// The stream.
        stream: String,
        /// The camera that has it.
        other: CameraId,
    },
    /// The camera has as many viewers as allowed.
    #[error("camera {camera} has {limit} viewers already (limits.on_demand_viewers_per_camera)")]
    TooManyViewers {
        /// The camera.
        camera: CameraId,
        /// The limit.
        limit: usize,
    },
}

/// An on-demand camera as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OnDemandCamera {
    /// The camera.
    pub id: CameraId,
    /// Always `true`; lets clients tell this answer from a running camera's status.
    pub on_demand: bool,
    /// Whether it is warm: connected all the time, pushed while watched.
    #[serde(default)]
    pub warm: bool,
    /// The `app/stream` its hooks name.
    pub stream: String,
    /// Players of the stream now, by the hooks' count.
    pub viewers: usize,
    /// Whether the RTMP server reported the camera's stream as published (`on_publish`, `on_unpublish`).
    pub published: bool,
}

/// One camera of the desired set.
#[derive(Debug, Clone)]
pub struct DesiredCamera {
    /// What to run.
    pub spec: StreamSpec,
    /// How.
    pub mode: RunMode,
    /// Whether it is saved.
    pub source: Source,
    /// `app/stream` of its RTMP output, if it has one.
    stream: Option<String>,
    /// Hook client ids now playing, with when each was last reported.
    viewers: HashMap<String, Instant>,
    published: bool,
    /// Bumped on every change of viewers or spec, so a linger stop scheduled before a later change does nothing.
    generation: u64,
}

impl DesiredCamera {
    /// Viewers now.
    pub fn viewers(&self) -> usize {
        self.viewers.len()
    }

    /// The change counter a linger stop is scheduled against.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn view(&self) -> OnDemandCamera {
        OnDemandCamera {
            id: self.spec.id.clone(),
            on_demand: true,
            warm: self.mode == RunMode::Warm,
            stream: self.stream.clone().unwrap_or_default(),
            viewers: self.viewers.len(),
            published: self.published,
        }
    }
}

/// What a viewer hook changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerChange {
    /// The revision of the desired set this change produced.
    pub revision: u64,
    /// The camera whose stream it is.
    pub id: CameraId,
    /// How the camera runs.
    pub mode: RunMode,
    /// Viewers after the change.
    pub viewers: usize,
    /// The camera's generation after the change.
    pub generation: u64,
}

/// The desired set.
#[derive(Debug, Default)]
pub struct DesiredSet {
    cameras: BTreeMap<CameraId, DesiredCamera>,
    /// Counts every change, in the order changes were made: a change's revision is its place in that order.
    revision: u64,
}

impl DesiredSet {
    /// One camera.
    pub fn get(&self, id: &CameraId) -> Option<&DesiredCamera> {
        self.cameras.get(id)
    }

    /// The revision of the last change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Records a change to camera `id` that is not a change of the set itself (it was stopped, or started
    /// again): bumps its generation, so pending lingers and starts scheduled before it do nothing. Returns the
    /// change's revision.
    pub fn touch(&mut self, id: &CameraId) -> u64 {
        if let Some(camera) = self.cameras.get_mut(id) {
            camera.generation += 1;
        }
        self.bump()
    }

    fn bump(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// How many cameras are desired.
    pub fn len(&self) -> usize {
        self.cameras.len()
    }

    /// Every camera.
    pub fn iter(&self) -> impl Iterator<Item = &DesiredCamera> {
        self.cameras.values()
    }

    /// Whether [`put`](Self::put) would accept `spec` in `mode`: an on-demand camera needs an RTMP stream, and
    /// no two cameras may publish the same stream (viewers are counted by stream).
    pub fn check(&self, spec: &StreamSpec, mode: RunMode) -> Result<(), OnDemandError> {
        let stream = spec.output.as_ref().and_then(|o| o.stream());
        if mode.is_on_demand() && stream.is_none() {
            return Err(OnDemandError::NoRtmpOutput(spec.id.clone()));
        }
        if let Some(stream) = &stream
            && let Some(other) =
                self.cameras.values().find(|c| c.stream.as_ref() == Some(stream) && c.spec.id != spec.id)
        {
            return Err(OnDemandError::StreamTaken { stream: stream.clone(), other: other.spec.id.clone() });
        }
        Ok(())
    }

    /// Adds or replaces a camera; returns the change's revision. Viewers already counted are kept (they are
    /// watching the stream, whatever runs it).
    pub fn put(&mut self, spec: StreamSpec, mode: RunMode, source: Source) -> Result<u64, OnDemandError> {
        self.check(&spec, mode)?;
        let id = spec.id.clone();
        let stream = spec.output.as_ref().and_then(|o| o.stream());
        let entry = self.cameras.entry(id).or_insert_with(|| DesiredCamera {
            spec: spec.clone(),
            mode,
            source,
            stream: None,
            viewers: HashMap::new(),
            published: false,
            generation: 0,
        });
        entry.spec = spec;
        entry.mode = mode;
        entry.source = source;
        entry.stream = stream;
        entry.generation += 1;
        Ok(self.bump())
    }

    /// Removes a camera; returns it if it was there, and the change's revision.
    pub fn remove(&mut self, id: &CameraId) -> (Option<DesiredCamera>, u64) {
        (self.cameras.remove(id), self.bump())
    }

    /// The camera publishing `app/stream`.
    pub fn by_stream(&self, key: &str) -> Option<&DesiredCamera> {
        self.cameras.values().find(|c| c.stream.as_deref() == Some(key))
    }

    /// Counts a viewer of `key`, refusing one beyond `limit` viewers.
    pub fn viewer_joined(
        &mut self,
        key: &str,
        client: &str,
        now: Instant,
        limit: usize,
    ) -> Result<ViewerChange, OnDemandError> {
        let camera = self.by_stream_mut(key)?;
        if !camera.viewers.contains_key(client) && camera.viewers.len() >= limit {
            return Err(OnDemandError::TooManyViewers { camera: camera.spec.id.clone(), limit });
        }
        camera.viewers.insert(client.to_owned(), now);
        camera.generation += 1;
        let change = change(camera, 0);
        Ok(ViewerChange { revision: self.bump(), ..change })
    }

    /// Uncounts a viewer of `key`.
    pub fn viewer_left(&mut self, key: &str, client: &str) -> Result<ViewerChange, OnDemandError> {
        let camera = self.by_stream_mut(key)?;
        camera.viewers.remove(client);
        camera.generation += 1;
        let change = change(camera, 0);
        Ok(ViewerChange { revision: self.bump(), ..change })
    }

    /// Records the RTMP server's publish state of `key` (bookkeeping only: no generation change, so a pending
    /// linger stop still happens).
    pub fn published(&mut self, key: &str, published: bool) -> Result<CameraId, OnDemandError> {
        let camera = self.by_stream_mut(key)?;
        camera.published = published;
        Ok(camera.spec.id.clone())
    }

    /// Forgets viewers last reported before `now - ttl`; returns the cameras that lost viewers.
    pub fn expire_viewers(&mut self, now: Instant, ttl: Duration) -> Vec<ViewerChange> {
        let mut changed = Vec::new();
        for camera in self.cameras.values_mut() {
            let before = camera.viewers.len();
            camera.viewers.retain(|_, seen| now.saturating_duration_since(*seen) < ttl);
            if camera.viewers.len() != before {
                camera.generation += 1;
                self.revision += 1;
                changed.push(change(camera, self.revision));
            }
        }
        changed
    }

    /// Every on-demand camera, as the API shows them.
    pub fn on_demand(&self) -> Vec<OnDemandCamera> {
        self.cameras.values().filter(|c| c.mode.is_on_demand()).map(DesiredCamera::view).collect()
    }

    /// One on-demand camera, as the API shows it.
    pub fn on_demand_view(&self, id: &CameraId) -> Option<OnDemandCamera> {
        self.cameras.get(id).filter(|c| c.mode.is_on_demand()).map(DesiredCamera::view)
    }

    fn by_stream_mut(&mut self, key: &str) -> Result<&mut DesiredCamera, OnDemandError> {
        self.cameras
            .values_mut()
            .find(|c| c.stream.as_deref() == Some(key))
            .ok_or_else(|| OnDemandError::UnknownStream(key.to_owned()))
    }
}

fn change(camera: &DesiredCamera, revision: u64) -> ViewerChange {
    ViewerChange {
        revision,
        id: camera.spec.id.clone(),
        mode: camera.mode,
        viewers: camera.viewers.len(),
        generation: camera.generation,
    }
}

/// `app/stream` from a hook's fields; some SRS versions append `?params` to either.
pub fn stream_key(app: &str, stream: &str) -> String {
    let cut = |s: &str| s.split('?').next().unwrap_or("").trim_matches('/').to_owned();
    format!("{}/{}", cut(app), cut(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_demand_reads_bools_and_warm() {
        let read = |text: &str| serde_json::from_str::<OnDemand>(text);
        assert_eq!(read("false").unwrap(), OnDemand::Off);
        assert_eq!(read("true").unwrap(), OnDemand::Cold);
        assert_eq!(read("\"warm\"").unwrap(), OnDemand::Warm);
        let error = read("\"hot\"").unwrap_err().to_string();
        assert!(error.contains("true, false or \"warm\""), "{error}");
        assert!(read("1").is_err());
        for value in [OnDemand::Off, OnDemand::Cold, OnDemand::Warm] {
            assert_eq!(read(&serde_json::to_string(&value).unwrap()).unwrap(), value);
            assert_eq!(value.mode().on_demand(), value);
        }
    }

    fn spec(id: &str, output: &str) -> StreamSpec {
        StreamSpec::new(id, "rtsp://cam/s", output).unwrap()
    }

    #[test]
    fn viewers_count_once_are_bounded_and_expire() {
        let mut set = DesiredSet::default();
        set.put(spec("7", "rtmp://srs/live/livestream7"), RunMode::OnDemand, Source::Api).unwrap();
        let t0 = Instant::now();
        assert_eq!(set.viewer_joined("live/livestream7", "c1", t0, 2).unwrap().viewers, 1);
        assert_eq!(set.viewer_joined("live/livestream7", "c1", t0, 2).unwrap().viewers, 1, "repeated hook");
        set.viewer_joined("live/livestream7", "c2", t0 + Duration::from_secs(5), 2).unwrap();
        assert!(matches!(
            set.viewer_joined("live/livestream7", "c3", t0, 2),
            Err(OnDemandError::TooManyViewers { limit: 2, .. })
        ));
        let expired = set.expire_viewers(t0 + Duration::from_secs(10), Duration::from_secs(8));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].viewers, 1, "c1 expired, c2 was seen later");
        assert_eq!(set.viewer_joined("live/nope", "c1", t0, 2), Err(OnDemandError::UnknownStream("live/nope".into())));
    }

    #[test]
    fn on_demand_needs_an_rtmp_stream_of_its_own() {
        let mut set = DesiredSet::default();
        assert!(matches!(
            set.put(spec("a", "a.flv"), RunMode::OnDemand, Source::Api),
            Err(OnDemandError::NoRtmpOutput(_))
        ));
        set.put(spec("b", "rtmp://srs/live/x"), RunMode::OnDemand, Source::Api).unwrap();
        assert!(matches!(
            set.put(spec("c", "rtmp://srs/live/x"), RunMode::OnDemand, Source::Api),
            Err(OnDemandError::StreamTaken { .. })
        ));
        set.put(spec("b", "rtmp://srs/live/x"), RunMode::OnDemand, Source::Api).expect("the same camera again");
        assert_eq!(set.on_demand().len(), 1);
    }

    #[test]
    fn stream_keys_from_hooks() {
        assert_eq!(stream_key("live", "livestream7?token=1"), "live/livestream7");
        assert_eq!(stream_key("live?vhost=v", "livestream7"), "live/livestream7");
    }
}
