//! Integration tests for cleanroom-proto, one module per area.

mod audit;
mod httpsig;
mod keys;
mod policy;
mod receipt;
mod robustness;
mod sealed;
mod vectors;
