#!/usr/bin/env bash
# GNU R for the sandbox: webR's Emscripten build of R (npm `webr`), with its legacy wasm
# exception handling translated to the standard exnref form (binaryen's wasm-opt from npm, run
# by node) so wasmtime compiles it. Both packages are pinned by version and SHA-256 and
# fetched from the npm registry; nothing of them is committed. The result is cached by the
# hash of this script under ~/.cache/cleanroom-r/, and its directory is printed:
#   R.wasm         the main module (exnref), with the base packages' R code embedded
#                  (webR's --embed-file; webR 0.6.0 is built without the recommended packages)
#   libRblas.so    side modules loaded by the host's dynamic linker
#   libRlapack.so
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"

WEBR_VERSION=0.6.0
WEBR_SHA256=5821c8bd87484add59064fa13fa62a65f686032f3f64dacf4b0aa34c4325e959
BINARYEN_VERSION=132.0.0
BINARYEN_SHA256=6543555fb29bb92548f325c7dc18e9ab7dbb1215edda25993d1e3f71d85b8618
# The features R.wasm validates with, plus reference types for exnref.
FEATURES=(--mvp-features --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int
  --enable-bulk-memory --enable-bulk-memory-opt --enable-exception-handling --enable-reference-types)

key=$(sha256sum "$0")
key=${key%% *}
out=${CLEANROOM_R_CACHE:-$HOME/.cache/cleanroom-r}/${key:0:16}
if [ -f "$out/R.wasm" ] && [ -f "$out/libRlapack.so" ]; then
  echo "$out"
  exit 0
fi
command -v node >/dev/null || { echo "node is required to run binaryen's wasm-opt (Debian: nodejs)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# fetch NAME VERSION SHA256: an npm package tarball, checked.
fetch() {
  local file="$tmp/$1.tgz"
  say "downloading $1@$2 from the npm registry"
  curl -fsSL -o "$file" "https://registry.npmjs.org/$1/-/$1-$2.tgz"
  echo "$3  $file" | sha256sum -c --quiet - ||
    { echo "$1@$2: checksum mismatch, refusing to build from it" >&2; exit 1; }
  mkdir -p "$tmp/$1"
  tar xzf "$file" -C "$tmp/$1"
}
fetch webr "$WEBR_VERSION" "$WEBR_SHA256"
fetch binaryen "$BINARYEN_VERSION" "$BINARYEN_SHA256"

say "translating R.wasm's legacy exception handling to exnref (wasm-opt, a few seconds)"
mkdir -p "$out.tmp"
node "$tmp/binaryen/package/bin/wasm-opt" "$tmp/webr/package/dist/R.wasm" "${FEATURES[@]}" \
  --translate-to-exnref -o "$out.tmp/R.wasm"
cp "$tmp/webr/package/dist/libRblas.so" "$tmp/webr/package/dist/libRlapack.so" "$out.tmp/"
cp "$tmp/webr/package/LICENSE.md" "$out.tmp/webR-LICENSE.md"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
