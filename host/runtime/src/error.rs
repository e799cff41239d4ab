//! Errors of the sandbox runtime.

use std::time::Duration;

/// Why a component could not be loaded as an analysis.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly component: {0}")]
    NotWasm(String),
    /// A core module was given where a component is expected.
    #[error(
        "this is a core WebAssembly module, not a component: build for the `wasm32-wasip2` target \
         (Rust) or with `componentize-py` (Python), or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    /// The component failed validation or compilation.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component is valid but does not target the `cleanroom:analysis/analysis` world.
    #[error(
        "component does not fit the cleanroom:analysis world: {0}; build it against the WIT in `wit/`"
    )]
    WrongWorld(String),
    /// The engine could not be configured.
    #[error("failed to configure the wasm engine: {0}")]
    Engine(String),
}

/// Why a run ended without success. Every variant is a decision about *this*
/// run only: the runtime keeps serving and the next run starts fresh.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The analysis returned an error from `run`.
    #[error("analysis failed: {0}")]
    Failed(String),
    /// The analysis exceeded its wall-clock budget.
    #[error(
        "analysis timed out after {0:?}; raise the limit with --timeout if the work is legitimate"
    )]
    Timeout(Duration),
    /// The analysis tried to grow its memory past the limit.
    #[error(
        "analysis exceeded its memory limit of {limit_bytes} bytes; \
         raise the limit with --max-memory or process the table batch by batch"
    )]
    MemoryLimit {
        /// The configured limit (what the guest asked for is its own business, and an output).
        limit_bytes: u64,
    },
    /// The analysis overflowed its call stack (usually unbounded recursion).
    #[error("analysis overflowed its stack (unbounded recursion?)")]
    StackOverflow,
    /// The analysis published more output bytes than allowed.
    #[error(
        "analysis exceeded its output limit of {0} bytes; publish aggregates rather than row-level data, or raise --max-output"
    )]
    OutputLimit(u64),
    /// The analysis wrote more log bytes than allowed.
    #[error("analysis exceeded its log limit of {0} bytes")]
    LogLimit(u64),
    /// The run's parameters are larger than allowed.
    #[error("run parameters are {size} bytes, more than the limit of {limit} bytes")]
    ParamsTooLarge {
        /// Size of the given params.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The analysis exceeded a sandbox resource limit (live batch handles, rewinds).
    #[error("analysis exceeded the sandbox's limit of {limit} {what}")]
    ResourceLimit {
        /// What ran out.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The run was cancelled by its owner.
    #[error("run cancelled")]
    Cancelled,
    /// The analysis trapped (a bug in the analysis, e.g. a panic or an out-of-bounds access).
    #[error("analysis crashed: {0}")]
    Trap(String),
    /// The host itself failed; the run's inputs and the analysis are not at fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RunError {
    /// A short stable machine-readable name of the error kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Failed(_) => "failed",
            Self::Timeout(_) => "timeout",
            Self::MemoryLimit { .. } => "memory-limit",
            Self::StackOverflow => "stack-overflow",
            Self::OutputLimit(_) => "output-limit",
            Self::LogLimit(_) => "log-limit",
            Self::ParamsTooLarge { .. } => "params-too-large",
            Self::ResourceLimit { .. } => "resource-limit",
            Self::Cancelled => "cancelled",
            Self::Trap(_) => "trap",
            Self::Internal(_) => "internal",
        }
    }
}

/// Result of loading a component.
pub type LoadResult<T> = std::result::Result<T, LoadError>;

/// Result of a run.
pub type RunResult<T> = std::result::Result<T, RunError>;
