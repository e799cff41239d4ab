//! What workers sharing a database coordinate through: cluster-wide locks and the shared run
//! queue. Implemented by the PostgreSQL store; the embedded store has none (`Storage::cluster`).

use std::time::Duration;

use crate::error::ApiResult;

/// The cluster-wide locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKey {
    /// Admission and insertion of new runs.
    Admissions = 0,
    /// Transitions of existing runs, policy changes, previews.
    Transitions = 1,
}

impl LockKey {
    /// The advisory lock id.
    pub fn id(self) -> i64 {
        0x636c_6e72_0100 + self as i64
    }
}

/// A held cluster lock; released on drop.
pub struct ClusterLock {
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for ClusterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterLock")
    }
}

impl ClusterLock {
    /// A lock released by `release`.
    pub fn new(release: impl FnOnce() + Send + 'static) -> Self {
        Self {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// What workers sharing a database coordinate through.
pub trait Cluster: Send + Sync {
    /// Take a cluster-wide lock (blocks until it is free).
    fn lock(&self, key: LockKey) -> ApiResult<ClusterLock>;
    /// Put a queued run on the shared queue (again is fine).
    fn enqueue(&self, run: &str) -> ApiResult<()>;
    /// Runs waiting for a worker.
    fn queued(&self) -> ApiResult<u64>;
    /// Claim the oldest run nobody holds, or whose holder's lease ran out.
    fn claim(&self, worker: &str, lease: Duration) -> ApiResult<Option<String>>;
    /// Extend the leases of every run `worker` holds.
    fn renew(&self, worker: &str, lease: Duration) -> ApiResult<()>;
    /// Take a run off the queue once its worker is done with it.
    fn done(&self, run: &str, worker: &str) -> ApiResult<()>;
    /// Keep `sealed` as the cluster's sealed identity unless one is kept already; returns
    /// the one kept.
    fn keep_identity(&self, sealed: &[u8]) -> ApiResult<Vec<u8>>;
}
