//! What may leave the sandbox: one decision per output.
//!
//! Output classes, failing closed:
//! - *checked tables*: flat Arrow tables with at least one declared count column (declared by
//!   the owners' `count_columns` or by field metadata `cleanroom:count = "true"`, which the
//!   SDKs set). Small groups are suppressed (or refuse the output), zeros too where the owners
//!   say zeros are disclosive, counts rounded as the owners choose, declared totals
//!   (`cleanroom:total_of = "a,b"`) recomputed from the rounded cells;
//! - *unchecked outputs*: tables without a declared count column or with nested columns,
//!   JSON, files. Held for review where an owner reviews and the rules allow it, else refused;
//! - *logs and error text*: released only where every owner allows logs; reviewers see them.
//!
//! Every output (and its name) is searched for identifier values and identifier column names;
//! a hit refuses it. Model outputs (schema metadata `cleanroom:model_n` and
//! `cleanroom:model_params`) need the owners' minimum residual degrees of freedom.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use cleanroom_proto::Code;
use cleanroom_proto::policy::{OutputRules, Rounding, SmallGroups, Unchecked};
use cleanroom_proto::run::{Disposition, OutputKind, OutputReport, PlainOutput};

use crate::identifiers::{IdentifierSet, for_each_cell};

/// Field metadata key declaring a count column.
pub const COUNT_METADATA: &str = "cleanroom:count";
/// Field metadata key declaring a total column: the comma-separated count columns it sums.
pub const TOTAL_METADATA: &str = "cleanroom:total_of";
/// Schema metadata key: a model's number of observations.
pub const MODEL_N_METADATA: &str = "cleanroom:model_n";
/// Schema metadata key: a model's number of estimated parameters.
pub const MODEL_PARAMS_METADATA: &str = "cleanroom:model_params";

/// An output as published, before any rule.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The module's name for it.
    pub name: String,
    /// Its kind.
    pub kind: OutputKind,
    /// Its content.
    pub content: Content,
}

/// The content of a [`Candidate`].
#[derive(Debug, Clone)]
pub enum Content {
    /// A decoded Arrow table.
    Table {
        /// Its schema.
        schema: SchemaRef,
        /// Its batches.
        batches: Vec<RecordBatch>,
    },
    /// Bytes: JSON text, a file, log text, error text.
    Bytes(Vec<u8>),
    /// A table the host computed with the owners' rules (or DP noise) already applied per
    /// cell ([`crate::aggregate`]): checked, not re-suppressed.
    Checked {
        /// Its schema.
        schema: SchemaRef,
        /// Its batches.
        batches: Vec<RecordBatch>,
        /// What the aggregation applied.
        codes: Vec<Code>,
        /// Whether the owners' rules refuse it.
        refused: bool,
        /// Whether it was computed under differential privacy: its cells are group keys from
        /// declared public domains and noised numbers, so no exact rule reads them (an
        /// identifier scan of a DP table's cells would answer whether a person is in it).
        private: bool,
    },
}

/// Everything [`decide`] needs.
#[derive(Debug)]
pub struct EgressInput<'a> {
    /// The outputs, in publication order.
    pub outputs: Vec<Candidate>,
    /// The strictest rules over the run's inputs.
    pub rules: &'a OutputRules,
    /// Identifier column names (lowercase).
    pub identifier_columns: &'a BTreeSet<String>,
    /// Identifier values seen in the run's inputs.
    pub identifiers: &'a IdentifierSet,
    /// Whether anyone reviews this run.
    pub reviewed: bool,
}

/// One output after the rules.
#[derive(Debug, Clone)]
pub struct Decided {
    /// What every party to the run sees.
    pub report: OutputReport,
    /// The output as it would be released (tables re-encoded after suppression and rounding).
    /// Empty bytes for refused outputs that reviewers must not see either.
    pub output: PlainOutput,
    /// Whether reviewers may see it.
    pub reviewable: bool,
}

impl Decided {
    /// Whether it leaves at once (no review) or after review.
    pub fn leaves(&self) -> bool {
        matches!(
            self.report.disposition,
            Disposition::Release | Disposition::Hold
        )
    }
}

/// What happens to a run as a whole once its outputs are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// What leaves is released to the researcher now.
    Release,
    /// Everything waits for the owners' reviewers (who see which rules refused what first).
    Hold,
    /// Nothing leaves: the code of the rule that refused the first refused output.
    Withhold(Code),
}

/// The verdict over a finished run's decided outputs: held where anyone reviews or any
/// output waits for review (also when every output was refused: which rules refused what is
/// the reviewers' to see first), otherwise [`release_verdict`].
pub fn verdict(decided: &[Decided], reviewed: bool) -> Verdict {
    if reviewed
        || decided
            .iter()
            .any(|d| d.report.disposition == Disposition::Hold)
    {
        return Verdict::Hold;
    }
    release_verdict(decided, false)
}

/// At release (at once, or after review): release what leaves, or withhold the run if the
/// rules let none of its outputs leave, with the code of the rule that refused the first
/// refused output (the last code it gathered).
pub fn release_verdict(decided: &[Decided], reviewed: bool) -> Verdict {
    let leaves = |d: &Decided| match d.report.disposition {
        Disposition::Release => true,
        Disposition::Hold => reviewed,
        Disposition::Refuse => false,
    };
    if decided.is_empty() || decided.iter().any(leaves) {
        return Verdict::Release;
    }
    Verdict::Withhold(
        decided
            .iter()
            .find(|d| d.report.disposition == Disposition::Refuse)
            .and_then(|d| d.report.codes.last().copied())
            .unwrap_or(Code::UncheckedRefused),
    )
}

/// Decide the outputs of a run that failed (its error text and log): as [`decide`], except
/// that nothing of a failed run is reviewed, so what would wait for review is refused with
/// `logs_withheld`. Error text leaves only where every owner releases logs and nobody reviews.
pub fn decide_failed(input: EgressInput<'_>) -> Vec<Decided> {
    decide(input)
        .into_iter()
        .map(|mut d| {
            if d.report.disposition == Disposition::Hold {
                d.report.disposition = Disposition::Refuse;
                d.report.codes.push(Code::LogsWithheld);
            }
            d
        })
        .collect()
}

/// Decide every output of a run.
pub fn decide(mut input: EgressInput<'_>) -> Vec<Decided> {
    let rules = input.rules;
    let outputs = std::mem::take(&mut input.outputs);
    let mut decided: Vec<Decided> = outputs
        .into_iter()
        .enumerate()
        .map(|(i, c)| decide_one(i as u32, c, &input))
        .collect();
    let published = decided
        .iter()
        .filter(|d| {
            matches!(
                d.output.kind,
                OutputKind::Table | OutputKind::Json | OutputKind::File
            )
        })
        .count();
    if published > rules.max_outputs as usize {
        for d in &mut decided {
            refuse(d, Code::TooManyOutputs);
        }
    }
    let total: u64 = decided
        .iter()
        .filter(|d| d.leaves())
        .map(|d| d.output.bytes.len() as u64)
        .sum();
    if total > rules.max_output_bytes {
        for d in &mut decided {
            if d.leaves() {
                refuse(d, Code::OutputTooLarge);
            }
        }
    }
    decided
}

fn refuse(d: &mut Decided, code: Code) {
    d.report.disposition = Disposition::Refuse;
    if !d.report.codes.contains(&code) {
        d.report.codes.push(code);
    }
}

fn decide_one(index: u32, candidate: Candidate, input: &EgressInput<'_>) -> Decided {
    let rules = input.rules;
    let Candidate {
        name,
        kind,
        content,
    } = candidate;
    let mut codes = Vec::new();
    let mut reviewable = true;
    let unchecked = |codes: &mut Vec<Code>| {
        if input.reviewed && rules.unchecked_outputs() == Unchecked::Review {
            codes.push(Code::UncheckedHeld);
            Disposition::Hold
        } else {
            codes.push(Code::UncheckedRefused);
            Disposition::Refuse
        }
    };
    // Whether the identifier scan reads the content (it always reads the name, which is
    // compared only with identifiers of tables a guest could read row by row).
    let mut scan_content = true;
    let (disposition, bytes, haystack) = match content {
        Content::Table { schema, batches } => match table(&schema, batches, input) {
            Err(code) => {
                codes.push(code);
                reviewable = !matches!(code, Code::IdentifierColumn);
                (Disposition::Refuse, Vec::new(), Vec::new())
            }
            Ok(checked) => {
                codes.extend(checked.codes);
                let disposition = if checked.refused {
                    Disposition::Refuse
                } else if checked.checked {
                    if input.reviewed {
                        Disposition::Hold
                    } else {
                        Disposition::Release
                    }
                } else {
                    unchecked(&mut codes)
                };
                (disposition, checked.ipc, checked.text)
            }
        },
        Content::Checked {
            schema,
            batches,
            codes: applied,
            refused,
            private,
        } => {
            scan_content = !private;
            codes.extend(applied);
            let disposition = if refused {
                Disposition::Refuse
            } else if input.reviewed {
                Disposition::Hold
            } else {
                Disposition::Release
            };
            if schema.fields().iter().any(|f| {
                input
                    .identifier_columns
                    .contains(&f.name().to_ascii_lowercase())
            }) {
                codes.push(Code::IdentifierColumn);
                reviewable = false;
                (Disposition::Refuse, Vec::new(), Vec::new())
            } else {
                let text = cell_text(&schema, &batches);
                let ipc = encode(&schema, &batches).unwrap_or_default();
                (disposition, ipc, text)
            }
        }
        // JSON leaves as the one document a reviewer's viewer shows, or not at all.
        Content::Bytes(bytes) if kind == OutputKind::Json => match crate::canonical::json(&bytes) {
            Some(canonical) => (unchecked(&mut codes), canonical.clone(), canonical),
            None => {
                codes.push(Code::MalformedJson);
                reviewable = false;
                (Disposition::Refuse, Vec::new(), Vec::new())
            }
        },
        Content::Bytes(bytes) => {
            let disposition = match kind {
                OutputKind::Log | OutputKind::Error => {
                    if rules.release_logs {
                        if input.reviewed {
                            Disposition::Hold
                        } else {
                            Disposition::Release
                        }
                    } else {
                        codes.push(Code::LogsWithheld);
                        Disposition::Refuse
                    }
                }
                _ => unchecked(&mut codes),
            };
            let haystack = bytes.clone();
            (disposition, bytes, haystack)
        }
    };
    let mut decided = Decided {
        report: OutputReport {
            index,
            kind,
            disposition,
            codes,
        },
        output: PlainOutput { name, kind, bytes },
        reviewable,
    };
    // Cell text, the bytes as released (schema and field metadata, raw binary values) and
    // the name: none may carry an identifier.
    if (scan_content
        && (input.identifiers.found_in(&haystack)
            || input.identifiers.found_in(&decided.output.bytes)))
        || input.identifiers.found_in(decided.output.name.as_bytes())
    {
        refuse(&mut decided, Code::IdentifierValue);
        // Identifiers of one owner's patients are not shown to another owner's reviewer.
        decided.reviewable = false;
    }
    if !decided.reviewable {
        decided.output.bytes.clear();
    }
    decided
}

struct Checked {
    /// Whether the table has a declared count column (and so was checked).
    checked: bool,
    /// Whether a rule refuses it.
    refused: bool,
    codes: Vec<Code>,
    /// The table as released, Arrow IPC.
    ipc: Vec<u8>,
    /// Column names and cell text, newline-separated, for the identifier scan.
    text: Vec<u8>,
}

fn is_nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(_, _)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::Struct(_)
            | DataType::Union(_, _)
            | DataType::Map(_, _)
            | DataType::Dictionary(_, _)
            | DataType::RunEndEncoded(_, _)
    )
}

fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

fn table(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    input: &EgressInput<'_>,
) -> Result<Checked, Code> {
    let rules = input.rules;
    if schema.fields().iter().any(|f| {
        input
            .identifier_columns
            .contains(&f.name().to_ascii_lowercase())
    }) {
        return Err(Code::IdentifierColumn);
    }
    // Decided, shown and released in one canonical form (`crate::canonical`).
    let (schema, batches) =
        crate::canonical::table(schema, &batches).map_err(|_| Code::Internal)?;
    let schema = &schema;
    let declared: BTreeSet<String> = rules
        .count_columns
        .iter()
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let counts: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            declared.contains(&f.name().to_ascii_lowercase())
                || f.metadata()
                    .get(COUNT_METADATA)
                    .is_some_and(|v| v == "true")
        })
        .map(|(i, _)| i)
        .collect();
    let nested = schema.fields().iter().any(|f| is_nested(f.data_type()));
    let mut codes = Vec::new();
    let mut refused = false;
    if let Some(df) = residual_df(schema)
        && df < rules.min_residual_df as i128
    {
        codes.push(Code::ResidualDf);
        refused = true;
    }
    let checked = !counts.is_empty() && !nested;
    let mut out_batches = batches;
    let mut out_schema = schema.clone();
    if checked {
        if counts
            .iter()
            .any(|&i| !is_integer(schema.field(i).data_type()))
        {
            return Err(Code::BadCountColumn);
        }
        let mut suppressed = 0u64;
        let mut kept = Vec::with_capacity(out_batches.len());
        for batch in &out_batches {
            let (batch, dropped) = suppress(batch, &counts, rules);
            suppressed += dropped;
            kept.push(batch);
        }
        if suppressed > 0 {
            if rules.small_groups == SmallGroups::Refuse {
                codes.push(Code::SmallGroupsRefused);
                refused = true;
            } else {
                codes.push(Code::SmallGroupsSuppressed);
            }
        }
        out_batches = kept;
        if rules.rounding != Rounding::None {
            let (schema2, rounded) = round(schema, &out_batches, &counts, rules.rounding);
            codes.push(Code::CountsRounded);
            if schema2
                .fields()
                .iter()
                .any(|f| f.metadata().contains_key(TOTAL_METADATA))
            {
                codes.push(Code::TotalsRecomputed);
            }
            out_schema = schema2;
            out_batches = rounded;
        }
    }
    let text = cell_text(&out_schema, &out_batches);
    let ipc = encode(&out_schema, &out_batches).map_err(|_| Code::Internal)?;
    Ok(Checked {
        checked,
        refused,
        codes,
        ipc,
        text,
    })
}

/// Column names and cell text, newline-separated, for the identifier scan.
fn cell_text(schema: &Schema, batches: &[RecordBatch]) -> Vec<u8> {
    let mut text = Vec::new();
    for f in schema.fields() {
        text.extend_from_slice(f.name().as_bytes());
        text.push(b'\n');
    }
    for batch in batches {
        for col in batch.columns() {
            for_each_cell(col.as_ref(), |cell| {
                text.extend_from_slice(cell.as_bytes());
                text.push(b'\n');
            });
        }
    }
    text
}

fn residual_df(schema: &Schema) -> Option<i128> {
    let meta = schema.metadata();
    let n: i128 = meta.get(MODEL_N_METADATA)?.parse().ok()?;
    let p: i128 = meta.get(MODEL_PARAMS_METADATA)?.parse().ok()?;
    Some(n - p)
}

/// Integer values of a column as i128 (`None` for nulls).
fn values(col: &dyn Array) -> Vec<Option<i128>> {
    macro_rules! ints {
        ($t:ty) => {
            col.as_primitive::<$t>()
                .iter()
                .map(|v| v.map(|v| v as i128))
                .collect()
        };
    }
    match col.data_type() {
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => ints!(UInt64Type),
        _ => vec![None; col.len()],
    }
}

/// Drop rows whose value in any count column is small.
fn suppress(batch: &RecordBatch, counts: &[usize], rules: &OutputRules) -> (RecordBatch, u64) {
    let k = rules.min_group_count as i128;
    let mut keep = vec![true; batch.num_rows()];
    for &i in counts {
        for (row, v) in values(batch.column(i).as_ref()).into_iter().enumerate() {
            let small = match v {
                None => false,
                Some(0) => rules.zeros_disclosive && k > 0,
                Some(v) => v < k,
            };
            if small {
                keep[row] = false;
            }
        }
    }
    let dropped = keep.iter().filter(|k| !**k).count() as u64;
    if dropped == 0 {
        return (batch.clone(), 0);
    }
    let mask = BooleanArray::from(keep);
    match arrow_select::filter::filter_record_batch(batch, &mask) {
        Ok(kept) => (kept, dropped),
        // Filtering a valid batch with a mask of its length cannot fail; if it did, release
        // nothing of it.
        Err(_) => (batch.slice(0, 0), batch.num_rows() as u64),
    }
}

/// Round one count.
pub fn round_count(v: i128, rounding: Rounding) -> Option<i128> {
    match rounding {
        Rounding::None => Some(v),
        Rounding::Redact7Round5 => {
            if v <= 7 {
                None
            } else {
                Some(((v + 2) / 5) * 5)
            }
        }
        Rounding::Midpoint6 => {
            if v == 0 {
                Some(0)
            } else {
                Some((v - 1) / 6 * 6 + 3)
            }
        }
    }
}

/// Round every count column; recompute declared totals from the rounded cells. Rounded
/// columns become nullable Int64 (redacted cells are null).
fn round(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    counts: &[usize],
    rounding: Rounding,
) -> (SchemaRef, Vec<RecordBatch>) {
    let totals: Vec<(usize, Vec<usize>)> = schema
        .fields()
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let of = f.metadata().get(TOTAL_METADATA)?;
            let parts = of
                .split(',')
                .filter_map(|n| schema.index_of(n.trim()).ok())
                .collect();
            Some((i, parts))
        })
        .collect();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if counts.contains(&i) || totals.iter().any(|(t, _)| *t == i) {
                f.as_ref()
                    .clone()
                    .with_data_type(DataType::Int64)
                    .with_nullable(true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let out_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let mut rounded: Vec<Option<Vec<Option<i128>>>> = vec![None; columns.len()];
        for &i in counts {
            let r: Vec<Option<i128>> = values(batch.column(i).as_ref())
                .into_iter()
                .map(|v| v.and_then(|v| round_count(v, rounding)))
                .collect();
            rounded[i] = Some(r);
        }
        for (t, parts) in &totals {
            // Each part's cells once (rounded where it is a count), then summed per row.
            let cells: Vec<Vec<Option<i128>>> = parts
                .iter()
                .map(|&p| {
                    rounded[p]
                        .clone()
                        .unwrap_or_else(|| values(batch.column(p).as_ref()))
                })
                .collect();
            let sums = (0..batch.num_rows())
                .map(|row| Some(cells.iter().map(|c| c[row].unwrap_or(0)).sum()))
                .collect();
            rounded[*t] = Some(sums);
        }
        for (i, r) in rounded.into_iter().enumerate() {
            if let Some(r) = r {
                columns[i] =
                    Arc::new(Int64Array::from_iter(r.into_iter().map(|v| {
                        v.map(|v| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
                    })));
            }
        }
        match RecordBatch::try_new(out_schema.clone(), columns) {
            Ok(b) => out.push(b),
            Err(_) => out.push(RecordBatch::new_empty(out_schema.clone())),
        }
    }
    (out_schema, out)
}

fn encode(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>, arrow_schema::ArrowError> {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
    for b in batches {
        writer.write(b)?;
    }
    writer.into_inner()
}
