//! Integration tests for cleanroom-proto, one module per area.

#![allow(clippy::unwrap_used)] // tests and their helpers fail loudly by design

mod audit;
mod httpsig;
mod keys;
mod policy;
mod receipt;
mod robustness;
mod sealed;
mod vectors;
