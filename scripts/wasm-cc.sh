#!/usr/bin/env bash
# C compiler for wasm32-wasip2 C dependencies of the SQL engine (zstd-sys,
# pulled in by arrow-ipc's default features inside DataFusion). Debian's
# clang with wasi-libc knows the `wasm32-wasi` triple only; the object code
# is the same for the engine's purposes (no WASI calls from C).
args=()
for a in "$@"; do
  case "$a" in
    --target=wasm32-wasip2 | --target=wasm32-unknown-wasip2) args+=("--target=wasm32-wasi") ;;
    *) args+=("$a") ;;
  esac
done
exec clang "${args[@]}"
