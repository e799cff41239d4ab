//! Pipeline runs and derived datasets.
//!
//! A pipeline run is admitted like any run: its `module` is the pipeline's digest, and every
//! input's owner must grant that digest. Its steps then run in order (`cleanroom_runtime::
//! pipeline::run_chain`), each in a fresh instance; every table a step keeps is sealed here as
//! a derived dataset with its provenance, and read by later steps through the same identifier
//! tap as the roots. One identifier collector spans the whole chain, and a derived table
//! carries the identifier values collected before it was kept, so a value that was an
//! identifier upstream is caught in any released output downstream, whatever a step renamed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cleanroom_policy::{Admitted, DerivedFacts, IdentifierCollector};
use cleanroom_proto::pipeline::{Lineage, Pipeline, Provenance, Source, Step, derived_id};
use cleanroom_proto::{PartyId, ReceiptStep, params_digest};
use cleanroom_runtime::output::TableOutput;
use cleanroom_runtime::pipeline::{Plan, StepReport, Steps};
use cleanroom_runtime::tables::Tapped;
use cleanroom_runtime::{MemTable, RunError, TableSource};
use cleanroom_trust::Purpose;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::Service;
use crate::error::{ApiError, ApiResult};
use crate::events::Audience;
use crate::store::{DerivedRow, RowWrite, RunRow};

/// Derived tables are host state, sealed under the state subkey with their id bound in.
const DERIVED_PURPOSE: Purpose = Purpose::State;

fn derived_aad(id: &str) -> Vec<u8> {
    format!("cleanroom/derived/{id}").into_bytes()
}

/// What is sealed for a derived table: the identifier values collected upstream of it, then
/// the table as the step published it (Arrow IPC stream).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedHeader {
    identifiers: Vec<String>,
    /// The table's length: the plaintext is padded after it (as outputs are), so the sealed
    /// blob's size on the operator's disk shows only its order of magnitude. Absent in
    /// tables sealed before padding (the table then runs to the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table_bytes: Option<u64>,
}

/// Column rules in force now, beyond those recorded with a derived table (a run reading it on
/// its own applies its roots' current policies too).
#[derive(Debug, Default)]
pub struct ColumnRules {
    /// Never handed to the guest.
    pub hidden: Vec<String>,
    /// Tapped for identifier values.
    pub identifiers: Vec<String>,
}

/// A derived table opened for a run: tapped for the identifier columns of its ancestors, its
/// ancestors' hidden columns projected away, its collected identifiers added to `collector`.
pub fn open_derived(
    service: &Service,
    row: &DerivedRow,
    collector: &Arc<IdentifierCollector>,
    extra: &ColumnRules,
) -> ApiResult<Arc<dyn TableSource>> {
    let sealed = service.blobs.get("derived", &row.id)?.ok_or_else(|| {
        ApiError::Tampered(format!(
            "derived dataset {} is missing from storage",
            row.id
        ))
    })?;
    let plain = service
        .sealer
        .open(DERIVED_PURPOSE, &derived_aad(&row.id), &sealed)
        .map_err(|e| {
            ApiError::Tampered(format!("derived dataset {} does not unseal: {e}", row.id))
        })?;
    let (header, ipc) = split_sealed(&plain)
        .ok_or_else(|| ApiError::Tampered(format!("derived dataset {} is malformed", row.id)))?;
    for value in &header.identifiers {
        collector.insert(value);
    }
    let (schema, batches) = cleanroom_runtime::output::decode_stream(ipc)
        .map_err(|e| ApiError::Internal(format!("derived dataset {}: {e}", row.id)))?;
    tap_derived(row, schema, batches, collector, extra)
}

/// A derived table's content as a guest may read it: the ancestors' (and `extra`) hidden
/// columns projected away, their identifier columns tapped into `collector`.
fn tap_derived(
    row: &DerivedRow,
    schema: arrow_schema::SchemaRef,
    batches: Vec<arrow_array::RecordBatch>,
    collector: &Arc<IdentifierCollector>,
    extra: &ColumnRules,
) -> ApiResult<Arc<dyn TableSource>> {
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| {
            !row.hidden_columns
                .iter()
                .chain(&extra.hidden)
                .any(|h| h.eq_ignore_ascii_case(schema.field(i).name()))
        })
        .collect();
    let schema = Arc::new(
        schema
            .project(&keep)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    let batches = batches
        .iter()
        .map(|b| b.project(&keep))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut identifiers = row.identifier_columns.clone();
    identifiers.extend(extra.identifiers.iter().cloned());
    Ok(Arc::new(Tapped::new(
        Arc::new(MemTable::new(schema, batches)),
        identifiers,
        collector.clone(),
    )))
}

fn split_sealed(plain: &[u8]) -> Option<(SealedHeader, &[u8])> {
    let len = u64::from_le_bytes(plain.get(..8)?.try_into().ok()?) as usize;
    let header = plain.get(8..8usize.checked_add(len)?)?;
    let header: SealedHeader = serde_json::from_slice(header).ok()?;
    let rest = &plain[8 + len..];
    let table = match header.table_bytes {
        Some(n) => rest.get(..usize::try_from(n).ok()?)?,
        None => rest,
    };
    Some((header, table))
}

/// Whether every root's stored policy (verified against its owner) still allows the pipeline
/// run that produced `row`.
pub fn usable(service: &Service, row: &DerivedRow) -> ApiResult<bool> {
    let facts = derived_facts(row);
    for root in &row.roots {
        let (Some(dataset), Some(signed)) = (
            service.storage.dataset(root)?,
            service.storage.policy(root)?,
        ) else {
            return Ok(false);
        };
        let Ok(owner) = dataset.owner.parse::<PartyId>() else {
            return Ok(false);
        };
        let Some(policy) = cleanroom_policy::trusted(&signed, root, &owner) else {
            return Ok(false);
        };
        if !cleanroom_policy::admission::produced_under(policy, &facts, service.clock.now()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The admission facts of a derived dataset.
pub fn derived_facts(row: &DerivedRow) -> DerivedFacts {
    DerivedFacts {
        roots: row.roots.clone(),
        pipeline: row.provenance.pipeline.clone(),
        researcher: row.provenance.researcher,
    }
}

/// Derived datasets `party` may see: those upstream of which it owns a dataset, and those its
/// own runs produced.
pub fn visible(
    service: &Service,
    party: &PartyId,
) -> ApiResult<Vec<cleanroom_proto::pipeline::DerivedInfo>> {
    let owned: BTreeSet<String> = service
        .storage
        .datasets()?
        .into_iter()
        .filter(|d| d.owner == party.to_string())
        .map(|d| d.id)
        .collect();
    let mut out = Vec::new();
    for row in service.storage.derived_all()? {
        if row.provenance.researcher != *party && !row.roots.iter().any(|r| owned.contains(r)) {
            continue;
        }
        out.push(cleanroom_proto::pipeline::DerivedInfo {
            usable: usable(service, &row)?,
            id: row.id,
            provenance: row.provenance,
            roots: row.roots,
            created: row.created,
        });
    }
    Ok(out)
}

/// The enclave's side of running a pipeline's steps.
pub struct EnclaveSteps<'a> {
    service: &'a Service,
    run: &'a RunRow,
    collector: Arc<IdentifierCollector>,
    /// Pipeline input name -> what it is.
    inputs: BTreeMap<String, Lineage>,
    /// (step, output) -> derived id, for everything kept so far.
    kept: BTreeMap<(String, String), String>,
    /// The current step's inputs by content, set by `plan`.
    current: BTreeMap<String, Lineage>,
    /// Root datasets of each pipeline input and of each kept table (by derived id).
    roots: BTreeMap<String, BTreeSet<String>>,
    identifier_columns: Vec<String>,
    hidden_columns: Vec<String>,
}

impl std::fmt::Debug for EnclaveSteps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveSteps")
            .field("run", &self.run.id)
            .field("kept", &self.kept)
            .finish_non_exhaustive()
    }
}

impl<'a> EnclaveSteps<'a> {
    /// For `run`, admitted as `admitted`, reading identifiers into `collector`.
    pub fn new(
        service: &'a Service,
        run: &'a RunRow,
        admitted: &Admitted,
        collector: Arc<IdentifierCollector>,
    ) -> ApiResult<Self> {
        let mut inputs = BTreeMap::new();
        let mut roots: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut hidden = BTreeSet::new();
        for input in &admitted.inputs {
            let r = &input.receipt;
            hidden.extend(input.hidden_columns.iter().map(|c| c.to_ascii_lowercase()));
            // A pipeline input read through a derived dataset has that dataset's roots (one
            // admitted entry per root); a sealed dataset is its own root.
            roots
                .entry(r.name.clone())
                .or_default()
                .insert(r.dataset.clone());
            let lineage = match &r.via {
                Some(id) => {
                    let row = service.storage.derived(id)?.ok_or_else(|| {
                        ApiError::Internal(format!("derived dataset {id} was admitted but is gone"))
                    })?;
                    hidden.extend(row.hidden_columns.iter().cloned());
                    Lineage::Derived { id: id.clone() }
                }
                None => Lineage::Dataset {
                    id: r.dataset.clone(),
                    manifest_digest: r.manifest_digest.clone(),
                    policy_version: r.policy_version,
                    hidden_columns: lowercase_sorted(&input.hidden_columns),
                    identifier_columns: lowercase_sorted(&input.identifier_columns),
                },
            };
            inputs.insert(r.name.clone(), lineage);
        }
        Ok(Self {
            service,
            run,
            collector,
            inputs,
            kept: BTreeMap::new(),
            current: BTreeMap::new(),
            roots,
            identifier_columns: admitted.identifier_columns().into_iter().collect(),
            hidden_columns: hidden.into_iter().collect(),
        })
    }

    /// The receipt's view of the steps that ran.
    pub fn receipt_steps(&self, pipeline: &Pipeline, reports: &[StepReport]) -> Vec<ReceiptStep> {
        reports
            .iter()
            .filter_map(|r| {
                let step = pipeline.step(&r.id)?;
                Some(ReceiptStep {
                    id: step.id.clone(),
                    module: step.module.clone(),
                    params_digest: params_digest(&step.params),
                    kept: step
                        .keep
                        .iter()
                        .filter_map(|o| {
                            let id = self.kept.get(&(step.id.clone(), o.clone()))?;
                            Some((o.clone(), id.clone()))
                        })
                        .collect(),
                    reused: r.reused,
                })
            })
            .collect()
    }

    /// The root datasets upstream of `step`'s inputs: a kept table's lineage is its own
    /// step's, not the whole pipeline's (a table derived from one hospital alone stays usable
    /// when another hospital revokes).
    fn step_roots(&self, step: &Step) -> BTreeSet<String> {
        step.sources()
            .flat_map(|(_, source)| {
                let key = match source {
                    Source::Input(input) => input.to_string(),
                    Source::Kept { step, output } => self
                        .kept
                        .get(&(step.to_string(), output.to_string()))
                        .cloned()
                        .unwrap_or_default(),
                };
                self.roots.get(&key).cloned().unwrap_or_default()
            })
            .collect()
    }

    fn derived_row(&self, step: &Step, output: &str, id: &str) -> DerivedRow {
        DerivedRow {
            id: id.to_string(),
            provenance: Provenance {
                pipeline: self.run.request.module.clone(),
                step: step.id.clone(),
                output: output.to_string(),
                module: step.module.clone(),
                params_digest: params_digest(&step.params),
                inputs: self.current.clone(),
                researcher: self.run.researcher,
                run: self.run.id.clone(),
            },
            roots: self.step_roots(step).into_iter().collect(),
            identifier_columns: self.identifier_columns.clone(),
            hidden_columns: self.hidden_columns.clone(),
            created: crate::now(),
        }
    }
}

fn lowercase_sorted(columns: &[String]) -> Vec<String> {
    let set: BTreeSet<String> = columns.iter().map(|c| c.to_ascii_lowercase()).collect();
    set.into_iter().collect()
}

fn internal(e: ApiError) -> RunError {
    RunError::Internal(e.to_string())
}

impl Steps for EnclaveSteps<'_> {
    fn plan(&mut self, step: &Step) -> Result<Plan, RunError> {
        self.current = step
            .sources()
            .map(|(name, source)| {
                let lineage = match source {
                    Source::Input(input) => self.inputs.get(input).cloned(),
                    Source::Kept { step, output } => self
                        .kept
                        .get(&(step.to_string(), output.to_string()))
                        .map(|id| Lineage::Derived { id: id.clone() }),
                };
                lineage.map(|l| (name.to_string(), l)).ok_or_else(|| {
                    RunError::Internal(format!("step {}: unbound input {name}", step.id))
                })
            })
            .collect::<Result<_, _>>()?;
        let digest = params_digest(&step.params);
        let ids: Vec<(String, String)> = step
            .keep
            .iter()
            .map(|o| {
                (
                    o.clone(),
                    derived_id(&step.module, &digest, &self.current, o),
                )
            })
            .collect();
        let roots = self.step_roots(step);
        for (output, id) in &ids {
            self.kept
                .insert((step.id.clone(), output.clone()), id.clone());
            self.roots.insert(id.clone(), roots.clone());
        }
        // Reuse only when every kept table exists and opens: a missing or damaged one means
        // the step runs again.
        if !ids.is_empty() {
            let mut reused = BTreeMap::new();
            for (output, id) in &ids {
                let Some(row) = self.service.storage.derived(id).map_err(internal)? else {
                    break;
                };
                match open_derived(self.service, &row, &self.collector, &ColumnRules::default()) {
                    Ok(table) => {
                        reused.insert(output.clone(), table);
                    }
                    Err(e) => {
                        tracing::warn!(derived = id, "not reusing a derived table: {e}");
                        break;
                    }
                }
            }
            if reused.len() == ids.len() {
                return Ok(Plan::Reuse(reused));
            }
        }
        crate::modules::load(self.service, &step.module)
            .map(Plan::Run)
            .map_err(internal)
    }

    fn keep(&mut self, step: &Step, table: TableOutput) -> Result<Arc<dyn TableSource>, RunError> {
        let id = self
            .kept
            .get(&(step.id.clone(), table.name.clone()))
            .cloned()
            .ok_or_else(|| RunError::Internal("kept table without an id".into()))?;
        let header = SealedHeader {
            identifiers: self.collector.values(),
            table_bytes: Some(table.ipc.len() as u64),
        };
        let header = serde_json::to_vec(&header).map_err(|e| RunError::Internal(e.to_string()))?;
        let mut plain = (header.len() as u64).to_le_bytes().to_vec();
        plain.extend_from_slice(&header);
        plain.extend_from_slice(&table.ipc);
        // Padded like outputs: the operator sees the blob's order of magnitude, not its size.
        plain.resize(cleanroom_proto::run::padded_len(plain.len()), 0);
        let sealed = self
            .service
            .sealer
            .seal(DERIVED_PURPOSE, &derived_aad(&id), &plain)
            .map_err(|e| RunError::Internal(format!("sealing a derived table: {e}")))?;
        // The blob is durable before the row that names it.
        self.service
            .blobs
            .put("derived", &id, &sealed)
            .map_err(internal)?;
        // Two runs keeping the same table: one writes the row, the other finds it.
        static ROWS: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_writer = ROWS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let row = match self.service.storage.derived(&id).map_err(internal)? {
            Some(existing) => existing,
            None => {
                let row = self.derived_row(step, &table.name, &id);
                let mut audience: BTreeSet<PartyId> = self.run.owners.iter().copied().collect();
                audience.insert(self.run.researcher);
                self.service
                    .record_write(
                        Audience::Parties(audience.into_iter().collect()),
                        None,
                        cleanroom_proto::Action::DerivedKept,
                        &id,
                        json!({ "run": self.run.id, "pipeline": row.provenance.pipeline,
                                "step": step.id, "output": table.name }),
                        RowWrite::Derived(&row),
                    )
                    .map_err(internal)?;
                row
            }
        };
        // Later steps read the table this step just published (already decoded and validated,
        // its identifiers already in the collector), not the sealed copy read back.
        tap_derived(
            &row,
            table.schema,
            table.batches,
            &self.collector,
            &ColumnRules::default(),
        )
        .map_err(internal)
    }
}
