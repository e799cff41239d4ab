#!/usr/bin/env bash
# Linkage quality and speed against Splink (docs/benchmarks.md): builds the CLI and the linkage
# engine, installs Splink 5.0.0 (DuckDB) into a cached venv, and compares at 10k and 100k.
#
#   scripts/bench-linkage.sh [RECORDS...]     # default: 10000 100000
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"
ensure_rust
# The dev build the tests use: its wasmtime and Arrow are optimised dependencies.
cargo build --locked -p cleanroom-cli
cargo build --release --locked --target wasm32-wasip2 -p cleanroom-linkage --target-dir "$CARGO_TARGET_DIR/wasm-guests"
venv=${CLEANROOM_SPLINK_VENV:-$HOME/.cache/cleanroom-splink-venv}
if ! "$venv/bin/python" -c 'import splink, pandas' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet splink==5.0.0 pandas
fi
for records in "${@:-10000 100000}"; do
  for n in $records; do
    "$venv/bin/python" scripts/bench-linkage.py --records "$n" \
      --cleanroom "$CARGO_TARGET_DIR/debug/cleanroom" \
      --engine "$CARGO_TARGET_DIR/wasm-guests/wasm32-wasip2/release/cleanroom_linkage.wasm"
  done
done
