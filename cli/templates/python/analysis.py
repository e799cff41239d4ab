"""Patients and mean age per diagnosis, from the granted table `patients`.

The `patients` column is declared a count, so the data owners' small-group rules apply to
it in the enclave (and in `cleanroom run-local --policy`).
"""

import cleanroom


@cleanroom.analysis
def run(params):
    min_group = int(params.get("min_group", 10))
    groups = {}
    for row in cleanroom.open("patients").rows(["diagnosis", "age"]):
        if row["diagnosis"] is None or row["age"] is None:
            continue
        n, total = groups.get(row["diagnosis"], (0, 0.0))
        groups[row["diagnosis"]] = (n + 1, total + row["age"])
    kept = sorted((d, n, total / n) for d, (n, total) in groups.items() if n >= min_group)
    cleanroom.publish_table(
        "by_diagnosis",
        {
            "diagnosis": [d for d, _, _ in kept],
            "patients": [n for _, n, _ in kept],
            "mean_age": [m for _, _, m in kept],
        },
        types={"diagnosis": "utf8", "patients": "int64", "mean_age": "float64"},
        counts=["patients"],
    )
