//! The enclave side of cleanroom: a wasmtime sandbox that runs analysis
//! components over the tables a run was granted and keeps everything they
//! publish.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cleanroom_runtime::{Grants, Limits, MemTable, Runtime, RuntimeConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (schema, batches) = (Arc::new(arrow_schema::Schema::empty()), vec![]);
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let module = runtime.load(&std::fs::read("analysis.wasm")?)?;
//! let mut grants = Grants::new();
//! grants.insert("patients".into(), Arc::new(MemTable::new(schema, batches)));
//! let out = runtime.run(&module, grants, r#"{"min_group":10}"#, &Limits::default(), None)?;
//! for table in &out.outputs.tables {
//!     println!("{}: {} rows", table.name, table.num_rows());
//! }
//! # Ok(()) }
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod aggregate;
pub mod blocks;
mod compile_cache;
pub mod epoch;
pub mod error;
pub mod limits;
pub mod log;
pub mod output;
pub mod pipeline;
mod raw;
pub mod runtime;
mod state;
pub mod tables;
pub mod world;

pub use aggregate::{Aggregation, TableMode, TableTerms};
pub use error::{LoadError, RunError};
pub use limits::Limits;
pub use output::Outputs;
pub use runtime::{CancelToken, Module, RunOutput, RunStats, Runtime, RuntimeConfig};
pub use state::RunState;
pub use tables::{Grants, MemTable, TableSource};
