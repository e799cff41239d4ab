#!/usr/bin/env bash
# Utility of the preview's synthetic table against smartnoise-synth's MST at the same ε
# (docs/benchmarks.md), on a real dataset: the RAND Health Insurance Experiment as shipped in
# statsmodels (20,190 person-years). Installs the comparison into a cached venv (pinned;
# smartnoise-synth without its torch-based synthesizers, which MST does not use).
#
#   scripts/bench-preview.sh [EPSILON...]     # default: 0.5 1 4
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"
ensure_rust
venv=${CLEANROOM_DP_VENV:-$HOME/.cache/cleanroom-dp-venv}
if ! "$venv/bin/python" -c 'import snsynth.mst, statsmodels' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --no-deps smartnoise-synth==1.0.8 smartnoise-sql==1.0.10
  "$venv/bin/pip" install --quiet mbi==1.1.0 jax==0.10.2 jaxlib==0.10.2 chex==0.1.92 \
    optax==0.2.8 networkx==3.6.1 numpy==2.4.6 scipy==1.17.1 'pandas==2.3.3' Faker==40.63.0 \
    'disjoint-set==0.9.0' statsmodels==0.15.0 PyYAML==6.0.4 SQLAlchemy==2.1.9 \
    antlr4-python3-runtime==4.9.3 graphviz==0.21 opendp==0.14.2
fi
# The bench binary's path, from cargo itself (the consumer reads every line: no closed pipe).
bench=$(cargo bench --locked -p cleanroom-tests --bench dp --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json, sys
paths = [m["executable"] for m in map(json.loads, sys.stdin)
         if m.get("executable") and m["target"]["name"] == "dp"]
print(paths[-1])')
"$venv/bin/python" scripts/bench-preview.py --bench "$bench" --epsilons "${@:-0.5 1 4}"
