#!/usr/bin/env bash
# Regenerate the committed Python bindings of the analysis world
# (guest-sdk/python/bindings). CI runs this and fails on a diff.
set -euo pipefail
source "$(dirname "$0")/env.sh"
ensure_componentize_py
dest="$CLEANROOM_ROOT/guest-sdk/python/bindings"
rm -rf "$dest"
"$CLEANROOM_VENV/bin/componentize-py" -d "$CLEANROOM_ROOT/wit" -w analysis bindings "$dest"
find "$dest" -name '__pycache__' -prune -exec rm -rf {} +
echo "regenerated $dest" >&2
