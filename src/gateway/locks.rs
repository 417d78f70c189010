//! One lock per camera, so every operation on a camera — start, replace, stop, remove, a viewer joining or
//! leaving, a linger expiring, the restore at start — happens whole and in arrival order, while operations on
//! different cameras never wait for each other (a stop can take seconds).
//!
//! The locks are tokio's fair mutexes: waiters are served first come, first served, so the last request to
//! arrive is the last applied. Entries are weak and swept as the map grows, so ids that come and go do not
//! accumulate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::model::CameraId;

/// The per-camera locks.
#[derive(Debug, Default)]
pub struct CameraLocks {
    locks: Mutex<HashMap<CameraId, Weak<AsyncMutex<()>>>>,
}

/// Held while one operation on one camera runs.
pub type CameraGuard = OwnedMutexGuard<()>;

impl CameraLocks {
    /// Waits for camera `id`'s turn.
    pub async fn lock(&self, id: &CameraId) -> CameraGuard {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(lock) = locks.get(id).and_then(Weak::upgrade) {
                lock
            } else {
                // Sweep dead entries now and then: amortized O(1) per new entry.
                if locks.len() >= 64 && locks.len().is_power_of_two() {
                    locks.retain(|_, lock| lock.strong_count() > 0);
                }
                let lock = Arc::new(AsyncMutex::new(()));
                locks.insert(id.clone(), Arc::downgrade(&lock));
                lock
            }
        };
        lock.lock_owned().await
    }

    /// Entries in the map (live or not yet swept); for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_camera_at_a_time_in_arrival_order() {
        let locks = Arc::new(CameraLocks::default());
        let id: CameraId = "a".parse().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = locks.lock(&id).await;
        let mut tasks = Vec::new();
        for n in 0..10 {
            let (locks, id, order) = (Arc::clone(&locks), id.clone(), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _turn = locks.lock(&id).await;
                order.lock().unwrap().push(n);
            }));
            // On this single-threaded runtime a yield runs the new task until it waits for the lock, so each
            // queues up before the next is spawned and arrival order is known.
            tokio::task::yield_now().await;
        }
        // Another camera is not held up by this one.
        let other: CameraId = "b".parse().unwrap();
        tokio::time::timeout(Duration::from_secs(1), locks.lock(&other)).await.expect("b is free");
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn unused_entries_are_swept() {
        let locks = CameraLocks::default();
        for n in 0..1000 {
            let id: CameraId = format!("c{n}").parse().unwrap();
            drop(locks.lock(&id).await);
        }
        assert!(locks.len() <= 513, "{} entries kept", locks.len());
    }
}
