//! Conversions between Arrow arrays and the WIT `raw-column` layout, in
//! both directions: reads hand guests raw buffers, and guests without an
//! Arrow IPC writer publish tables as raw columns.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, make_array};
use arrow_buffer::{Buffer, NullBuffer};
use arrow_data::ArrayData;
use arrow_schema::{DataType, TimeUnit};

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

/// The raw buffers of an array, re-based so offsets start at zero.
pub(crate) fn raw_column(array: &dyn Array) -> Result<RawColumn, String> {
    let data = array.to_data();
    let len = data.len();
    let offset = data.offset();
    let validity = data
        .nulls()
        .filter(|n| n.null_count() > 0)
        .map(|n| n.inner().sliced().as_slice().to_vec());
    let data_type = data.data_type();
    let (offsets, values) = match data_type {
        DataType::Boolean => {
            let values = arrow_buffer::BooleanBuffer::new(data.buffers()[0].clone(), offset, len);
            (None, values.sliced().as_slice().to_vec())
        }
        DataType::Utf8 | DataType::Binary => {
            let offs = data.buffers()[0].typed_data::<i32>();
            let offs = &offs[offset..=offset + len];
            let (start, end) = (offs[0] as usize, offs[len] as usize);
            let rebased: Vec<i32> = offs.iter().map(|o| o - offs[0]).collect();
            (
                Some(Buffer::from_vec(rebased).as_slice().to_vec()),
                data.buffers()[1].as_slice()[start..end].to_vec(),
            )
        }
        DataType::LargeUtf8 | DataType::LargeBinary => {
            let offs = data.buffers()[0].typed_data::<i64>();
            let offs = &offs[offset..=offset + len];
            let (start, end) = (offs[0] as usize, offs[len] as usize);
            let rebased: Vec<i64> = offs.iter().map(|o| o - offs[0]).collect();
            (
                Some(Buffer::from_vec(rebased).as_slice().to_vec()),
                data.buffers()[1].as_slice()[start..end].to_vec(),
            )
        }
        t if t.is_primitive() => {
            let width = t.primitive_width().expect("primitive types have a width");
            let bytes = &data.buffers()[0].as_slice()[offset * width..(offset + len) * width];
            (None, bytes.to_vec())
        }
        DataType::Null => (None, Vec::new()),
        other => {
            return Err(format!(
                "column type {other} has no raw form; read the batch as Arrow IPC instead"
            ));
        }
    };
    Ok(RawColumn {
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
        let raw = raw_column(&sliced).unwrap();
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
        let raw = raw_column(&array).unwrap();
        assert_eq!(raw.values.len(), 24);
        assert_eq!(raw.validity.unwrap(), vec![0b101]);
        assert_eq!(raw.null_count, 1);
    }

    #[test]
    fn raw_columns_round_trip_and_bad_buffers_are_refused() {
        let array = StringArray::from(vec![Some("I21"), None, Some("J18")]);
        let back = array_from_raw(raw_column(&array).unwrap()).unwrap();
        assert_eq!(back.as_string::<i32>(), &array);

        let mut raw = raw_column(&array).unwrap();
        raw.values = vec![0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa];
        assert!(
            array_from_raw(raw)
                .unwrap_err()
                .contains("invalid column buffers")
        );

        let mut raw = raw_column(&Float64Array::from(vec![1.0, 2.0])).unwrap();
        raw.len = 3;
        assert!(
            array_from_raw(raw).is_err(),
            "a short values buffer is refused"
        );
    }
}
