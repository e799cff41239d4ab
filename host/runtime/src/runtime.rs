//! The sandbox runtime: one engine, a cache of compiled analyses, and runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Strategy,
    UpdateDeadline,
};

use crate::aggregate::Aggregation;
use crate::error::{LoadError, LoadResult, RunError, RunResult};
use crate::limits::{DEFAULT_MAX_MEMORY_BYTES, Limits};
use crate::log::LogLine;
use crate::output::Outputs;
use crate::state::RunState;
use crate::tables::Grants;
use crate::world::AnalysisPre;

pub use crate::epoch::EPOCH_TICK;
/// Default number of runs that may be instantiated at once.
pub const DEFAULT_MAX_CONCURRENT_RUNS: u32 = 32;

/// Engine-wide settings. Per-run limits are in [`Limits`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The largest memory any run may be given; per-run limits may be lower.
    pub max_memory_bytes: u64,
    /// Runs instantiated at once (slots in the pooling allocator).
    pub max_concurrent_runs: u32,
    /// A directory for Cranelift's incremental compilation cache (compiled functions by the
    /// digest of their IR), or `None`. Only for a disk the user owns: entries are native code.
    /// The CLI sets it; the enclave never does.
    pub compile_cache: Option<std::path::PathBuf>,
    /// Write `/tmp/perf-PID.map` so `perf` names the guests' functions (benchmarks' profiles;
    /// cleanroomd never sets it).
    pub perf_map: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            max_concurrent_runs: DEFAULT_MAX_CONCURRENT_RUNS,
            compile_cache: None,
            perf_map: false,
        }
    }
}

/// A SHA-256 digest: the identity of an analysis module.
pub type Digest32 = [u8; 32];

/// A compiled analysis, ready to instantiate.
pub struct Module {
    digest: Digest32,
    component: Component,
    pre: AnalysisPre<RunState>,
}

impl Module {
    /// SHA-256 of the component bytes: the module's id.
    pub fn digest(&self) -> Digest32 {
        self.digest
    }

    /// The id as lowercase hex.
    pub fn id(&self) -> String {
        hex::encode(self.digest)
    }

    /// Native code for this module, to cache and later load with
    /// [`Runtime::load_precompiled`].
    pub fn serialize(&self) -> LoadResult<Vec<u8>> {
        self.component
            .serialize()
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))
    }
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

/// A handle that cancels a run from another thread.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that has not been cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancel the run; it stops within one epoch tick.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a successful run produced.
#[derive(Debug)]
pub struct RunOutput {
    /// Published outputs, not yet subject to any release rule.
    pub outputs: Outputs,
    /// Captured log lines.
    pub logs: Vec<LogLine>,
    /// Measurements of the run.
    pub stats: RunStats,
}

impl RunOutput {
    /// [`RunOutput::candidates`] of a copy (tables share their Arrow buffers).
    pub fn clone_candidates(&self) -> Vec<cleanroom_policy::Candidate> {
        Self {
            outputs: self.outputs.clone(),
            logs: self.logs.clone(),
            stats: self.stats.clone(),
        }
        .candidates()
    }

    /// Everything the run published, as candidates for the policy decision point, in a fixed
    /// order: tables, JSON, files, then the log (if any).
    pub fn candidates(self) -> Vec<cleanroom_policy::Candidate> {
        use cleanroom_policy::{Candidate, Content};
        use cleanroom_proto::run::OutputKind;
        let mut out = Vec::new();
        for t in self.outputs.tables {
            out.push(Candidate {
                name: t.name,
                kind: OutputKind::Table,
                content: Content::Table {
                    schema: t.schema,
                    batches: t.batches,
                },
            });
        }
        for a in self.outputs.aggregates {
            out.push(Candidate {
                name: a.name,
                kind: OutputKind::Table,
                content: Content::Checked {
                    schema: a.batch.schema(),
                    batches: vec![a.batch],
                    codes: a.codes,
                    refused: a.refused,
                    private: a.private,
                },
            });
        }
        for (name, text) in self.outputs.json {
            out.push(Candidate {
                name,
                kind: OutputKind::Json,
                content: Content::Bytes(text.into_bytes()),
            });
        }
        for (name, bytes) in self.outputs.files {
            out.push(Candidate {
                name,
                kind: OutputKind::File,
                content: Content::Bytes(bytes),
            });
        }
        if !self.logs.is_empty() {
            let text: String = self
                .logs
                .iter()
                .map(|l| format!("{}\n", l.message))
                .collect();
            out.push(Candidate {
                name: "log".into(),
                kind: OutputKind::Log,
                content: Content::Bytes(text.into_bytes()),
            });
        }
        out
    }
}

impl RunError {
    /// The module-written text this error carries (the analysis's own error message, or a
    /// trap's details), which is an output like a log and never a status.
    pub fn module_text(&self) -> Option<&str> {
        match self {
            Self::Failed(text) | Self::Trap(text) => Some(text),
            _ => None,
        }
    }

    /// [`RunError::module_text`] as an output of kind `error` for the policy decision point.
    pub fn error_output(&self) -> Vec<cleanroom_policy::Candidate> {
        self.module_text()
            .map(|text| cleanroom_policy::Candidate {
                name: "error".into(),
                kind: cleanroom_proto::run::OutputKind::Error,
                content: cleanroom_policy::Content::Bytes(text.as_bytes().to_vec()),
            })
            .into_iter()
            .collect()
    }
}

/// Measurements of one run.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Wall time from instantiation to return.
    pub elapsed: Duration,
    /// Bytes of table data handed to the guest.
    pub bytes_read: u64,
    /// Bytes of output published.
    pub bytes_published: u64,
}

/// One engine for all runs, with a cache of compiled modules.
pub struct Runtime {
    engine: Engine,
    linker: Linker<RunState>,
    cache: Mutex<HashMap<Digest32, Arc<Module>>>,
    config: RuntimeConfig,
    _ticker: crate::epoch::EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// An engine with Cranelift, the pooling allocator, epoch interruption
    /// and copy-on-write memory images, and a linker for the analysis world.
    pub fn new(config: RuntimeConfig) -> LoadResult<Self> {
        let engine = Engine::new(&engine_config(&config)).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_err)?;
        crate::state::add_capped_clock(&mut linker).map_err(engine_err)?;
        crate::tables::add_to_linker(&mut linker).map_err(engine_err)?;
        crate::output::add_to_linker(&mut linker).map_err(engine_err)?;
        crate::aggregate::add_to_linker(&mut linker).map_err(engine_err)?;

        let ticker = crate::epoch::EpochTicker::start(&engine, "cleanroom-epoch")
            .map_err(|e| LoadError::Engine(format!("failed to start the epoch thread: {e}")))?;

        Ok(Self {
            engine,
            linker,
            cache: Mutex::new(HashMap::new()),
            config,
            _ticker: ticker,
        })
    }

    /// A key that changes whenever native code from this engine would not
    /// load in another (wasmtime version, target, settings): part of the
    /// name of any precompiled-artifact cache.
    pub fn compatibility_key(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// The engine-wide settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compile (or fetch from the cache) the component in `bytes`.
    pub fn load(&self, bytes: &[u8]) -> LoadResult<Arc<Module>> {
        let digest: Digest32 = Sha256::digest(bytes).into();
        if let Some(module) = self.cached(&digest) {
            return Ok(module);
        }
        classify(bytes)?;
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        self.prepare(digest, component)
    }

    /// Load native code produced by [`Module::serialize`] for the component
    /// whose SHA-256 is `digest`.
    ///
    /// # Safety
    ///
    /// The bytes are executable code: they must come from this engine's
    /// `serialize` and must not have been modified since (the enclave seals
    /// them for that reason). wasmtime checks the engine configuration and
    /// version but cannot check the code itself.
    #[allow(unsafe_code)]
    pub unsafe fn load_precompiled(
        &self,
        digest: Digest32,
        native: &[u8],
    ) -> LoadResult<Arc<Module>> {
        if let Some(module) = self.cached(&digest) {
            return Ok(module);
        }
        // SAFETY: the caller guarantees `native` came from `serialize` on a
        // compatible engine and is unmodified.
        let component = unsafe { Component::deserialize(&self.engine, native) }
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        self.prepare(digest, component)
    }

    /// The module compiled from the component whose SHA-256 is `digest`, if this runtime
    /// has it loaded already.
    pub fn cached(&self, digest: &Digest32) -> Option<Arc<Module>> {
        self.cache
            .lock()
            .expect("module cache lock is never poisoned")
            .get(digest)
            .cloned()
    }

    fn prepare(&self, digest: Digest32, component: Component) -> LoadResult<Arc<Module>> {
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre = AnalysisPre::new(pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let module = Arc::new(Module {
            digest,
            component,
            pre,
        });
        self.cache
            .lock()
            .expect("module cache lock is never poisoned")
            .insert(digest, module.clone());
        Ok(module)
    }

    /// Run `module` over `grants` with `params`, in a fresh instance.
    pub fn run(
        &self,
        module: &Module,
        grants: Grants,
        params: &str,
        limits: &Limits,
        cancel: Option<&CancelToken>,
    ) -> RunResult<RunOutput> {
        self.run_with(
            module,
            grants,
            params,
            limits,
            cancel,
            Aggregation::default(),
        )
    }

    /// [`Runtime::run`] under the aggregation terms of the run's policies: which tables only
    /// the host may read, who each row is about, the disclosure rules or DP terms of each
    /// table's aggregates, and the run's ε.
    pub fn run_with(
        &self,
        module: &Module,
        grants: Grants,
        params: &str,
        limits: &Limits,
        cancel: Option<&CancelToken>,
        aggregation: Aggregation,
    ) -> RunResult<RunOutput> {
        if params.len() > limits.max_params_bytes {
            return Err(RunError::ParamsTooLarge {
                size: params.len(),
                limit: limits.max_params_bytes,
            });
        }
        if limits.max_memory_bytes > self.config.max_memory_bytes {
            return Err(RunError::Internal(format!(
                "the run's memory limit ({} bytes) exceeds the runtime's ({} bytes)",
                limits.max_memory_bytes, self.config.max_memory_bytes
            )));
        }
        let start = Instant::now();
        let mut store = Store::new(
            &self.engine,
            RunState::new(
                grants,
                limits,
                start + limits.timeout,
                cancel.cloned(),
                aggregation,
            ),
        );
        store.limiter(|state| &mut state.limiter);
        let timeout = limits.timeout;
        let cancel = cancel.cloned();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |store| {
            if cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
                return Err(wasmtime::Error::new(RunError::Cancelled));
            }
            // The guest's own time: the host's aggregates (bounded by the output count) are
            // not counted, so whether a run times out never depends on how long the host
            // took over the rows of a table the guest cannot read.
            if start.elapsed().saturating_sub(store.data().hidden()) >= timeout {
                return Err(wasmtime::Error::new(RunError::Timeout(timeout)));
            }
            Ok(UpdateDeadline::Continue(1))
        });

        let result = module
            .pre
            .instantiate(&mut store)
            .and_then(|analysis| analysis.call_run(&mut store, params));
        let elapsed = start.elapsed();
        match result {
            Ok(Ok(())) => {
                let state = store.data_mut();
                let stats = RunStats {
                    elapsed,
                    bytes_read: state.tables.bytes_read(),
                    bytes_published: state.output.bytes_used(),
                };
                let mut outputs = state.output.take();
                outputs.aggregates = std::mem::take(&mut state.aggregate.published);
                Ok(RunOutput {
                    outputs,
                    logs: state.log.finish(),
                    stats,
                })
            }
            Ok(Err(message)) => Err(RunError::Failed(message)),
            Err(e) => Err(crate::epoch::classify_trap(e)),
        }
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let mut c = Config::new();
    c.strategy(Strategy::Cranelift)
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .parallel_compilation(true);
    let runs = config.max_concurrent_runs;
    let mut pool = PoolingAllocationConfig::default();
    // A component (CPython especially) has several core instances, memories
    // and tables; size the pool so `runs` of them fit at once.
    pool.total_component_instances(runs)
        .total_core_instances(runs * 32)
        .total_memories(runs * 4)
        .total_tables(runs * 32)
        .total_stacks(runs)
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(64)
        .table_elements(200_000)
        // Large components (the DataFusion SQL engine) have ~1.9 MB of
        // per-instance function metadata.
        .max_core_instance_size(16 << 20)
        .max_component_instance_size(16 << 20)
        .max_memory_size(config.max_memory_bytes as usize);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if config.perf_map {
        c.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if let Some(dir) = &config.compile_cache {
        let store = std::sync::Arc::new(crate::compile_cache::FileCacheStore::new(dir.clone()));
        c.enable_incremental_compilation(store)
            .unwrap_or_else(|e| unreachable!("invariant: Cranelift is the compiler: {e}"));
    }
    c
}

fn engine_err(e: impl std::fmt::Display) -> LoadError {
    LoadError::Engine(e.to_string())
}

/// Tell a core module, a component and garbage apart before compiling.
fn classify(bytes: &[u8]) -> LoadResult<()> {
    if wasmparser::Parser::is_component(bytes) {
        Ok(())
    } else if wasmparser::Parser::is_core_wasm(bytes) {
        Err(LoadError::CoreModule)
    } else if bytes.len() < 8 {
        Err(LoadError::NotWasm(format!(
            "{} bytes is too short to be a component",
            bytes.len()
        )))
    } else {
        Err(LoadError::NotWasm(
            "the file does not start with the WebAssembly magic bytes".into(),
        ))
    }
}
