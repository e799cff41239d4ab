//! Tables as raw column buffers: batches without an Arrow decode, and typed views of their
//! values (the fast path of an analysis that reads numbers).

use super::*;

/// Iterator over a table's batches as raw column buffers.
#[derive(Debug)]
pub struct RawBatches<'a> {
    pub(crate) table: &'a Table,
}

impl Iterator for RawBatches<'_> {
    type Item = Result<RawBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.table.inner.next_batch() {
            Ok(Some(inner)) => Some(Ok(RawBatch { inner })),
            Ok(None) => None,
            Err(e) => Some(Err(e.into())),
        }
    }
}

/// One batch, read column by column without decoding IPC.
#[derive(Debug)]
pub struct RawBatch {
    inner: tables::Batch,
}

impl RawBatch {
    /// Rows in the batch.
    pub fn num_rows(&self) -> u64 {
        self.inner.num_rows()
    }

    /// The raw buffers of column `index`.
    pub fn column(&self, index: u32) -> Result<RawColumn> {
        Ok(self.inner.column(index)?)
    }
}

macro_rules! typed_view {
    ($name:ident, $t:ty, $($variant:ident)|+) => {
        /// The values as a typed vector (nulls read as whatever the buffer holds;
        /// check `validity`). Fails if the column is of another type.
        pub fn $name(&self) -> Result<Vec<$t>> {
            match self.data_type {
                $(DataType::$variant { .. })|+ => Ok(self
                    .values
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk has the type's width")))
                    .collect()),
                ref other => Err(Error(format!(
                    concat!("column is {:?}, not ", stringify!($t)),
                    other
                ))),
            }
        }
    };
}

/// Little-endian values of width `N` from a buffer.
fn le_values<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes
        .chunks_exact(N)
        .map(|c| c.try_into().expect("chunk has the type's width"))
}

impl RawColumn {
    typed_view!(to_i32, i32, Int32 | Date32);

    /// The values as `f64`, nulls as `None`. Integer and `float32` columns widen to `f64`
    /// (integers beyond 2^53 round, as in any numeric library).
    pub fn values_f64(&self) -> Result<Vec<Option<f64>>> {
        let values: Vec<f64> = match &self.data_type {
            DataType::Float64 => le_values::<8>(&self.values)
                .map(f64::from_le_bytes)
                .collect(),
            DataType::Float32 => le_values::<4>(&self.values)
                .map(|b| f64::from(f32::from_le_bytes(b)))
                .collect(),
            DataType::Int8 => self.values.iter().map(|&b| f64::from(b as i8)).collect(),
            DataType::Int16 => le_values::<2>(&self.values)
                .map(|b| f64::from(i16::from_le_bytes(b)))
                .collect(),
            DataType::Int32 => le_values::<4>(&self.values)
                .map(|b| f64::from(i32::from_le_bytes(b)))
                .collect(),
            DataType::Int64 => le_values::<8>(&self.values)
                .map(|b| i64::from_le_bytes(b) as f64)
                .collect(),
            DataType::Uint8 => self.values.iter().map(|&b| f64::from(b)).collect(),
            DataType::Uint16 => le_values::<2>(&self.values)
                .map(|b| f64::from(u16::from_le_bytes(b)))
                .collect(),
            DataType::Uint32 => le_values::<4>(&self.values)
                .map(|b| f64::from(u32::from_le_bytes(b)))
                .collect(),
            DataType::Uint64 => le_values::<8>(&self.values)
                .map(|b| u64::from_le_bytes(b) as f64)
                .collect(),
            other => return Err(not_numeric(other, "f64")),
        };
        Ok(self.with_nulls(values))
    }

    /// The values as `f64` (see [`RawColumn::values_f64`] for widening). Fails on a null
    /// value, saying which: use `values_f64()` to see nulls as `None`, or `sum_f64()`.
    pub fn to_f64(&self) -> Result<Vec<f64>> {
        no_nulls(self.values_f64()?, &self.data_type, "values_f64")
    }

    /// The values as `i64`, nulls as `None`: any integer column that fits (`uint64` values
    /// above `i64::MAX` are an error), `date32` (days) and timestamps (in their unit).
    pub fn values_i64(&self) -> Result<Vec<Option<i64>>> {
        let values: Vec<i64> = match &self.data_type {
            DataType::Int64 | DataType::Timestamp(_) => le_values::<8>(&self.values)
                .map(i64::from_le_bytes)
                .collect(),
            DataType::Int32 | DataType::Date32 => le_values::<4>(&self.values)
                .map(|b| i64::from(i32::from_le_bytes(b)))
                .collect(),
            DataType::Int16 => le_values::<2>(&self.values)
                .map(|b| i64::from(i16::from_le_bytes(b)))
                .collect(),
            DataType::Int8 => self.values.iter().map(|&b| i64::from(b as i8)).collect(),
            DataType::Uint8 => self.values.iter().map(|&b| i64::from(b)).collect(),
            DataType::Uint16 => le_values::<2>(&self.values)
                .map(|b| i64::from(u16::from_le_bytes(b)))
                .collect(),
            DataType::Uint32 => le_values::<4>(&self.values)
                .map(|b| i64::from(u32::from_le_bytes(b)))
                .collect(),
            DataType::Uint64 => le_values::<8>(&self.values)
                .map(|b| {
                    i64::try_from(u64::from_le_bytes(b)).map_err(|_| {
                        Error::msg("a uint64 value does not fit i64: call values_f64() instead")
                    })
                })
                .collect::<Result<_>>()?,
            DataType::Float32 | DataType::Float64 => {
                return Err(Error(format!(
                    "column is {:?}, not an integer: call to_f64() or values_f64()",
                    self.data_type
                )));
            }
            other => return Err(not_numeric(other, "i64")),
        };
        Ok(self.with_nulls(values))
    }

    /// The values as `i64` (see [`RawColumn::values_i64`]). Fails on a null value, saying
    /// which: use `values_i64()` to see nulls as `None`.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        no_nulls(self.values_i64()?, &self.data_type, "values_i64")
    }

    fn with_nulls<T>(&self, values: Vec<T>) -> Vec<Option<T>> {
        values
            .into_iter()
            .take(usize::try_from(self.len).unwrap_or(usize::MAX))
            .enumerate()
            .map(|(i, v)| self.is_valid(i).then_some(v))
            .collect()
    }

    /// Sum of a `float64` column's non-null values, without copying the values.
    pub fn sum_f64(&self) -> Result<f64> {
        if !matches!(self.data_type, DataType::Float64) {
            return Err(Error(format!("column is {:?}, not f64", self.data_type)));
        }
        let values = f64_slice(&self.values);
        Ok(match &self.validity {
            None => sum_f64(&values),
            Some(bits) => values
                .iter()
                .enumerate()
                .filter(|(i, _)| bits[i / 8] & (1 << (i % 8)) != 0)
                .map(|(_, v)| v)
                .sum(),
        })
    }

    /// Whether value `i` is valid (not null).
    pub fn is_valid(&self, i: usize) -> bool {
        self.validity
            .as_ref()
            .is_none_or(|bits| bits[i / 8] & (1 << (i % 8)) != 0)
    }

    /// The strings of a `utf8` column (nulls as `None`).
    pub fn to_strings(&self) -> Result<Vec<Option<&str>>> {
        if !matches!(self.data_type, DataType::Utf8) {
            return Err(Error(format!("column is {:?}, not utf8", self.data_type)));
        }
        let offsets = self
            .offsets
            .as_ref()
            .ok_or_else(|| Error::msg("utf8 column without offsets"))?;
        let offs: Vec<usize> = offsets
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4-byte chunk")) as usize)
            .collect();
        (0..self.len as usize)
            .map(|i| {
                if !self.is_valid(i) {
                    return Ok(None);
                }
                std::str::from_utf8(&self.values[offs[i]..offs[i + 1]])
                    .map(Some)
                    .map_err(|e| Error(format!("invalid utf8 in column: {e}")))
            })
            .collect()
    }
}

/// Sum with eight independent accumulators in a fixed order: the loop
/// vectorises (natively and with wasm `simd128`) and the result is the same
/// on every platform.
pub fn sum_f64(values: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    let mut sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for v in rest {
        sum += v;
    }
    sum
}

/// View little-endian f64 bytes as `&[f64]`, copying only if misaligned.
fn not_numeric(data_type: &DataType, wanted: &str) -> Error {
    let hint = match data_type {
        DataType::Utf8 | DataType::LargeUtf8 => "call to_strings()",
        DataType::Boolean => "read its bit-packed values buffer",
        _ => "decode the batch with Table::batches() (arrow-rs)",
    };
    Error(format!(
        "column is {data_type:?}, not a number that widens to {wanted}: {hint}"
    ))
}

fn no_nulls<T>(values: Vec<Option<T>>, data_type: &DataType, instead: &str) -> Result<Vec<T>> {
    if let Some(i) = values.iter().position(Option::is_none) {
        return Err(Error(format!(
            "value {i} of this {data_type:?} column is null: call {instead}() to see nulls as \
             None (sum_f64() skips them)"
        )));
    }
    Ok(values.into_iter().flatten().collect())
}

fn f64_slice(bytes: &[u8]) -> std::borrow::Cow<'_, [f64]> {
    // SAFETY: every bit pattern is a valid f64, and `align_to` only yields
    // the aligned middle part.
    let (head, mid, tail) = unsafe { bytes.align_to::<f64>() };
    if head.is_empty() && tail.is_empty() {
        std::borrow::Cow::Borrowed(mid)
    } else {
        std::borrow::Cow::Owned(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect(),
        )
    }
}

#[cfg(test)]
mod typed_view_tests {
    use super::*;

    fn column(data_type: DataType, values: Vec<u8>, validity: Option<Vec<u8>>) -> RawColumn {
        let width = match data_type {
            DataType::Int8 | DataType::Uint8 => 1,
            DataType::Int16 => 2,
            DataType::Int32 | DataType::Float32 | DataType::Date32 => 4,
            _ => 8,
        };
        RawColumn {
            len: (values.len() / width) as u64,
            null_count: 0,
            data_type,
            validity,
            offsets: None,
            values,
        }
    }

    #[test]
    fn integers_widen_to_f64_and_nulls_are_none_or_an_error_that_says_what_to_call() {
        let ints: Vec<u8> = [30i64, 41, 52]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let age = column(DataType::Int64, ints.clone(), None);
        assert_eq!(age.to_f64().unwrap(), vec![30.0, 41.0, 52.0]);
        assert_eq!(age.to_i64().unwrap(), vec![30, 41, 52]);
        // The second value null (bit 1 clear).
        let with_null = column(DataType::Int64, ints, Some(vec![0b101]));
        assert_eq!(
            with_null.values_f64().unwrap(),
            vec![Some(30.0), None, Some(52.0)]
        );
        let err = with_null.to_f64().unwrap_err().to_string();
        assert!(
            err.contains("value 1") && err.contains("values_f64()"),
            "{err}"
        );
        let small: Vec<u8> = [-3i16, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            column(DataType::Int16, small, None).to_f64().unwrap(),
            vec![-3.0, 7.0]
        );
    }

    #[test]
    fn the_wrong_kind_of_column_says_what_to_call_instead() {
        let floats: Vec<u8> = [1.5f64].iter().flat_map(|v| v.to_le_bytes()).collect();
        let err = column(DataType::Float64, floats, None)
            .to_i64()
            .unwrap_err()
            .to_string();
        assert!(err.contains("to_f64()"), "{err}");
        let text = column(DataType::Utf8, b"abc".to_vec(), None);
        let err = text.to_f64().unwrap_err().to_string();
        assert!(err.contains("to_strings()"), "{err}");
        let huge = column(DataType::Uint64, u64::MAX.to_le_bytes().to_vec(), None);
        assert!(huge.to_i64().is_err());
        assert_eq!(huge.to_f64().unwrap(), vec![u64::MAX as f64]);
    }
}
