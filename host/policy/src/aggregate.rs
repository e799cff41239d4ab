//! Aggregates computed by the host: counts, sums, means and quantiles grouped by keys, with
//! each cell's contributors known to the host, so that the owners' disclosure rules (threshold
//! on distinct contributors, dominance, rounding) or differential privacy can be applied to
//! each cell. A guest never computes what leaves: it only says what to compute.
//!
//! Two modes, chosen by the dataset's policy, never by the guest:
//!
//! - **Disclosure control** ([`Mode::Disclosure`]): exact statistics; a cell is suppressed
//!   (all its values null) when it has fewer distinct contributors than the owners' minimum,
//!   when one or two contributors dominate its sum (the p% rule with p = 10 and the n-k rule
//!   with n = 2, k = 90 %, as SACRO's ACRO checker applies them), and its count is rounded by
//!   the owners' rounding rule.
//! - **Differential privacy** ([`Mode::Private`]): each person contributes at most
//!   `max_rows_per_unit` rows (later rows are dropped), values are clamped to declared bounds,
//!   groups are the cartesian product of the declared categories (a group's absence never
//!   reveals anything), and counts, sums and histograms get Laplace noise from [`crate::dp`].
//!   With a value column, rows without a value are left out, counts included.
//!   Means and quantiles are computed from the noisy counts, sums and histograms
//!   (post-processing, free). Small-cell suppression is *not* applied to the true counts of a
//!   DP release: whether a cell is suppressed would depend on its exact count and leak it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use cleanroom_proto::Code;
use cleanroom_proto::dp::{DpRequirement, Epsilon};
use cleanroom_proto::policy::OutputRules;
use cleanroom_proto::policy::{Rounding, SmallGroups};

use crate::dp;
use crate::egress::round_count;

mod private;
use private::private;

/// The p of the p% dominance rule: a cell is sensitive when the contributors other than the
/// two largest add up to less than p % of the largest.
pub const DOMINANCE_P_PERCENT: f64 = 10.0;
/// The k of the n-k dominance rule (n = 2): a cell is sensitive when its two largest
/// contributors make up more than k % of its total.
pub const DOMINANCE_K_PERCENT: f64 = 90.0;
/// Bins of the histograms DP quantiles are read from.
pub const QUANTILE_BINS: usize = 64;
/// Bins of a numeric group-by column under DP (a histogram over its declared bounds).
pub const HISTOGRAM_BINS: usize = 10;
/// Most cells one aggregate may have.
pub const MAX_CELLS: usize = 10_000;

/// A statistic per cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    /// Rows in the cell.
    Count,
    /// Sum of the value column.
    Sum,
    /// Mean of the value column.
    Mean,
    /// The p-quantile of the value column, `0 <= p <= 1`.
    Quantile(f64),
}

impl Statistic {
    /// The column it is released as.
    pub fn column(&self) -> String {
        match self {
            Self::Count => "count".into(),
            Self::Sum => "sum".into(),
            Self::Mean => "mean".into(),
            Self::Quantile(p) => format!("q{}", (p * 1000.0).round() / 10.0),
        }
    }
}

/// A comparison in a row filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// The value is null.
    IsNull,
    /// The value is not null.
    NotNull,
}

/// Keep rows where `column op value` holds; numeric columns compare as numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// A column of the table.
    pub column: String,
    /// The comparison.
    pub op: Op,
    /// The literal, as text.
    pub value: String,
}

/// What to aggregate, as the guest asks it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spec {
    /// Columns of the table to group by.
    pub group_by: Vec<String>,
    /// A numeric column of the table (sums, means, quantiles).
    pub value: Option<String>,
    /// Rows to keep (all conditions must hold).
    pub filter: Vec<Condition>,
    /// The statistics per cell.
    pub statistics: Vec<Statistic>,
    /// Clamp values to these bounds (required for DP sums, means and quantiles unless the
    /// owner declared the column's bounds).
    pub bounds: Option<(f64, f64)>,
    /// ε to spend (DP only).
    pub epsilon: Option<Epsilon>,
}

/// Rows the guest computed itself, instead of naming columns (disclosure control only: in a
/// DP release a guest-computed value could depend on other people's rows).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Computed {
    /// Names of the key columns.
    pub key_names: Vec<String>,
    /// Per entry, the row of the table it is about: the host takes its contributor from it.
    pub rows: Vec<u64>,
    /// Per entry, one key per key name.
    pub keys: Vec<Vec<String>>,
    /// Per entry, the value (empty when only counting).
    pub values: Vec<f64>,
}

/// Why an aggregate was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum AggregateError {
    /// The request is malformed (unknown column, bad bounds, lengths that differ).
    Invalid(String),
    /// The request is not allowed on this table (e.g. undeclared group domain under DP).
    NotAllowed(String),
    /// The run's remaining ε is smaller than asked.
    Budget {
        /// What remains.
        remaining: Epsilon,
    },
}

impl std::fmt::Display for AggregateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(m) | Self::NotAllowed(m) => f.write_str(m),
            Self::Budget { remaining } => write!(f, "the run has ε = {remaining} left"),
        }
    }
}

fn invalid(m: impl Into<String>) -> AggregateError {
    AggregateError::Invalid(m.into())
}

/// The rows to aggregate: keys, values and each row's contributor.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Key column names.
    pub key_names: Vec<String>,
    /// Per row, its keys (`None`: null).
    pub keys: Vec<Vec<Option<String>>>,
    /// Per row, its value (`None`: null or no value column).
    pub values: Vec<Option<f64>>,
    /// Per row, its contributor.
    pub units: Vec<String>,
}

/// The policy mode of an aggregate.
#[derive(Debug, Clone, Copy)]
pub enum Mode<'a> {
    /// The owners' disclosure rules on exact statistics.
    Disclosure(&'a OutputRules),
    /// Differential privacy under the dataset's requirement, spending `epsilon`.
    Private {
        /// The owner's terms.
        dp: &'a DpRequirement,
        /// What this aggregate spends.
        epsilon: Epsilon,
    },
}

/// A computed aggregate, ready to publish.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// The table: key columns (text), then one column per statistic.
    pub batch: RecordBatch,
    /// What was applied (suppression, dominance, rounding, noise).
    pub codes: Vec<Code>,
    /// Whether the owners' rules refuse it (small groups under `small_groups = refuse`).
    pub refused: bool,
    /// ε spent.
    pub spent: Epsilon,
}

fn text_of(col: &dyn Array) -> Result<Vec<Option<String>>, AggregateError> {
    let fmt = ArrayFormatter::try_new(col, &FormatOptions::default())
        .map_err(|e| invalid(format!("column cannot be shown as text: {e}")))?;
    Ok((0..col.len())
        .map(|i| col.is_valid(i).then(|| fmt.value(i).to_string()))
        .collect())
}

fn numbers_of(col: &ArrayRef) -> Result<Vec<Option<f64>>, AggregateError> {
    let cast = arrow_cast::cast(col, &DataType::Float64)
        .map_err(|_| invalid("the value column is not numeric"))?;
    Ok(cast.as_primitive::<Float64Type>().iter().collect())
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef, AggregateError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| invalid(format!("the table has no column {name:?}")))
}

fn keep(batch: &RecordBatch, filter: &[Condition]) -> Result<Vec<bool>, AggregateError> {
    let mut keep = vec![true; batch.num_rows()];
    for cond in filter {
        let col = column(batch, &cond.column)?;
        let numeric = col.data_type().is_numeric();
        let literal: Option<f64> = if numeric && !matches!(cond.op, Op::IsNull | Op::NotNull) {
            Some(cond.value.parse().map_err(|_| {
                invalid(format!(
                    "{:?} is not a number (column {})",
                    cond.value, cond.column
                ))
            })?)
        } else {
            None
        };
        let nums = if numeric { numbers_of(col)? } else { vec![] };
        let texts = if numeric {
            vec![]
        } else {
            text_of(col.as_ref())?
        };
        for (i, k) in keep.iter_mut().enumerate() {
            let null = col.is_null(i);
            let holds = match cond.op {
                Op::IsNull => null,
                Op::NotNull => !null,
                _ if null => false,
                op => {
                    let ord = match literal {
                        Some(lit) => nums[i].and_then(|v| v.partial_cmp(&lit)),
                        None => texts[i].as_deref().map(|t| t.cmp(cond.value.as_str())),
                    };
                    ord.is_some_and(|o| match op {
                        Op::Eq => o.is_eq(),
                        Op::Ne => o.is_ne(),
                        Op::Lt => o.is_lt(),
                        Op::Le => o.is_le(),
                        Op::Gt => o.is_gt(),
                        Op::Ge => o.is_ge(),
                        Op::IsNull | Op::NotNull => unreachable!("handled above"),
                    })
                }
            };
            *k &= holds;
        }
    }
    Ok(keep)
}

/// The rows of a table for `spec`: keys and value read from its columns, filtered, each with
/// its contributor (the `unit_column`'s value, or the row itself when there is none).
pub fn rows_of(
    batches: impl Iterator<Item = Result<RecordBatch, String>>,
    spec: &Spec,
    unit_column: Option<&str>,
) -> Result<Rows, AggregateError> {
    let mut rows = Rows {
        key_names: spec.group_by.clone(),
        ..Rows::default()
    };
    let mut offset = 0u64;
    for batch in batches {
        let batch = batch.map_err(|e| invalid(format!("reading the table failed: {e}")))?;
        let keep = keep(&batch, &spec.filter)?;
        let keys: Vec<Vec<Option<String>>> = spec
            .group_by
            .iter()
            .map(|c| text_of(column(&batch, c)?.as_ref()))
            .collect::<Result<_, _>>()?;
        let values = match &spec.value {
            Some(c) => Some(numbers_of(column(&batch, c)?)?),
            None => None,
        };
        let units = match unit_column {
            Some(c) => Some(text_of(column(&batch, c)?.as_ref())?),
            None => None,
        };
        for (i, kept) in keep.iter().enumerate() {
            if !kept {
                continue;
            }
            rows.keys.push(keys.iter().map(|k| k[i].clone()).collect());
            rows.values.push(values.as_ref().and_then(|v| v[i]));
            rows.units.push(match &units {
                // A row without a unit is its own contributor; it cannot be merged with others.
                Some(u) => u[i]
                    .clone()
                    .unwrap_or_else(|| format!("\u{0}row{}", offset + i as u64)),
                None => format!("\u{0}row{}", offset + i as u64),
            });
        }
        offset += batch.num_rows() as u64;
    }
    Ok(rows)
}

/// Rows a guest computed: each entry's contributor is taken from the table row it names.
pub fn computed_rows(
    batches: impl Iterator<Item = Result<RecordBatch, String>>,
    computed: Computed,
    unit_column: Option<&str>,
) -> Result<Rows, AggregateError> {
    let n = computed.rows.len();
    if computed.keys.len() != n || (!computed.values.is_empty() && computed.values.len() != n) {
        return Err(invalid("rows, keys and values must have the same length"));
    }
    if computed
        .keys
        .iter()
        .any(|k| k.len() != computed.key_names.len())
    {
        return Err(invalid("each entry needs one key per key name"));
    }
    let mut units: Vec<Option<String>> = Vec::new();
    let mut total = 0u64;
    for batch in batches {
        let batch = batch.map_err(|e| invalid(format!("reading the table failed: {e}")))?;
        match unit_column {
            Some(c) => units.extend(text_of(column(&batch, c)?.as_ref())?),
            None => units.extend(std::iter::repeat_n(None, batch.num_rows())),
        }
        total += batch.num_rows() as u64;
    }
    let unit_of = |row: u64| -> Result<String, AggregateError> {
        let u = units
            .get(row as usize)
            .ok_or_else(|| invalid(format!("row {row} is beyond the table's {total} rows")))?;
        Ok(u.clone().unwrap_or_else(|| format!("\u{0}row{row}")))
    };
    Ok(Rows {
        key_names: computed.key_names,
        keys: computed
            .keys
            .into_iter()
            .map(|k| k.into_iter().map(Some).collect())
            .collect(),
        values: if computed.values.is_empty() {
            vec![None; n]
        } else {
            computed.values.into_iter().map(Some).collect()
        },
        units: computed
            .rows
            .iter()
            .map(|&r| unit_of(r))
            .collect::<Result<_, _>>()?,
    })
}

fn needs_values(stats: &[Statistic]) -> bool {
    stats.iter().any(|s| !matches!(s, Statistic::Count))
}

fn validate(spec: &Spec, rows: &Rows) -> Result<(), AggregateError> {
    if spec.statistics.is_empty() {
        return Err(invalid("ask for at least one statistic"));
    }
    for s in &spec.statistics {
        if let Statistic::Quantile(p) = s
            && !(0.0..=1.0).contains(p)
        {
            return Err(invalid("quantiles must lie in [0, 1]"));
        }
    }
    if needs_values(&spec.statistics)
        && spec.value.is_none()
        && rows.values.iter().all(Option::is_none)
    {
        return Err(invalid(
            "sums, means and quantiles need a value column or values",
        ));
    }
    if let Some((lo, hi)) = spec.bounds
        && !(lo.is_finite() && hi.is_finite() && lo < hi)
    {
        return Err(invalid("bounds must be finite with lower below upper"));
    }
    Ok(())
}

/// Compute the aggregate under `mode`.
pub fn compute(rows: Rows, spec: &Spec, mode: Mode<'_>) -> Result<Aggregate, AggregateError> {
    validate(spec, &rows)?;
    match mode {
        Mode::Disclosure(rules) => disclosure(rows, spec, rules),
        Mode::Private { dp, epsilon } => private(rows, spec, dp, epsilon),
    }
}

#[derive(Default)]
struct Cell {
    rows: i64,
    values: Vec<f64>,
    /// Per contributor, the sum of its absolute values (for dominance).
    by_unit: BTreeMap<String, f64>,
}

fn quantile_exact(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// The p% and n-k dominance rules over per-contributor totals.
pub fn dominated(by_unit: impl Iterator<Item = f64>) -> bool {
    let mut xs: Vec<f64> = by_unit.map(f64::abs).collect();
    xs.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = xs.iter().sum();
    if total <= 0.0 {
        return false;
    }
    let x1 = xs[0];
    let x2 = xs.get(1).copied().unwrap_or(0.0);
    let rest = total - x1 - x2;
    rest < DOMINANCE_P_PERCENT / 100.0 * x1 || x1 + x2 > DOMINANCE_K_PERCENT / 100.0 * total
}

fn disclosure(rows: Rows, spec: &Spec, rules: &OutputRules) -> Result<Aggregate, AggregateError> {
    let mut cells: BTreeMap<Vec<Option<String>>, Cell> = BTreeMap::new();
    let valued = needs_values(&spec.statistics);
    for ((keys, value), unit) in rows.keys.into_iter().zip(rows.values).zip(rows.units) {
        let value = value.map(|v| match spec.bounds {
            Some((lo, hi)) => v.clamp(lo, hi),
            None => v,
        });
        let cell = cells.entry(keys).or_default();
        cell.rows += 1;
        let contribution = cell.by_unit.entry(unit).or_default();
        if let Some(v) = value.filter(|v| v.is_finite()) {
            cell.values.push(v);
            *contribution += v.abs();
        }
    }
    if cells.len() > MAX_CELLS {
        return Err(invalid(format!("more than {MAX_CELLS} groups")));
    }
    let mut codes = BTreeSet::from([Code::HostAggregated]);
    let mut out_keys = Vec::new();
    let mut out_values = Vec::new();
    for (keys, mut cell) in cells {
        let contributors = cell.by_unit.len() as u64;
        let mut suppressed = contributors < rules.min_group_count;
        if suppressed {
            codes.insert(Code::SmallGroupsSuppressed);
        }
        if !suppressed && valued && dominated(cell.by_unit.values().copied()) {
            suppressed = true;
            codes.insert(Code::DominantContributors);
        }
        let count = if suppressed {
            None
        } else if rules.rounding != Rounding::None {
            codes.insert(Code::CountsRounded);
            round_count(cell.rows as i128, rules.rounding).map(|c| c as f64)
        } else {
            Some(cell.rows as f64)
        };
        cell.values.sort_by(f64::total_cmp);
        let sum: f64 = cell.values.iter().sum();
        let stats = spec
            .statistics
            .iter()
            .map(|s| {
                if suppressed {
                    return None;
                }
                match s {
                    Statistic::Count => count,
                    Statistic::Sum => Some(sum),
                    Statistic::Mean => {
                        (!cell.values.is_empty()).then(|| sum / cell.values.len() as f64)
                    }
                    Statistic::Quantile(p) => quantile_exact(&cell.values, *p),
                }
            })
            .collect();
        out_keys.push(keys);
        out_values.push(stats);
    }
    let refused =
        rules.small_groups == SmallGroups::Refuse && codes.contains(&Code::SmallGroupsSuppressed);
    if refused {
        codes.insert(Code::SmallGroupsRefused);
    }
    Ok(Aggregate {
        batch: table(
            &rows.key_names,
            &spec.statistics,
            out_keys,
            out_values,
            "disclosure",
            None,
        )?,
        codes: codes.into_iter().collect(),
        refused,
        spent: Epsilon::ZERO,
    })
}

fn table(
    key_names: &[String],
    stats: &[Statistic],
    keys: Vec<Vec<Option<String>>>,
    values: Vec<Vec<Option<f64>>>,
    kind: &str,
    spent: Option<Epsilon>,
) -> Result<RecordBatch, AggregateError> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, name) in key_names.iter().enumerate() {
        fields.push(Field::new(name, DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from_iter(
            keys.iter().map(|k| k[i].as_deref()),
        )));
    }
    for (i, s) in stats.iter().enumerate() {
        if *s == Statistic::Count {
            fields.push(Field::new(s.column(), DataType::Int64, true));
            columns.push(Arc::new(Int64Array::from_iter(
                values.iter().map(|v| v[i].map(|c| c as i64)),
            )));
        } else {
            fields.push(Field::new(s.column(), DataType::Float64, true));
            columns.push(Arc::new(Float64Array::from_iter(
                values.iter().map(|v| v[i]),
            )));
        }
    }
    let mut meta =
        std::collections::HashMap::from([("cleanroom:aggregate".to_string(), kind.to_string())]);
    if let Some(e) = spent {
        meta.insert("cleanroom:epsilon".into(), e.to_string());
    }
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(fields, meta));
    RecordBatch::try_new(schema, columns).map_err(|e| invalid(format!("building the table: {e}")))
}
