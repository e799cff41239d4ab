//! Scheduling behind one trait: where admitted runs wait for a worker. A lone server keeps a
//! bounded channel in memory; workers sharing a database claim runs from a queue in it. What
//! submits, restarts and executes runs sees only [`RunQueue`]; which one a service has is
//! decided once, by its storage ([`of`]).

use super::*;
use crate::store::Cluster;

/// Room reserved on a queue for one run (before its admission, so a full queue spends
/// nothing of anybody's grant).
#[derive(Debug)]
pub(crate) enum Slot {
    /// A place in the embedded channel.
    Local(mpsc::OwnedPermit<String>),
    /// The shared queue had room when asked (it is bounded by its length in the database).
    Shared,
}

/// Where admitted runs wait for a worker.
pub(crate) trait RunQueue {
    /// Room for one more run, or `Busy`.
    fn reserve(&self) -> ApiResult<Slot>;
    /// Put an admitted run on the queue, in the slot reserved for it.
    fn push(&self, slot: Slot, run: &str) -> ApiResult<()>;
    /// Start the workers, putting back what a restart left queued (and failing what it
    /// interrupted: a run is never run twice).
    fn start(&self, rx: mpsc::Receiver<String>) -> ApiResult<()>;
}

/// The queue of `service`.
pub(crate) fn of(service: &Arc<Service>) -> Box<dyn RunQueue + '_> {
    match service.storage.cluster() {
        Some(cluster) => Box::new(Shared { service, cluster }),
        None => Box::new(Embedded { service }),
    }
}

fn busy() -> ApiError {
    ApiError::Busy("the run queue is full; retry later".into())
}

/// The embedded server's bounded channel, drained by `config.workers` workers.
struct Embedded<'a> {
    service: &'a Arc<Service>,
}

impl RunQueue for Embedded<'_> {
    fn reserve(&self) -> ApiResult<Slot> {
        self.service
            .queue
            .clone()
            .try_reserve_owned()
            .map(Slot::Local)
            .map_err(|_| busy())
    }

    fn push(&self, slot: Slot, run: &str) -> ApiResult<()> {
        match slot {
            Slot::Local(permit) => {
                permit.send(run.to_string());
                Ok(())
            }
            Slot::Shared => Err(ApiError::Internal(
                "a shared queue's slot used on the embedded queue".into(),
            )),
        }
    }

    fn start(&self, rx: mpsc::Receiver<String>) -> ApiResult<()> {
        workers::start_embedded(self.service.clone(), rx)
    }
}

/// A cluster's queue in the shared database, claimed under leases.
struct Shared<'a> {
    service: &'a Arc<Service>,
    cluster: &'a dyn Cluster,
}

impl RunQueue for Shared<'_> {
    fn reserve(&self) -> ApiResult<Slot> {
        if self.cluster.queued()? >= self.service.config.queue_capacity as u64 {
            return Err(busy());
        }
        Ok(Slot::Shared)
    }

    fn push(&self, _slot: Slot, run: &str) -> ApiResult<()> {
        // Whichever worker claims it first runs it.
        self.cluster.enqueue(run)
    }

    fn start(&self, _rx: mpsc::Receiver<String>) -> ApiResult<()> {
        workers::start_cluster(self.service.clone())
    }
}
