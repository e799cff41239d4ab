//! All integration tests, in one binary (one `mod` per area).

#![allow(clippy::unwrap_used)] // tests and their helpers fail loudly by design

mod cli;
mod cluster;
mod crash;
mod dp;
mod egress;
pub(crate) mod examples;
mod guide;
mod image;
mod load;
mod modules;
mod pipelines;
mod programs;
mod r;
mod server;
mod sql;
mod tls;
mod upgrade;

use std::sync::{Arc, OnceLock};

use cleanroom_runtime::{Grants, Limits, MemTable, Runtime, RuntimeConfig, TableSource};

/// One runtime shared by every test, as in the enclave: runs must not
/// affect each other.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(RuntimeConfig::default()).expect("runtime starts"))
}

/// Grants from (name, table) pairs.
pub fn grants(tables: &[(&str, MemTable)]) -> Grants {
    tables
        .iter()
        .map(|(name, t)| {
            (
                name.to_string(),
                Arc::new(t.clone()) as Arc<dyn TableSource>,
            )
        })
        .collect()
}

/// Limits small enough that hostile programs hit them quickly.
pub fn tight_limits() -> Limits {
    Limits {
        max_memory_bytes: 256 << 20,
        timeout: std::time::Duration::from_secs(2),
        max_output_bytes: 4 << 20,
        max_log_bytes: 64 << 10,
        ..Limits::default()
    }
}
