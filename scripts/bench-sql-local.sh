#!/usr/bin/env bash
# `cleanroom run-local --sql` over a 10M-row Parquet file, whole process (wall time and peak
# memory), against native DataFusion (1 partition) and DuckDB (1 thread) reading the same file
# in a process of their own (docs/benchmarks.md). Needs the SQL engine (scripts/build-sql.sh) and
# datafusion, duckdb and pyarrow in the project venv:
#   ~/.cache/cleanroom-venv/bin/pip install datafusion==55.0.0 duckdb pyarrow
#
#   scripts/bench-sql-local.sh [ROWS]      # default 10000000
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"
ensure_rust
rows=${1:-10000000}
py="$CLEANROOM_VENV/bin/python"
"$py" -c 'import datafusion, duckdb, pyarrow' 2>/dev/null || {
  echo "install the native baselines first: $CLEANROOM_VENV/bin/pip install datafusion==55.0.0 duckdb pyarrow" >&2
  exit 1
}
cargo build --locked -q -p cleanroom-cli
cli="$CARGO_TARGET_DIR/debug/cleanroom"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" - "$work/data.parquet" "$rows" <<'PY'
import sys
import pyarrow as pa, pyarrow.parquet as pq
n = int(sys.argv[2])
k = pa.array([(i * 7919) % 1000 for i in range(n)], pa.int64())
v = pa.array([(i % 100) * 0.5 for i in range(n)], pa.float64())
pq.write_table(pa.table({"k": k, "v": v}), sys.argv[1], row_group_size=1 << 20)
PY
sql="SELECT k, SUM(v) AS total, COUNT(*) AS n FROM data GROUP BY k ORDER BY k"
cat >"$work/native.py" <<'PY'
import sys
engine, path, sql = sys.argv[1:4]
if engine == "datafusion":
    from datafusion import SessionConfig, SessionContext
    ctx = SessionContext(SessionConfig().with_target_partitions(1))
    ctx.register_parquet("data", path)
    rows = ctx.sql(sql).to_arrow_table().num_rows
else:
    import duckdb
    con = duckdb.connect(config={"threads": 1})
    con.execute(f"CREATE VIEW data AS SELECT * FROM read_parquet('{path}')")
    rows = len(con.execute(sql).fetchall())
assert rows == 1000, rows
PY
measure() { # label, command...
  local label=$1
  shift
  /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null
  read -r secs kib <"$work/time"
  awk -v l="$label" -v s="$secs" -v k="$kib" 'BEGIN { printf "| %s | %.2f s | %.0f MB |\n", l, s, k / 1024 }' </dev/null
}
echo "| GROUP BY over $rows rows of Parquet ($(du -h "$work/data.parquet" | cut -f1)), whole process | wall | peak RSS |"
echo "|---|---|---|"
# First run compiles or loads the engine's native code; time the second.
"$cli" run-local --sql "$sql" --table data="$work/data.parquet" --out "$work/out" >/dev/null
measure "cleanroom run-local --sql (the SQL engine in the sandbox)" \
  "$cli" run-local --sql "$sql" --table data="$work/data.parquet" --out "$work/out"
measure "DataFusion 55 (Python), 1 partition" "$py" "$work/native.py" datafusion "$work/data.parquet" "$sql"
measure "DuckDB, 1 thread" "$py" "$work/native.py" duckdb "$work/data.parquet" "$sql"
