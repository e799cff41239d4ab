//! What leaves is what a reviewer sees: outputs in one canonical form.
//!
//! A reviewer reads an output through a viewer (the console, `cleanroom review show`), and a
//! viewer shows a decoded form of the bytes: one value per JSON key, the cells of an Arrow
//! table. Whatever the bytes carry beside that form would leave unseen: a JSON object's
//! repeated key (viewers show one of the two values), Arrow schema and field metadata, the
//! values stored under null cells, dictionary entries no row uses, the bytes a view array's
//! buffers hold beyond its strings, the payload bits of a NaN. So the enclave decides on, shows
//! and releases only the canonical form: JSON re-serialised (compact, keys in order) and
//! refused if it repeats a key; tables rebuilt from their cells.
//!
//! Not canonicalised: the children of nested columns (lists, structs, maps), which the host
//! never checks and holds for review or refuses as unchecked; files, which are bytes by
//! nature and are shown as bytes.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, Scalar, new_null_array};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::egress::{COUNT_METADATA, MODEL_N_METADATA, MODEL_PARAMS_METADATA, TOTAL_METADATA};

/// The canonical bytes of a JSON document, or `None` if it is not one document a viewer
/// shows whole (not JSON, or an object that repeats a key). Compact, object keys sorted
/// (`serde_json`'s map), floats exact (`float_roundtrip`), integers beyond 64 bits as the
/// nearest float.
pub fn json(bytes: &[u8]) -> Option<Vec<u8>> {
    let Unique(value) = serde_json::from_slice(bytes).ok()?;
    serde_json::to_vec(&value).ok()
}

/// A JSON value whose objects repeat no key.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(v) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom("an object repeats a key"));
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// A table rebuilt from its cells: metadata only where the host reads it (and only in the
/// form it reads: a count marker, a total's columns, a model's size), dictionaries and views decoded, values under
/// nulls zeroed, NaNs the one canonical NaN.
pub fn table(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut fields = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let kept: std::collections::HashMap<String, String> = f
            .metadata()
            .iter()
            .filter(|(k, v)| match k.as_str() {
                COUNT_METADATA => v.as_str() == "true",
                TOTAL_METADATA => v.split(',').all(|n| names.contains(&n.trim())),
                _ => false,
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fields.push(
            Field::new(f.name(), canonical_type(f.data_type()), f.is_nullable())
                .with_metadata(kept),
        );
    }
    // Schema metadata: only a model's size, as the residual-df rule reads it.
    let model: std::collections::HashMap<String, String> = schema
        .metadata()
        .iter()
        .filter(|(k, v)| {
            matches!(k.as_str(), MODEL_N_METADATA | MODEL_PARAMS_METADATA)
                && v.parse::<i128>().is_ok()
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let out_schema = Arc::new(Schema::new(fields).with_metadata(model));
    let out = batches
        .iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .map(column)
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(out_schema.clone(), columns)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((out_schema, out))
}

/// The type a column is released as (dictionaries and views decoded).
fn canonical_type(t: &DataType) -> DataType {
    match t {
        DataType::Dictionary(_, values) => canonical_type(values),
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    }
}

fn column(col: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let target = canonical_type(col.data_type());
    let col = if &target == col.data_type() {
        col.clone()
    } else {
        arrow_cast::cast(col, &target)?
    };
    let col: ArrayRef = match col.data_type() {
        DataType::Float64 => Arc::new(
            col.as_primitive::<Float64Type>()
                .unary::<_, Float64Type>(|v| if v.is_nan() { f64::NAN } else { v }),
        ),
        DataType::Float32 => Arc::new(
            col.as_primitive::<Float32Type>()
                .unary::<_, Float32Type>(|v| if v.is_nan() { f32::NAN } else { v }),
        ),
        _ => col,
    };
    if col.data_type() == &DataType::Null {
        return Ok(col);
    }
    // Rebuilt cell by cell: a null slot is taken from a null (zeroed) array, and the buffers
    // hold only what the rows reference.
    let valid = BooleanArray::new(
        match col.logical_nulls() {
            Some(nulls) => nulls.inner().clone(),
            None => arrow_buffer::BooleanBuffer::new_set(col.len()),
        },
        None,
    );
    let null = Scalar::new(new_null_array(col.data_type(), 1));
    arrow_select::zip::zip(&valid, &col, &null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array, StringArray};

    #[test]
    fn json_is_compact_and_refuses_a_repeated_key() {
        assert_eq!(
            json(b"{ \"a\": [1, 2],\n \"b\" : 1.50 }").unwrap(),
            br#"{"a":[1,2],"b":1.5}"#
        );
        assert_eq!(json(br#"{"a": 1, "a": "PAT-00007"}"#), None);
        assert_eq!(json(br#"[{"x": {"y": 1, "y": 2}}]"#), None);
        assert_eq!(json(b"{\"a\": 1} trailing"), None);
    }

    #[test]
    fn a_table_keeps_its_cells_and_nothing_else() {
        // Values under nulls, metadata and a NaN payload: each a place to hide a secret.
        let ints = Int64Array::new(vec![1, 424_242].into(), Some(vec![true, false].into()));
        let nan = f64::from_bits(0x7ff8_0000_dead_beef);
        let floats = Float64Array::from(vec![nan, 2.0]);
        let strings = StringArray::from(vec![Some("a"), None]);
        let schema = Arc::new(
            Schema::new(vec![
                Field::new("n", DataType::Int64, true).with_metadata(
                    std::collections::HashMap::from([
                        (COUNT_METADATA.to_string(), "true".to_string()),
                        ("secret".to_string(), "PAT-00007".to_string()),
                    ]),
                ),
                Field::new("x", DataType::Float64, false),
                Field::new("s", DataType::Utf8, true),
            ])
            .with_metadata(std::collections::HashMap::from([
                ("secret".to_string(), "PAT-00007".to_string()),
                (MODEL_N_METADATA.to_string(), "100".to_string()),
                (MODEL_PARAMS_METADATA.to_string(), "PAT-00007".to_string()),
            ])),
        );
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(ints), Arc::new(floats), Arc::new(strings)],
        )
        .unwrap();
        let (schema, batches) = table(&schema, &[batch]).unwrap();
        assert_eq!(
            schema.metadata().keys().collect::<Vec<_>>(),
            [MODEL_N_METADATA],
            "only a model size that is a number"
        );
        assert_eq!(
            schema.field(0).metadata().keys().collect::<Vec<_>>(),
            [COUNT_METADATA]
        );
        let n = batches[0]
            .column(0)
            .as_primitive::<arrow_array::types::Int64Type>();
        assert!(n.is_null(1));
        assert_eq!(n.values()[1], 0, "the value under the null is gone");
        let x = batches[0].column(1).as_primitive::<Float64Type>().value(0);
        assert_eq!(x.to_bits(), f64::NAN.to_bits());
    }
}
