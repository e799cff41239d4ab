//! What runs have used, kept in enclave memory: each grant's runs (for `max_runs`) and each
//! dataset's DP charges (its ε ledger). Rebuilt at start from the run and preview rows (each
//! MAC-checked, and checked against the audit log before this runs), then updated by the
//! enclave itself as it writes each run. Never read back from the database, which the
//! operator could edit underneath a running server (deleting a counter row to get runs or ε
//! back).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use cleanroom_policy::dp::Spent;
use cleanroom_proto::dp::Epsilon;

use crate::error::ApiResult;
use crate::store::{PreviewRow, RunRow, Storage};

/// One charge to a dataset's budget.
#[derive(Debug, Clone, Copy)]
struct Charge {
    /// Whether it is charged to the researcher's share (previews are nobody's).
    researcher: bool,
    epsilon: Epsilon,
}

/// What one run is counted under: its (dataset, grant digest) pairs and its charged datasets.
type Counted = (Vec<(String, String)>, Vec<String>);

#[derive(Debug, Default)]
struct Books {
    /// Per (dataset, grant digest), the runs admitted under it.
    grants: BTreeMap<(String, String), BTreeSet<String>>,
    /// Per dataset, per charge id (a run id or `preview:DATASET`), the charging party and ε.
    charges: BTreeMap<String, BTreeMap<String, (Option<String>, Charge)>>,
    /// Per run, what it is counted under, so a rewrite replaces it.
    runs: BTreeMap<String, Counted>,
}

/// Grant run counts and DP charges.
#[derive(Debug, Default)]
pub struct Ledger {
    books: Mutex<Books>,
}

impl Ledger {
    /// The ledger of the stored (verified) runs and previews.
    pub fn load(storage: &dyn Storage) -> ApiResult<Self> {
        let ledger = Self::default();
        for run in storage.runs()? {
            ledger.record_run(&run);
        }
        for preview in storage.previews()? {
            ledger.record_preview(&preview);
        }
        Ok(ledger)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Count a run as written: under the grants its inputs were (last) admitted under, and
    /// its DP charge if it has one. Called after every durable write of a run.
    pub fn record_run(&self, run: &RunRow) {
        let mut books = self.lock();
        if let Some((grants, charged)) = books.runs.remove(&run.id) {
            for key in grants {
                if let Some(runs) = books.grants.get_mut(&key) {
                    runs.remove(&run.id);
                }
            }
            for dataset in charged {
                if let Some(charges) = books.charges.get_mut(&dataset) {
                    charges.remove(&run.id);
                }
            }
        }
        let grants: Vec<(String, String)> = run
            .inputs
            .iter()
            .map(|i| (i.dataset.clone(), i.grant_digest.clone()))
            .collect();
        for key in &grants {
            books
                .grants
                .entry(key.clone())
                .or_default()
                .insert(run.id.clone());
        }
        let mut charged = Vec::new();
        if let Some(charge) = &run.charge {
            for dataset in &charge.datasets {
                let entry = (
                    Some(run.researcher.to_string()),
                    Charge {
                        researcher: true,
                        epsilon: charge.epsilon,
                    },
                );
                books
                    .charges
                    .entry(dataset.clone())
                    .or_default()
                    .insert(run.id.clone(), entry);
                charged.push(dataset.clone());
            }
        }
        books.runs.insert(run.id.clone(), (grants, charged));
    }

    /// Record a dataset's previews: their total only ever grows (a row the operator rolled
    /// back to a smaller total never lowers what the ledger holds).
    pub fn record_preview(&self, row: &PreviewRow) {
        let mut books = self.lock();
        let entry = books
            .charges
            .entry(row.preview.dataset.clone())
            .or_default()
            .entry(format!("preview:{}", row.preview.dataset))
            .or_insert((
                None,
                Charge {
                    researcher: false,
                    epsilon: Epsilon::ZERO,
                },
            ));
        entry.1.epsilon = entry.1.epsilon.max(row.spent);
    }

    /// What `dataset`'s previews have spent in all.
    pub fn preview_spent(&self, dataset: &str) -> Epsilon {
        self.lock()
            .charges
            .get(dataset)
            .and_then(|c| c.get(&format!("preview:{dataset}")))
            .map(|(_, charge)| charge.epsilon)
            .unwrap_or_default()
    }

    /// Runs admitted under `grant` on `dataset`, by any researcher, not counting `exclude`.
    pub fn grant_runs(&self, dataset: &str, grant: &str, exclude: Option<&str>) -> u64 {
        let books = self.lock();
        let Some(runs) = books.grants.get(&(dataset.to_string(), grant.to_string())) else {
            return 0;
        };
        let excluded = exclude.is_some_and(|run| runs.contains(run));
        (runs.len() - usize::from(excluded)) as u64
    }

    /// What `dataset` spent, in total and by `researcher`, not counting charge `exclude`.
    pub fn spent(&self, dataset: &str, researcher: &str, exclude: Option<&str>) -> Spent {
        let mut spent = Spent::default();
        let books = self.lock();
        let Some(charges) = books.charges.get(dataset) else {
            return spent;
        };
        for (id, (party, charge)) in charges {
            if Some(id.as_str()) == exclude {
                continue;
            }
            spent.total = spent.total.plus(charge.epsilon);
            if charge.researcher && party.as_deref() == Some(researcher) {
                spent.researcher = spent.researcher.plus(charge.epsilon);
            }
        }
        spent
    }
}
