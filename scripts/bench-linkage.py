#!/usr/bin/env python3
"""Linkage quality and speed: our linkage engine (in the sandbox) against Splink (DuckDB).

    scripts/bench-linkage.sh            # sets up Splink in a cached venv, then runs this

    bench-linkage.py --cleanroom BIN --engine LINKAGE.wasm --records N [--seed S] [--work DIR]

Both link the same two hospitals' tables (scripts/gen-linkage.py, harmonised to one layout as
examples/linkage-pipeline does in SQL) with the same blocking rules, comparison levels,
term-frequency adjustments, u from 1e6 random pairs, m by EM per blocking rule, and a 0.9
match-probability threshold (Splink with its documented workflow — prior from a deterministic
rule at recall 0.7, u fixed during EM — and again with u re-estimated per EM session, as our
engine does; each also with the same greedy one-to-one step as ours). Precision, recall and F1
are against the generator's truth;
times are wall-clock on this machine, ours for the whole `cleanroom run-local` process with
the compiled engine cached (a warm-up run compiles it first), Splink's from loading the CSVs
to its predictions in pandas.
"""

import argparse
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

PARAMS = {
    "key": "record_key",
    "model": {
        "blocking": [["surname", {"column": "first_name", "prefix": 1}], ["dob"], ["postcode"]],
        "comparisons": [
            {"column": "first_name", "method": {"jaro_winkler": [0.92, 0.8]}, "tf": True},
            {"column": "surname", "method": {"jaro_winkler": [0.92, 0.8]}, "tf": True},
            {"column": "dob", "method": {"date": {"within_days": [31]}}},
            {"column": "sex", "method": "exact"},
            {"column": "postcode", "method": {"prefix": [4, 2]}},
        ],
        "threshold": 0.9,
        "one_to_one": True,
        "max_pairs": 200_000_000,
    },
}


def harmonise(work):
    """The example pipeline's SQL harmonisation, in Python: one layout for both."""
    out = {}
    with open(os.path.join(work, "st_marys_patients.csv")) as f:
        out["a"] = [
            {"record_key": r["patient_id"], "first_name": r["given_name"], "surname": r["family_name"],
             "dob": r["birth_date"], "sex": r["sex"], "postcode": r["postcode"]}
            for r in csv.DictReader(f)
        ]
    with open(os.path.join(work, "northfield_patients.csv")) as f:
        rows = []
        for r in csv.DictReader(f):
            family, _, given = r["name"].partition(",")
            dob = dt.datetime.strptime(r["dob"], "%d/%m/%Y").date().isoformat() if r["dob"] else ""
            rows.append({"record_key": r["mrn"], "first_name": given.strip(),
                         "surname": family.strip().title(), "dob": dob,
                         "sex": {"male": "M", "female": "F"}.get(r["gender"], ""),
                         "postcode": r["post_code"]})
        out["b"] = rows
    for name, rows in out.items():
        with open(os.path.join(work, f"{name}.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return out


def score(links, truth):
    """links: (a key, b key) pairs."""
    a_person = {k: p for (s, k), p in truth.items() if s == "st_marys"}
    b_person = {k: p for (s, k), p in truth.items() if s == "northfield"}
    true_pairs = len(set(a_person.values()) & set(b_person.values()))
    tp = sum(1 for a, b in links if a_person[a] == b_person[b])
    p = tp / len(links) if links else 0.0
    r = tp / true_pairs if true_pairs else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"links": len(links), "true_links": tp, "precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}


def one_to_one(pairs):
    """Greedy by probability: each record in at most one link (what our one_to_one does)."""
    used_a, used_b, kept = set(), set(), []
    for prob, a, b in sorted(pairs, key=lambda x: -x[0]):
        if a not in used_a and b not in used_b:
            used_a.add(a)
            used_b.add(b)
            kept.append((a, b))
    return kept


def ours(args, work):
    params = os.path.join(work, "params.json")
    with open(params, "w") as f:
        json.dump(PARAMS, f)
    out = os.path.join(work, "ours")
    # Warm the compiled-component cache (run-local compiles a new engine once, ~5 s, then
    # loads native code), so the timed run is the linkage, not the compiler.
    subprocess.run([args.cleanroom, "run-local", args.engine, "--table", f"a={work}/a.csv",
                    "--table", f"b={work}/a.csv", "--params", f"@{params}", "--out", out + "-warm",
                    "--timeout", "1", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.perf_counter()
    subprocess.run([args.cleanroom, "run-local", args.engine, "--table", f"a={work}/a.csv",
                    "--table", f"b={work}/b.csv", "--params", f"@{params}", "--out", out, "--json"],
                   check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    with open(os.path.join(out, "links.csv")) as f:
        links = [(r["left_key"], r["right_key"]) for r in csv.DictReader(f)]
    return elapsed, links


def splink(work, fix_u=True):
    import pandas as pd
    import splink.comparison_library as cl
    from splink import Linker, SettingsCreator, block_on
    from splink.backends.duckdb import DuckDBAPI

    start = time.perf_counter()
    a = pd.read_csv(os.path.join(work, "a.csv"), dtype=str, keep_default_na=False).replace("", None)
    b = pd.read_csv(os.path.join(work, "b.csv"), dtype=str, keep_default_na=False).replace("", None)
    for df in (a, b):
        df["first_name"] = df["first_name"].str.lower()
        df["surname"] = df["surname"].str.lower()
        # PostcodeComparison parses UK postcodes ("AB12 3CD"): give it them as written.
        df["postcode"] = df["postcode"].str.upper()
        df["dob_date"] = pd.to_datetime(df["dob"], format="%Y-%m-%d", errors="coerce")
    rules = [block_on("surname", "substr(first_name, 1, 1)"), block_on("dob"), block_on("postcode")]
    settings = SettingsCreator(
        link_type="link_only",
        unique_id_column_name="record_key",
        blocking_rules_to_generate_predictions=rules,
        comparisons=[
            cl.JaroWinklerAtThresholds("first_name", [0.92, 0.8]).configure(term_frequency_adjustments=True),
            cl.JaroWinklerAtThresholds("surname", [0.92, 0.8]).configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("dob_date", input_is_string=False,
                                     datetime_metrics=["day"], datetime_thresholds=[31]),
            cl.ExactMatch("sex"),
            cl.PostcodeComparison("postcode"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    db = DuckDBAPI()
    linker = Linker([db.register(a, table_name="a"), db.register(b, table_name="b")], settings, log_level=30)
    # Splink's documented workflow: the prior from deterministic rules with an assumed recall,
    # u from random pairs, m by EM on each blocking rule.
    linker.training.estimate_probability_two_random_records_match(
        [block_on("first_name", "surname", "dob")], recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=42)
    for rule in rules:
        linker.training.estimate_parameters_using_expectation_maximisation(
            rule, fix_u_probabilities=fix_u)
    predictions = linker.inference.predict(threshold_match_probability=0.9).as_pandas_dataframe()
    elapsed = time.perf_counter() - start
    pairs = []
    for r in predictions.itertuples():
        left, right = (r.record_key_l, r.record_key_r) if r.source_dataset_l == "a" else (r.record_key_r, r.record_key_l)
        pairs.append((r.match_probability, left, right))
    return elapsed, [(a, b) for _, a, b in pairs], one_to_one(pairs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cleanroom", required=True)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--records", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--work", default="/tmp/cleanroom-bench-linkage")
    args = ap.parse_args()
    work = os.path.join(args.work, str(args.records))
    os.makedirs(work, exist_ok=True)
    subprocess.run([sys.executable, os.path.join(HERE, "gen-linkage.py"), "--out", work,
                    "--records", str(args.records), "--seed", str(args.seed)], check=True)
    harmonise(work)
    with open(os.path.join(work, "truth.csv")) as f:
        truth = {(r["source"], r["key"]): r["person"] for r in csv.DictReader(f)}
    ours_s, ours_links = ours(args, work)
    sp_s, sp_links, sp_1to1 = splink(work)
    # Splink with u re-estimated in each EM session, as our engine does (not its default).
    try:
        free_s, free_links, free_1to1 = splink(work, fix_u=False)
        free = dict(score(free_links, truth), seconds=round(free_s, 2))
        free_one = score(free_1to1, truth)
    except ValueError as e:  # Splink refuses a level no pair of a session reaches
        free = free_one = {"failed": str(e).split(".")[0]}
    result = {
        "records": f"{args.records} x {args.records}",
        "ours": dict(score(ours_links, truth), seconds=round(ours_s, 2)),
        "splink": dict(score(sp_links, truth), seconds=round(sp_s, 2)),
        "splink_one_to_one": score(sp_1to1, truth),
        "splink_u_free": free,
        "splink_u_free_one_to_one": free_one,
        "time_ratio_ours_over_splink": round(ours_s / sp_s, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
