//! R analyses: full GNU R (webR's Emscripten build of R 4.6, fetched and pinned by
//! `scripts/build-r.sh`) in a wasmtime store with the same limits as every guest, over the
//! granted tables as R data frames, publishing through the same outputs and rules.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cleanroom_runtime::{Grants, Limits};
//! use cleanroom_r::REngine;
//! let engine = REngine::load(std::path::Path::new("/root/.cache/cleanroom-r/KEY"))?;
//! let out = engine.run(&Grants::new(), "cleanroom::publish_json('x', 1 + 1)", &Limits::default(), None)?;
//! assert_eq!(out.outputs.json[0].1, "2");
//! # Ok(()) }
//! ```
//!
//! A run boots R in a fresh store (R.wasm's memory, table and side modules are the run's
//! alone), defines the `cleanroom` R API (`cleanroom.R`), hands each granted table to R as a
//! data frame built through R's C API, evaluates the script expression by expression, and reads
//! back what it published. R's stdout and stderr are the run's log; an R error ends the run
//! with R's message as the error text (an output like any other).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod emscripten;
mod frames;
mod vfs;

use std::path::Path;
use std::time::Instant;

use sha2::{Digest, Sha256};

use cleanroom_runtime::epoch::{EpochTicker, classify_trap as classify};
use cleanroom_runtime::error::{LoadError, RunError};
use cleanroom_runtime::log::LogBuffer;
use cleanroom_runtime::{CancelToken, Grants, Limits, RunOutput, RunStats};

/// The `cleanroom` R API, evaluated before every analysis.
const PRELUDE: &str = include_str!("../../../guest-sdk/r/cleanroom.R");

/// The files of the R engine (the directory `scripts/build-r.sh` prints).
pub const ENGINE_FILES: [&str; 3] = ["R.wasm", "libRblas.so", "libRlapack.so"];

/// GNU R, compiled once, started fresh for every run.
pub struct REngine {
    inner: emscripten::REngine,
    digest: String,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for REngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("REngine")
            .field("digest", &self.digest)
            .finish()
    }
}

/// The engine's identity: SHA-256 over a domain separator and the SHA-256 of each file, in
/// [`ENGINE_FILES`] order. Owners grant it as the module of R runs and pin the script by the
/// params digest, as they do for the SQL engine.
pub fn engine_digest(files: &[Vec<u8>]) -> String {
    let mut h = Sha256::new();
    h.update(b"cleanroom/r-engine/v1\n");
    for f in files {
        h.update(Sha256::digest(f));
    }
    hex::encode(h.finalize())
}

impl REngine {
    /// Compile the engine in `dir` (R.wasm, libRblas.so, libRlapack.so).
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let files = ENGINE_FILES
            .iter()
            .map(|name| {
                std::fs::read(dir.join(name)).map_err(|e| {
                    LoadError::Engine(format!(
                        "the R engine needs {} ({e}): build it with scripts/build-r.sh",
                        dir.join(name).display()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let digest = engine_digest(&files);
        let inner = emscripten::REngine::new(&files[0], &files[1], &files[2])
            .map_err(|e| LoadError::Engine(format!("cannot load the R engine: {e:#}")))?;
        // Epoch ticks bound every run's wall time, as in the component runtime.
        let ticker = EpochTicker::start(inner.engine(), "cleanroom-r-epoch")
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        Ok(Self {
            inner,
            digest,
            _ticker: ticker,
        })
    }

    /// The engine's module id ([`engine_digest`]).
    pub fn id(&self) -> &str {
        &self.digest
    }

    /// Run `script` over `grants` within `limits`.
    pub fn run(
        &self,
        grants: &Grants,
        script: &str,
        limits: &Limits,
        cancel: Option<&CancelToken>,
    ) -> Result<RunOutput, RunError> {
        if script.len() > limits.max_params_bytes {
            return Err(RunError::ParamsTooLarge {
                size: script.len(),
                limit: limits.max_params_bytes,
            });
        }
        let start = Instant::now();
        let log = LogBuffer::new(limits.max_log_bytes);
        let (timeout, cancel) = (limits.timeout, cancel.cloned());
        let deadline = move || {
            if cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
                return Err(RunError::Cancelled);
            }
            if start.elapsed() >= timeout {
                return Err(RunError::Timeout(timeout));
            }
            Ok(())
        };
        let mut r = self
            .inner
            .start(log.clone(), limits.max_memory_bytes, deadline)
            .map_err(classify)?;
        if let Err(message) = r.eval(PRELUDE).map_err(classify)? {
            return Err(RunError::Internal(format!(
                "the cleanroom R API did not load: {message}"
            )));
        }
        let mut bytes_read = 0;
        for (name, table) in grants {
            bytes_read += frames::deliver(&mut r, name, table.as_ref()).map_err(classify)?;
        }
        if let Err(message) = r.eval(script).map_err(classify)? {
            return Err(RunError::Failed(message));
        }
        let outputs = frames::collect(&mut r, limits).map_err(classify)?;
        let bytes_published = outputs_size(&outputs);
        Ok(RunOutput {
            outputs,
            logs: log.finish(),
            stats: RunStats {
                elapsed: start.elapsed(),
                bytes_read,
                bytes_published,
            },
        })
    }
}

fn outputs_size(o: &cleanroom_runtime::Outputs) -> u64 {
    let tables: usize = o.tables.iter().map(|t| t.ipc.len()).sum();
    let json: usize = o.json.iter().map(|(_, j)| j.len()).sum();
    let files: usize = o.files.iter().map(|(_, f)| f.len()).sum();
    (tables + json + files) as u64
}
