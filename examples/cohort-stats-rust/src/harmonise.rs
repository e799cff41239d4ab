//! Map each hospital's schema onto one admission record.
//!
//! Two layouts are recognised by their columns:
//! - site A: `age`, `sex` (M/F), `diagnosis` (ICD-10, e.g. `I21`),
//!   `admit_date`, `discharge_date`, `died` (0/1);
//! - site B: `birth_year`, `admit_year`, `gender` (male/female), `dx_code`
//!   (ICD-10 with subcode, e.g. `i21.4`), `los_days`, `outcome`
//!   (`discharged`/`deceased`).

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;

/// One admission in the common layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// Age at admission, years.
    pub age: f64,
    /// `F` or `M`.
    pub sex: &'static str,
    /// ICD-10 category: three characters, upper case (`I21`).
    pub diagnosis: String,
    /// Length of stay, days.
    pub los_days: f64,
    /// Died in hospital.
    pub died: bool,
}

/// Append the admissions in `batch` to `out`.
pub fn harmonise(batch: &RecordBatch, out: &mut Vec<Admission>) -> Result<(), String> {
    let has = |name: &str| batch.schema().index_of(name).is_ok();
    if has("diagnosis") && has("admit_date") {
        site_a(batch, out)
    } else if has("dx_code") && has("birth_year") {
        site_b(batch, out)
    } else {
        Err("unrecognised layout: expected site A (diagnosis, admit_date, ...) or site B (dx_code, birth_year, ...) columns".into())
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, String> {
    batch
        .column_by_name(name)
        .ok_or_else(|| format!("missing column {name:?}"))
}

/// A numeric column as f64 (CSV inference gives Int64 or Float64).
fn numbers(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>, String> {
    let col = column(batch, name)?;
    Ok(match col.data_type() {
        DataType::Int64 => col
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.map(|v| v as f64))
            .collect(),
        DataType::Float64 => col.as_primitive::<Float64Type>().iter().collect(),
        DataType::Date32 => col
            .as_primitive::<Date32Type>()
            .iter()
            .map(|v| v.map(f64::from))
            .collect(),
        other => {
            return Err(format!(
                "column {name:?} is {other}, expected a number or date"
            ));
        }
    })
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<Vec<Option<&'a str>>, String> {
    let col = column(batch, name)?;
    match col.data_type() {
        DataType::Utf8 => Ok(col.as_string::<i32>().iter().collect()),
        other => Err(format!("column {name:?} is {other}, expected text")),
    }
}

/// `i21.4` -> `I21`.
fn category(code: &str) -> String {
    code.trim()
        .chars()
        .filter(|c| *c != '.')
        .take(3)
        .collect::<String>()
        .to_uppercase()
}

fn site_a(batch: &RecordBatch, out: &mut Vec<Admission>) -> Result<(), String> {
    let age = numbers(batch, "age")?;
    let sex = strings(batch, "sex")?;
    let dx = strings(batch, "diagnosis")?;
    let admit = numbers(batch, "admit_date")?;
    let discharge = numbers(batch, "discharge_date")?;
    let died = numbers(batch, "died")?;
    for i in 0..batch.num_rows() {
        // Incomplete records are skipped rather than guessed.
        let (Some(age), Some(sex), Some(dx), Some(a), Some(d), Some(died)) =
            (age[i], sex[i], dx[i], admit[i], discharge[i], died[i])
        else {
            continue;
        };
        out.push(Admission {
            age,
            sex: if sex.eq_ignore_ascii_case("F") {
                "F"
            } else {
                "M"
            },
            diagnosis: category(dx),
            los_days: d - a,
            died: died != 0.0,
        });
    }
    Ok(())
}

fn site_b(batch: &RecordBatch, out: &mut Vec<Admission>) -> Result<(), String> {
    let birth = numbers(batch, "birth_year")?;
    let admit = numbers(batch, "admit_year")?;
    let gender = strings(batch, "gender")?;
    let dx = strings(batch, "dx_code")?;
    let los = numbers(batch, "los_days")?;
    let outcome = strings(batch, "outcome")?;
    for i in 0..batch.num_rows() {
        let (Some(b), Some(a), Some(g), Some(dx), Some(los), Some(outcome)) =
            (birth[i], admit[i], gender[i], dx[i], los[i], outcome[i])
        else {
            continue;
        };
        out.push(Admission {
            age: a - b,
            sex: if g.eq_ignore_ascii_case("female") {
                "F"
            } else {
                "M"
            },
            diagnosis: category(dx),
            los_days: los,
            died: outcome.eq_ignore_ascii_case("deceased"),
        });
    }
    Ok(())
}
