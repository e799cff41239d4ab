//! Conversions between Arrow arrays and the WIT `raw-column` layout, in
//! both directions: reads hand guests raw buffers, and guests without an
//! Arrow IPC writer publish tables as raw columns.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, make_array};
use arrow_buffer::{Buffer, NullBuffer};
use arrow_data::ArrayData;
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use wasmtime::component::{ComponentType, Lower};

use crate::world::tables::{DataType as WitType, RawColumn};

/// The simple WIT description of an Arrow type.
pub(crate) fn wit_type(t: &DataType) -> WitType {
    match t {
        DataType::Null => WitType::Null,
        DataType::Boolean => WitType::Boolean,
        DataType::Int8 => WitType::Int8,
        DataType::Int16 => WitType::Int16,
        DataType::Int32 => WitType::Int32,
        DataType::Int64 => WitType::Int64,
        DataType::UInt8 => WitType::Uint8,
        DataType::UInt16 => WitType::Uint16,
        DataType::UInt32 => WitType::Uint32,
        DataType::UInt64 => WitType::Uint64,
        DataType::Float32 => WitType::Float32,
        DataType::Float64 => WitType::Float64,
        DataType::Utf8 => WitType::Utf8,
        DataType::LargeUtf8 => WitType::LargeUtf8,
        DataType::Binary => WitType::Binary,
        DataType::LargeBinary => WitType::LargeBinary,
        DataType::Date32 => WitType::Date32,
        DataType::Timestamp(unit, tz) => {
            let unit = match unit {
                TimeUnit::Second => "s",
                TimeUnit::Millisecond => "ms",
                TimeUnit::Microsecond => "us",
                TimeUnit::Nanosecond => "ns",
            };
            WitType::Timestamp((unit.to_string(), tz.as_ref().map(|z| z.to_string())))
        }
        other => WitType::Other(other.to_string()),
    }
}

/// A column's buffers on their way to a guest: the WIT `raw-column` record,
/// lowered straight from the Arrow buffers (the component model's copy into
/// guest memory is the only copy).
#[derive(Debug, Clone, ComponentType, Lower)]
#[component(record)]
pub(crate) struct RawColumnOut {
    #[component(name = "data-type")]
    pub(crate) data_type: WitType,
    pub(crate) len: u64,
    #[component(name = "null-count")]
    pub(crate) null_count: u64,
    pub(crate) validity: Option<Bytes>,
    pub(crate) offsets: Option<Bytes>,
    pub(crate) values: Bytes,
}

impl RawColumnOut {
    /// Bytes this column hands to a guest.
    pub(crate) fn byte_len(&self) -> u64 {
        (self.values.len()
            + self.offsets.as_ref().map_or(0, Bytes::len)
            + self.validity.as_ref().map_or(0, Bytes::len)) as u64
    }

    /// The owned WIT record (copies the buffers).
    pub(crate) fn into_owned(self) -> RawColumn {
        RawColumn {
            data_type: self.data_type,
            len: self.len,
            null_count: self.null_count,
            validity: self.validity.map(|b| b.to_vec()),
            offsets: self.offsets.map(|b| b.to_vec()),
            values: self.values.to_vec(),
        }
    }
}

/// Lend (a slice of) an Arrow buffer without copying it.
fn lend(buffer: &Buffer, start: usize, len: usize) -> Bytes {
    Bytes::from_owner(buffer.slice_with_length(start, len))
}

/// The raw buffers of an array, re-based so offsets start at zero.
pub(crate) fn raw_column(array: &dyn Array) -> Result<RawColumnOut, String> {
    let data = array.to_data();
    let len = data.len();
    let offset = data.offset();
    let validity = data.nulls().filter(|n| n.null_count() > 0).map(|n| {
        let bits = n.inner().sliced();
        lend(&bits, 0, bits.len())
    });
    let data_type = data.data_type();
    let (offsets, values) = match data_type {
        DataType::Boolean => {
            let bits =
                arrow_buffer::BooleanBuffer::new(data.buffers()[0].clone(), offset, len).sliced();
            (None, lend(&bits, 0, bits.len()))
        }
        DataType::Utf8 | DataType::Binary => {
            let offs = &data.buffers()[0].typed_data::<i32>()[offset..=offset + len];
            let (start, end) = (offs[0] as usize, offs[len] as usize);
            let offsets = if offs[0] == 0 {
                lend(&data.buffers()[0], offset * 4, (len + 1) * 4)
            } else {
                let rebased: Vec<i32> = offs.iter().map(|o| o - offs[0]).collect();
                Bytes::from(Buffer::from_vec(rebased).as_slice().to_vec())
            };
            (Some(offsets), lend(&data.buffers()[1], start, end - start))
        }
        DataType::LargeUtf8 | DataType::LargeBinary => {
            let offs = &data.buffers()[0].typed_data::<i64>()[offset..=offset + len];
            let (start, end) = (offs[0] as usize, offs[len] as usize);
            let offsets = if offs[0] == 0 {
                lend(&data.buffers()[0], offset * 8, (len + 1) * 8)
            } else {
                let rebased: Vec<i64> = offs.iter().map(|o| o - offs[0]).collect();
                Bytes::from(Buffer::from_vec(rebased).as_slice().to_vec())
            };
            (Some(offsets), lend(&data.buffers()[1], start, end - start))
        }
        t if t.is_primitive() => {
            let width = t.primitive_width().expect("primitive types have a width");
            (None, lend(&data.buffers()[0], offset * width, len * width))
        }
        DataType::Null => (None, Bytes::new()),
        other => {
            return Err(format!(
                "column type {other} has no raw form; read the batch as Arrow IPC instead"
            ));
        }
    };
    Ok(RawColumnOut {
        data_type: wit_type(data_type),
        len: len as u64,
        null_count: data.null_count() as u64,
        validity,
        offsets,
        values,
    })
}

/// The Arrow type of a WIT type; `other` types cannot be built from raw buffers.
pub(crate) fn arrow_type(t: &WitType) -> Result<DataType, String> {
    Ok(match t {
        WitType::Null => DataType::Null,
        WitType::Boolean => DataType::Boolean,
        WitType::Int8 => DataType::Int8,
        WitType::Int16 => DataType::Int16,
        WitType::Int32 => DataType::Int32,
        WitType::Int64 => DataType::Int64,
        WitType::Uint8 => DataType::UInt8,
        WitType::Uint16 => DataType::UInt16,
        WitType::Uint32 => DataType::UInt32,
        WitType::Uint64 => DataType::UInt64,
        WitType::Float32 => DataType::Float32,
        WitType::Float64 => DataType::Float64,
        WitType::Utf8 => DataType::Utf8,
        WitType::LargeUtf8 => DataType::LargeUtf8,
        WitType::Binary => DataType::Binary,
        WitType::LargeBinary => DataType::LargeBinary,
        WitType::Date32 => DataType::Date32,
        WitType::Timestamp((unit, tz)) => {
            let unit = match unit.as_str() {
                "s" => TimeUnit::Second,
                "ms" => TimeUnit::Millisecond,
                "us" => TimeUnit::Microsecond,
                "ns" => TimeUnit::Nanosecond,
                other => {
                    return Err(format!(
                        "unknown timestamp unit {other:?}; use s, ms, us or ns"
                    ));
                }
            };
            DataType::Timestamp(unit, tz.as_deref().map(Arc::from))
        }
        WitType::Other(name) => {
            return Err(format!(
                "type {name} cannot be published as raw columns; publish Arrow IPC instead"
            ));
        }
    })
}

/// Build (and fully validate) an array from a guest's raw column.
pub(crate) fn array_from_raw(raw: RawColumn) -> Result<ArrayRef, String> {
    let data_type = arrow_type(&raw.data_type)?;
    let len =
        usize::try_from(raw.len).map_err(|_| "column length does not fit in memory".to_string())?;
    let nulls = match raw.validity {
        Some(bits) if bits.len() * 8 < len => {
            return Err(format!(
                "validity has {} bits for {len} values",
                bits.len() * 8
            ));
        }
        Some(bits) => Some(NullBuffer::new(arrow_buffer::BooleanBuffer::new(
            Buffer::from_vec(bits),
            0,
            len,
        ))),
        None => None,
    };
    let buffers = match (&data_type, raw.offsets) {
        (DataType::Null, _) => vec![],
        (
            DataType::Utf8 | DataType::Binary | DataType::LargeUtf8 | DataType::LargeBinary,
            Some(offsets),
        ) => vec![Buffer::from_vec(offsets), Buffer::from_vec(raw.values)],
        (DataType::Utf8 | DataType::Binary | DataType::LargeUtf8 | DataType::LargeBinary, None) => {
            return Err(format!("a {data_type} column needs offsets"));
        }
        _ => vec![Buffer::from_vec(raw.values)],
    };
    let data = ArrayData::try_new(
        data_type,
        len,
        nulls.map(|n| n.into_inner().into_inner()),
        0,
        buffers,
        vec![],
    )
    .map_err(|e| format!("invalid column buffers: {e}"))?;
    Ok(make_array(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::{Float64Array, StringArray};

    #[test]
    fn raw_column_rebases_sliced_strings() {
        let array = StringArray::from(vec![Some("ab"), None, Some("cde"), Some("f")]);
        let sliced = array.slice(2, 2);
        let raw = raw_column(&sliced).unwrap().into_owned();
        assert_eq!(raw.len, 2);
        assert_eq!(raw.values, b"cdef");
        let offsets: Vec<i32> = raw
            .offsets
            .unwrap()
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(offsets, [0, 3, 4]);
        assert!(raw.validity.is_none(), "the slice has no nulls");
    }

    #[test]
    fn raw_column_keeps_validity_of_floats() {
        let array = Float64Array::from(vec![Some(1.5), None, Some(2.0)]);
        let raw = raw_column(&array).unwrap().into_owned();
        assert_eq!(raw.values.len(), 24);
        assert_eq!(raw.validity.unwrap(), vec![0b101]);
        assert_eq!(raw.null_count, 1);
    }

    #[test]
    fn raw_columns_round_trip_and_bad_buffers_are_refused() {
        let array = StringArray::from(vec![Some("I21"), None, Some("J18")]);
        let back = array_from_raw(raw_column(&array).unwrap().into_owned()).unwrap();
        assert_eq!(back.as_string::<i32>(), &array);

        let mut raw = raw_column(&array).unwrap().into_owned();
        raw.values = vec![0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa];
        assert!(
            array_from_raw(raw)
                .unwrap_err()
                .contains("invalid column buffers")
        );

        let mut raw = raw_column(&Float64Array::from(vec![1.0, 2.0]))
            .unwrap()
            .into_owned();
        raw.len = 3;
        assert!(
            array_from_raw(raw).is_err(),
            "a short values buffer is refused"
        );
    }
}
