//! Which node should take a camera: cost-aware, deterministic enough that nodes seldom race, and stable so a
//! node joining moves nothing.
//!
//! Every node ranks the nodes that can take a camera — alive, not draining, with room for its estimated cost —
//! by weighted rendezvous hashing: each (node, camera) pair gets a pseudo-random number from a fixed hash, and
//! the node's weight is its free capacity, so emptier nodes win more cameras and every node computes the same
//! order from the same records. The first node claims at once; the k-th waits k claim steps before trying,
//! which lets the better-placed nodes claim first and still gets the camera placed if they cannot. The claim
//! itself is an etcd transaction that succeeds for one node only, so a race costs a retry, never a duplicate.
//!
//! Ranking matters only for cameras without an owner: an owned camera stays where it is when nodes join
//! (no rebalancing, no flapping) and moves only when its owner dies or drains.

use crate::model::CameraId;

/// A node that may take cameras.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    /// Its name.
    pub name: &'a str,
    /// Cores it may fill.
    pub capacity: f64,
    /// Cores its cameras use.
    pub load: f64,
    /// Whether it is handing its cameras over.
    pub draining: bool,
    /// Whether it runs as many cameras as it may (`max_cameras`).
    pub full: bool,
}

impl Candidate<'_> {
    fn free(&self) -> f64 {
        self.capacity - self.load
    }
}

/// The nodes that can take camera `id` of cost `need`, best first.
pub fn rank<'a>(id: &CameraId, need: f64, nodes: &[Candidate<'a>]) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &'a str)> = nodes
        .iter()
        .filter(|n| !n.draining && !n.full && n.free() >= need)
        .map(|n| {
            let u = unit(fnv1a(n.name.as_bytes(), id.as_str().as_bytes()));
            // Weighted rendezvous: -w / ln(u) with u in (0, 1); a larger score wins.
            (-n.free().max(1e-6) / u.ln(), n.name)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().map(|(_, name)| name).collect()
}

/// Why no node can take a camera, for its `pending` status.
pub fn no_room_reason(need: f64, nodes: &[Candidate<'_>]) -> String {
    let live: Vec<&Candidate<'_>> = nodes.iter().filter(|n| !n.draining && !n.full).collect();
    if live.is_empty() && nodes.iter().any(|n| n.full) {
        return "every node that is not draining runs as many cameras as it may (max_cameras)".to_owned();
    }
    match live.iter().map(|n| n.free()).max_by(f64::total_cmp) {
        None => "no node is available (none alive, or all draining)".to_owned(),
        Some(most) => format!(
            "no node has room: it needs about {need:.2} cores, the emptiest of {} nodes has {most:.2} free (cpu_budget)",
            live.len()
        ),
    }
}

/// FNV-1a over node name, a separator and camera id: stable across processes and versions.
fn fnv1a(node: &[u8], camera: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.iter().chain(b"\0").chain(camera) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short keys: finish with a multiply-xorshift.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// A hash mapped into the open interval (0, 1).
fn unit(hash: u64) -> f64 {
    ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, capacity: f64, load: f64) -> Candidate<'_> {
        Candidate { name, capacity, load, draining: false, full: false }
    }

    fn id(n: usize) -> CameraId {
        format!("cam{n}").parse().unwrap()
    }

    #[test]
    fn every_node_computes_the_same_order_and_full_or_draining_nodes_are_left_out() {
        let nodes = [node("a", 2.0, 0.0), node("b", 2.0, 1.9), Candidate { draining: true, ..node("c", 8.0, 0.0) }];
        let order = rank(&id(1), 0.5, &nodes);
        assert_eq!(order, ["a"], "b is too full for 0.5 cores, c drains");
        assert_eq!(rank(&id(1), 0.5, &nodes), order, "deterministic");
        assert_eq!(rank(&id(1), 0.01, &nodes).len(), 2);
        assert!(no_room_reason(5.0, &nodes).contains("no node has room"));
    }

    #[test]
    fn cameras_spread_by_free_capacity() {
        let nodes = [node("a", 4.0, 0.0), node("b", 2.0, 0.0), node("c", 2.0, 0.0)];
        let mut firsts = std::collections::HashMap::new();
        for n in 0..4000 {
            *firsts.entry(rank(&id(n), 0.01, &nodes)[0]).or_insert(0) += 1;
        }
        // Weights 4:2:2 give a 1/2, 1/4, 1/4 split.
        let share = |name: &str| f64::from(firsts[name]) / 4000.0;
        assert!((share("a") - 0.5).abs() < 0.04, "{firsts:?}");
        assert!((share("b") - 0.25).abs() < 0.04 && (share("c") - 0.25).abs() < 0.04, "{firsts:?}");
    }

    #[test]
    fn a_new_node_only_takes_its_share_of_unplaced_cameras() {
        // Rendezvous hashing: adding a node changes the first choice only for cameras the new node wins.
        let before = [node("a", 2.0, 0.0), node("b", 2.0, 0.0)];
        let after = [node("a", 2.0, 0.0), node("b", 2.0, 0.0), node("c", 2.0, 0.0)];
        let moved = (0..3000)
            .filter(|n| {
                let (was, is) = (rank(&id(*n), 0.01, &before)[0], rank(&id(*n), 0.01, &after)[0]);
                was != is && is != "c"
            })
            .count();
        assert_eq!(moved, 0, "no camera changes between the old nodes");
    }
}
