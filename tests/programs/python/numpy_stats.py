"""numpy inside the sandbox: a float64 column as numpy views of its Arrow buffers, batch by
batch and whole, statistics over it, and a least-squares fit (numpy's bundled LAPACK)."""

import time

import numpy as np

import cleanroom


@cleanroom.analysis
def run(params):
    table = cleanroom.open(params.get("table", "data"))
    column = params.get("column", "x")
    total = 0.0
    rows = 0
    compute = 0.0  # seconds in numpy itself, apart from handing the batches over
    for cols in cleanroom.numpy_columns(table, [column]):
        x = cols[column]
        start = time.perf_counter()
        total += float(x.sum())
        compute += time.perf_counter() - start
        rows += int(x.size)
    out = {"sum": total, "rows": rows, "version": np.__version__, "compute_seconds": compute}
    if params.get("fit", True):
        x = table.numpy(column)
        design = np.vstack([x, np.ones_like(x)]).T
        slope, intercept = np.linalg.lstsq(design, 2.0 * x + 1.0, rcond=None)[0]
        out.update(mean=float(x.mean()), std=float(x.std()), slope=float(slope), intercept=float(intercept))
    cleanroom.publish_json("numpy", out)
