//! Patients and mean age per diagnosis, from the granted table `patients`.
//!
//! The `patients` column is declared a count, so the data owners' small-group rules apply to
//! it in the enclave (and in `cleanroom run-local --policy`).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use cleanroom_guest::{Result, Table};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Groups smaller than this are left out.
    #[serde(default = "ten")]
    min_group: u64,
}

fn ten() -> u64 {
    10
}

fn run(params: &str) -> Result<()> {
    let params: Params = if params.trim().is_empty() {
        Params { min_group: ten() }
    } else {
        cleanroom_guest::params(params)?
    };
    let patients = Table::open("patients")?;
    let diagnosis = patients.column_index("diagnosis")?;
    let age = patients.column_index("age")?;
    // diagnosis -> (patients, sum of ages)
    let mut groups: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for batch in patients.raw_batches() {
        let batch = batch?;
        let codes = batch.column(diagnosis)?;
        let codes = codes.to_strings()?;
        // `values_f64` reads the integer age column as f64, nulls as None.
        let ages = batch.column(age)?.values_f64()?;
        for (code, age) in codes.into_iter().zip(ages) {
            if let (Some(code), Some(age)) = (code, age) {
                let group = groups.entry(code.to_string()).or_default();
                group.0 += 1;
                group.1 += age;
            }
        }
    }
    groups.retain(|_, (n, _)| *n >= params.min_group);
    let schema = Arc::new(Schema::new(vec![
        Field::new("diagnosis", DataType::Utf8, false),
        cleanroom_guest::count_field("patients"),
        Field::new("mean_age", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(groups.keys())),
            Arc::new(Int64Array::from_iter_values(
                groups.values().map(|(n, _)| *n as i64),
            )),
            Arc::new(Float64Array::from_iter_values(
                groups.values().map(|(n, sum)| sum / *n as f64),
            )),
        ],
    )?;
    cleanroom_guest::publish_table("by_diagnosis", &batch)
}

cleanroom_guest::analysis!(run);
