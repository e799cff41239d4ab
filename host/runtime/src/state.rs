//! The data of one run's `Store`: WASI with every capability withheld, the
//! tables and output capabilities, the log, and the memory limiter.

use std::time::{Duration, Instant};

use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::aggregate::{AggregateCtx, AggregateCtxView, AggregateView, Aggregation};
use crate::limits::{Limits, MemoryLimiter};
use crate::log::{LogBuffer, LogSource};
use crate::output::{OutputCtx, OutputCtxView, OutputView};
use crate::runtime::{CancelToken, EPOCH_TICK};
use crate::tables::{Grants, TablesCtx, TablesCtxView, TablesView};

/// Store data of one run.
pub struct RunState {
    wasi: WasiCtx,
    resources: ResourceTable,
    /// Zero of the guest's monotonic clock.
    clock_origin: Instant,
    /// When the run's wall-clock budget ends: no sleep outlasts it.
    deadline: Instant,
    cancel: Option<CancelToken>,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) tables: TablesCtx,
    pub(crate) output: OutputCtx,
    pub(crate) log: LogBuffer,
    pub(crate) aggregate: AggregateCtx,
}

impl RunState {
    pub(crate) fn new(
        grants: Grants,
        limits: &Limits,
        deadline: Instant,
        cancel: Option<CancelToken>,
        aggregation: Aggregation,
    ) -> Self {
        let log = LogBuffer::new(limits.max_log_bytes);
        let clock_origin = Instant::now();
        let wall_origin = limits
            .wall_clock_origin
            .unwrap_or_else(std::time::SystemTime::now);
        let tables = TablesCtx::new(grants, limits, &aggregation);
        let aggregate = AggregateCtx::new(aggregation);
        let clock = RunClock {
            origin: clock_origin,
            hidden: aggregate.hidden.clone(),
        };
        Self {
            wasi: sandboxed_wasi(&log, clock, wall_origin),
            resources: ResourceTable::new(),
            clock_origin,
            deadline,
            cancel,
            limiter: MemoryLimiter::new(limits.max_memory_bytes),
            tables,
            output: OutputCtx::new(limits.max_output_bytes, limits.max_outputs, log.clone()),
            log,
            aggregate,
        }
    }
}

impl RunState {
    /// Time the host spent in aggregates so far, which the guest's clocks skip.
    pub(crate) fn hidden(&self) -> Duration {
        Duration::from_nanos(
            self.aggregate
                .hidden
                .load(std::sync::atomic::Ordering::Relaxed),
        )
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
fn sandboxed_wasi(log: &LogBuffer, clock: RunClock, wall_origin: std::time::SystemTime) -> WasiCtx {
    let wall = WallClock {
        start: wall_origin
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
        run: clock.clone(),
    };
    WasiCtxBuilder::new()
        .monotonic_clock(clock)
        .wall_clock(wall)
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

impl AggregateView for RunState {
    fn aggregate(&mut self) -> AggregateCtxView<'_> {
        AggregateCtxView {
            ctx: &mut self.aggregate,
            tables: &self.tables,
            output: &mut self.output,
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

/// A WASI sleep that ends at the run's deadline (or on cancel) at the latest.
///
/// Epoch interruption only fires while wasm code runs; a guest blocked in the host's
/// `poll` on a `Duration::MAX` sleep would hold its worker forever. Capping every clock
/// subscription at the run's deadline, and waking each tick to look at the cancel token,
/// returns control to wasm, where the epoch callback ends the run with a typed error.
struct CappedSleep {
    until: tokio::time::Instant,
    cancel: Option<CancelToken>,
}

#[async_trait::async_trait]
impl Pollable for CappedSleep {
    async fn ready(&mut self) {
        loop {
            if self.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
                return;
            }
            let now = tokio::time::Instant::now();
            if now >= self.until {
                return;
            }
            tokio::time::sleep_until(self.until.min(now + EPOCH_TICK)).await;
        }
    }
}

/// The WASI clock interface whose sleeps [`CappedSleep`] bounds.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

fn capped_sleep(
    state: &mut RunState,
    requested: Duration,
) -> wasmtime::Result<Resource<DynPollable>> {
    // The deadline moves with the time the host spent in aggregates, which the guest's
    // clocks and its time limit do not count.
    let remaining = (state.deadline + state.hidden()).saturating_duration_since(Instant::now());
    let wait = requested.min(remaining);
    let until = tokio::time::Instant::now() + wait;
    let sleep = state.resources.push(CappedSleep {
        until,
        cancel: state.cancel.clone(),
    })?;
    subscribe(&mut state.resources, sleep)
}

/// Replace WASI's `subscribe-duration` and `subscribe-instant` with deadline-aware ones.
pub(crate) fn add_capped_clock(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: wasmtime::StoreContextMut<'_, RunState>, (nanos,): (u64,)| {
            Ok((capped_sleep(store.data_mut(), Duration::from_nanos(nanos))?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: wasmtime::StoreContextMut<'_, RunState>, (when,): (u64,)| {
            let state = store.data_mut();
            // `when` is on the guest's clock, which skips the host's aggregates.
            let now =
                (state.clock_origin.elapsed().saturating_sub(state.hidden())).as_nanos() as u64;
            let requested = Duration::from_nanos(when.saturating_sub(now));
            Ok((capped_sleep(state, requested)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The guest's monotonic clock: time since the run started, minus the time the host spent
/// in aggregates (see `aggregate`).
#[derive(Clone)]
struct RunClock {
    origin: Instant,
    hidden: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl wasmtime_wasi::HostMonotonicClock for RunClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        (self.origin.elapsed().as_nanos() as u64)
            .saturating_sub(self.hidden.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// The guest's wall clock: the time the run started plus its [`RunClock`], so that it, too,
/// stands still while the host aggregates.
struct WallClock {
    start: Duration,
    run: RunClock,
}

impl wasmtime_wasi::HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        use wasmtime_wasi::HostMonotonicClock;
        self.start + Duration::from_nanos(self.run.now())
    }
}
