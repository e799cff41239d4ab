//! Bindings for the `cleanroom:analysis/analysis` world.
//!
//! This is the only place that runs `bindgen!` over `wit/`; every other
//! module imports the generated types from here.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "analysis",
    imports: { default: trappable },
    with: {
        "wasi": wasmtime_wasi::p2::bindings,
        "cleanroom:analysis/tables.table": crate::tables::TableHandle,
        "cleanroom:analysis/tables.batch": crate::tables::BatchHandle,
    },
});

pub use cleanroom::analysis::{output, tables};
