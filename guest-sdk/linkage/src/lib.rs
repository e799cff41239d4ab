//! The linkage engine: links the records of two or more granted tables with no shared
//! identifier, inside the sandbox like every other analysis.
//!
//! Params (JSON):
//! ```json
//! { "key": "record_key", "sources": ["st_marys", "northfield"],
//!   "model": { "blocking": [["surname"], ["dob"]],
//!              "comparisons": [{"column": "surname", "method": {"jaro_winkler": [0.92, 0.8]}, "tf": true}],
//!              "threshold": 0.9 },
//!   "outputs": { "links": "links", "clusters": "clusters",
//!                "histogram": "linkage_weights", "stats": "linkage_stats" } }
//! ```
//! `sources` defaults to every granted table (sorted); `outputs` to the names above. The link
//! and cluster tables hold internal row keys: a pipeline keeps them inside as derived datasets;
//! the weight histogram (a declared count column) and the statistics are aggregates.

pub mod engine;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use cleanroom_guest::{Result, Table};
use serde::Deserialize;

pub use engine::{Link, Linkage, Source, link};
pub use settings::Settings;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// The column holding each record's internal key.
    key: String,
    /// The tables to link (default: all granted, sorted by name).
    #[serde(default)]
    sources: Option<Vec<String>>,
    /// Blocking, comparisons and thresholds.
    model: Settings,
    #[serde(default)]
    outputs: Outputs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Outputs {
    links: String,
    clusters: String,
    histogram: String,
    stats: String,
}

impl Default for Outputs {
    fn default() -> Self {
        Self {
            links: "links".into(),
            clusters: "clusters".into(),
            histogram: "linkage_weights".into(),
            stats: "linkage_stats".into(),
        }
    }
}

fn run(params: &str) -> Result<()> {
    let params: Params = cleanroom_guest::params(params)?;
    params
        .model
        .validate()
        .map_err(|e| format!("invalid model: {e}"))?;
    let names = params.sources.clone().unwrap_or_else(|| {
        let mut names = cleanroom_guest::table_names();
        names.sort();
        names
    });
    let mut wanted: BTreeSet<&str> = params
        .model
        .comparisons
        .iter()
        .map(|c| c.column.as_str())
        .collect();
    wanted.extend(
        params
            .model
            .blocking
            .iter()
            .flat_map(|r| r.0.iter().map(|k| k.column())),
    );
    let mut sources = Vec::new();
    for name in &names {
        sources.push(read_source(name, &params.key, &wanted)?);
        cleanroom_guest::info(&format!(
            "{name}: {} records",
            sources.last().map_or(0, |s: &Source| s.keys.len())
        ));
    }
    let linkage = link(&sources, &params.model).map_err(|e| format!("linkage: {e}"))?;
    publish(&params.outputs, &sources, &linkage)
}

/// Reads the key and the used columns of one table as text (dates as ISO, numbers as written).
fn read_source(name: &str, key: &str, wanted: &BTreeSet<&str>) -> Result<Source> {
    let table = Table::open(name)?;
    let schema = table.schema();
    let index = |column: &str| {
        schema.index_of(column).map_err(|_| {
            format!("table {name:?} has no column {column:?} (harmonise the sources first)")
        })
    };
    let key_index = index(key)?;
    let indices: Vec<(String, usize)> = wanted
        .iter()
        .map(|c| Ok((c.to_string(), index(c)?)))
        .collect::<Result<_, String>>()?;
    let mut source = Source {
        name: name.to_string(),
        keys: Vec::new(),
        columns: indices
            .iter()
            .map(|(c, _)| (c.clone(), Vec::new()))
            .collect::<BTreeMap<_, _>>(),
    };
    for batch in table.batches() {
        let batch = batch?;
        for (i, key) in text(batch.column(key_index).as_ref())?
            .into_iter()
            .enumerate()
        {
            source.keys.push(
                key.ok_or_else(|| format!("table {name:?}: row key {i} of a batch is null"))?,
            );
        }
        for (column, i) in &indices {
            let values = text(batch.column(*i).as_ref())?;
            source
                .columns
                .get_mut(column)
                .expect("column listed")
                .extend(values);
        }
    }
    Ok(source)
}

fn text(array: &dyn Array) -> Result<Vec<Option<String>>> {
    let cast = arrow_cast::cast(array, &DataType::Utf8)
        .map_err(|e| format!("a column cannot be read as text: {e}"))?;
    let strings = cast
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or("a column cannot be read as text")?;
    Ok(strings.iter().map(|v| v.map(str::to_string)).collect())
}

fn publish(names: &Outputs, sources: &[Source], linkage: &Linkage) -> Result<()> {
    let record = |r: u32| {
        let (s, row) = linkage.records[r as usize];
        let source = &sources[s as usize];
        (source.name.as_str(), source.keys[row as usize].as_str())
    };
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    let f64_field = |name: &str| Field::new(name, DataType::Float64, false);
    let (left, right): (Vec<_>, Vec<_>) = linkage
        .links
        .iter()
        .map(|l| (record(l.left), record(l.right)))
        .unzip();
    let links = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            utf8("left_source"),
            utf8("left_key"),
            utf8("right_source"),
            utf8("right_key"),
            f64_field("match_weight"),
            f64_field("match_probability"),
        ])),
        vec![
            Arc::new(StringArray::from_iter_values(left.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(left.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(right.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(right.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter_values(
                linkage.links.iter().map(|l| l.weight),
            )),
            Arc::new(Float64Array::from_iter_values(
                linkage.links.iter().map(|l| l.probability),
            )),
        ],
    )?;
    cleanroom_guest::publish_table(&names.links, &links)?;

    let all: Vec<(&str, &str)> = (0..linkage.records.len() as u32).map(record).collect();
    let clusters = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            utf8("source"),
            utf8("key"),
            Field::new("cluster", DataType::Int64, false),
        ])),
        vec![
            Arc::new(StringArray::from_iter_values(all.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(all.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(
                linkage.clusters.iter().map(|&c| i64::from(c)),
            )),
        ],
    )?;
    cleanroom_guest::publish_table(&names.clusters, &clusters)?;

    let histogram = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("match_weight_from", DataType::Int64, false),
            cleanroom_guest::count_field("pairs"),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(
                linkage.histogram.iter().map(|h| i64::from(h.0)),
            )),
            Arc::new(Int64Array::from_iter_values(
                linkage.histogram.iter().map(|h| h.1 as i64),
            )),
        ],
    )?;
    cleanroom_guest::publish_table(&names.histogram, &histogram)?;
    cleanroom_guest::publish_json(&names.stats, &linkage.stats)
}

cleanroom_guest::analysis!(run);
