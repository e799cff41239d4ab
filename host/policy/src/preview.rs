//! Privacy-preserving previews: DP per-column summaries and a DP synthetic table, computed
//! once inside the enclave so that researchers can see what a dataset looks like, and develop
//! against it with `run-local`, before asking for access.
//!
//! The synthetic table is drawn MST-style (McKenna, Miklau, Sheldon, "Winning the NIST
//! Contest", 2021), with pure ε and Laplace noise instead of zCDP and Gaussian noise, and exact
//! sampling on a tree instead of Private-PGM: every column with a declared domain is
//! discretised (categories, or bins of the declared bounds, plus one bucket for nulls and
//! values outside the domain); a third of ε measures every 1-way marginal; a third selects a
//! maximum spanning tree of column pairs, one edge at a time with the exponential mechanism,
//! scoring each pair by how far its true 2-way marginal is from what the noisy 1-way marginals
//! predict under independence; the last third measures the selected 2-way marginals. Rows are
//! sampled from the tree: the root from its 1-way marginal, each child from its measured 2-way
//! marginal conditioned on its parent. Summaries are read off the 1-way marginals
//! (post-processing: free).
//!
//! One row per person enters (the first; `max_rows_per_unit` does not apply), so each
//! marginal has L1 sensitivity 1 under adding or removing a person.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, new_null_array};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Schema, SchemaRef};
use cleanroom_proto::dp::{ColumnDomain, ColumnSummary, DpRequirement, Epsilon, PreviewColumn};
use rand::Rng;

use crate::dp::{self, NoiseError};

/// Bins of a numeric column.
pub const NUMERIC_BINS: usize = 10;

/// What a preview computes; the server adds the dataset, ε and time.
#[derive(Debug, Clone)]
pub struct PreviewParts {
    /// Every column with its Arrow type.
    pub schema: Vec<(String, String)>,
    /// Noisy number of people.
    pub people: u64,
    /// Per column summaries.
    pub columns: Vec<PreviewColumn>,
    /// The measured pairs.
    pub pairs: Vec<(String, String)>,
    /// The synthetic table.
    pub synthetic: RecordBatch,
}

/// A discretised column.
struct Discrete {
    /// Index in the schema.
    field: usize,
    domain: ColumnDomain,
    /// Buckets: categories or bins, then one for null / outside.
    buckets: usize,
    /// Per kept row, its bucket.
    codes: Vec<usize>,
}

impl Discrete {
    fn bucket(&self, text: Option<&str>, number: Option<f64>) -> usize {
        let other = self.buckets - 1;
        match &self.domain {
            ColumnDomain::Categories(values) => text
                .and_then(|t| values.iter().position(|v| v == t))
                .unwrap_or(other),
            ColumnDomain::Numeric { lower, upper } => match number {
                Some(v) if v.is_finite() => {
                    let (lo, hi) = (lower.get(), upper.get());
                    let x = (v.clamp(lo, hi) - lo) / (hi - lo);
                    ((x * NUMERIC_BINS as f64) as usize).min(NUMERIC_BINS - 1)
                }
                _ => other,
            },
        }
    }
}

fn noisy_histogram(counts: Vec<i64>, epsilon: Epsilon) -> Result<Vec<f64>, NoiseError> {
    Ok(dp::noisy_counts(counts, 1, epsilon)?
        .into_iter()
        .map(|c| c.max(0) as f64)
        .collect())
}

/// Compute a preview of the table read from `batches` under `dp`, spending `epsilon`.
pub fn compute(
    schema: &SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, String>>,
    dp: &DpRequirement,
    epsilon: Epsilon,
    synthetic_rows: usize,
    rng: &mut impl Rng,
) -> Result<PreviewParts, NoiseError> {
    let err = |m: String| NoiseError(m);
    let unit = schema.index_of(&dp.unit_column).map_err(|_| {
        err(format!(
            "the unit column {} is not in the table",
            dp.unit_column
        ))
    })?;
    let mut columns = declared_columns(schema, dp, unit);
    let kept = read_codes(batches, unit, &mut columns)?;
    let d = columns.len();
    let third = if d >= 2 {
        dp::split(epsilon, 3)
    } else {
        epsilon
    };
    // 1-way marginals (and the number of people when no column is declared).
    let mut one_way: Vec<Vec<f64>> = Vec::with_capacity(d);
    let people = if d == 0 {
        dp::noisy_counts(vec![kept as i64], 1, epsilon)?[0].max(0) as u64
    } else {
        let each = dp::split(third, d);
        for c in &columns {
            let mut counts = vec![0i64; c.buckets];
            for &b in &c.codes {
                counts[b] += 1;
            }
            one_way.push(noisy_histogram(counts, each)?);
        }
        let totals: Vec<f64> = one_way.iter().map(|h| h.iter().sum()).collect();
        (totals.iter().sum::<f64>() / d as f64).round() as u64
    };
    let (edges, measured) = if d >= 2 {
        spanning_tree(&columns, &one_way, people, third)?
    } else {
        (Vec::new(), Vec::new())
    };
    let synthetic = sample(
        schema,
        unit,
        &columns,
        &one_way,
        &edges,
        &measured,
        synthetic_rows,
        rng,
    )?;
    Ok(parts(schema, &columns, &one_way, &edges, people, synthetic))
}

/// The columns the owner declared a public domain for (the unit column never is one).
fn declared_columns(schema: &SchemaRef, dp: &DpRequirement, unit: usize) -> Vec<Discrete> {
    let mut columns: Vec<Discrete> = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if i == unit {
            continue;
        }
        if let Some(domain) = dp.columns.get(f.name()) {
            let buckets = match domain {
                ColumnDomain::Categories(values) => values.len() + 1,
                ColumnDomain::Numeric { .. } => NUMERIC_BINS + 1,
            };
            columns.push(Discrete {
                field: i,
                domain: domain.clone(),
                buckets,
                codes: Vec::new(),
            });
        }
    }
    columns
}

/// Read every row into the columns' bucket codes, one row per person (the first); how many
/// people were kept.
fn read_codes(
    batches: impl Iterator<Item = Result<RecordBatch, String>>,
    unit: usize,
    columns: &mut [Discrete],
) -> Result<usize, NoiseError> {
    let err = |m: String| NoiseError(m);
    let mut seen: HashSet<String> = HashSet::new();
    let mut kept = 0usize;
    for batch in batches {
        let batch = batch.map_err(|e| err(format!("reading the table failed: {e}")))?;
        let fmt = FormatOptions::default();
        let units = ArrayFormatter::try_new(batch.column(unit).as_ref(), &fmt)
            .map_err(|e| err(e.to_string()))?;
        let texts: Vec<Option<Vec<Option<String>>>> = columns
            .iter()
            .map(|c| {
                let col = batch.column(c.field);
                matches!(c.domain, ColumnDomain::Categories(_)).then(|| {
                    let f = ArrayFormatter::try_new(col.as_ref(), &fmt).ok();
                    (0..col.len())
                        .map(|r| {
                            col.is_valid(r)
                                .then(|| f.as_ref().map(|f| f.value(r).to_string()))
                                .flatten()
                        })
                        .collect()
                })
            })
            .collect();
        let numbers: Vec<Option<Vec<Option<f64>>>> = columns
            .iter()
            .map(|c| {
                matches!(c.domain, ColumnDomain::Numeric { .. }).then(|| {
                    arrow_cast::cast(batch.column(c.field), &DataType::Float64)
                        .ok()
                        .map(|a| {
                            let a = arrow_array::cast::AsArray::as_primitive::<
                                arrow_array::types::Float64Type,
                            >(&a)
                            .clone();
                            a.iter().collect()
                        })
                        .unwrap_or_else(|| vec![None; batch.num_rows()])
                })
            })
            .collect();
        for r in 0..batch.num_rows() {
            if batch.column(unit).is_null(r) || !seen.insert(units.value(r).to_string()) {
                continue;
            }
            kept += 1;
            for (k, c) in columns.iter_mut().enumerate() {
                let text = texts[k].as_ref().and_then(|t| t[r].as_deref());
                let number = numbers[k].as_ref().and_then(|n| n[r]);
                let b = c.bucket(text, number);
                c.codes.push(b);
            }
        }
    }
    Ok(kept)
}

/// Choose a spanning tree over the columns (Kruskal, each edge by the exponential mechanism
/// on how far the pair is from independent), then measure each edge's 2-way table, made
/// consistent with the 1-way marginals.
#[allow(clippy::type_complexity)]
fn spanning_tree(
    columns: &[Discrete],
    one_way: &[Vec<f64>],
    people: u64,
    third: Epsilon,
) -> Result<(Vec<(usize, usize)>, Vec<Vec<f64>>), NoiseError> {
    // Select a spanning tree (Kruskal, each edge by the exponential mechanism), then measure it.
    let d = columns.len();
    let mut edges: Vec<(usize, usize)> = Vec::new();
    let mut measured: Vec<Vec<f64>> = Vec::new();
    {
        let select_each = dp::split(third, d - 1);
        let measure_each = dp::split(third, d - 1);
        let mut component: Vec<usize> = (0..d).collect();
        let total = people.max(1) as f64;
        for _ in 0..d - 1 {
            let candidates: Vec<(usize, usize)> = (0..d)
                .flat_map(|i| (i + 1..d).map(move |j| (i, j)))
                .filter(|&(i, j)| component[i] != component[j])
                .collect();
            let scores: Vec<f64> = candidates
                .iter()
                .map(|&(i, j)| {
                    let table = joint(&columns[i], &columns[j]);
                    let (pi, pj) = (normalise(&one_way[i]), normalise(&one_way[j]));
                    let mut l1 = 0.0;
                    for (a, pa) in pi.iter().enumerate() {
                        for (b, pb) in pj.iter().enumerate() {
                            l1 +=
                                (table[a * columns[j].buckets + b] as f64 - total * pa * pb).abs();
                        }
                    }
                    l1
                })
                .collect();
            let pick = dp::noisy_argmax(scores, 1.0, select_each)?;
            let (i, j) = candidates[pick];
            let (from, to) = (component[j], component[i]);
            for c in &mut component {
                if *c == from {
                    *c = to;
                }
            }
            edges.push((i, j));
        }
        for &(i, j) in &edges {
            let noisy = noisy_histogram(joint(&columns[i], &columns[j]), measure_each)?;
            let (rows, cols) = (columns[i].buckets, columns[j].buckets);
            measured.push(consistent(noisy, rows, cols, &one_way[i], &one_way[j]));
        }
    }
    Ok((edges, measured))
}

/// The preview's parts: the schema, the noisy count of people, each column's summary, the
/// tree's pairs and the synthetic rows.
fn parts(
    schema: &SchemaRef,
    columns: &[Discrete],
    one_way: &[Vec<f64>],
    edges: &[(usize, usize)],
    people: u64,
    synthetic: RecordBatch,
) -> PreviewParts {
    let name = |c: &Discrete| schema.field(c.field).name().clone();
    let mut summaries = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        let summary = match columns.iter().position(|c| c.field == i) {
            None => ColumnSummary::Undeclared,
            Some(k) => summarise(&columns[k], &one_way[k]),
        };
        summaries.push(PreviewColumn {
            name: f.name().clone(),
            summary,
        });
    }
    PreviewParts {
        schema: schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect(),
        people,
        columns: summaries,
        pairs: edges
            .iter()
            .map(|&(i, j)| (name(&columns[i]), name(&columns[j])))
            .collect(),
        synthetic,
    }
}

/// Post-processing: fit a noisy 2-way table to the noisy 1-way marginals of its two columns by
/// iterative proportional fitting, so that sampling down the tree reproduces each column's own
/// (more precisely measured) distribution. A pseudo-count keeps cells the noise zeroed alive.
fn consistent(mut t: Vec<f64>, rows: usize, cols: usize, ri: &[f64], cj: &[f64]) -> Vec<f64> {
    let total = (ri.iter().sum::<f64>() + cj.iter().sum::<f64>()) / 2.0;
    let (pr, pc) = (normalise(ri), normalise(cj));
    for v in &mut t {
        *v += 0.5;
    }
    for _ in 0..20 {
        for a in 0..rows {
            let sum: f64 = t[a * cols..(a + 1) * cols].iter().sum();
            if sum > 0.0 {
                let f = pr[a] * total / sum;
                t[a * cols..(a + 1) * cols].iter_mut().for_each(|v| *v *= f);
            }
        }
        for b in 0..cols {
            let sum: f64 = (0..rows).map(|a| t[a * cols + b]).sum();
            if sum > 0.0 {
                let f = pc[b] * total / sum;
                (0..rows).for_each(|a| t[a * cols + b] *= f);
            }
        }
    }
    t
}

/// The true 2-way counts of two columns, row-major (`a * b.buckets + b`).
fn joint(a: &Discrete, b: &Discrete) -> Vec<i64> {
    let mut t = vec![0i64; a.buckets * b.buckets];
    for (&x, &y) in a.codes.iter().zip(&b.codes) {
        t[x * b.buckets + y] += 1;
    }
    t
}

fn normalise(h: &[f64]) -> Vec<f64> {
    let total: f64 = h.iter().sum();
    if total <= 0.0 {
        return vec![1.0 / h.len() as f64; h.len()];
    }
    h.iter().map(|c| c / total).collect()
}

fn draw(weights: &[f64], rng: &mut impl Rng) -> usize {
    let p = normalise(weights);
    let mut u: f64 = rng.r#gen();
    for (i, w) in p.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    p.len() - 1
}

fn summarise(c: &Discrete, hist: &[f64]) -> ColumnSummary {
    match &c.domain {
        ColumnDomain::Categories(values) => ColumnSummary::Categories(
            values
                .iter()
                .map(|v| Some(v.clone()))
                .chain([None])
                .zip(hist.iter().map(|&h| h.round() as u64))
                .collect(),
        ),
        ColumnDomain::Numeric { lower, upper } => {
            let (lo, hi) = (lower.get(), upper.get());
            let w = (hi - lo) / NUMERIC_BINS as f64;
            let bins: Vec<(f64, f64, u64)> = (0..NUMERIC_BINS)
                .map(|b| {
                    (
                        lo + w * b as f64,
                        lo + w * (b + 1) as f64,
                        hist[b].round() as u64,
                    )
                })
                .collect();
            let total: f64 = hist[..NUMERIC_BINS].iter().sum();
            let quantiles = [0.25, 0.5, 0.75]
                .into_iter()
                .map(|p| {
                    let target = p * total;
                    let mut seen = 0.0;
                    let mut value = hi;
                    for (b, &h) in hist[..NUMERIC_BINS].iter().enumerate() {
                        if h > 0.0 && seen + h >= target {
                            value = lo + w * (b as f64 + (target - seen) / h);
                            break;
                        }
                        seen += h;
                    }
                    if total <= 0.0 {
                        value = (lo + hi) / 2.0;
                    }
                    (p, value)
                })
                .collect();
            ColumnSummary::Numeric {
                bins,
                nulls: hist[NUMERIC_BINS].round() as u64,
                quantiles,
            }
        }
    }
}

/// Draw `n` rows from the tree model, as a table with the dataset's schema.
#[allow(clippy::too_many_arguments)]
fn sample(
    schema: &SchemaRef,
    unit: usize,
    columns: &[Discrete],
    one_way: &[Vec<f64>],
    edges: &[(usize, usize)],
    measured: &[Vec<f64>],
    n: usize,
    rng: &mut impl Rng,
) -> Result<RecordBatch, NoiseError> {
    let d = columns.len();
    // Visit the tree from column 0: each column after its parent.
    let mut order: Vec<(usize, Option<(usize, usize)>)> = Vec::new();
    if d > 0 {
        let mut done: BTreeSet<usize> = BTreeSet::from([0]);
        order.push((0, None));
        while done.len() < d {
            let before = done.len();
            for (e, &(i, j)) in edges.iter().enumerate() {
                let next = match (done.contains(&i), done.contains(&j)) {
                    (true, false) => Some((j, i)),
                    (false, true) => Some((i, j)),
                    _ => None,
                };
                if let Some((child, parent)) = next {
                    done.insert(child);
                    order.push((child, Some((parent, e))));
                }
            }
            if done.len() == before {
                // Not connected (cannot happen for a spanning tree): sample the rest alone.
                for c in 0..d {
                    if done.insert(c) {
                        order.push((c, None));
                    }
                }
            }
        }
    }
    let mut codes: Vec<Vec<usize>> = vec![Vec::with_capacity(n); d];
    let mut current = vec![0usize; d];
    for _ in 0..n {
        for &(c, parent) in &order {
            let weights: Vec<f64> = match parent {
                None => one_way[c].clone(),
                Some((p, e)) => {
                    let (i, j) = edges[e];
                    let t = &measured[e];
                    let pv = current[p];
                    let w: Vec<f64> = if i == p {
                        (0..columns[j].buckets)
                            .map(|b| t[pv * columns[j].buckets + b])
                            .collect()
                    } else {
                        (0..columns[i].buckets)
                            .map(|a| t[a * columns[j].buckets + pv])
                            .collect()
                    };
                    if w.iter().sum::<f64>() > 0.0 {
                        w
                    } else {
                        one_way[c].clone()
                    }
                }
            };
            current[c] = draw(&weights, rng);
        }
        for (column, &code) in codes.iter_mut().zip(&current) {
            column.push(code);
        }
    }
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        let array: ArrayRef = if i == unit {
            let ids = arrow_array::StringArray::from_iter_values(
                (0..n).map(|r| format!("synthetic-{r}")),
            );
            arrow_cast::cast(&(Arc::new(ids) as ArrayRef), f.data_type())
                .unwrap_or_else(|_| new_null_array(f.data_type(), n))
        } else if let Some(k) = columns.iter().position(|c| c.field == i) {
            let c = &columns[k];
            let text: ArrayRef = match &c.domain {
                ColumnDomain::Categories(values) => Arc::new(arrow_array::StringArray::from_iter(
                    codes[k].iter().map(|&b| values.get(b).map(String::as_str)),
                )),
                ColumnDomain::Numeric { lower, upper } => {
                    let (lo, hi) = (lower.get(), upper.get());
                    let w = (hi - lo) / NUMERIC_BINS as f64;
                    let integer = f.data_type().is_integer();
                    Arc::new(arrow_array::Float64Array::from_iter(codes[k].iter().map(
                        |&b| {
                            (b < NUMERIC_BINS).then(|| {
                                let v = lo + w * (b as f64 + rng.r#gen::<f64>());
                                if integer { v.floor().min(hi) } else { v }
                            })
                        },
                    )))
                }
            };
            arrow_cast::cast(&text, f.data_type())
                .unwrap_or_else(|_| new_null_array(f.data_type(), n))
        } else {
            new_null_array(f.data_type(), n)
        };
        arrays.push(array);
    }
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| NoiseError(format!("building the synthetic table: {e}")))
}
