//! Canonical bytes for signing and hashing: a domain-separation prefix followed by compact JSON
//! with object keys sorted by their bytes, at every level.
//!
//! Sorting keys makes the bytes independent of struct field order and of serde_json's
//! `preserve_order` feature, so the signer and the verifier agree as long as both use this crate.

use serde::Serialize;
use serde_json::Value;

/// `domain || canonical JSON of value`.
pub(crate) fn canonical_bytes<T: Serialize>(domain: &[u8], value: &T) -> Vec<u8> {
    let value = serde_json::to_value(value)
        .expect("invariant: protocol objects serialize to JSON with string keys");
    let mut out = domain.to_vec();
    write_value(&value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_value(item, out);
            }
            out.push(b'}');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    serde_json::to_writer(out, value).expect("invariant: writing JSON to a Vec cannot fail");
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
