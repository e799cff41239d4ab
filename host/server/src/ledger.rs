//! The DP ledger, kept in enclave memory: rebuilt at start from the run and preview rows (each
//! MAC-checked, and checked against the audit log before this runs), then updated by the
//! enclave itself as it writes each charge. It is never read back from the database, which
//! the operator could edit underneath a running server.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cleanroom_policy::dp::Spent;
use cleanroom_proto::dp::Epsilon;

use crate::error::ApiResult;
use crate::store::{PreviewRow, RunRow, Storage};

#[derive(Debug, Clone)]
struct Charge {
    dataset: String,
    /// The researcher charged (`None`: a preview, charged to nobody's share).
    researcher: Option<String>,
    epsilon: Epsilon,
}

/// Every charge to every dataset's budget, by charge id (a run id, or `preview:DATASET`).
#[derive(Debug, Default)]
pub struct Ledger {
    charges: Mutex<BTreeMap<String, Vec<Charge>>>,
}

impl Ledger {
    /// The ledger of the stored (verified) runs and previews.
    pub fn load(storage: &dyn Storage) -> ApiResult<Self> {
        let ledger = Ledger::default();
        for run in storage.runs()? {
            ledger.record_run(&run);
        }
        for preview in storage.previews()? {
            ledger.record_preview(&preview);
        }
        Ok(ledger)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Charge>>> {
        self.charges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Record a run's charge (a run without one charges nothing).
    pub fn record_run(&self, run: &RunRow) {
        let Some(charge) = &run.charge else { return };
        let charges = charge
            .datasets
            .iter()
            .map(|dataset| Charge {
                dataset: dataset.clone(),
                researcher: Some(run.researcher.to_string()),
                epsilon: charge.epsilon,
            })
            .collect();
        self.lock().insert(run.id.clone(), charges);
    }

    /// Record a dataset's previews (their total replaces the previous one).
    pub fn record_preview(&self, row: &PreviewRow) {
        let charge = Charge {
            dataset: row.preview.dataset.clone(),
            researcher: None,
            epsilon: row.spent,
        };
        self.lock()
            .insert(format!("preview:{}", row.preview.dataset), vec![charge]);
    }

    /// What `dataset` spent, in total and by `researcher`, not counting charge `exclude`.
    pub fn spent(&self, dataset: &str, researcher: &str, exclude: Option<&str>) -> Spent {
        let mut spent = Spent::default();
        for (id, charges) in self.lock().iter() {
            if Some(id.as_str()) == exclude {
                continue;
            }
            for c in charges.iter().filter(|c| c.dataset == dataset) {
                spent.total = spent.total.plus(c.epsilon);
                if c.researcher.as_deref() == Some(researcher) {
                    spent.researcher = spent.researcher.plus(c.epsilon);
                }
            }
        }
        spent
    }
}
