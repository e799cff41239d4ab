//! What every sandbox engine shares: the epoch ticker that bounds a run's wall time, and the
//! classification of a trap into a typed run error. The component runtime and the R engine
//! (`cleanroom-r`) both use them, so a timeout or a stack overflow reads alike in either.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use wasmtime::{Engine, Trap};

/// How often the epoch advances; the granularity of timeouts and cancellation.
pub const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);

use crate::error::RunError;

/// A thread that advances an engine's epoch every [`EPOCH_TICK`] (the deadline callbacks of
/// its stores run at each tick). Stops when dropped or when the engine is gone.
#[derive(Debug)]
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Start ticking `engine`; `name` names the thread.
    pub fn start(engine: &Engine, name: &str) -> std::io::Result<Self> {
        let weak = engine.weak();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::Builder::new().name(name.into()).spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Turn an error from instantiation or a call into a typed run error: a [`RunError`] the host
/// raised (a deadline, a limit) is itself, a stack overflow is one, any other trap is a trap.
pub fn classify_trap(e: wasmtime::Error) -> RunError {
    let e = match e.downcast::<RunError>() {
        Ok(typed) => return typed,
        Err(e) => e,
    };
    match e.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => RunError::StackOverflow,
        Some(_) => RunError::Trap(format!("{e:?}")),
        None => RunError::Trap(format!("{e:#}")),
    }
}
