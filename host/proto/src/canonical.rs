//! Canonical bytes for signing and hashing: a domain-separation prefix followed by the
//! object's RFC 8785 (JSON Canonicalization Scheme) serialisation, by the `serde_jcs` crate.
//!
//! JCS sorts object keys and fixes number and string formatting, so the bytes do not depend on
//! struct field order, map implementations or serde_json's features. For every object this
//! protocol signs (ASCII keys, integers) they are the bytes of the first format (keys sorted by
//! their bytes, compact serde_json), so signatures made before still verify:
//! `tests/all/vectors.rs` pins them.

use serde::Serialize;

/// `domain || JCS(value)`.
pub(crate) fn canonical_bytes<T: Serialize>(domain: &[u8], value: &T) -> Vec<u8> {
    let mut out = domain.to_vec();
    out.extend(
        serde_jcs::to_vec(value)
            .expect("invariant: protocol objects serialize to JSON with string keys"),
    );
    out
}

/// The largest integer JCS represents exactly (JCS numbers are IEEE doubles).
pub(crate) const MAX_EXACT: u64 = (1 << 53) - 1;

/// Refuses an object with an integer JCS would round (beyond ±(2^53 − 1)): two such values
/// could share canonical bytes, and so a signature.
pub(crate) fn check_exact<T: Serialize>(value: &T) -> Result<(), String> {
    fn walk(v: &serde_json::Value) -> Result<(), String> {
        match v {
            serde_json::Value::Number(n) => {
                let exact = n.as_u64().map(|u| u <= MAX_EXACT).unwrap_or(true)
                    && n.as_i64()
                        .map(|i| i.unsigned_abs() <= MAX_EXACT)
                        .unwrap_or(true);
                if exact {
                    Ok(())
                } else {
                    Err(format!(
                        "{n} is beyond 2^53 - 1, which signed JSON cannot carry exactly"
                    ))
                }
            }
            serde_json::Value::Array(items) => items.iter().try_for_each(walk),
            serde_json::Value::Object(map) => map.values().try_for_each(walk),
            _ => Ok(()),
        }
    }
    walk(&serde_json::to_value(value).map_err(|e| e.to_string())?)
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
