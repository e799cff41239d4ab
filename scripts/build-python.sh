#!/usr/bin/env bash
# Build a Python analysis into a cleanroom component.
#
#   scripts/build-python.sh path/to/analysis.py out.wasm
#
# The analysis imports `cleanroom` (guest-sdk/python) and registers its entry
# point with @cleanroom.analysis. Builds are cached by the hash of the
# analysis, the SDK, the WIT and the componentize-py version. An analysis that
# imports numpy gets numpy for WASI (scripts/build-numpy.sh).
set -euo pipefail
source "$(dirname "$0")/env.sh"

if [ $# -ne 2 ]; then
  echo "usage: $0 ANALYSIS.py OUT.wasm" >&2
  exit 2
fi
src=$(realpath "$1")
out=$(realpath -m "$2")
[ -f "$src" ] || { echo "no such analysis: $1" >&2; exit 1; }
module=$(basename "$src" .py)
ensure_componentize_py

# An analysis that imports numpy gets numpy built for WASI (scripts/build-numpy.sh, cached).
numpy_path=()
numpy_imports=""
if grep -qE '^[[:space:]]*(import|from)[[:space:]]+numpy' "$src"; then
  numpy_site=$("$CLEANROOM_ROOT/scripts/build-numpy.sh")
  numpy_path=(-p "$numpy_site")
  # Only what is imported while componentize-py pre-initialises the component is in it, and
  # numpy 2 loads these submodules lazily: import them all up front.
  numpy_imports="import numpy, numpy.random, numpy.linalg, numpy.fft, numpy.ma, numpy.polynomial, numpy.lib  # noqa: F401,E401"
fi

key=$( (echo "$COMPONENTIZE_PY_VERSION ${numpy_site:-}"; cat "$src"; find "$CLEANROOM_ROOT/guest-sdk/python/cleanroom" "$CLEANROOM_ROOT/wit" -type f -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-64)
if [ -f "$out" ] && [ "$(cat "$out.key" 2>/dev/null)" = "$key" ]; then
  echo "$out is up to date" >&2
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The entry module imports the analysis (registering it) and exports the world.
cat > "$work/cleanroom_main.py" <<PY
$numpy_imports
import $module  # noqa: F401  (registers the analysis)
from cleanroom import WitWorld  # noqa: F401
PY
mkdir -p "$(dirname "$out")"
"$CLEANROOM_VENV/bin/componentize-py" -d "$CLEANROOM_ROOT/wit" -w analysis componentize cleanroom_main \
  -p "$work" -p "$(dirname "$src")" -p "$CLEANROOM_ROOT/guest-sdk/python" "${numpy_path[@]}" -o "$out.tmp" >&2
mv "$out.tmp" "$out"
echo "$key" > "$out.key"
echo "built $out ($(du -h "$out" | cut -f1))" >&2
