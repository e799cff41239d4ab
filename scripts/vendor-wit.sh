#!/usr/bin/env bash
# Vendor the WASI WIT packages the analysis world includes, from the wasmtime-wasi release the host
# links (so the world and the host's WASI implementation can never drift). CI runs this and fails
# on a diff.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(cargo metadata --format-version 1 --locked \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="wasmtime-wasi"))')
src=$(cargo metadata --format-version 1 --locked \
  | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="wasmtime-wasi"))')
src=$(dirname "$src")/src/p2/wit/deps
rm -rf wit/deps
mkdir -p wit/deps
for f in cli clocks filesystem io random sockets; do
  cp "$src/$f.wit" "wit/deps/$f.wit"
done
echo "vendored WASI WIT from wasmtime-wasi $version into wit/deps"
