//! Output rules, applied to what a run published before anything leaves:
//! identifier columns are never released, small groups on declared count
//! columns are suppressed or refuse the output, the size is capped, and logs
//! are released only where every owner allows it.

use std::collections::BTreeSet;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::DataType;
use cleanroom_proto::policy::{OutputRules, SmallGroups};
use cleanroom_runtime::RunOutput;
use serde::{Deserialize, Serialize};

/// One output as it would be released (plaintext, before encryption).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Released {
    /// Output name.
    pub name: String,
    /// `table` (Arrow IPC stream), `json`, `file` or `log`.
    pub kind: String,
    /// The bytes.
    #[serde(with = "b64")]
    pub bytes: Vec<u8>,
}

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// What the rules decided.
#[derive(Debug)]
pub struct Applied {
    /// Outputs to release (or hold for review).
    pub outputs: Vec<Released>,
    /// Table rows and JSON values suppressed as small groups.
    pub suppressed: u64,
}

/// Apply `rules` (the strictest across the run's inputs).
pub fn apply(
    run: RunOutput,
    rules: &OutputRules,
    identifiers: &BTreeSet<String>,
) -> Result<Applied, String> {
    let ids: BTreeSet<String> = identifiers.iter().map(|s| s.to_ascii_lowercase()).collect();
    let counts: BTreeSet<String> = rules
        .count_columns
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let k = rules.min_group_count;
    let mut out = Vec::new();
    let mut suppressed = 0u64;
    for table in run.outputs.tables {
        if let Some(col) = table
            .schema
            .fields()
            .iter()
            .find(|f| ids.contains(&f.name().to_ascii_lowercase()))
        {
            return Err(format!(
                "output table {:?} contains identifier column {:?}, which owners never release",
                table.name,
                col.name()
            ));
        }
        let mut batches = Vec::with_capacity(table.batches.len());
        for batch in &table.batches {
            let (kept, dropped) = suppress_small(batch, &counts, k)?;
            if dropped > 0 && rules.small_groups == SmallGroups::Refuse {
                return Err(format!(
                    "output table {:?} has {dropped} groups smaller than {k}; the owners' rules refuse small groups",
                    table.name
                ));
            }
            suppressed += dropped;
            batches.push(kept);
        }
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &table.schema)
            .map_err(|e| format!("re-encoding {:?}: {e}", table.name))?;
        for b in &batches {
            writer
                .write(b)
                .map_err(|e| format!("re-encoding {:?}: {e}", table.name))?;
        }
        let bytes = writer
            .into_inner()
            .map_err(|e| format!("re-encoding {:?}: {e}", table.name))?;
        out.push(Released {
            name: table.name,
            kind: "table".into(),
            bytes,
        });
    }
    for (name, mut value) in run.outputs.json {
        let dropped = suppress_json(&mut value, &counts, k);
        if dropped > 0 && rules.small_groups == SmallGroups::Refuse {
            return Err(format!(
                "JSON output {name:?} reports {dropped} counts smaller than {k}"
            ));
        }
        suppressed += dropped;
        let bytes = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
        out.push(Released {
            name,
            kind: "json".into(),
            bytes,
        });
    }
    for (name, bytes) in run.outputs.files {
        out.push(Released {
            name,
            kind: "file".into(),
            bytes,
        });
    }
    if rules.release_logs && !run.logs.is_empty() {
        let text: String = run
            .logs
            .iter()
            .map(|l| format!("{}\n", l.message))
            .collect();
        out.push(Released {
            name: "log".into(),
            kind: "log".into(),
            bytes: text.into_bytes(),
        });
    }
    let total: u64 = out.iter().map(|o| o.bytes.len() as u64).sum();
    if total > rules.max_output_bytes {
        return Err(format!(
            "outputs total {total} bytes, more than the owners' limit of {} bytes",
            rules.max_output_bytes
        ));
    }
    Ok(Applied {
        outputs: out,
        suppressed,
    })
}

/// Drop rows whose value in any count column is below `k`.
fn suppress_small(
    batch: &RecordBatch,
    counts: &BTreeSet<String>,
    k: u64,
) -> Result<(RecordBatch, u64), String> {
    let mut keep = vec![true; batch.num_rows()];
    for (i, field) in batch.schema().fields().iter().enumerate() {
        if !counts.contains(&field.name().to_ascii_lowercase()) {
            continue;
        }
        let col = batch.column(i);
        let value = |row: usize| -> Option<u64> {
            if col.is_null(row) {
                return None;
            }
            Some(match col.data_type() {
                DataType::Int64 => col.as_primitive::<Int64Type>().value(row).max(0) as u64,
                DataType::Int32 => col.as_primitive::<Int32Type>().value(row).max(0) as u64,
                DataType::UInt64 => col.as_primitive::<UInt64Type>().value(row),
                DataType::UInt32 => col.as_primitive::<UInt32Type>().value(row) as u64,
                _ => return Some(u64::MAX),
            })
        };
        if !matches!(
            col.data_type(),
            DataType::Int64 | DataType::Int32 | DataType::UInt64 | DataType::UInt32
        ) {
            return Err(format!(
                "count column {:?} must be an integer column, not {}",
                field.name(),
                col.data_type()
            ));
        }
        for (row, keep) in keep.iter_mut().enumerate() {
            if value(row).is_some_and(|v| v < k) {
                *keep = false;
            }
        }
    }
    let dropped = keep.iter().filter(|k| !**k).count() as u64;
    if dropped == 0 {
        return Ok((batch.clone(), 0));
    }
    let mask = BooleanArray::from(keep);
    let kept =
        arrow_select::filter::filter_record_batch(batch, &mask).map_err(|e| e.to_string())?;
    Ok((kept, dropped))
}

/// Remove every JSON object that reports a count below `k` under a count
/// key (its other fields describe the same small group), at any depth.
fn suppress_json(value: &mut serde_json::Value, counts: &BTreeSet<String>, k: u64) -> u64 {
    if is_small(value, counts, k) {
        *value = serde_json::Value::Null;
        return 1;
    }
    match value {
        serde_json::Value::Object(map) => {
            map.values_mut().map(|v| suppress_json(v, counts, k)).sum()
        }
        serde_json::Value::Array(items) => {
            let before = items.len();
            items.retain(|v| !is_small(v, counts, k));
            let removed = (before - items.len()) as u64;
            removed
                + items
                    .iter_mut()
                    .map(|v| suppress_json(v, counts, k))
                    .sum::<u64>()
        }
        _ => 0,
    }
}

fn is_small(value: &serde_json::Value, counts: &BTreeSet<String>, k: u64) -> bool {
    value.as_object().is_some_and(|map| {
        map.iter().any(|(key, v)| {
            counts.contains(&key.to_ascii_lowercase()) && v.as_f64().is_some_and(|x| x < k as f64)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_groups_in_json_are_removed_whole() {
        let counts: BTreeSet<String> = ["patients".to_string()].into();
        let mut v = serde_json::json!({"groups": [
            {"group": "I21", "patients": 40, "mean_age": 66.0},
            {"group": "T40", "patients": 3, "mean_age": 31.0}
        ], "total": {"patients": 2, "deaths": 1}});
        assert_eq!(suppress_json(&mut v, &counts, 10), 2);
        assert_eq!(
            v,
            serde_json::json!({"groups": [{"group": "I21", "patients": 40, "mean_age": 66.0}], "total": null})
        );
    }
}
