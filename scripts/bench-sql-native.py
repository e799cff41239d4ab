#!/usr/bin/env python3
"""Native baselines for the SQL benchmark: the same query on the same Arrow
IPC file, with DataFusion (single partition) and DuckDB (one thread).

    bench-sql-native.py DATA.arrow "SELECT ..."   → JSON timings on stdout
"""
import json
import sys
import time

import duckdb
import pyarrow as pa
import pyarrow.ipc as ipc
from datafusion import SessionConfig, SessionContext


def best(f, n=5):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    path, sql = sys.argv[1], sys.argv[2]
    table = ipc.open_file(path).read_all()
    ctx = SessionContext(SessionConfig().with_target_partitions(1))
    ctx.register_record_batches("data", [table.to_batches()])
    df_time = best(lambda: ctx.sql(sql).collect())
    con = duckdb.connect()
    con.execute("SET threads TO 1")
    con.register("data", table)
    duck_time = best(lambda: con.execute(sql).fetchall())
    print(json.dumps({"datafusion_ms": df_time * 1e3, "duckdb_ms": duck_time * 1e3,
                      "datafusion_version": __import__("datafusion").__version__, "duckdb_version": duckdb.__version__}))


if __name__ == "__main__":
    main()
