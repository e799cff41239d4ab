"""The Python twin of the Rust aggregate_stats program: asks the host for a grouped
aggregate (count, mean, median) and publishes nothing else."""

import cleanroom


@cleanroom.analysis
def run(params):
    rows = cleanroom.aggregate(
        "by_group",
        params.get("table", "data"),
        group_by=[params.get("group", "sex")],
        value=params.get("value", "age"),
        statistics=["count", "mean", "median"],
        epsilon=params.get("epsilon"),
    )
    cleanroom.info(f"{len(rows)} groups")
