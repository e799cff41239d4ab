//! The data of one run's `Store`: WASI with every capability withheld, the
//! tables and output capabilities, the log, and the memory limiter.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::limits::{Limits, MemoryLimiter};
use crate::log::{LogBuffer, LogSource};
use crate::output::{OutputCtx, OutputCtxView, OutputView};
use crate::tables::{Grants, TablesCtx, TablesCtxView, TablesView};

/// Store data of one run.
pub struct RunState {
    wasi: WasiCtx,
    resources: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) tables: TablesCtx,
    pub(crate) output: OutputCtx,
    pub(crate) log: LogBuffer,
}

impl RunState {
    pub(crate) fn new(grants: Grants, limits: &Limits) -> Self {
        let log = LogBuffer::new(limits.max_log_bytes);
        RunState {
            wasi: sandboxed_wasi(&log),
            resources: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits.max_memory_bytes),
            tables: TablesCtx::new(grants, limits.max_open_tables),
            output: OutputCtx::new(limits.max_output_bytes, limits.max_outputs, log.clone()),
            log,
        }
    }
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState")
            .field("tables", &self.tables)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

/// WASI for hostile code: no preopened directories, no sockets or name
/// lookups, no environment, empty args and stdin (the builder's defaults,
/// stated here so a reader need not know them). Clocks and randomness are
/// the host's. stdout and stderr go to the bounded log.
fn sandboxed_wasi(log: &LogBuffer) -> WasiCtx {
    WasiCtxBuilder::new()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .stdout(log.stream(LogSource::Stdout))
        .stderr(log.stream(LogSource::Stderr))
        .build()
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.resources,
        }
    }
}

impl TablesView for RunState {
    fn tables(&mut self) -> TablesCtxView<'_> {
        TablesCtxView {
            ctx: &mut self.tables,
            table: &mut self.resources,
        }
    }
}

impl OutputView for RunState {
    fn output(&mut self) -> OutputCtxView<'_> {
        OutputCtxView {
            ctx: &mut self.output,
        }
    }
}
