#!/usr/bin/env bash
# `cleanroom run-local` of a freshly built Python analysis, whole process (docs/benchmarks.md).
# Two builds of examples/cohort-stats-python that differ in one line stand for "the analysis the
# researcher just edited". Timed, each with an empty cache directory of its own unless said:
#   1. A, nothing cached: Cranelift compiles all of CPython and the analysis;
#   2. B after A: the whole-component cache misses (new bytes), Cranelift's incremental cache
#      (compiled functions by the digest of their IR) hits for what A already compiled;
#   3. B again: the whole compiled component is cached.
#
#   scripts/bench-python-local.sh
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"
ensure_rust
cargo build --locked -q -p cleanroom-cli
cli="$CARGO_TARGET_DIR/debug/cleanroom"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 scripts/gen-synthetic.py --out "$work/data" --rows 5000 >/dev/null
mkdir -p "$work/a" "$work/b"
cp examples/cohort-stats-python/analysis.py "$work/a/analysis.py"
cp examples/cohort-stats-python/analysis.py "$work/b/analysis.py"
echo "EDITED = True  # the researcher's edit" >>"$work/b/analysis.py"
scripts/build-python.sh "$work/a/analysis.py" "$work/a.wasm" >/dev/null
scripts/build-python.sh "$work/b/analysis.py" "$work/b.wasm" >/dev/null
run() { # label, module, cache dir
  local start end
  start=$EPOCHREALTIME
  XDG_CACHE_HOME="$3" "$cli" run-local "$2" --table st_marys="$work/data/st_marys.csv" \
    --table northfield="$work/data/northfield.csv" --params '{"group_by":"age_band"}' \
    --out "$work/out" >/dev/null
  end=$EPOCHREALTIME
  awk -v label="$1" -v s="$start" -v e="$end" 'BEGIN { printf "| %s | %.2f s |\n", label, e - s }' </dev/null
}
echo "| cleanroom run-local, cohort-stats-python ($(stat -c %s "$work/a.wasm") bytes), whole process | wall |"
echo "|---|---|"
run "A, nothing cached (compiles everything)" "$work/a.wasm" "$work/cache-cold"
run "B (A edited by one line) with nothing cached" "$work/b.wasm" "$work/cache-b"
run "B after A: compiled-function cache warm, whole-component cache cold" "$work/b.wasm" "$work/cache-cold"
run "B again: whole compiled component cached" "$work/b.wasm" "$work/cache-cold"
