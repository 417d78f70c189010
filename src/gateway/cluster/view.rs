//! This node's copy of the cluster's state in etcd — the desired cameras, their owners, the nodes, the drain
//! requests — kept current by the agent's watch and read by everything else without asking etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::keys::{Key, Keys};
use super::records::{CameraRecord, NodeRecord};
use crate::model::CameraId;

/// The cluster as this node last saw it.
#[derive(Debug, Default, Clone)]
pub struct View {
    /// The desired cameras.
    pub cameras: BTreeMap<CameraId, CameraRecord>,
    /// The etcd revision that created each desired camera's key: a camera removed and put back has a newer one.
    pub camera_created: BTreeMap<CameraId, i64>,
    /// Each owned camera's owner.
    pub owners: BTreeMap<CameraId, String>,
    /// The lease each owner key is bound to: a node runs a camera only while the key is bound to the lease it
    /// holds *now* — a stale view after a lost lease must not restart cameras it owned under the old one.
    pub owner_leases: BTreeMap<CameraId, i64>,
    /// The last owner of each camera whose owner key went away (to report a move).
    pub last_owners: BTreeMap<CameraId, String>,
    /// The live nodes.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Nodes asked to drain.
    pub drains: BTreeSet<String>,
    /// When each camera was last seen without an owner (for the claim delay).
    pub unowned_since: BTreeMap<CameraId, Instant>,
    /// The etcd revision this view is at.
    pub revision: i64,
}

impl View {
    /// Applies one key's new value (`None`: deleted).
    /// `lease` is the key's lease (0: none), `created` the revision that created the key.
    pub fn apply(&mut self, keys: &Keys, key: &[u8], value: Option<&[u8]>, lease: i64, created: i64, now: Instant) {
        match (keys.parse(key), value) {
            (Some(Key::Camera(id)), Some(value)) => {
                if let Ok(record) = serde_json::from_slice::<CameraRecord>(value) {
                    if !self.owners.contains_key(&id) {
                        self.unowned_since.entry(id.clone()).or_insert(now);
                    }
                    self.camera_created.insert(id.clone(), created);
                    self.cameras.insert(id, record);
                }
            }
            (Some(Key::Camera(id)), None) => {
                self.cameras.remove(&id);
                self.camera_created.remove(&id);
                self.unowned_since.remove(&id);
                self.last_owners.remove(&id);
            }
            (Some(Key::Owner(id)), Some(value)) => {
                self.unowned_since.remove(&id);
                self.owner_leases.insert(id.clone(), lease);
                self.owners.insert(id, String::from_utf8_lossy(value).into_owned());
            }
            (Some(Key::Owner(id)), None) => {
                self.owner_leases.remove(&id);
                if let Some(last) = self.owners.remove(&id) {
                    self.last_owners.insert(id.clone(), last);
                }
                if self.cameras.contains_key(&id) {
                    self.unowned_since.insert(id, now);
                }
            }
            (Some(Key::Node(name)), Some(value)) => {
                if let Ok(record) = serde_json::from_slice::<NodeRecord>(value) {
                    self.nodes.insert(name, record);
                }
            }
            (Some(Key::Node(name)), None) => {
                self.nodes.remove(&name);
            }
            (Some(Key::Drain(name)), Some(_)) => {
                self.drains.insert(name);
            }
            (Some(Key::Drain(name)), None) => {
                self.drains.remove(&name);
            }
            (None, _) => {}
        }
    }

    /// The node that runs camera `id`, if any.
    pub fn owner(&self, id: &CameraId) -> Option<&str> {
        self.owners.get(id).map(String::as_str)
    }

    /// Whether `node`, holding `lease`, owns camera `id` under that lease.
    pub fn owned_by(&self, id: &CameraId, node: &str, lease: i64) -> bool {
        self.owner(id) == Some(node) && self.owner_leases.get(id) == Some(&lease)
    }

    /// Node `name`'s record, if it is alive.
    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.get(name)
    }
}
