#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one:
# toolchain and componentize-py set themselves up, generated files are
# checked for drift, then format, lints and every test.
#
#   scripts/test.sh           everything (what .ci/run runs)
#   scripts/test.sh --quick   format and the unit and integration tests, without PostgreSQL
#                             and the object store, QEMU and the firmware, Chromium, R, the
#                             demos and clippy (the Python guests and the SQL engine are
#                             still built: many tests run them; both are cached)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"

quick=false
case "${1:-}" in
  --quick) quick=true ;;
  "") ;;
  *) echo "usage: scripts/test.sh [--quick]" >&2; exit 2 ;;
esac

ensure_rust
ensure_componentize_py

say "checking vendored WASI WIT and generated Python bindings are current"
scripts/vendor-wit.sh >/dev/null
scripts/gen-python-bindings.sh 2>/dev/null
if ! git diff --quiet --exit-code -- wit/deps guest-sdk/python/bindings \
  || [ -n "$(git status --porcelain -- wit/deps guest-sdk/python/bindings)" ]; then
  git status --short -- wit/deps guest-sdk/python/bindings
  echo "generated files are out of date: run scripts/vendor-wit.sh and scripts/gen-python-bindings.sh and commit" >&2
  exit 1
fi

say "cargo fmt --check"
cargo fmt --all -- --check

say "building Python guests"
export CLEANROOM_PYTHON_GUESTS="$CARGO_TARGET_DIR/python-guests"
scripts/build-python.sh examples/cohort-stats-python/analysis.py "$CLEANROOM_PYTHON_GUESTS/cohort_stats.wasm"
for p in tests/programs/python/*.py; do
  scripts/build-python.sh "$p" "$CLEANROOM_PYTHON_GUESTS/py_$(basename "$p" .py).wasm"
done

say "building the SQL engine component"
scripts/build-sql.sh
export CLEANROOM_SQL_ENGINE="$CARGO_TARGET_DIR/sql-engine/cleanroom_sql.wasm"

if $quick; then
  say "cargo test (quick: without the cluster, image, R and firmware tests)"
  cargo test --workspace --locked -- --skip cluster:: --skip image:: \
    --skip r::r_ --skip r::hostile_r --skip r::an_r_analysis
  say "quick tests passed (scripts/test.sh without --quick runs everything)"
  exit 0
fi

say "building the R engine (webR's GNU R, pinned from npm; cached) and installing native R to compare with"
export CLEANROOM_R_ENGINE
CLEANROOM_R_ENGINE=$(scripts/build-r.sh)
ensure_native_r

say "building the guest firmware (OVMF for SEV-SNP direct boot) and the reference measurement tool"
export CLEANROOM_FIRMWARE
CLEANROOM_FIRMWARE=$(scripts/build-firmware.sh)
ensure_sev_snp_measure
export CLEANROOM_SEV_SNP_MEASURE="$CLEANROOM_VENV/bin/sev-snp-measure"

say "starting PostgreSQL (Debian's) and an S3-compatible store (s3s-fs from crates.io) on loopback for the cluster tests"
services=$(mktemp -d /tmp/cleanroom-services.XXXXXX)
trap 'scripts/cluster-services.sh stop "$services"; rm -rf "$services"' EXIT
eval "$(scripts/cluster-services.sh start "$services")"

say "validating the Kubernetes manifests (kubernetes-validate, strict)"
scripts/validate-manifests.sh

say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo test"
cargo test --workspace --locked

say "cleanroomd without the simulation feature refuses to start outside SEV-SNP"
cargo test --locked -p cleanroomd --no-default-features --lib

# The README's main command, the pipeline demo (harmonise → link → analyse) and the R demo.
for demo in demo demo-pipeline demo-r; do
  say "scripts/$demo.sh (on the debug build the tests just made)"
  log="$CARGO_TARGET_DIR/$demo-in-tests.log"
  CLEANROOM_DEMO_PROFILE=dev CLEANROOM_DEMO_DIR="$CARGO_TARGET_DIR/$demo-in-tests" "scripts/$demo.sh" >"$log" 2>&1 \
    || { tail -40 "$log"; echo "scripts/$demo.sh failed" >&2; exit 1; }
  echo "scripts/$demo.sh passed (log: $log)"
done

say "the owners' console in headless Chromium (scripts/test-console.sh)"
log="$CARGO_TARGET_DIR/test-console.log"
CLEANROOM_DEMO_PROFILE=dev scripts/test-console.sh >"$log" 2>&1 \
  || { tail -60 "$log"; echo "scripts/test-console.sh failed" >&2; exit 1; }
echo "scripts/test-console.sh passed (log: $log; screenshots: $CARGO_TARGET_DIR/console-test/shots)"

say "the host image: built twice (same bytes), booted in QEMU with the study run against it; the production variant refuses to start without SEV-SNP"
scripts/test-image.sh >"$CARGO_TARGET_DIR/test-image.log" 2>&1 \
  || { tail -40 "$CARGO_TARGET_DIR/test-image.log"; echo "scripts/test-image.sh failed" >&2; exit 1; }
grep -a "rebuilt\|booted\|after the power\|refused" "$CARGO_TARGET_DIR/test-image.log"
