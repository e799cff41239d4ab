#!/usr/bin/env bash
# The owners' console in a real browser: headless Chromium (Debian's `chromium`) driven by
# Playwright for Python (pinned, in a cached venv; it uses the system browser and downloads
# none). One hospital, one researcher, a simulated enclave; tests/console/console_test.py
# drives the owner through approve → watch live → review → release → audit, and the failure
# paths (no or wrong session token, a foreign origin, a server failing attestation, a
# tampered log). Screenshots land in $work/shots (current ones are in docs/console/).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"
ensure_rust

if ! command -v chromium >/dev/null 2>&1; then
  say "installing Debian's chromium (the browser the console test drives)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
venv=${CLEANROOM_CONSOLE_VENV:-$HOME/.cache/cleanroom-console-venv}
if ! "$venv/bin/python" -c 'import playwright.sync_api' 2>/dev/null; then
  say "installing Playwright for Python 1.65.2 into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet playwright==1.65.2
fi

work=${CLEANROOM_CONSOLE_DIR:-$CARGO_TARGET_DIR/console-test}
rm -rf "$work"
mkdir -p "$work"
profile=${CLEANROOM_DEMO_PROFILE:-dev}
say "building cleanroomd, the cleanroom CLI and the analysis"
build_demo_tools "$profile"
build_guest cohort-stats
analysis=$guest

start_demo_server "$bin" "$work"
export CLEANROOM_ACCEPT_INSECURE_SIMULATION=true

for party in northfield researcher; do
  "$cleanroom" keygen -o "$work/keys/$party.json" --json >"$work/$party.keygen.json"
done
python3 scripts/gen-synthetic.py --out "$work/hospital-data" --rows 2000
"$cleanroom" dataset push "$work/hospital-data/northfield.csv" --key "$work/keys/northfield.json" --json >"$work/dataset.json"
"$cleanroom" module push "$analysis" --key "$work/keys/researcher.json" --json >"$work/module.json"

say "the browser test"
"$venv/bin/python" tests/console/console_test.py \
  --cleanroom "$cleanroom" --work "$work" \
  --dataset "$(json_get "$work/dataset.json" id)" --module "$(json_get "$work/module.json" module)" \
  --chromium "$(command -v chromium)"
