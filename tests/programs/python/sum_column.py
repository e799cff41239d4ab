"""Sums a float64 column over raw buffers (benchmark twin of the Rust sum_column)."""

import cleanroom


@cleanroom.analysis
def run(params):
    table = cleanroom.open(params.get("table", "data"))
    index = table.index(params.get("column", "x"))
    total = 0.0
    rows = 0
    for batch in table.batches():
        col = batch.column(index)
        rows += len(col)
        total += sum(col.values)
    cleanroom.publish_json("sum", {"sum": total, "rows": rows})
