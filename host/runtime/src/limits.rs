//! Per-run resource limits and their enforcement.

use std::time::Duration;

use crate::error::RunError;

/// Default memory cap for one run: 4 GiB (the whole 32-bit address space).
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 4 << 30;
/// Default wall-clock budget for one run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default budget of published output bytes for one run.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 64 << 20;
/// Default budget of log bytes (log lines, stdout and stderr) for one run.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 1 << 20;
/// Default number of table handles a run may open.
pub const DEFAULT_MAX_OPEN_TABLES: u32 = 64;
/// Default largest params string accepted.
pub const DEFAULT_MAX_PARAMS_BYTES: usize = 1 << 20;
/// Default largest number of outputs (tables, JSON values, files) one run may publish.
pub const DEFAULT_MAX_OUTPUTS: u32 = 32;
/// Default number of batch handles a guest may hold at once.
pub const DEFAULT_MAX_LIVE_BATCHES: u32 = 1024;
/// Default number of `rewind` calls in one run.
pub const DEFAULT_MAX_REWINDS: u32 = 64;

/// The limits of one run. The same defaults apply in the enclave and in
/// `cleanroom run-local`, so a run that fits locally fits in the clean room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory (and sum of memories) the guest may grow to.
    pub max_memory_bytes: u64,
    /// Time budget of the guest's own work, enforced by epoch interruption. Time the host
    /// spends in aggregates is not counted (nor shown to the guest's clocks): it depends on
    /// the rows, and a guest must not learn it by being stopped, or not, at the limit.
    pub timeout: Duration,
    /// Budget of published output bytes.
    pub max_output_bytes: u64,
    /// Budget of log bytes.
    pub max_log_bytes: u64,
    /// Table handles the guest may open.
    pub max_open_tables: u32,
    /// Largest params string.
    pub max_params_bytes: usize,
    /// Largest number of published outputs.
    pub max_outputs: u32,
    /// Batch handles the guest may hold at once.
    pub max_live_batches: u32,
    /// `rewind` calls allowed in one run (each re-reads, and re-decrypts, a table).
    pub max_rewinds: u32,
    /// Where the guest's wall clock starts (`None`: when the run starts). Sample and
    /// aggregate gives every block the run's start, so no block learns from the clock how
    /// long the blocks before it took.
    pub wall_clock_origin: Option<std::time::SystemTime>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            timeout: DEFAULT_TIMEOUT,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            max_open_tables: DEFAULT_MAX_OPEN_TABLES,
            max_params_bytes: DEFAULT_MAX_PARAMS_BYTES,
            max_outputs: DEFAULT_MAX_OUTPUTS,
            max_live_batches: DEFAULT_MAX_LIVE_BATCHES,
            max_rewinds: DEFAULT_MAX_REWINDS,
            wall_clock_origin: None,
        }
    }
}

/// Enforces the memory limit and remembers why growth was refused, so the
/// run ends with a typed error instead of an opaque trap.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: u64,
    total: u64,
    /// Table elements allowed per table.
    max_table_elements: usize,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            total: 0,
            max_table_elements: 1 << 20,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = (desired - current) as u64;
        let requested = self.total + growth;
        if requested > self.limit {
            return Err(wasmtime::Error::new(RunError::MemoryLimit {
                limit_bytes: self.limit,
            }));
        }
        self.total = requested;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }
}
