//! What workers sharing a database coordinate through: cluster-wide locks and the shared run
//! queue. Implemented by the PostgreSQL store; the embedded store has none (`Storage::cluster`).

use std::cell::RefCell;
use std::marker::PhantomData;
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

/// A fencing token: which taking of a cluster lock this is. Every time a worker takes the
/// lock, the lock's epoch (a row in the shared database) goes up by one; every audit append
/// made while the lock is held carries the epoch it was taken at, and the database refuses
/// the append (in the same transaction) once the epoch moved on. The lock itself is a session
/// lock on a connection the operator can kill: the server then drops the lock, another
/// worker takes it, and the first worker, which still believes it holds it, writes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The lock.
    pub key: LockKey,
    /// The epoch it was taken at.
    pub epoch: i64,
}

thread_local! {
    /// The fences of the cluster locks this thread holds. A section under a lock runs on one
    /// thread ([`ClusterLock`] is not `Send`), so whatever it appends to the log is fenced
    /// without threading the token through every call that records.
    static HELD: RefCell<Vec<Fence>> = const { RefCell::new(Vec::new()) };
}

/// The fences of the cluster locks the calling thread holds (empty outside a cluster).
pub fn held_fences() -> Vec<Fence> {
    HELD.with(|h| h.borrow().clone())
}

/// A held cluster lock; released on drop, on the thread that took it.
pub struct ClusterLock {
    release: Option<Box<dyn FnOnce() + Send>>,
    fence: Fence,
    /// Not `Send`: the fence is registered with the taking thread.
    _thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for ClusterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLock")
            .field("fence", &self.fence)
            .finish()
    }
}

impl ClusterLock {
    /// A lock taken at `fence`, released by `release`. Until it is dropped, every audit
    /// append of this thread carries `fence`.
    pub fn new(fence: Fence, release: impl FnOnce() + Send + 'static) -> Self {
        HELD.with(|h| h.borrow_mut().push(fence));
        Self {
            release: Some(Box::new(release)),
            fence,
            _thread: PhantomData,
        }
    }

    /// The fencing token it was taken at.
    pub fn fence(&self) -> Fence {
        self.fence
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        HELD.with(|h| h.borrow_mut().retain(|f| *f != self.fence));
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// What workers sharing a database coordinate through.
pub trait Cluster: Send + Sync {
    /// Take a cluster-wide lock (blocks until it is free), at the lock's next epoch.
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
