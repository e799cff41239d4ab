#!/usr/bin/env bash
# The main job on embedded defaults: two hospitals' synthetic admissions, with
# different schemas, analysed by the Rust and the Python cohort-statistics
# examples under the enclave's runtime and limits.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"
ensure_rust
ensure_componentize_py

work=${CLEANROOM_DEMO_DIR:-$CLEANROOM_ROOT/target/demo}
mkdir -p "$work"

say "generating synthetic admissions for St Mary's and Northfield (different schemas)"
python3 scripts/gen-synthetic.py --out "$work/data" --rows 5000

say "building the cleanroom CLI and the example analyses"
cargo build --release --locked -p cleanroom-cli
cargo build --release --locked --target wasm32-wasip2 -p cohort-stats
scripts/build-python.sh examples/cohort-stats-python/analysis.py "$work/cohort_stats_py.wasm"
cleanroom="$CARGO_TARGET_DIR/release/cleanroom"
rust_wasm="$CARGO_TARGET_DIR/wasm32-wasip2/release/cohort_stats.wasm"

tables=(--table "st_marys=$work/data/st_marys.csv" --table "northfield=$work/data/northfield.csv")

say "Rust analysis: admissions per diagnosis, groups under 10 patients suppressed"
"$cleanroom" run-local "$rust_wasm" "${tables[@]}" --params '{"group_by":"diagnosis","min_group":10}' --out "$work/results-rust"

say "Python analysis: the same question, by age band"
"$cleanroom" run-local "$work/cohort_stats_py.wasm" "${tables[@]}" --params '{"group_by":"age_band"}' --out "$work/results-python"

say "done: results in $work/results-rust and $work/results-python"
