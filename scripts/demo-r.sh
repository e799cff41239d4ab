#!/usr/bin/env bash
# The R demo: the two-hospital study, analysed in R inside the clean room.
#
#   1. cleanroomd starts with the R engine (GNU R 4.6 from webR, pinned and translated by
#      scripts/build-r.sh; its module id is the digest of its files);
#   2. St Mary's and Northfield upload their tables (different schemas);
#   3. the researcher asks both for a grant of a logistic-regression script
#      (examples/mortality-glm-r/analysis.R); each owner reads the script and grants the R
#      engine with that exact script pinned (a free-form table is reviewed, never released
#      unchecked), Northfield reviewing;
#   4. the researcher runs it (the script first runs locally on synthetic tables with
#      `cleanroom run-local analysis.R`); Northfield reviews the coefficient table, releases it;
#   5. the researcher decrypts the results and verifies the enclave-signed receipt.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"
ensure_rust

work=${CLEANROOM_DEMO_DIR:-$CLEANROOM_ROOT/target/demo-r}
rm -rf "$work"
mkdir -p "$work"
profile=${CLEANROOM_DEMO_PROFILE:-release}

say "building cleanroomd, the CLI, and the R engine (first time: several minutes)"
build_demo_tools "$profile"
r_engine=${CLEANROOM_R_ENGINE:-$(scripts/build-r.sh)}
script=examples/mortality-glm-r/analysis.R

say "synthetic admissions of both hospitals"
python3 scripts/gen-synthetic.py --out "$work/hospital-data" --rows 3000

say "the researcher develops locally: the same R, the same limits, on their own test tables"
"$cleanroom" run-local "$script" --r-engine "$r_engine" --out "$work/local" \
  --table st_marys="$work/hospital-data/st_marys.csv" --table northfield="$work/hospital-data/northfield.csv"

CLEANROOM_DEMO_SERVER_ARGS="--r-engine $r_engine" start_demo_server "$bin" "$work"
export CLEANROOM_ACCEPT_INSECURE_SIMULATION=true

for party in st_marys northfield researcher; do
  "$cleanroom" keygen -o "$work/keys/$party.json" --json >"$work/$party.keygen.json"
done
researcher_id=$(json_get "$work/researcher.keygen.json" party)

say "both hospitals verify the enclave and upload their sealed tables"
"$cleanroom" dataset push "$work/hospital-data/st_marys.csv" --key "$work/keys/st_marys.json" --json >"$work/st_marys.dataset.json"
"$cleanroom" dataset push "$work/hospital-data/northfield.csv" --key "$work/keys/northfield.json" --json >"$work/northfield.dataset.json"
st_marys=$(json_get "$work/st_marys.dataset.json" id)
northfield=$(json_get "$work/northfield.dataset.json" id)

say "the researcher asks both hospitals to grant the R script"
"$cleanroom" run request --key "$work/keys/researcher.json" --r "$script" \
  --input "st_marys=$st_marys" --input "northfield=$northfield" --note "in-hospital mortality, logistic regression"

say "each hospital reads the script and grants the R engine with exactly that script"
"$cleanroom" policy grant --key "$work/keys/st_marys.json" --dataset "$st_marys" --r "$script" \
  --researcher "$researcher_id" --identifier patient_id --max-runs 3 --unchecked review
"$cleanroom" policy grant --key "$work/keys/northfield.json" --dataset "$northfield" --r "$script" \
  --researcher "$researcher_id" --identifier mrn --max-runs 3 --review

say "the researcher runs it"
"$cleanroom" run submit --key "$work/keys/researcher.json" --r "$script" \
  --input "st_marys=$st_marys" --input "northfield=$northfield" --json >"$work/run.json"
run=$(json_get "$work/run.json" run)
"$cleanroom" run watch "$run" --key "$work/keys/researcher.json"

say "Northfield reviews the coefficient table (sealed to its key) and releases it"
"$cleanroom" review show "$run" --key "$work/keys/northfield.json" --out "$work/review"
"$cleanroom" review release "$run" --key "$work/keys/northfield.json" --reason "model coefficients only"

say "the researcher fetches the coefficients: decrypted locally, receipt verified"
"$cleanroom" result fetch "$run" --key "$work/keys/researcher.json" --out "$work/results"
enclave_key=$(json_get "$work/results/receipt.json" receipt receipt enclave_key)
"$cleanroom" receipt verify "$work/results/receipt.json" --enclave-key "$enclave_key"
say "done: coefficients in $work/results/coefficients.csv"
