//! A node's three loops: the lease (and the fence it moves), the watch (this node's copy of the cluster), and
//! the reconcile (claim what fits, run what it owns, release what it must).
//!
//! **Lease and fence.** The node holds one lease of `lease_ttl_ms`, renewed every quarter of it. Each
//! confirmed renewal moves the fence to the time the renewal was *sent* plus the TTL etcd confirmed, minus a
//! fifth of the TTL. The server cannot let the lease expire before that send time plus the TTL, so the fence
//! always closes before anyone else can own this node's cameras. A node that cannot renew — partitioned, etcd
//! down, the process frozen — closes its fence on time by the clock alone: its camera threads check it before
//! every write and stop. When etcd says the lease is gone, the node drops everything and starts over with a new
//! lease and no cameras. If renewals succeed again on the *same* lease (etcd came back: a restarted etcd extends
//! every lease), the node still owns its cameras and runs them again.
//!
//! **Watch.** Everything under the prefix is read once, then followed from the next revision; on any error the
//! node reads everything again.
//!
//! **Reconcile** (on every change, and twice a second): stop what this node runs but no longer owns; run what
//! it owns, with the current request; claim unowned cameras that fit, in placement order (the k-th best node
//! waits k claim steps); hand cameras over one at a time while draining; publish its record when its load
//! changes. A camera is released only once its thread here has exited: one whose stop timed out stays owned
//! (and is not run anywhere else) until it has.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use tracing::{debug, info, warn};

use super::placement::{self, Candidate};
use super::records::CameraRecord;
use super::view::View;
use super::{ClusterNode, etcd, etcd_call_raw, node_record};
use crate::gateway::{GatewayError, cost};
use crate::model::CameraId;
use crate::runtime::{CameraStatus, WorkerState};

/// How long the k-th best node waits, per rank, before it claims an unowned camera.
pub const CLAIM_STEP: Duration = Duration::from_millis(500);
/// How long a node leaves alone a camera it could not start.
const DECLINE_FOR: Duration = Duration::from_secs(30);
/// How often a node's record is rewritten even if nothing changed.
const RECORD_EVERY: Duration = Duration::from_secs(5);

pub(super) fn spawn(node: Arc<ClusterNode>) {
    tokio::spawn(lease_loop(Arc::clone(&node)));
    tokio::spawn(watch_loop(Arc::clone(&node)));
    tokio::spawn(reconcile_loop(node));
}

/// The nodes that may take cameras, as the view has them; this node with `my_load` if given (fresher than its
/// published record).
pub(super) fn candidates<'a>(view: &'a View, me: &'a str, mine: Option<(f64, usize)>) -> Vec<Candidate<'a>> {
    view.nodes
        .values()
        .map(|n| {
            let (load, cameras) = match mine {
                Some(mine) if n.name == me => mine,
                _ => (n.load, n.cameras),
            };
            Candidate {
                name: &n.name,
                capacity: n.capacity,
                load,
                draining: view.drains.contains(&n.name),
                full: cameras >= n.max_cameras,
            }
        })
        .collect()
}

async fn sleep_or_shutdown(node: &ClusterNode, duration: Duration) -> bool {
    let mut shutdown = node.shutting_down.subscribe();
    tokio::select! {
        () = tokio::time::sleep(duration) => false,
        _ = shutdown.wait_for(|down| *down) => true,
    }
}

// --- the lease ---------------------------------------------------------------------------------------------

async fn lease_loop(node: Arc<ClusterNode>) {
    let ttl_secs = node.ttl.as_secs().max(2) as i64;
    let margin = node.ttl / 5;
    // A restart ends a drain: a node that comes back after a rolling upgrade takes cameras again.
    let _ =
        etcd_call_raw("ending this node's drain", node.client.clone().delete(node.keys.drain(&node.name), None)).await;
    loop {
        if *node.shutting_down.borrow() {
            return;
        }
        let sent = Instant::now();
        let lease = match etcd_call_raw("granting a lease", node.client.clone().lease_grant(ttl_secs, None)).await {
            Ok(granted) => granted.id(),
            Err(error) => {
                warn!(node = %node.name, %error, "no lease yet; retrying");
                if sleep_or_shutdown(&node, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        node.lease.store(lease, Ordering::SeqCst);
        node.fence.extend_to(sent + Duration::from_secs(ttl_secs as u64) - margin);
        info!(node = %node.name, lease = format!("{lease:x}"), "lease granted");
        publish_record(&node, lease, 0.0, 0, false).await;
        node.changed.send_modify(|n| *n += 1);
        if !keep_alive(&node, lease, ttl_secs, margin).await {
            return;
        }
        // The lease is gone: nothing of this node's may run any more.
        node.lease.store(0, Ordering::SeqCst);
        node.fence.close();
        warn!(node = %node.name, "lease lost: cameras stopped; joining again with a new lease");
        node.changed.send_modify(|n| *n += 1);
    }
}

/// Renews `lease` until etcd says it is gone (`true`) or the node shuts down (`false`).
async fn keep_alive(node: &ClusterNode, lease: i64, ttl_secs: i64, margin: Duration) -> bool {
    let interval = node.ttl / 4;
    loop {
        let opened = tokio::time::timeout(etcd::REQUEST_TIMEOUT, node.client.clone().lease_keep_alive(lease)).await;
        let (mut keeper, mut stream) = match opened {
            Ok(Ok(pair)) => pair,
            failed => {
                debug!(node = %node.name, ?failed, "cannot open a lease renewal stream");
                if sleep_or_shutdown(node, interval).await {
                    return false;
                }
                continue;
            }
        };
        loop {
            let sent = Instant::now();
            let renewed = tokio::time::timeout(etcd::REQUEST_TIMEOUT, async {
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await;
            match renewed {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {
                    let ttl = Duration::from_secs(answer.ttl().min(ttl_secs) as u64);
                    node.fence.extend_to(sent + ttl - margin);
                }
                // etcd answered: the lease does not exist any more.
                Ok(Ok(Some(_))) => return true,
                // No answer in time, or the stream broke: open a new one; the fence runs out meanwhile.
                _ => {
                    debug!(node = %node.name, "lease renewal missed");
                    break;
                }
            }
            if sleep_or_shutdown(node, interval).await {
                return false;
            }
        }
        if sleep_or_shutdown(node, Duration::from_millis(200)).await {
            return false;
        }
    }
}

async fn publish_record(node: &ClusterNode, lease: i64, load: f64, cameras: usize, draining: bool) {
    let record = node_record(node, load, cameras, draining);
    let value = serde_json::to_vec(&record).expect("records serialize");
    let options = PutOptions::new().with_lease(lease);
    if let Err(error) =
        etcd_call_raw("publishing the node", node.client.clone().put(node.keys.node(&node.name), value, Some(options)))
            .await
    {
        debug!(node = %node.name, %error, "node record not published");
    }
}

// --- the watch ---------------------------------------------------------------------------------------------

async fn watch_loop(node: Arc<ClusterNode>) {
    loop {
        if *node.shutting_down.borrow() {
            return;
        }
        let (view, revision) = match node.load_all().await {
            Ok(loaded) => loaded,
            Err(error) => {
                warn!(node = %node.name, %error, "cannot read the cluster; retrying");
                if sleep_or_shutdown(&node, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        {
            let mut current = node.view.write().unwrap_or_else(|e| e.into_inner());
            // Keep how long cameras have waited for an owner: a resync must not restart their claim delays.
            let mut view = view;
            for (id, since) in &current.unowned_since {
                if let Some(entry) = view.unowned_since.get_mut(id) {
                    *entry = (*entry).min(*since);
                }
            }
            *current = view;
        }
        node.changed.send_modify(|n| *n += 1);
        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let watched =
            tokio::time::timeout(etcd::REQUEST_TIMEOUT, node.client.clone().watch(node.keys.all(), Some(options)))
                .await;
        let Ok(Ok((_watcher, mut stream))) = watched else {
            if sleep_or_shutdown(&node, Duration::from_secs(1)).await {
                return;
            }
            continue;
        };
        let mut shutdown = node.shutting_down.subscribe();
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = shutdown.wait_for(|down| *down) => return,
            };
            let response = match message {
                Ok(Some(response)) if !response.canceled() => response,
                _ => break,
            };
            let now = Instant::now();
            {
                let mut view = node.view.write().unwrap_or_else(|e| e.into_inner());
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let value = (event.event_type() == EventType::Put).then(|| kv.value());
                    view.apply(&node.keys, kv.key(), value, kv.lease(), kv.create_revision(), now);
                }
                if let Some(header) = response.header() {
                    view.revision = view.revision.max(header.revision());
                }
            }
            node.changed.send_modify(|n| *n += 1);
        }
        if sleep_or_shutdown(&node, Duration::from_millis(500)).await {
            return;
        }
    }
}

// --- the reconcile -----------------------------------------------------------------------------------------

#[derive(Default)]
struct Reconciler {
    /// What this node runs, by the request it runs it with.
    running: BTreeMap<CameraId, CameraRecord>,
    /// Cameras whose stop here timed out (their thread is stuck): this node keeps owning them, and retries the
    /// stop every round, until the thread has exited; only then may another node start them.
    stopping: BTreeSet<CameraId>,
    /// Cameras this node could not start, and when: not claimed again for a while.
    declined: BTreeMap<CameraId, Instant>,
    /// The record last published (load, cameras, draining) and when.
    published: Option<((f64, usize, bool), Instant)>,
}

async fn reconcile_loop(node: Arc<ClusterNode>) {
    let mut changed = node.changed.subscribe();
    let mut state = Reconciler::default();
    loop {
        let mut shutdown = node.shutting_down.subscribe();
        tokio::select! {
            _ = changed.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
        reconcile(&node, &mut state).await;
    }
}

async fn reconcile(node: &ClusterNode, state: &mut Reconciler) {
    let lease = node.lease.load(Ordering::SeqCst);
    if *node.shutting_down.borrow() {
        return;
    }
    if lease == 0 || !node.fence.is_open() {
        // No authority: nothing may run. (The camera threads stopped themselves already, at the fence.)
        let running: Vec<CameraId> = state.running.keys().cloned().collect();
        for id in running {
            stop_here(node, state, &id).await;
        }
        return;
    }
    let view = node.view.read().unwrap_or_else(|e| e.into_inner()).clone();
    let me = node.name.as_str();
    let draining = view.drains.contains(me);
    let now = Instant::now();

    // Stops that timed out earlier: released once the thread is gone.
    for id in state.stopping.clone() {
        if stop_here(node, state, &id).await && view.owned_by(&id, me, lease) {
            release(node, &id).await;
        }
    }

    // What this node runs but does not own (any more), or that nobody wants.
    let running: Vec<CameraId> = state.running.keys().cloned().collect();
    for id in running {
        let owned = view.owned_by(&id, me, lease);
        if owned && view.cameras.contains_key(&id) {
            continue;
        }
        // Released only once its thread has exited, and only if it is still this node's to release.
        if stop_here(node, state, &id).await && owned {
            release(node, &id).await;
        }
    }

    // What it owns: run it with the current request; while draining, hand one over per round.
    let mut handed_over = false;
    // Only keys bound to the lease held now: after a lost lease the view may still show this node owning
    // cameras under the old one (their keys are gone in etcd, the deletions not seen yet).
    for id in view.owners.keys().filter(|id| view.owned_by(id, me, lease)).cloned() {
        if state.stopping.contains(&id) {
            continue;
        }
        let Some(record) = view.cameras.get(&id) else {
            release(node, &id).await;
            continue;
        };
        if draining {
            if !handed_over {
                handed_over = true;
                if stop_here(node, state, &id).await {
                    release(node, &id).await;
                    info!(node = %me, camera = %id, "handed over (draining)");
                }
            }
            continue;
        }
        if state.running.get(&id) != Some(record) {
            match start_local(node, &id, record).await {
                Ok(()) => {
                    state.running.insert(id, record.clone());
                }
                Err(error) => {
                    warn!(node = %me, camera = %id, %error, "cannot run the camera here; releasing it");
                    if stop_here(node, state, &id).await {
                        release(node, &id).await;
                    }
                    state.declined.insert(id, now);
                }
            }
        }
    }

    // Claims: unowned cameras that fit, in placement order.
    state.declined.retain(|_, at| now.duration_since(*at) < DECLINE_FOR);
    let mut my_load = node.local.cpu_load(None);
    if !draining {
        let unowned: Vec<(&CameraId, &CameraRecord)> = view
            .cameras
            .iter()
            .filter(|(id, _)| view.owner(id).is_none() && !state.declined.contains_key(*id))
            .collect();
        for (id, record) in unowned {
            let Ok(spec) = node.local.spec_from_request(id.clone(), &record.camera) else { continue };
            let need = cost::estimate(&spec);
            let my_cameras = state.running.len();
            let mut nodes = candidates(&view, me, Some((my_load, my_cameras)));
            if !nodes.iter().any(|n| n.name == me) {
                let full = my_cameras >= node.local.camera_slots();
                nodes.push(Candidate { name: me, capacity: node.capacity, load: my_load, draining, full });
            }
            let order = placement::rank(id, need, &nodes);
            let Some(position) = order.iter().position(|name| *name == me) else { continue };
            let waited = view.unowned_since.get(id).map_or(Duration::ZERO, |since| now.duration_since(*since));
            if waited < CLAIM_STEP * position as u32 {
                continue;
            }
            if claim(node, id, lease).await {
                match view.last_owners.get(id).filter(|last| last.as_str() != me) {
                    Some(from) => {
                        info!(node = %me, camera = %id, from = %from, rank = position, need_cores = need, "camera moved here");
                        node.moves.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), from.clone());
                    }
                    None => info!(node = %me, camera = %id, rank = position, need_cores = need, "claimed"),
                }
                {
                    let mut current = node.view.write().unwrap_or_else(|e| e.into_inner());
                    current.owners.insert(id.clone(), me.to_owned());
                    current.owner_leases.insert(id.clone(), lease);
                }
                my_load += need;
                match start_local(node, id, record).await {
                    Ok(()) => {
                        state.running.insert(id.clone(), record.clone());
                    }
                    Err(error) => {
                        warn!(node = %me, camera = %id, %error, "claimed but cannot run it; releasing it");
                        release(node, id).await;
                        state.declined.insert(id.clone(), now);
                    }
                }
            }
        }
    }

    node.moves.lock().unwrap_or_else(|e| e.into_inner()).retain(|id, _| state.running.contains_key(id));

    // The node's record, when its load changed or now and then.
    let owned = view.owners.values().filter(|o| o.as_str() == me).count();
    let summary = ((my_load * 100.0).round() / 100.0, owned, draining);
    let stale =
        state.published.as_ref().is_none_or(|(last, at)| *last != summary || now.duration_since(*at) >= RECORD_EVERY);
    if stale {
        publish_record(node, lease, summary.0, summary.1, summary.2).await;
        state.published = Some((summary, now));
    }
}

/// Stops `id` on this node and forgets it; true once no thread of it runs here, so that it may be released.
/// A stop that timed out leaves the camera in `stopping`, still owned, to be retried next round: releasing it
/// while its thread may still write would let another node run it at the same time.
async fn stop_here(node: &ClusterNode, state: &mut Reconciler, id: &CameraId) -> bool {
    state.running.remove(id);
    // A retry waits on the supervisor's word that the thread exited, without asking for (and waiting out)
    // another stop that cannot succeed sooner.
    let still_stopping = |s: CameraStatus| matches!(s.state, WorkerState::Stopping | WorkerState::Stuck);
    if state.stopping.contains(id) && node.local.supervisor().status(id).is_some_and(still_stopping) {
        return false;
    }
    match node.local.local_remove(id).await {
        Ok(_) | Err(GatewayError::NotFound(_)) => {
            state.stopping.remove(id);
            true
        }
        Err(error) => {
            if state.stopping.insert(id.clone()) {
                warn!(node = %node.name, camera = %id, %error, "could not stop the camera; keeping it until its thread has exited");
            }
            false
        }
    }
}

async fn start_local(node: &ClusterNode, id: &CameraId, record: &CameraRecord) -> Result<(), String> {
    let spec = node.local.spec_from_request(id.clone(), &record.camera).map_err(|e| e.to_string())?;
    let mode = record.camera.on_demand.mode();
    node.local.local_put(spec, mode).await.map(|_| ()).map_err(|e| e.to_string())
}

/// Creates the owner key of `id` for this node, if the camera is still desired and nobody owns it.
async fn claim(node: &ClusterNode, id: &CameraId, lease: i64) -> bool {
    let owner = node.keys.owner(id);
    let txn = Txn::new()
        .when([
            Compare::create_revision(owner.clone(), CompareOp::Equal, 0),
            Compare::create_revision(node.keys.camera(id), CompareOp::Greater, 0),
        ])
        .and_then([TxnOp::put(owner, node.name.clone(), Some(PutOptions::new().with_lease(lease)))]);
    match etcd_call_raw("claiming a camera", node.client.clone().txn(txn)).await {
        Ok(response) => response.succeeded(),
        Err(error) => {
            debug!(node = %node.name, camera = %id, %error, "claim failed");
            false
        }
    }
}

/// Deletes the owner key of `id` if it is still this node's.
async fn release(node: &ClusterNode, id: &CameraId) {
    let owner = node.keys.owner(id);
    let txn = Txn::new()
        .when([Compare::value(owner.clone(), CompareOp::Equal, node.name.clone())])
        .and_then([TxnOp::delete(owner, None)]);
    if let Err(error) = etcd_call_raw("releasing a camera", node.client.clone().txn(txn)).await {
        warn!(node = %node.name, camera = %id, %error, "release failed; the camera moves when this node's lease expires");
    }
}
