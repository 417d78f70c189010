//! Where a cluster keeps its state in etcd, under its prefix `P` (`cluster.prefix`, `/camgate` by default):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `P/cameras/<id>` | the camera as requested ([`CameraRecord`](super::records::CameraRecord)) | none: the desired set outlives every node |
//! | `P/owners/<id>` | the name of the node that runs it | the owner's: gone when the owner is |
//! | `P/nodes/<node>` | the node's record ([`NodeRecord`](super::records::NodeRecord)) | the node's: present while it lives |
//! | `P/drain/<node>` | empty: the node is to hand its cameras over | none |

use crate::model::CameraId;

/// The key layout under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// A camera of the desired set.
    Camera(CameraId),
    /// A camera's owner.
    Owner(CameraId),
    /// A node's record.
    Node(String),
    /// A node's drain request.
    Drain(String),
}

impl Keys {
    /// The layout under `prefix` (checked by the configuration: starts with `/`, does not end with one).
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.to_owned() }
    }

    /// Everything the cluster keeps.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The desired camera `id`.
    pub fn camera(&self, id: &CameraId) -> String {
        format!("{}/cameras/{id}", self.prefix)
    }

    /// Every desired camera.
    pub fn cameras(&self) -> String {
        format!("{}/cameras/", self.prefix)
    }

    /// The owner of camera `id`.
    pub fn owner(&self, id: &CameraId) -> String {
        format!("{}/owners/{id}", self.prefix)
    }

    /// Node `name`'s record.
    pub fn node(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.prefix)
    }

    /// Node `name`'s drain request.
    pub fn drain(&self, name: &str) -> String {
        format!("{}/drain/{name}", self.prefix)
    }

    /// What `key` is, if it is one of ours.
    pub fn parse(&self, key: &[u8]) -> Option<Key> {
        let key = std::str::from_utf8(key).ok()?.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let (kind, name) = key.split_once('/')?;
        match kind {
            "cameras" => name.parse().ok().map(Key::Camera),
            "owners" => name.parse().ok().map(Key::Owner),
            "nodes" => Some(Key::Node(name.to_owned())),
            "drain" => Some(Key::Drain(name.to_owned())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let keys = Keys::new("/site-a");
        let id: CameraId = "door".parse().unwrap();
        assert_eq!(keys.camera(&id), "/site-a/cameras/door");
        assert_eq!(keys.parse(keys.camera(&id).as_bytes()), Some(Key::Camera(id.clone())));
        assert_eq!(keys.parse(keys.owner(&id).as_bytes()), Some(Key::Owner(id)));
        assert_eq!(keys.parse(keys.node("n1").as_bytes()), Some(Key::Node("n1".into())));
        assert_eq!(keys.parse(keys.drain("n1").as_bytes()), Some(Key::Drain("n1".into())));
        assert_eq!(keys.parse(b"/site-b/cameras/door"), None, "another cluster's keys");
        assert_eq!(keys.parse(b"/site-a/cameras/a?b"), None, "not a camera id");
    }
}
