//! Arrow tables in, R data frames; R's published values out, Arrow and bytes — through R's C
//! API (the functions R.wasm exports), writing numeric columns straight into R's vectors.
//!
//! Types as R users expect them: floats are `numeric`; integers `integer` (or `numeric` when a
//! value does not fit R's 32-bit integers); booleans `logical`; strings `character`;
//! dictionary-encoded strings `factor`; `Date32`/`Date64` `Date`; timestamps `POSIXct` (UTC);
//! nulls `NA`. Anything else arrives as its text. Back out, `numeric` is Float64, `integer`
//! Int32, `logical` Boolean, `character` and factors Utf8, `Date` Date32 and `POSIXct`
//! Timestamp(µs, UTC), with `NA` as null.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use wasmtime::{Result, Val, bail, format_err};

use crate::emscripten::R;
use cleanroom_runtime::error::RunError;
use cleanroom_runtime::output::{TableOutput, validate_name};
use cleanroom_runtime::{Limits, Outputs, TableSource};

const LGLSXP: i32 = 10;
const INTSXP: i32 = 13;
const REALSXP: i32 = 14;
const STRSXP: i32 = 16;
const VECSXP: i32 = 19;
/// `cetype_t` CE_UTF8.
const CE_UTF8: i32 = 1;
/// R's `NA_integer_` (and `NA` of logical vectors).
const NA_INT: i32 = i32::MIN;

impl R {
    fn c(&mut self, name: &str, args: &[i32]) -> Result<i32> {
        let args: Vec<Val> = args.iter().map(|a| Val::I32(*a)).collect();
        self.call_i32(name, &args)
    }

    fn protect(&mut self, sexp: i32) -> Result<i32> {
        self.c("Rf_protect", &[sexp])
    }

    fn unprotect(&mut self, n: i32) -> Result<()> {
        self.c("Rf_unprotect", &[n]).map(|_| ())
    }

    fn mk_char(&mut self, s: &str) -> Result<i32> {
        let p = self.malloc(s.len() as u32)?;
        self.write(p, s.as_bytes())?;
        let c = self.c("Rf_mkCharLenCE", &[p as i32, s.len() as i32, CE_UTF8])?;
        self.free(p)?;
        Ok(c)
    }

    /// Element `i` of a character vector (`None` for `NA`).
    fn string_elt(&mut self, x: i32, i: i32) -> Result<Option<String>> {
        let c = self.c("STRING_ELT", &[x, i])?;
        if c == self.sexp("R_NaString")? {
            return Ok(None);
        }
        let len = self.c("LENGTH", &[c])?;
        let p = self.c("R_CHAR", &[c])?;
        let bytes = self.read(p as u32, len as usize)?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn na_real(&mut self) -> Result<f64> {
        let addr = self.global_addr("R_NaReal")?;
        let b = self.read(addr, 8)?;
        Ok(f64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Evaluate `code` (a fixed expression of ours) and return its value, protected.
    fn value_of(&mut self, code: &str) -> Result<i32> {
        let text = self.cstring(code)?;
        let global = self.sexp("R_GlobalEnv")?;
        let v = self.c("R_ParseEvalString", &[text as i32, global])?;
        self.free(text)?;
        self.protect(v)
    }
}

/// Hand `table` to R as the data frame `cleanroom::table(name)` returns. Returns the bytes of
/// Arrow data read.
pub(super) fn deliver(r: &mut R, name: &str, table: &dyn TableSource) -> Result<u64> {
    let schema = table.schema();
    let batches = table
        .batches()
        .collect::<Result<Vec<RecordBatch>, String>>()
        .map_err(|e| format_err!("table {name}: {e}"))?;
    let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    let ncol = schema.fields().len() as i32;
    let cols = r.c("Rf_allocVector", &[VECSXP, ncol])?;
    let cols = r.protect(cols)?;
    let names = r.c("Rf_allocVector", &[STRSXP, ncol])?;
    let names = r.protect(names)?;
    let types = r.c("Rf_allocVector", &[STRSXP, ncol])?;
    let types = r.protect(types)?;
    for (i, field) in schema.fields().iter().enumerate() {
        let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
        let array = if parts.is_empty() {
            arrow_array::new_empty_array(field.data_type())
        } else {
            arrow_select::concat::concat(&parts)?
        };
        let (vector, kind) = column(r, &array)?;
        r.c("SET_VECTOR_ELT", &[cols, i as i32, vector])?;
        let n = r.mk_char(field.name())?;
        r.c("SET_STRING_ELT", &[names, i as i32, n])?;
        let k = r.mk_char(kind)?;
        r.c("SET_STRING_ELT", &[types, i as i32, k])?;
    }
    let names_symbol = r.sexp("R_NamesSymbol")?;
    r.c("Rf_setAttrib", &[cols, names_symbol, names])?;
    let adopt = r.value_of("cleanroom:::.adopt")?;
    let n = r.mk_char(name)?;
    let n = r.c("Rf_ScalarString", &[n])?;
    let n = r.protect(n)?;
    let call = r.c("Rf_lang4", &[adopt, n, cols, types])?;
    let call = r.protect(call)?;
    let err = r.malloc(4)?;
    r.write(err, &0u32.to_le_bytes())?;
    let global = r.sexp("R_GlobalEnv")?;
    r.c("R_tryEval", &[call, global, err as i32])?;
    let failed = r.read_u32(err)? != 0;
    r.free(err)?;
    r.unprotect(6)?;
    if failed {
        bail!("R could not build table {name} as a data frame");
    }
    Ok(bytes as u64)
}

/// One column as an R vector (unprotected: the caller stores it at once) and its kind for
/// `.adopt`.
fn column(r: &mut R, array: &ArrayRef) -> Result<(i32, &'static str)> {
    let n = array.len() as i32;
    match array.data_type() {
        DataType::Boolean => {
            let a = array.as_boolean();
            let v: Vec<i32> = (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        NA_INT
                    } else {
                        i32::from(a.value(i))
                    }
                })
                .collect();
            Ok((ints(r, LGLSXP, &v)?, "logical"))
        }
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            let a = arrow_cast::cast(array, &DataType::Int32)?;
            let a = a.as_primitive::<Int32Type>();
            let v: Vec<i32> = (0..a.len())
                .map(|i| if a.is_null(i) { NA_INT } else { a.value(i) })
                .collect();
            Ok((ints(r, INTSXP, &v)?, "integer"))
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => {
            let a = arrow_cast::cast(array, &DataType::Int64)?;
            let a = a.as_primitive::<Int64Type>();
            let fits = (0..a.len()).all(|i| {
                a.is_null(i) || (a.value(i) > i32::MIN as i64 && a.value(i) <= i32::MAX as i64)
            });
            if fits {
                let v: Vec<i32> = (0..a.len())
                    .map(|i| {
                        if a.is_null(i) {
                            NA_INT
                        } else {
                            a.value(i) as i32
                        }
                    })
                    .collect();
                Ok((ints(r, INTSXP, &v)?, "integer"))
            } else {
                let na = r.na_real()?;
                let v: Vec<f64> = (0..a.len())
                    .map(|i| if a.is_null(i) { na } else { a.value(i) as f64 })
                    .collect();
                Ok((reals(r, &v)?, "double"))
            }
        }
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => {
            let a = arrow_cast::cast(array, &DataType::Float64)?;
            let a = a.as_primitive::<Float64Type>();
            let na = r.na_real()?;
            let v: Vec<f64> = (0..a.len())
                .map(|i| if a.is_null(i) { na } else { a.value(i) })
                .collect();
            Ok((reals(r, &v)?, "double"))
        }
        DataType::Date32 | DataType::Date64 => {
            let a = arrow_cast::cast(array, &DataType::Date32)?;
            let a = a.as_primitive::<Date32Type>();
            let na = r.na_real()?;
            let v: Vec<f64> = (0..a.len())
                .map(|i| if a.is_null(i) { na } else { a.value(i) as f64 })
                .collect();
            Ok((reals(r, &v)?, "date"))
        }
        DataType::Timestamp(..) => {
            let a = arrow_cast::cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let a = a.as_primitive::<TimestampMicrosecondType>();
            let na = r.na_real()?;
            let v: Vec<f64> = (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        na
                    } else {
                        a.value(i) as f64 / 1e6
                    }
                })
                .collect();
            Ok((reals(r, &v)?, "datetime"))
        }
        DataType::Dictionary(..) => {
            let a = arrow_cast::cast(array, &DataType::Utf8)?;
            Ok((strings(r, a.as_string::<i32>(), n)?, "factor"))
        }
        _ => {
            let a = arrow_cast::cast(array, &DataType::Utf8)?;
            Ok((strings(r, a.as_string::<i32>(), n)?, "character"))
        }
    }
}

fn ints(r: &mut R, kind: i32, v: &[i32]) -> Result<i32> {
    let x = r.c("Rf_allocVector", &[kind, v.len() as i32])?;
    let p = r.c(if kind == LGLSXP { "LOGICAL" } else { "INTEGER" }, &[x])?;
    let bytes: Vec<u8> = v.iter().flat_map(|i| i.to_le_bytes()).collect();
    r.write(p as u32, &bytes)?;
    Ok(x)
}

fn reals(r: &mut R, v: &[f64]) -> Result<i32> {
    let x = r.c("Rf_allocVector", &[REALSXP, v.len() as i32])?;
    let p = r.c("REAL", &[x])?;
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    r.write(p as u32, &bytes)?;
    Ok(x)
}

fn strings(r: &mut R, a: &StringArray, n: i32) -> Result<i32> {
    let x = r.c("Rf_allocVector", &[STRSXP, n])?;
    let x = r.protect(x)?;
    let na = r.sexp("R_NaString")?;
    let data = a.value_data();
    let buf = r.malloc(data.len() as u32)?;
    r.write(buf, data)?;
    let offsets = a.value_offsets();
    for i in 0..a.len() {
        let c = if a.is_null(i) {
            na
        } else {
            let (start, end) = (offsets[i], offsets[i + 1]);
            r.c(
                "Rf_mkCharLenCE",
                &[buf as i32 + start, end - start, CE_UTF8],
            )?
        };
        r.c("SET_STRING_ELT", &[x, i as i32, c])?;
    }
    r.free(buf)?;
    r.unprotect(1)?;
    Ok(x)
}

/// A run failure for an output the analysis published wrongly.
fn refuse(message: String) -> wasmtime::Error {
    wasmtime::Error::new(RunError::Failed(message))
}

/// What the script published with the `cleanroom` API, checked like every guest's outputs:
/// names, count and total size.
pub(super) fn collect(r: &mut R, limits: &Limits) -> Result<Outputs> {
    let outs = r.value_of("cleanroom:::.outputs()")?;
    let n = r.c("Rf_length", &[outs])?;
    let mut outputs = Outputs::default();
    let mut names = std::collections::BTreeSet::new();
    let mut used = 0u64;
    for i in 0..n {
        let item = r.c("VECTOR_ELT", &[outs, i])?;
        let kind_v = r.c("VECTOR_ELT", &[item, 0])?;
        let name_v = r.c("VECTOR_ELT", &[item, 1])?;
        let value = r.c("VECTOR_ELT", &[item, 2])?;
        let kind = r.string_elt(kind_v, 0)?.unwrap_or_default();
        let name = r.string_elt(name_v, 0)?.unwrap_or_default();
        validate_name(&name).map_err(|e| refuse(format!("output {name:?}: {e}")))?;
        if !names.insert(name.clone()) {
            return Err(refuse(format!("output {name:?} is published twice")));
        }
        if names.len() as u32 > limits.max_outputs {
            return Err(refuse(format!(
                "a run may publish at most {} outputs",
                limits.max_outputs
            )));
        }
        let size = match kind.as_str() {
            "json" => {
                let text = r.string_elt(value, 0)?.unwrap_or_else(|| "null".into());
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|e| refuse(format!("output {name}: not JSON ({e})")))?;
                let size = text.len();
                outputs.json.push((name, text));
                size
            }
            "file" => {
                let len = r.c("Rf_xlength", &[value])?;
                let p = r.c("RAW", &[value])?;
                let bytes = r.read(p as u32, len as usize)?;
                let size = bytes.len();
                outputs.files.push((name, bytes));
                size
            }
            "table" => {
                let mut budget = Budget {
                    left: limits.max_output_bytes.saturating_sub(used),
                    limit: limits.max_output_bytes,
                };
                let table = table_of(r, &name, value, &mut budget)?;
                let size = table.ipc.len();
                outputs.tables.push(table);
                size
            }
            other => return Err(refuse(format!("output {name}: unknown kind {other:?}"))),
        };
        used += size as u64;
        if used > limits.max_output_bytes {
            return Err(wasmtime::Error::new(RunError::OutputLimit(
                limits.max_output_bytes,
            )));
        }
    }
    r.unprotect(1)?;
    Ok(outputs)
}

/// What is left of the run's output budget while a table is built: counted before each
/// column or string is copied out of R, so a data frame the host would have to expand (a
/// vector of a million references to one long string takes a few megabytes inside R and
/// terabytes outside) ends the run at the limit instead of exhausting the host's memory.
struct Budget {
    left: u64,
    limit: u64,
}

impl Budget {
    fn spend(&mut self, bytes: u64) -> Result<()> {
        if bytes > self.left {
            return Err(wasmtime::Error::new(RunError::OutputLimit(self.limit)));
        }
        self.left -= bytes;
        Ok(())
    }
}

/// A published data frame (as `publish_table` prepared it: names, kinds, plain vectors, the
/// declared count columns).
fn table_of(r: &mut R, name: &str, value: i32, budget: &mut Budget) -> Result<TableOutput> {
    let names_v = r.c("VECTOR_ELT", &[value, 0])?;
    let kinds_v = r.c("VECTOR_ELT", &[value, 1])?;
    let cols = r.c("VECTOR_ELT", &[value, 2])?;
    let counts_v = r.c("VECTOR_ELT", &[value, 3])?;
    let mut counts = std::collections::BTreeSet::new();
    for i in 0..r.c("Rf_length", &[counts_v])? {
        counts.extend(r.string_elt(counts_v, i)?);
    }
    let ncol = r.c("Rf_length", &[cols])?;
    let na_real = r.na_real()?.to_bits();
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for i in 0..ncol {
        let col_name = r.string_elt(names_v, i)?.unwrap_or_default();
        let kind = r.string_elt(kinds_v, i)?.unwrap_or_default();
        let x = r.c("VECTOR_ELT", &[cols, i])?;
        let len = r.c("Rf_xlength", &[x])? as usize;
        let array: ArrayRef = match kind.as_str() {
            "double" | "date" | "datetime" => {
                budget.spend(len as u64 * 8)?;
                let p = r.c("REAL", &[x])?;
                let raw = r.read(p as u32, len * 8)?;
                let v: Vec<Option<f64>> = raw
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .map(|f| (f.to_bits() != na_real).then_some(f))
                    .collect();
                match kind.as_str() {
                    "date" => Arc::new(Date32Array::from(
                        v.iter().map(|f| f.map(|d| d as i32)).collect::<Vec<_>>(),
                    )),
                    "datetime" => Arc::new(
                        TimestampMicrosecondArray::from(
                            v.iter()
                                .map(|f| f.map(|s| (s * 1e6).round() as i64))
                                .collect::<Vec<_>>(),
                        )
                        .with_timezone("UTC"),
                    ),
                    _ => Arc::new(Float64Array::from(v)),
                }
            }
            "integer" | "logical" => {
                budget.spend(len as u64 * 4)?;
                let p = r.c(
                    if kind == "logical" {
                        "LOGICAL"
                    } else {
                        "INTEGER"
                    },
                    &[x],
                )?;
                let raw = r.read(p as u32, len * 4)?;
                let v: Vec<Option<i32>> = raw
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .map(|i| (i != NA_INT).then_some(i))
                    .collect();
                if kind == "logical" {
                    Arc::new(BooleanArray::from(
                        v.iter().map(|i| i.map(|b| b != 0)).collect::<Vec<_>>(),
                    ))
                } else {
                    Arc::new(Int32Array::from(v))
                }
            }
            "character" => {
                budget.spend(len as u64 * 4)?;
                let mut v = Vec::with_capacity(len);
                for j in 0..len {
                    let cell = r.string_elt(x, j as i32)?;
                    budget.spend(cell.as_ref().map_or(0, |c| c.len() as u64))?;
                    v.push(cell);
                }
                Arc::new(StringArray::from(v))
            }
            other => {
                return Err(refuse(format!(
                    "table {name}: column {col_name}: unknown kind {other}"
                )));
            }
        };
        let mut field = Field::new(col_name.clone(), array.data_type().clone(), true);
        if counts.contains(&col_name) {
            // Declared count columns, as `output.declare-counts` marks them for the policy.
            if !matches!(kind.as_str(), "integer" | "double") {
                return Err(refuse(format!(
                    "table {name}: count column {col_name} is not numeric"
                )));
            }
            field = field.with_metadata(std::collections::HashMap::from([(
                cleanroom_runtime::output::COUNT_METADATA.to_string(),
                "true".to_string(),
            )]));
        }
        fields.push(field);
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = if arrays.is_empty() {
        RecordBatch::new_empty(schema.clone())
    } else {
        RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| refuse(format!("table {name}: {e}")))?
    };
    let mut ipc = Vec::new();
    {
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut ipc, &schema)?;
        w.write(&batch)?;
        w.finish()?;
    }
    Ok(TableOutput {
        name: name.to_string(),
        schema,
        batches: vec![batch],
        ipc,
    })
}
