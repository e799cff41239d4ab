//! Guest programs for the integration tests and benchmarks; each lives in
//! `examples/` and is built as its own component.
