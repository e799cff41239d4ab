//! Loading: what is not an analysis component is refused with a clear error.

use cleanroom_runtime::LoadError;
use cleanroom_tests::*;

use crate::runtime;

#[test]
fn garbage_is_not_wasm() {
    let err = runtime().load(b"#!/bin/sh\nrm -rf /\n").unwrap_err();
    assert!(matches!(err, LoadError::NotWasm(_)), "{err}");
    assert!(err.to_string().contains("magic bytes"), "{err}");
}

#[test]
fn truncated_component_is_invalid() {
    let bytes = program(EMPTY);
    let err = runtime().load(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err}");
}

#[test]
fn core_module_is_refused_with_a_hint() {
    // The smallest valid core module: magic + version 1.
    let err = runtime().load(b"\0asm\x01\0\0\0").unwrap_err();
    assert!(matches!(err, LoadError::CoreModule), "{err}");
    assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
}

#[test]
fn component_of_another_world_is_refused() {
    // A valid component that exports nothing: no `run`.
    let empty_component = b"\0asm\x0d\0\x01\0";
    let err = runtime().load(empty_component).unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld(_)), "{err}");
    assert!(err.to_string().contains("run"), "{err}");
}

#[test]
fn same_bytes_compile_once() {
    let bytes = program(ECHO);
    let a = runtime().load(&bytes).unwrap();
    let b = runtime().load(&bytes).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&a, &b),
        "the second load should hit the cache"
    );
    assert_eq!(a.id().len(), 64);
}
