//! Several camgate nodes acting as one, coordinated through etcd — leases, transactions and watches; no
//! consensus of our own. The design, the fencing argument and the failure cases are in docs/CLUSTER.md.
//!
//! In cluster mode the [`Gateway`]'s desired set lives in etcd instead of the state file: API writes on any
//! node go to etcd (`P/cameras/<id>`), and each camera is run by the node that claimed it — an `P/owners/<id>`
//! key created in a transaction and bound to the owner's lease. Each node runs an agent (`agent.rs`) that keeps
//! its lease alive (moving the [`Fence`] its camera threads check before every write), watches the cluster,
//! claims cameras that fit its CPU budget ([`placement`]), and makes its own runtime — the same local gateway a
//! single box runs — match what it owns. Reads merge every node's statuses; requests that belong to a camera's
//! node (SRS hooks, previews, snapshots) are forwarded or redirected there.
//!
//! - `keys`: the key layout; `records`: what is stored; `etcd`: connecting; `view`: this node's copy of the
//!   cluster; `placement`: who should take a camera; `agent`: the node's loops; `peers`: calls to other nodes.

mod agent;
mod etcd;
pub mod keys;
mod peers;
pub mod placement;
pub mod records;
mod view;

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};
use utoipa::ToSchema;

use self::keys::Keys;
pub use self::peers::Peers;
use self::records::{CameraRecord, NodeRecord};
use self::view::View;
use super::config::{CameraConfig, Config, Templates};
use super::{Applied, Gateway, GatewayError, PlayOutcome, PutOutcome, RemoveOutcome, StoppedAll, ViewerUrls};
use crate::model::{CameraId, StreamSpec, SupervisorError};
use crate::runtime::{CameraStatus, Fence, WorkerState};

/// The header a node puts on requests it sends to another node (its name): a forwarded request is answered
/// where it arrives, never forwarded again.
pub const FORWARDED_FROM: &str = "x-camgate-forwarded-from";

/// Something the cluster could not do.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// etcd refused or did not answer.
    #[error("etcd: {doing}: {message}")]
    Etcd {
        /// What was being done.
        doing: String,
        /// etcd's (or the transport's) message.
        message: String,
    },
    /// The cluster configuration cannot be used.
    #[error("{0}")]
    Config(String),
}

impl From<ClusterError> for GatewayError {
    fn from(error: ClusterError) -> GatewayError {
        GatewayError::Cluster(error.to_string())
    }
}

/// A node as `GET /api/v1/cluster` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// Where its API is.
    pub url: String,
    /// Whether it holds a lease (its record is present).
    pub alive: bool,
    /// Cores it may fill with cameras.
    pub capacity: f64,
    /// Cores its cameras use.
    pub load: f64,
    /// Cameras it owns.
    pub cameras: usize,
    /// Whether it is handing its cameras over.
    pub draining: bool,
    /// Whether this is the node that answered.
    pub this_node: bool,
}

/// What `GET /api/v1/cluster` answers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterView {
    /// The node that answered.
    pub node: String,
    /// The etcd revision the answer reflects.
    pub revision: i64,
    /// Every node that is alive or asked to drain.
    pub nodes: Vec<NodeView>,
    /// Desired cameras no node has taken yet.
    pub pending: usize,
}

/// This node's membership of the cluster. Created by [`ClusterNode::start`]; the gateway delegates its
/// cluster-wide operations here.
pub struct ClusterNode {
    name: String,
    url: String,
    keys: Keys,
    ttl: Duration,
    /// This node's own templates (its RTMP origin, its viewer URL).
    templates: Templates,
    preview_port: u16,
    capacity: f64,
    client: Client,
    view: RwLock<View>,
    /// Bumped on every change of the view, so callers can wait for an owner to appear.
    changed: watch::Sender<u64>,
    fence: Fence,
    /// The local runtime: the same gateway a single box runs, holding the cameras this node owns.
    local: Gateway,
    peers: Peers,
    /// The current lease (0 while there is none).
    lease: std::sync::atomic::AtomicI64,
    shutting_down: watch::Sender<bool>,
    /// Cameras this node took over from another node, and from which.
    moves: std::sync::Mutex<std::collections::BTreeMap<CameraId, String>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode").field("name", &self.name).field("url", &self.url).finish()
    }
}

impl ClusterNode {
    /// Joins the cluster of `config`: connects to etcd, attaches to `local` (whose supervisor must have been
    /// built with `fence`), and starts the agent. Cameras start once the first lease is granted.
    pub async fn start(config: &Config, local: Gateway, fence: Fence) -> Result<Arc<ClusterNode>, ClusterError> {
        let cluster = config.cluster.as_ref().ok_or_else(|| ClusterError::Config("no [cluster] section".into()))?;
        let client = etcd::connect(cluster).await?;
        let node = Arc::new(ClusterNode {
            name: cluster.node_name(),
            url: cluster.advertise_url(config.listen.port()),
            keys: Keys::new(&cluster.prefix),
            ttl: Duration::from_millis(cluster.lease_ttl_ms),
            templates: config.templates(),
            preview_port: config.listen.port(),
            capacity: config.cpu_capacity(),
            client,
            view: RwLock::default(),
            changed: watch::channel(0).0,
            fence,
            local: local.clone(),
            peers: Peers::new(cluster.node_name(), config.auth.tokens.first().cloned()),
            lease: std::sync::atomic::AtomicI64::new(0),
            shutting_down: watch::channel(false).0,
            moves: std::sync::Mutex::default(),
        });
        local.attach_cluster(&node);
        agent::spawn(Arc::clone(&node));
        info!(node = %node.name, url = %node.url, prefix = %cluster.prefix, "joined the cluster");
        Ok(node)
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this node holds its lease and its fence is open: its cameras may run.
    pub fn holds_lease(&self) -> bool {
        self.lease.load(std::sync::atomic::Ordering::SeqCst) != 0 && self.fence.is_open()
    }

    fn view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops claiming, stops this node's cameras, and gives its lease back so the other nodes take them over
    /// at once instead of after the lease's time to live.
    pub async fn leave(&self) {
        self.shutting_down.send_replace(true);
        self.fence.close();
        self.local.shutdown().await;
        let lease = self.lease.swap(0, std::sync::atomic::Ordering::SeqCst);
        if lease != 0 {
            let mut client = self.client.clone();
            match tokio::time::timeout(etcd::REQUEST_TIMEOUT, client.lease_revoke(lease)).await {
                Ok(Ok(_)) => info!(node = %self.name, "left the cluster: lease revoked, cameras released"),
                _ => warn!(node = %self.name, "could not revoke the lease; its cameras move when it expires"),
            }
        }
    }

    // --- operations the gateway delegates ------------------------------------------------------------------

    /// Puts a camera in the desired set (from any node); answers once a node has taken it, or after a few
    /// seconds with `pending`.
    pub(crate) async fn put(&self, id: &CameraId, camera: CameraConfig) -> Result<Applied<PutOutcome>, GatewayError> {
        let record = CameraRecord::new(camera);
        let value = serde_json::to_vec(&record).expect("records serialize");
        let mut client = self.client.clone();
        let response = etcd_call(
            "writing the camera",
            client.put(self.keys.camera(id), value, Some(PutOptions::new().with_prev_key())),
        )
        .await?;
        let revision = revision_of(response.header());
        let existed = response.prev_key().is_some();
        let status = self.wait_for_owner_status(id, Duration::from_secs(3)).await;
        let outcome = if !record.camera.on_demand.is_off() {
            let stream = self
                .local
                .spec_from_request(id.clone(), &record.camera)
                .ok()
                .and_then(|spec| spec.output.as_ref().and_then(|o| o.stream()))
                .unwrap_or_default();
            PutOutcome::Registered(super::OnDemandCamera {
                id: id.clone(),
                on_demand: true,
                warm: record.camera.on_demand == super::OnDemand::Warm,
                stream,
                viewers: 0,
                published: false,
            })
        } else if existed {
            PutOutcome::Replaced(status)
        } else {
            PutOutcome::Started(status)
        };
        Ok(Applied { revision, outcome })
    }

    /// The old `play_camera`: puts the camera unless it is desired already (made always-on if it was on
    /// demand).
    pub(crate) async fn play(&self, id: &CameraId, camera: CameraConfig) -> Result<Applied<PlayOutcome>, GatewayError> {
        let key = self.keys.camera(id);
        let value = serde_json::to_vec(&CameraRecord::new(camera)).expect("records serialize");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut client = self.client.clone();
        let response = etcd_call("writing the camera", client.txn(txn)).await?;
        let revision = revision_of(response.header());
        if response.succeeded() {
            let status = self.wait_for_owner_status(id, Duration::from_secs(3)).await;
            return Ok(Applied { revision, outcome: PlayOutcome::Started(status) });
        }
        // Desired already: an on-demand camera becomes always-on, as on a single box.
        let existing = self.view().cameras.get(id).cloned();
        if let Some(mut record) = existing.filter(|r| !r.camera.on_demand.is_off()) {
            record.camera.on_demand = super::OnDemand::Off;
            let value = serde_json::to_vec(&record).expect("records serialize");
            etcd_call("writing the camera", client.put(key, value, None)).await?;
        }
        let status = self.wait_for_owner_status(id, Duration::from_secs(3)).await;
        Ok(Applied { revision, outcome: PlayOutcome::AlreadyRunning(status) })
    }

    /// Removes a camera from the desired set; answers once its node has stopped it (its owner key is gone), once
    /// a later write has put it back (its node then runs it on, for that write), or when the stop timeout has
    /// passed.
    pub(crate) async fn remove(
        &self,
        id: &CameraId,
        stop_timeout: Duration,
    ) -> Result<Applied<RemoveOutcome>, GatewayError> {
        let last = self.status(id).await;
        let mut client = self.client.clone();
        let response = etcd_call(
            "removing the camera",
            client.delete(self.keys.camera(id), Some(DeleteOptions::new().with_prev_key())),
        )
        .await?;
        let revision = revision_of(response.header());
        if response.prev_kvs().is_empty() && self.view().owner(id).is_none() {
            return Err(GatewayError::NotFound(id.clone()));
        }
        // The owner gives its key up once the camera's thread has exited; one whose stop timed out keeps it.
        // Gone from the desired set either way, as on a single node. A later PUT may put the camera back before
        // its owner stopped it: the owner then keeps it, and waiting on would only end at the timeout.
        let put_back = |view: &View| view.camera_created.get(id).is_some_and(|&c| created_after(c, revision));
        if !self
            .wait_until(stop_timeout + Duration::from_secs(2), |view| view.owner(id).is_none() || put_back(view))
            .await
            && !self.desired_again_since(id, revision).await?
        {
            return Err(SupervisorError::StopTimeout { camera: id.clone(), after: stop_timeout }.into());
        }
        let outcome = match last {
            Some(status) if status.state.is_live() => RemoveOutcome::Stopped(Box::new(status)),
            _ => RemoveOutcome::Forgotten,
        };
        Ok(Applied { revision, outcome })
    }

    /// Whether a later write put camera `id` back after `revision`: its owner then runs it on, for that write.
    async fn desired_again_since(&self, id: &CameraId, revision: u64) -> Result<bool, GatewayError> {
        let mut client = self.client.clone();
        let response = etcd_call("reading the camera", client.get(self.keys.camera(id), None)).await?;
        Ok(response.kvs().iter().any(|kv| created_after(kv.create_revision(), revision)))
    }

    /// The old `stop_camera`: removes an always-on camera; an on-demand one is stopped by its node and stays
    /// registered.
    pub(crate) async fn stop(
        &self,
        id: &CameraId,
        stop_timeout: Duration,
    ) -> Result<Applied<Option<CameraStatus>>, GatewayError> {
        let on_demand = self.view().cameras.get(id).map(|r| !r.camera.on_demand.is_off());
        match on_demand {
            None => Err(GatewayError::NotFound(id.clone())),
            Some(false) => {
                let removed = self.remove(id, stop_timeout).await?;
                let status = match removed.outcome {
                    RemoveOutcome::Stopped(status) => Some(*status),
                    RemoveOutcome::Forgotten => None,
                };
                Ok(Applied { revision: removed.revision, outcome: status })
            }
            Some(true) => {
                let owner = self.view().owner(id).map(str::to_owned);
                match owner {
                    Some(owner) if owner == self.name => self.local.local_stop(id).await,
                    Some(owner) => {
                        let url = self
                            .view()
                            .node(&owner)
                            .map(|n| n.url.clone())
                            .ok_or_else(|| GatewayError::NotFound(id.clone()))?;
                        let body = serde_json::json!({ "id": id });
                        let answer = self.peers.call(reqwest::Method::POST, &url, "/stop_camera", Some(&body)).await;
                        answer.map_err(GatewayError::Cluster)?;
                        Ok(Applied { revision: self.view().revision.max(0) as u64, outcome: None })
                    }
                    None => Ok(Applied { revision: self.view().revision.max(0) as u64, outcome: None }),
                }
            }
        }
    }

    /// Stops every always-on camera of the cluster (removes it) and every running on-demand one.
    pub(crate) async fn stop_all(&self, stop_timeout: Duration) -> Result<StoppedAll, GatewayError> {
        let ids: Vec<CameraId> = self.view().cameras.keys().cloned().collect();
        let results = futures_util::future::join_all(ids.iter().map(|id| self.stop(id, stop_timeout))).await;
        let mut cameras = Vec::new();
        for result in results {
            match result {
                Ok(applied) => cameras.extend(applied.outcome),
                Err(GatewayError::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(StoppedAll { stopped: cameras.len(), cameras })
    }

    /// Every camera of the cluster with its node and live status: this node's own, the others' fetched from
    /// them, and `pending` ones no node has taken (with the reason).
    pub(crate) async fn statuses(&self) -> Vec<CameraStatus> {
        let (owners, urls, pending) = {
            let view = self.view();
            let owners: std::collections::BTreeSet<String> = view.owners.values().cloned().collect();
            let urls: Vec<(String, String)> = owners
                .iter()
                .filter(|o| **o != self.name)
                .filter_map(|o| view.node(o).map(|n| (o.clone(), n.url.clone())))
                .collect();
            let pending: Vec<CameraId> = view.cameras.keys().filter(|id| view.owner(id).is_none()).cloned().collect();
            (owners, urls, pending)
        };
        let mut statuses: Vec<CameraStatus> = self.local_statuses();
        if owners.len() > 1 || !owners.contains(&self.name) {
            let fetched = futures_util::future::join_all(
                urls.iter().map(|(node, url)| async move { (node, self.peers.statuses(url).await) }),
            )
            .await;
            for (node, result) in fetched {
                match result {
                    Ok(remote) => statuses.extend(remote.into_iter().map(|mut s| {
                        s.node = Some(node.clone());
                        s
                    })),
                    Err(error) => warn!(node = %node, %error, "cannot read the node's cameras"),
                }
            }
        }
        statuses.extend(pending.iter().filter_map(|id| self.pending_status(id)));
        statuses.sort_by(|a, b| a.id.cmp(&b.id));
        statuses
    }

    /// One camera of the cluster.
    pub(crate) async fn status(&self, id: &CameraId) -> Option<CameraStatus> {
        let owner = self.view().owner(id).map(str::to_owned);
        match owner {
            Some(owner) if owner == self.name => self.local_statuses().into_iter().find(|s| &s.id == id),
            Some(owner) => {
                let url = self.view().node(&owner)?.url.clone();
                let statuses = self.peers.statuses(&url).await.ok()?;
                statuses.into_iter().find(|s| &s.id == id).map(|mut s| {
                    s.node = Some(owner);
                    s
                })
            }
            None => self.pending_status(id),
        }
    }

    /// This node's own cameras' statuses, marked with its name (and the node each came from, if it moved).
    pub fn local_statuses(&self) -> Vec<CameraStatus> {
        let moves = self.moves.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.local
            .supervisor()
            .snapshot()
            .into_iter()
            .map(|mut s| {
                s.node = Some(self.name.clone());
                s.moved_from = moves.get(&s.id).cloned();
                s
            })
            .collect()
    }

    /// The status of a desired camera no node runs, saying why.
    fn pending_status(&self, id: &CameraId) -> Option<CameraStatus> {
        let view = self.view();
        let record = view.cameras.get(id)?;
        let spec = self.local.spec_from_request(id.clone(), &record.camera).ok()?;
        let need = super::cost::estimate(&spec);
        let candidates = agent::candidates(&view, &self.name, None);
        let order = placement::rank(id, need, &candidates);
        let reason = match order.first() {
            Some(first) => format!("waiting for node {first} to take it"),
            None => placement::no_room_reason(need, &candidates),
        };
        let mut status = CameraStatus::new(&spec, 0, 0);
        status.state = WorkerState::Pending;
        status.last_error = Some(reason);
        Some(status)
    }

    /// A desired camera's spec, resolved with this node's templates.
    pub(crate) fn desired_spec(&self, id: &CameraId) -> Option<StreamSpec> {
        let record = self.view().cameras.get(id)?.clone();
        self.local.spec_from_request(id.clone(), &record.camera).ok()
    }

    /// The node that runs camera `id`, if it is another node: its API URL.
    pub fn remote_owner(&self, id: &CameraId) -> Option<String> {
        let view = self.view();
        let owner = view.owner(id)?;
        (owner != self.name).then(|| view.node(owner).map(|n| n.url.clone())).flatten()
    }

    /// The camera whose stream is `app/stream`, and the URL of its node if that is another node (`Err` if no
    /// node runs it yet).
    pub fn owner_of_stream(&self, app: &str, stream: &str) -> Option<(CameraId, Result<Option<String>, ()>)> {
        let key = super::desired::stream_key(app, stream);
        let key = key.as_str();
        let view = self.view();
        let (id, _) = view.cameras.iter().find(|(id, record)| {
            self.local
                .spec_from_request((*id).clone(), &record.camera)
                .ok()
                .and_then(|spec| spec.output.as_ref().and_then(|o| o.stream()))
                .is_some_and(|stream| stream == key)
        })?;
        let owner = match view.owner(id) {
            None => Err(()),
            Some(owner) if owner == self.name => Ok(None),
            Some(owner) => view.node(owner).map(|n| Some(n.url.clone())).ok_or(()),
        };
        Some((id.clone(), owner))
    }

    /// Forwards a request to another node and hands back its answer.
    pub async fn forward(
        &self,
        url: &str,
        method: reqwest::Method,
        path_and_query: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
        self.peers.call(method, url, path_and_query, json).await
    }

    /// Viewer URLs of camera `id` on the origin of the node that runs it (this node's templates while it has
    /// no owner yet).
    pub(crate) fn viewer_urls(&self, spec: &StreamSpec, host: Option<&str>, ttl: Option<Duration>) -> ViewerUrls {
        let owner = self.view().owner(&spec.id).map(str::to_owned);
        let record = owner.and_then(|o| self.view().node(&o).cloned());
        match record {
            Some(node) if node.name != self.name => {
                let host = node.public_host.as_deref().or(host);
                let templates = Templates::new("", "none", &node.viewer_url_template, node.public_host.clone());
                self.local.viewer_urls_with(&templates, spec, host, node.preview_port, ttl)
            }
            _ => self.local.viewer_urls_with(&self.templates, spec, host, self.preview_port, ttl),
        }
    }

    /// The nodes, for `GET /api/v1/cluster`.
    pub fn overview(&self) -> ClusterView {
        let view = self.view();
        let mut names: std::collections::BTreeSet<String> = view.nodes.keys().cloned().collect();
        names.extend(view.drains.iter().cloned());
        let nodes = names
            .into_iter()
            .map(|name| {
                let record = view.node(&name);
                NodeView {
                    url: record.map(|r| r.url.clone()).unwrap_or_default(),
                    alive: record.is_some(),
                    capacity: record.map_or(0.0, |r| r.capacity),
                    load: record.map_or(0.0, |r| r.load),
                    cameras: view.owners.values().filter(|o| **o == name).count(),
                    draining: view.drains.contains(&name),
                    this_node: name == self.name,
                    name,
                }
            })
            .collect();
        ClusterView {
            node: self.name.clone(),
            revision: view.revision,
            pending: view.cameras.keys().filter(|id| view.owner(id).is_none()).count(),
            nodes,
        }
    }

    /// Asks node `name` to hand its cameras over (`drain`), or to take cameras again.
    pub async fn set_draining(&self, name: &str, drain: bool) -> Result<(), GatewayError> {
        let mut client = self.client.clone();
        let key = self.keys.drain(name);
        if drain {
            etcd_call("asking the node to drain", client.put(key, Vec::new(), None)).await?;
        } else {
            etcd_call("ending the drain", client.delete(key, None)).await?;
        }
        Ok(())
    }

    async fn wait_for_owner_status(&self, id: &CameraId, within: Duration) -> CameraStatus {
        self.wait_until(within, |view| view.owner(id).is_some()).await;
        // The owner starts the camera right after claiming it: give its status a moment to appear.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            if let Some(status) = self.status(id).await
                && status.state != WorkerState::Pending
            {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.status(id).await.unwrap_or_else(|| {
            let mut status = CameraStatus::new(
                &StreamSpec::preview_only(id.as_str(), "demo://").expect("a valid placeholder"),
                0,
                0,
            );
            status.state = WorkerState::Pending;
            status
        })
    }

    /// Waits until `done` holds for this node's view; false if it did not within `within`.
    async fn wait_until(&self, within: Duration, done: impl Fn(&View) -> bool) -> bool {
        let mut changed = self.changed.subscribe();
        tokio::time::timeout(within, async {
            loop {
                if done(&self.view()) {
                    return true;
                }
                if changed.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Reads everything under the prefix (for the agent's resync).
    async fn load_all(&self) -> Result<(View, i64), ClusterError> {
        let mut client = self.client.clone();
        let response =
            etcd_call_raw("reading the cluster", client.get(self.keys.all(), Some(GetOptions::new().with_prefix())))
                .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let now = std::time::Instant::now();
        let mut view = View::default();
        for kv in response.kvs() {
            view.apply(&self.keys, kv.key(), Some(kv.value()), kv.lease(), kv.create_revision(), now);
        }
        view.revision = revision;
        Ok((view, revision))
    }
}

/// Whether a key created at etcd revision `created` was created after the write at `revision`: a camera
/// removed at `revision` and put back since.
fn created_after(created: i64, revision: u64) -> bool {
    u64::try_from(created).is_ok_and(|created| created > revision)
}

/// An etcd response's revision as the gateway counts revisions (etcd's are never negative).
fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> u64 {
    header.map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0))
}

/// An etcd request with the request timeout, its error in the gateway's terms.
async fn etcd_call<T>(
    doing: &str,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, GatewayError> {
    etcd_call_raw(doing, request).await.map_err(Into::into)
}

async fn etcd_call_raw<T>(
    doing: &str,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(etcd::REQUEST_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(ClusterError::Etcd { doing: doing.to_owned(), message: error.to_string() }),
        Err(_) => Err(ClusterError::Etcd { doing: doing.to_owned(), message: "no answer in time".to_owned() }),
    }
}

/// The cluster settings of a node, for the record it publishes.
fn node_record(node: &ClusterNode, load: f64, cameras: usize, draining: bool) -> NodeRecord {
    NodeRecord {
        name: node.name.clone(),
        url: node.url.clone(),
        capacity: node.capacity,
        load,
        cameras,
        max_cameras: node.local.camera_slots(),
        draining,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        viewer_url_template: node.templates.viewer_template().to_owned(),
        public_host: node.templates.public_host().map(str::to_owned),
        preview_port: node.preview_port,
    }
}
