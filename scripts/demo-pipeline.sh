#!/usr/bin/env bash
# The second demo: harmonise → link → analyse, as a pipeline, on embedded defaults.
#
#   1. cleanroomd starts (simulation attestation); St Mary's and Northfield upload patient
#      tables that share no identifier and are shaped differently (scripts/gen-linkage.py);
#   2. the researcher reads out the pipeline's digest (examples/linkage-pipeline): two SQL
#      harmonisations, the linkage engine, a SQL analysis; both hospitals grant that digest once;
#   3. the pipeline runs: harmonised and linked tables stay inside as derived datasets, only
#      the aggregate cohort table leaves; the receipt covers every step;
#   4. St Mary's sees what was derived from its data; it runs again and reuses the kept tables;
#   5. St Mary's revokes the pipeline: its derived datasets become unusable.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"
ensure_rust

work=${CLEANROOM_DEMO_DIR:-$CLEANROOM_ROOT/target/demo-pipeline}
rm -rf "$work"
mkdir -p "$work"
profile=${CLEANROOM_DEMO_PROFILE:-release}
records=${CLEANROOM_DEMO_RECORDS:-2000}

say "building cleanroomd, the CLI, the linkage engine and the SQL engine (first time: a while)"
build_demo_tools "$profile"
build_guest cleanroom-linkage
engine=${CLEANROOM_SQL_ENGINE:-$CARGO_TARGET_DIR/sql-engine/cleanroom_sql.wasm}
[ -f "$engine" ] || scripts/build-sql.sh
# The pipeline names the linkage engine beside it.
mkdir -p "$work/pipeline"
cp examples/linkage-pipeline/pipeline.toml "$work/pipeline/"
cp "$guest" "$work/pipeline/"
pipeline="$work/pipeline/pipeline.toml"

start_demo_server "$bin" "$work"
export CLEANROOM_ACCEPT_INSECURE_SIMULATION=true

for party in st_marys northfield researcher; do
  "$cleanroom" keygen -o "$work/keys/$party.json" --json >"$work/$party.keygen.json"
done
researcher_id=$(json_get "$work/researcher.keygen.json" party)

say "two hospitals' patient tables from one population: no shared identifier, different layouts, typos"
python3 scripts/gen-linkage.py --out "$work/data" --records "$records"
sed -n 1,3p "$work/data/st_marys_patients.csv"
sed -n 1,3p "$work/data/northfield_patients.csv"
"$cleanroom" dataset push "$work/data/st_marys_patients.csv" --key "$work/keys/st_marys.json" --json >"$work/a.json"
"$cleanroom" dataset push "$work/data/northfield_patients.csv" --key "$work/keys/northfield.json" --json >"$work/b.json"
a=$(json_get "$work/a.json" id)
b=$(json_get "$work/b.json" id)

say "the pipeline the hospitals are asked to approve, once, by its digest"
"$cleanroom" pipeline show "$pipeline" --engine "$engine"
"$cleanroom" pipeline show "$pipeline" --engine "$engine" --json >"$work/pipeline.json"
digest=$(json_get "$work/pipeline.json" pipeline)

say "both hospitals grant it: names, birth dates, postcodes and record numbers never leave; groups under 5 suppressed"
"$cleanroom" policy grant --key "$work/keys/st_marys.json" --dataset "$a" --module "$digest" --researcher "$researcher_id" \
  --identifier patient_id --identifier given_name --identifier family_name --identifier birth_date --identifier postcode \
  --min-group 5 --max-runs 5 --note "harmonise, link and count patients per diagnosis"
"$cleanroom" policy grant --key "$work/keys/northfield.json" --dataset "$b" --module "$digest" --researcher "$researcher_id" \
  --identifier mrn --identifier name --identifier dob --identifier post_code --min-group 5 --max-runs 5

say "the researcher runs the pipeline"
"$cleanroom" pipeline submit "$pipeline" --engine "$engine" --key "$work/keys/researcher.json" \
  --input "st_marys=$a" --input "northfield=$b" --json >"$work/run.json"
run=$(json_get "$work/run.json" run)
"$cleanroom" run watch "$run" --key "$work/keys/researcher.json"
"$cleanroom" result fetch "$run" --key "$work/keys/researcher.json" --out "$work/results"
say "released: patients per diagnosis, treated at one or both hospitals (the links themselves never left)"
cat "$work/results/analyse.result.csv"

say "St Mary's sees what was derived from its table, with provenance"
"$cleanroom" derived list --key "$work/keys/st_marys.json"

say "running it again reuses every kept table: only the analysis runs"
"$cleanroom" pipeline submit "$pipeline" --engine "$engine" --key "$work/keys/researcher.json" \
  --input "st_marys=$a" --input "northfield=$b" --json >"$work/run2.json"
"$cleanroom" run watch "$(json_get "$work/run2.json" run)" --key "$work/keys/researcher.json"

say "St Mary's revokes the pipeline: everything derived from its data is unusable"
"$cleanroom" policy revoke --key "$work/keys/st_marys.json" --dataset "$a" --module "$digest"
"$cleanroom" derived list --key "$work/keys/northfield.json"

say "done: results in $work/results"
