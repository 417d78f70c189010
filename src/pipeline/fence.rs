//! The fence: how long this process may still publish its cameras, in a cluster where another node takes them
//! over once this node's lease expires.
//!
//! The cluster agent moves the fence forward every time etcd confirms the node's lease (to shortly before the
//! lease could expire, counted from when the confirmation was *asked for*). Camera threads check it before
//! every write to their outputs and before connecting: past it, they stop at once. Because the fence is a
//! deadline on the monotonic clock — which keeps running while the process is frozen (SIGSTOP), suspended or
//! starved — a node that wakes after its lease expired finds its fence passed before it writes a single packet,
//! whatever its other threads have or have not noticed yet.
//!
//! On a single box there is no fence ([`Fence::open`]): nothing ever expires.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared by the agent (which moves it) and every camera thread (which checks it). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fence {
    /// Milliseconds after [`epoch`] until which publishing is allowed; `u64::MAX` for ever.
    until_ms: Arc<AtomicU64>,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn ms(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_millis() as u64
}

impl Fence {
    /// A fence that never closes (single box).
    pub fn open() -> Fence {
        Fence { until_ms: Arc::new(AtomicU64::new(u64::MAX)) }
    }

    /// A closed fence: nothing may publish until [`extend_to`](Self::extend_to) is called.
    pub fn closed() -> Fence {
        let _ = epoch();
        Fence { until_ms: Arc::new(AtomicU64::new(0)) }
    }

    /// Allows publishing until `until` (and no longer, even if an earlier call allowed more: a lease that
    /// answers with a shorter TTL shortens the fence).
    pub fn extend_to(&self, until: Instant) {
        self.until_ms.store(ms(until), Ordering::SeqCst);
    }

    /// Closes the fence now.
    pub fn close(&self) {
        self.until_ms.store(0, Ordering::SeqCst);
    }

    /// Whether publishing is allowed now.
    #[inline]
    pub fn is_open(&self) -> bool {
        let until = self.until_ms.load(Ordering::Relaxed);
        until == u64::MAX || ms(Instant::now()) < until
    }

    /// How long publishing stays allowed from now (`None` for ever).
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.until_ms.load(Ordering::Relaxed);
        (until != u64::MAX).then(|| Duration::from_millis(until.saturating_sub(ms(Instant::now()))))
    }
}

impl Default for Fence {
    fn default() -> Self {
        Fence::open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_opens_until_its_deadline_and_can_be_closed() {
        assert!(Fence::open().is_open());
        assert_eq!(Fence::open().remaining(), None);
        let fence = Fence::closed();
        assert!(!fence.is_open());
        fence.extend_to(Instant::now() + Duration::from_secs(60));
        assert!(fence.is_open());
        assert!(fence.remaining().unwrap() > Duration::from_secs(59));
        let clone = fence.clone();
        clone.close();
        assert!(!fence.is_open(), "clones share the deadline");
        fence.extend_to(Instant::now() - Duration::from_millis(1));
        assert!(!fence.is_open());
    }
}
