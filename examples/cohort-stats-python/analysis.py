"""Cohort statistics per group (ICD-10 category, sex or age band) over
admissions from any number of hospitals, harmonising their schemas first.
The Python twin of examples/cohort-stats-rust: same params, same output.
"""

import cleanroom

PARAMS = {"group_by", "min_group", "tables"}


def site_a(table):
    """age, sex (M/F), diagnosis (I21), admit_date, discharge_date, died (0/1)."""
    cols = ["age", "sex", "diagnosis", "admit_date", "discharge_date", "died"]
    for r in table.rows(cols):
        if any(r[c] is None for c in cols):
            continue  # incomplete records are skipped rather than guessed
        yield {
            "age": float(r["age"]),
            "sex": "F" if r["sex"].upper() == "F" else "M",
            "diagnosis": category(r["diagnosis"]),
            "los_days": float(r["discharge_date"] - r["admit_date"]),
            "died": r["died"] != 0,
        }


def site_b(table):
    """birth_year, admit_year, gender, dx_code (i21.4), los_days, outcome."""
    cols = ["birth_year", "admit_year", "gender", "dx_code", "los_days", "outcome"]
    for r in table.rows(cols):
        if any(r[c] is None for c in cols):
            continue
        yield {
            "age": float(r["admit_year"] - r["birth_year"]),
            "sex": "F" if r["gender"].lower() == "female" else "M",
            "diagnosis": category(r["dx_code"]),
            "los_days": float(r["los_days"]),
            "died": r["outcome"].lower() == "deceased",
        }


def category(code):
    return code.strip().replace(".", "")[:3].upper()


def harmonise(table):
    names = set(table.column_names)
    if {"diagnosis", "admit_date"} <= names:
        return site_a(table)
    if {"dx_code", "birth_year"} <= names:
        return site_b(table)
    raise cleanroom.AnalysisError(
        f"table {table.name!r}: unrecognised layout: expected site A (diagnosis, admit_date, ...) "
        "or site B (dx_code, birth_year, ...) columns"
    )


def age_band(age):
    lo = int(age) // 10 * 10
    return f"{lo}-{lo + 9}"


KEYS = {
    "diagnosis": lambda a: a["diagnosis"],
    "sex": lambda a: a["sex"],
    "age_band": lambda a: age_band(a["age"]),
}


@cleanroom.analysis
def run(params):
    unknown = set(params) - PARAMS
    if unknown:
        raise cleanroom.AnalysisError(f"invalid params: unknown field {sorted(unknown)}, expected {sorted(PARAMS)}")
    group_by = params.get("group_by", "diagnosis")
    if group_by not in KEYS:
        raise cleanroom.AnalysisError(f"invalid params: group_by must be one of {sorted(KEYS)}")
    min_group = int(params.get("min_group", 10))
    names = params.get("tables") or cleanroom.table_names()

    admissions = []
    for name in names:
        before = len(admissions)
        admissions.extend(harmonise(cleanroom.open(name)))
        cleanroom.info(f"{name}: {len(admissions) - before} admissions")

    stats = cleanroom.group_stats(
        admissions, KEYS[group_by], means=["age", "los_days"], rates=["died"], min_count=min_group
    )
    cleanroom.publish_table(
        "cohort_stats",
        {
            "group": [r["group"] for r in stats.rows],
            "patients": [r["count"] for r in stats.rows],
            "mean_age": [r["mean_age"] for r in stats.rows],
            "mean_los_days": [r["mean_los_days"] for r in stats.rows],
            "mortality_pct": [r["died_pct"] for r in stats.rows],
        },
        types={"group": "utf8", "patients": "int64", "mean_age": "float64", "mean_los_days": "float64", "mortality_pct": "float64"},
        counts=["patients"],
    )
    cleanroom.publish_json(
        "summary",
        {
            "tables": names,
            "admissions": len(admissions),
            "group_by": group_by,
            "groups_released": len(stats.rows),
            "groups_suppressed": stats.suppressed,
            "min_group": min_group,
        },
    )
