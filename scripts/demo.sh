#!/usr/bin/env bash
# The main job, on embedded defaults: a two-hospital study end to end.
#
#   1. cleanroomd starts (simulation attestation: no SEV-SNP hardware here);
#   2. St Mary's and Northfield, whose admission tables have different
#      schemas, verify the enclave's attestation, seal their tables to it and
#      upload them;
#   3. a researcher uploads a harmonising cohort-statistics analysis; both
#      hospitals grant it (identifiers never released, groups under 10
#      suppressed; Northfield also reviews outputs before release);
#   4. the researcher runs it; Northfield reviews and releases;
#   5. the researcher decrypts the results and checks the enclave-signed
#      receipt (and that its release is in the audit log); everyone verifies the
#      audit log, a Merkle log with enclave-signed tree heads.
# Every connection is attested TLS: the CLI checks the enclave's evidence and that the
# enclave endorsed the TLS key it is talking to.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"
ensure_rust

work=${CLEANROOM_DEMO_DIR:-$CLEANROOM_ROOT/target/demo}
rm -rf "$work"
mkdir -p "$work"
# CLEANROOM_DEMO_PROFILE=dev reuses the test suite's debug build (scripts/test.sh does).
profile=${CLEANROOM_DEMO_PROFILE:-release}

say "building cleanroomd, the cleanroom CLI and the analysis (first time: several minutes)"
build_demo_tools "$profile"
build_guest cohort-stats
analysis=$guest

start_demo_server "$bin" "$work"
# Every command attests the server; these two variables say what to require of it.
export CLEANROOM_ACCEPT_INSECURE_SIMULATION=true

say "three parties create their keys"
for party in st_marys northfield researcher; do
  "$cleanroom" keygen -o "$work/keys/$party.json" --json >"$work/$party.keygen.json"
done
researcher_id=$(json_get "$work/researcher.keygen.json" party)
echo "the researcher's party id (shared with the hospitals): $researcher_id"

say "synthetic admissions: St Mary's (age, sex, ICD-10 category, dates) and Northfield (birth year, gender, full ICD-10 code, stay, outcome)"
python3 scripts/gen-synthetic.py --out "$work/hospital-data" --rows 5000
sed -n 1,3p "$work/hospital-data/st_marys.csv"
sed -n 1,3p "$work/hospital-data/northfield.csv"

say "St Mary's verifies the enclave, seals its table to it and uploads"
"$cleanroom" attest verify
"$cleanroom" dataset push "$work/hospital-data/st_marys.csv" --key "$work/keys/st_marys.json" --json >"$work/st_marys.dataset.json"
st_marys=$(json_get "$work/st_marys.dataset.json" id)
echo "St Mary's dataset: $st_marys"

say "Northfield does the same"
"$cleanroom" dataset push "$work/hospital-data/northfield.csv" --key "$work/keys/northfield.json" --json >"$work/northfield.dataset.json"
northfield=$(json_get "$work/northfield.dataset.json" id)
echo "Northfield dataset: $northfield"
"$cleanroom" dataset list --key "$work/keys/st_marys.json"

say "the researcher uploads the harmonising cohort-statistics analysis"
"$cleanroom" module push "$analysis" --key "$work/keys/researcher.json" --json >"$work/module.json"
module=$(json_get "$work/module.json" module)
echo "module $module"

params='{"group_by":"diagnosis","min_group":10}'
say "St Mary's grants it to that researcher: these exact params, at most 5 runs, identifiers never released, groups under 10 suppressed"
"$cleanroom" policy grant --key "$work/keys/st_marys.json" --dataset "$st_marys" --module "$module" --researcher "$researcher_id" \
  --params "$params" --identifier patient_id --min-group 10 --max-runs 5 --note "pooled cohort statistics by ICD-10 category"
say "Northfield grants it too, and reviews outputs before they are released (free-form JSON only leaves after review)"
"$cleanroom" policy grant --key "$work/keys/northfield.json" --dataset "$northfield" --module "$module" --researcher "$researcher_id" \
  --params "$params" --identifier mrn --min-group 10 --max-runs 5 --review

say "the researcher submits the run"
"$cleanroom" run submit --key "$work/keys/researcher.json" --module "$module" \
  --input "st_marys=$st_marys" --input "northfield=$northfield" --params "$params" --json >"$work/run.json"
run=$(json_get "$work/run.json" run)
"$cleanroom" run watch "$run" --key "$work/keys/researcher.json"

say "Northfield reviews what would be released (sealed to its own key), and releases it"
"$cleanroom" review show "$run" --key "$work/keys/northfield.json" --out "$work/review"
"$cleanroom" review release "$run" --key "$work/keys/northfield.json" --reason "aggregates only, small cells suppressed"

say "the researcher fetches the results: decrypted locally, checked against the enclave-signed receipt"
"$cleanroom" result fetch "$run" --key "$work/keys/researcher.json" --out "$work/results"

say "anyone holding receipt.json checks it offline: enclave signature, and its release is in the audit log"
enclave_key=$(json_get "$work/results/receipt.json" receipt receipt enclave_key)
"$cleanroom" receipt verify "$work/results/receipt.json" --enclave-key "$enclave_key"

say "St Mary's verifies the audit log (Merkle tree + enclave-signed head) and keeps a copy"
"$cleanroom" audit verify --key "$work/keys/st_marys.json" --save "$work/audit.json"
"$cleanroom" audit verify --key "$work/keys/st_marys.json" --file "$work/audit.json" --enclave-key "$enclave_key" >/dev/null
echo "the saved log verifies offline too"
say "later, St Mary's checks again: the server proves its log extends the head St Mary's kept"
"$cleanroom" audit verify --key "$work/keys/st_marys.json" >/dev/null
echo "consistent with the head verified before"

say "done: results in $work/results, audit log in $work/audit.json"
