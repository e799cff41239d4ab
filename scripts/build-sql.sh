#!/usr/bin/env bash
# Build the SQL engine component (guest-sdk/sql: DataFusion for
# wasm32-wasip2) into $CARGO_TARGET_DIR/sql-engine/cleanroom_sql.wasm.
# Incremental: a second build with no change takes seconds.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"
ensure_rust
if ! command -v clang >/dev/null || ! command -v llvm-ar >/dev/null || [ ! -d /usr/include/wasm32-wasi ]; then
  say "installing clang, llvm and wasi-libc (C parts of the engine's dependencies, for wasm)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clang llvm wasi-libc libclang-rt-dev-wasm32 >/dev/null
fi
out="$CARGO_TARGET_DIR/sql-engine"
mkdir -p "$out"
# Cargo rebuilds C dependencies (and everything above them) when CC changes,
# so the wrapper lives at a fixed path outside the clone.
cc="$out/wasm-cc.sh"
cmp -s "$CLEANROOM_ROOT/scripts/wasm-cc.sh" "$cc" || install -m 755 "$CLEANROOM_ROOT/scripts/wasm-cc.sh" "$cc"
say "building the SQL engine component (DataFusion; the first build takes several minutes)"
# Reproducible: built through a fixed link with remapped paths (`cleanroom module verify`
# rebuilds the engine and compares the hash).
reproducible_flags "$out/src" "$out/build"
# CARGO_ENCODED_RUSTFLAGS replaces .cargo/config.toml's target rustflags: repeat +simd128 here
# (without it DataFusion's kernels were scalar in the sandbox).
CC_wasm32_wasip2="$cc" AR_wasm32_wasip2=llvm-ar CFLAGS_wasm32_wasip2="$REMAP_CFLAGS -msimd128" \
  CARGO_ENCODED_RUSTFLAGS="$REMAP_RUSTFLAGS"$'\x1f'"-Ctarget-feature=+simd128" \
  cargo build --release --locked --target wasm32-wasip2 \
  --manifest-path "$out/src/guest-sdk/sql/Cargo.toml" --target-dir "$out/build"
cp "$out/build/wasm32-wasip2/release/cleanroom_sql.wasm" "$out/cleanroom_sql.wasm"
echo "built $out/cleanroom_sql.wasm ($(du -h "$out/cleanroom_sql.wasm" | cut -f1))" >&2
