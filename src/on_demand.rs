//! Cameras that run only while someone watches: started by the RTMP server's `on_play` hook, stopped a linger
//! time after its last `on_stop`.
//!
//! SRS calls an HTTP hook when a player starts (`on_play`) or stops (`on_stop`) playing a stream; the API turns
//! those calls into [`OnDemand::play`] and [`OnDemand::stop`]. This replaces the old front ends' habit of
//! calling `stop_all_camera` when a page unloads, which never happened when a browser crashed or a laptop
//! slept, and stopped everyone else's view when it did.
//!
//! A camera is found by its stream: the `app/stream` path of its RTMP output (`rtmp://host/live/livestream7`
//! is `live/livestream7`), which is what SRS names in its hooks. Viewers are counted by the hook's
//! `client_id`, so a repeated hook does not count twice. Starting and stopping run on spawned tasks, so a hook
//! is answered at once; per camera they are serialized, so a play that arrives while a linger stop is still
//! closing the camera starts it again afterwards instead of failing.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;
use tracing::{info, warn};
use utoipa::ToSchema;

use crate::spec::{CameraId, OutputTarget, StreamSpec};
use crate::supervisor::Supervisor;

/// An on-demand request that cannot be honoured.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OnDemandError {
    /// No on-demand camera publishes to this stream.
    #[error("no on-demand camera publishes stream {0}")]
    UnknownStream(String),
    /// Only a camera pushed to an RTMP server can be started by that server's hooks.
    #[error("camera {0}: on-demand needs an RTMP output")]
    NoRtmpOutput(CameraId),
    /// Another on-demand camera already publishes to this stream.
    #[error("stream {stream} is already camera {other}'s")]
    StreamTaken {
        /// The stream.
        stream: String,
        /// The camera that has it.
        other: CameraId,
    },
}

/// An on-demand camera as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OnDemandCamera {
    /// The camera.
    pub id: CameraId,
    /// Always `true`; lets clients tell this answer from a running camera's status.
    pub on_demand: bool,
    /// The `app/stream` its hooks name.
    pub stream: String,
    /// Players of the stream now, by the hooks' count.
    pub viewers: usize,
    /// Whether the RTMP server reported the camera's stream as published (`on_publish`, `on_unpublish`).
    pub published: bool,
}

struct Entry {
    spec: StreamSpec,
    stream: String,
    /// The hooks' `client_id`s now playing.
    viewers: HashSet<String>,
    published: bool,
    /// Bumped on every change, so a linger stop scheduled before a later play knows to do nothing.
    generation: u64,
    /// Held while starting or stopping this camera, so those never overlap.
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// The registry of on-demand cameras, driven by the RTMP server's hooks. Cheap to share behind an `Arc`.
pub struct OnDemand {
    supervisor: Supervisor,
    linger: Duration,
    cameras: Mutex<BTreeMap<CameraId, Entry>>,
}

/// `app/stream` of an RTMP URL, without query (SRS passes parameters apart, in `param`).
pub fn stream_of(output: &OutputTarget) -> Option<String> {
    let OutputTarget::Rtmp(url) = output else { return None };
    let url = url::Url::parse(url).ok()?;
    let path = url.path().trim_matches('/');
    (path.contains('/') && !path.is_empty()).then(|| path.to_owned())
}

/// `app/stream` from a hook's fields; some SRS versions append `?params` to either.
pub fn stream_key(app: &str, stream: &str) -> String {
    let cut = |s: &str| s.split('?').next().unwrap_or("").trim_matches('/').to_owned();
    format!("{}/{}", cut(app), cut(stream))
}

impl OnDemand {
    /// A registry whose cameras stop `linger` after their last viewer leaves.
    pub fn new(supervisor: Supervisor, linger: Duration) -> Arc<OnDemand> {
        Arc::new(OnDemand { supervisor, linger, cameras: Mutex::new(BTreeMap::new()) })
    }

    /// How long a camera runs on after its last viewer leaves.
    pub fn linger(&self) -> Duration {
        self.linger
    }

    /// Registers (or re-registers with a new spec) an on-demand camera; it starts with its first viewer.
    /// Viewers already counted are kept, and if there are any the camera is started.
    pub fn register(self: &Arc<Self>, spec: StreamSpec) -> Result<OnDemandCamera, OnDemandError> {
        let id = spec.id.clone();
        let stream = spec.output.as_ref().and_then(stream_of).ok_or_else(|| OnDemandError::NoRtmpOutput(id.clone()))?;
        let mut cameras = self.lock();
        if let Some((other, _)) = cameras.iter().find(|(other, e)| e.stream == stream && **other != id) {
            return Err(OnDemandError::StreamTaken { stream, other: other.clone() });
        }
        let entry = cameras.entry(id.clone()).or_insert_with(|| Entry {
            spec: spec.clone(),
            stream: stream.clone(),
            viewers: HashSet::new(),
            published: false,
            generation: 0,
            gate: Arc::default(),
        });
        entry.spec = spec;
        entry.stream = stream;
        entry.generation += 1;
        let watched = !entry.viewers.is_empty();
        let view = view(&id, entry);
        drop(cameras);
        info!(camera = %id, stream = %view.stream, "registered on demand");
        if watched {
            self.spawn_start(id);
        }
        Ok(view)
    }

    /// Forgets an on-demand camera; returns whether it was registered. Pending starts and stops of it do
    /// nothing after this; stopping it if it runs is the caller's business.
    pub fn unregister(&self, id: &CameraId) -> bool {
        let removed = self.lock().remove(id).is_some();
        if removed {
            self.supervisor.viewer_counts().set(id, 0);
        }
        removed
    }

    /// Whether `id` is registered on demand.
    pub fn is_registered(&self, id: &CameraId) -> bool {
        self.lock().contains_key(id)
    }

    /// One registered camera.
    pub fn get(&self, id: &CameraId) -> Option<OnDemandCamera> {
        self.lock().get(id).map(|e| view(id, e))
    }

    /// Every registered camera.
    pub fn list(&self) -> Vec<OnDemandCamera> {
        self.lock().iter().map(|(id, e)| view(id, e)).collect()
    }

    /// A player started playing `app/stream`: counts it and, for the first viewer, starts the camera in the
    /// background. Returns the camera, or [`OnDemandError::UnknownStream`] so the player is refused.
    pub fn play(self: &Arc<Self>, app: &str, stream: &str, client: &str) -> Result<CameraId, OnDemandError> {
        let (id, _) = self.update(app, stream, |entry| {
            entry.viewers.insert(client.to_owned());
        })?;
        self.spawn_start(id.clone());
        Ok(id)
    }

    /// A player stopped: uncounts it and, after the last one, schedules the camera's stop after the linger
    /// time (cancelled by any play meanwhile).
    pub fn stop(self: &Arc<Self>, app: &str, stream: &str, client: &str) -> Result<CameraId, OnDemandError> {
        let mut last_left = false;
        let (id, generation) = self.update(app, stream, |entry| {
            entry.viewers.remove(client);
            last_left = entry.viewers.is_empty();
        })?;
        if last_left {
            self.spawn_linger_stop(id.clone(), generation);
        }
        Ok(id)
    }

    /// The RTMP server reports the stream published (`true`) or unpublished; bookkeeping only.
    pub fn published(&self, app: &str, stream: &str, published: bool) -> Result<CameraId, OnDemandError> {
        // Not through `update`: a publish must not cancel a pending linger stop.
        let key = stream_key(app, stream);
        let mut cameras = self.lock();
        let (id, entry) = cameras.iter_mut().find(|(_, e)| e.stream == key).ok_or(OnDemandError::UnknownStream(key))?;
        entry.published = published;
        Ok(id.clone())
    }

    /// Applies `change` to the camera publishing `app/stream`, bumps its generation and republishes its count;
    /// returns the camera and its new generation.
    fn update(
        &self,
        app: &str,
        stream: &str,
        change: impl FnOnce(&mut Entry),
    ) -> Result<(CameraId, u64), OnDemandError> {
        let key = stream_key(app, stream);
        let mut cameras = self.lock();
        let (id, entry) = cameras.iter_mut().find(|(_, e)| e.stream == key).ok_or(OnDemandError::UnknownStream(key))?;
        change(entry);
        entry.generation += 1;
        self.supervisor.viewer_counts().set(id, entry.viewers.len());
        Ok((id.clone(), entry.generation))
    }

    fn spawn_start(self: &Arc<Self>, id: CameraId) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let Some(gate) = me.gate(&id) else { return };
            let _held = gate.lock().await;
            // Decided under the gate: the viewers may have left, or the camera been unregistered, meanwhile.
            let spec = {
                let cameras = me.lock();
                match cameras.get(&id) {
                    Some(entry) if !entry.viewers.is_empty() => entry.spec.clone(),
                    _ => return,
                }
            };
            if me.supervisor.status(&id).is_some_and(|s| s.state.is_live()) {
                return;
            }
            match me.supervisor.start(spec).await {
                Ok(_) => info!(camera = %id, "started on demand"),
                Err(error) => warn!(camera = %id, %error, "on-demand start failed"),
            }
        });
    }

    fn spawn_linger_stop(self: &Arc<Self>, id: CameraId, generation: u64) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(me.linger).await;
            let Some(gate) = me.gate(&id) else { return };
            let _held = gate.lock().await;
            let still_idle =
                me.lock().get(&id).is_some_and(|entry| entry.generation == generation && entry.viewers.is_empty());
            if !still_idle || me.supervisor.status(&id).is_none() {
                return;
            }
            match me.supervisor.stop(&id).await {
                Ok(_) => info!(camera = %id, linger = ?me.linger, "stopped: no viewers"),
                Err(error) => warn!(camera = %id, %error, "on-demand stop failed"),
            }
        });
    }

    fn gate(&self, id: &CameraId) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.lock().get(id).map(|e| Arc::clone(&e.gate))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<CameraId, Entry>> {
        self.cameras.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn view(id: &CameraId, entry: &Entry) -> OnDemandCamera {
    OnDemandCamera {
        id: id.clone(),
        on_demand: true,
        stream: entry.stream.clone(),
        viewers: entry.viewers.len(),
        published: entry.published,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::stats::WorkerState;
    use crate::supervisor::SupervisorConfig;

    /// A spec whose camera refuses connections: the worker runs (retrying) without any media.
    fn spec(id: &str) -> StreamSpec {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        StreamSpec::new(id, &format!("rtsp://127.0.0.1:{port}/s"), &format!("rtmp://127.0.0.1:1/live/livestream{id}"))
            .unwrap()
    }

    async fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
        let until = Instant::now() + within;
        while !check() {
            assert!(Instant::now() < until, "{what} within {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn live(supervisor: &Supervisor, id: &CameraId) -> bool {
        supervisor.status(id).is_some_and(|s| s.state.is_live() && s.state != WorkerState::Stopping)
    }

    #[test]
    fn streams_come_from_rtmp_paths() {
        let out = |s: &str| s.parse::<OutputTarget>().unwrap();
        assert_eq!(stream_of(&out("rtmp://srs:1935/live/livestream7?key=x")).as_deref(), Some("live/livestream7"));
        assert_eq!(stream_of(&out("x.flv")), None);
        assert_eq!(stream_key("live", "livestream7?token=1"), "live/livestream7");
        assert_eq!(stream_key("live?vhost=v", "livestream7"), "live/livestream7");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_viewer_starts_last_viewer_stops_after_the_linger() {
        let supervisor = Supervisor::new(SupervisorConfig::default());
        let linger = Duration::from_millis(400);
        let on_demand = OnDemand::new(supervisor.clone(), linger);
        let id: CameraId = "7".parse().unwrap();
        on_demand.register(spec("7")).unwrap();
        assert!(supervisor.status(&id).is_none(), "registering does not start");
        assert_eq!(on_demand.play("live", "nope", "c1"), Err(OnDemandError::UnknownStream("live/nope".into())));

        on_demand.play("live", "livestream7", "c1").unwrap();
        on_demand.play("live", "livestream7", "c2").unwrap();
        on_demand.play("live", "livestream7", "c2").unwrap(); // a repeated hook counts once
        wait_until("started", Duration::from_secs(5), || live(&supervisor, &id)).await;
        assert_eq!(on_demand.get(&id).unwrap().viewers, 2);
        assert_eq!(supervisor.viewer_counts().get(&id), 2);

        on_demand.stop("live", "livestream7", "c1").unwrap();
        on_demand.stop("live", "livestream7", "c2").unwrap();
        let left = Instant::now();
        assert!(live(&supervisor, &id), "still running right after the last viewer left");
        wait_until("stopped", Duration::from_secs(5), || supervisor.status(&id).is_none()).await;
        assert!(left.elapsed() >= linger, "stopped after {:?}, before the linger {linger:?}", left.elapsed());
        assert!(on_demand.is_registered(&id), "still registered for the next viewer");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_viewer_coming_back_within_the_linger_keeps_it_running() {
        let supervisor = Supervisor::new(SupervisorConfig::default());
        let linger = Duration::from_millis(300);
        let on_demand = OnDemand::new(supervisor.clone(), linger);
        let id: CameraId = "8".parse().unwrap();
        on_demand.register(spec("8")).unwrap();
        on_demand.play("live", "livestream8", "a").unwrap();
        wait_until("started", Duration::from_secs(5), || live(&supervisor, &id)).await;
        let started_at = supervisor.status(&id).unwrap().started_at_ms;
        on_demand.stop("live", "livestream8", "a").unwrap();
        on_demand.play("live", "livestream8", "b").unwrap();
        // Watch through more than two lingers: the camera must stay the same worker the whole time.
        let until = Instant::now() + linger * 2 + Duration::from_millis(200);
        while Instant::now() < until {
            let status = supervisor.status(&id).expect("never stopped");
            assert_eq!(status.started_at_ms, started_at, "never restarted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Unregistering cancels everything; the caller stops it.
        assert!(on_demand.unregister(&id));
        assert_eq!(supervisor.viewer_counts().get(&id), 0);
        supervisor.stop(&id).await.unwrap();
    }

    #[tokio::test]
    async fn registration_needs_an_rtmp_stream_of_its_own() {
        let supervisor = Supervisor::new(SupervisorConfig::default());
        let on_demand = OnDemand::new(supervisor, Duration::from_secs(30));
        let mut file = spec("a");
        file.output = Some("a.flv".parse().unwrap());
        assert!(matches!(on_demand.register(file), Err(OnDemandError::NoRtmpOutput(_))));
        on_demand.register(spec("b")).unwrap();
        let mut clash = spec("c");
        clash.output = spec("b").output;
        assert!(matches!(on_demand.register(clash), Err(OnDemandError::StreamTaken { .. })));
        on_demand.register(spec("b")).unwrap(); // re-registering the same camera is fine
        assert_eq!(on_demand.list().len(), 1);
    }
}
