//! Cohort statistics per group (diagnosis category, sex or age band) over
//! admissions from any number of hospitals, harmonising their schemas first.
//!
//! Groups with fewer patients than `min_group` are suppressed.

mod harmonise;
mod stats;

pub use harmonise::{Admission, harmonise};
pub use stats::{GroupBy, GroupStats, cohort_stats};

use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use cleanroom_guest::{Result, Table};
use serde::Deserialize;

/// Default smallest group size released.
pub const DEFAULT_MIN_GROUP: u64 = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// `diagnosis` (ICD-10 category), `sex` or `age_band`.
    #[serde(default)]
    group_by: GroupBy,
    /// Groups smaller than this are suppressed.
    #[serde(default = "default_min_group")]
    min_group: u64,
    /// Tables to read; all granted tables when absent.
    #[serde(default)]
    tables: Option<Vec<String>>,
}

fn default_min_group() -> u64 {
    DEFAULT_MIN_GROUP
}

fn run(params: &str) -> Result<()> {
    let params: Params = cleanroom_guest::params(params)?;
    let names = params.tables.unwrap_or_else(cleanroom_guest::table_names);
    let mut admissions = Vec::new();
    for name in &names {
        let table = Table::open(name)?;
        let before = admissions.len();
        for batch in table.batches() {
            harmonise(&batch?, &mut admissions).map_err(|e| format!("table {name:?}: {e}"))?;
        }
        cleanroom_guest::info(&format!("{name}: {} admissions", admissions.len() - before));
    }

    let (groups, suppressed) = cohort_stats(&admissions, params.group_by, params.min_group);
    publish(&groups)?;
    cleanroom_guest::publish_json(
        "summary",
        &serde_json::json!({
            "tables": names,
            "admissions": admissions.len(),
            "group_by": params.group_by,
            "groups_released": groups.len(),
            "groups_suppressed": suppressed,
            "min_group": params.min_group,
        }),
    )
}

fn publish(groups: &[GroupStats]) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("group", DataType::Utf8, false),
        // Declared a count: the owners' small-group rules apply to it in the enclave.
        cleanroom_guest::count_field("patients"),
        Field::new("mean_age", DataType::Float64, false),
        Field::new("mean_los_days", DataType::Float64, false),
        Field::new("mortality_pct", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                groups.iter().map(|g| &g.group),
            )),
            Arc::new(Int64Array::from_iter_values(
                groups.iter().map(|g| g.patients as i64),
            )),
            Arc::new(Float64Array::from_iter_values(
                groups.iter().map(|g| g.mean_age),
            )),
            Arc::new(Float64Array::from_iter_values(
                groups.iter().map(|g| g.mean_los_days),
            )),
            Arc::new(Float64Array::from_iter_values(
                groups.iter().map(|g| g.mortality_pct),
            )),
        ],
    )?;
    cleanroom_guest::publish_table("cohort_stats", &batch)
}

cleanroom_guest::analysis!(run);
