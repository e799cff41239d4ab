//! Bindings for the `cleanroom:analysis/analysis` world.
//!
//! This is the only place that runs `bindgen!` over `wit/`; every other
//! module imports the generated types from here.

#![allow(missing_docs, unreachable_pub)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "analysis",
    imports: { default: trappable },
    require_store_data_send: true,
    with: {
        "wasi": wasmtime_wasi::p2::bindings,
        "cleanroom:analysis/tables.table": crate::tables::TableHandle,
        "cleanroom:analysis/tables.batch": crate::tables::BatchHandle,
    },
});

pub use cleanroom::analysis::{aggregate, output, tables};
