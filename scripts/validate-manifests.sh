#!/usr/bin/env bash
# Validate the Kubernetes manifests (host/deploy/kubernetes) against the Kubernetes API
# schemas, strictly (unknown fields are errors), with kubernetes-validate from PyPI (it ships
# the schemas, so nothing is fetched at run time).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"

VERSION=1.37.0
KUBERNETES=1.31.0
venv="$HOME/.cache/cleanroom-k8s-venv-$VERSION"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  say "installing kubernetes-validate $VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kubernetes-validate==$VERSION"
fi
"$venv/bin/kubernetes-validate" --strict --kubernetes-version "$KUBERNETES" host/deploy/kubernetes/*.yaml
