"""numpy inside the sandbox: a float64 column as numpy views of its Arrow buffers, batch by
batch and whole, statistics over it, and a least-squares fit (numpy's bundled LAPACK)."""

import numpy as np

import cleanroom


@cleanroom.analysis
def run(params):
    table = cleanroom.open(params.get("table", "data"))
    column = params.get("column", "x")
    total = 0.0
    rows = 0
    for cols in cleanroom.numpy_columns(table, [column]):
        x = cols[column]
        total += float(x.sum())
        rows += int(x.size)
    out = {"sum": total, "rows": rows, "version": np.__version__}
    if params.get("fit", True):
        x = table.numpy(column)
        design = np.vstack([x, np.ones_like(x)]).T
        slope, intercept = np.linalg.lstsq(design, 2.0 * x + 1.0, rcond=None)[0]
        out.update(mean=float(x.mean()), std=float(x.std()), slope=float(slope), intercept=float(intercept))
    cleanroom.publish_json("numpy", out)
