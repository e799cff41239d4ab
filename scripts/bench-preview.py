"""Compare the utility of cleanroom's DP synthetic table (the preview) with smartnoise-synth's
MST at the same ε: average total-variation distance of every 1-way and 2-way marginal between
the real and the synthetic table. Both get the same discretised columns and domains; both
draw as many rows as the real table has. Run by scripts/bench-preview.sh."""

import argparse
import itertools
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import pandas as pd
import statsmodels.api as sm

# Public cut points (from the study's documented ranges, not the data), so the domains
# declared to both generators are data-independent.
CUTS = {
    "mdvis": ([-1, 0, 1, 2, 4, 9, 1000], ["0", "1", "2", "3-4", "5-9", "10+"]),
    "lpi": ([-1, 1, 2, 3, 4, 5, 6, 7, 100], ["<1", "1", "2", "3", "4", "5", "6", "7+"]),
    "fmde": ([-1, 1, 2, 3, 4, 5, 6, 7, 8, 100], ["<1", "1", "2", "3", "4", "5", "6", "7", "8+"]),
    "disea": ([-1, 4, 9, 14, 19, 29, 1000], ["0-4", "5-9", "10-14", "15-19", "20-29", "30+"]),
}


def real_table():
    d = sm.datasets.randhie.load_pandas().data
    out = pd.DataFrame()
    for col in d.columns:
        if col in CUTS:
            edges, labels = CUTS[col]
            out[col] = pd.cut(d[col], bins=edges, labels=labels).astype(str)
        elif col == "lncoins":
            out[col] = d[col].round(1).astype(str)
        else:
            out[col] = d[col].astype(int).astype(str)
    return out


def domains(df):
    doms = {}
    for col in df.columns:
        if col in CUTS:
            doms[col] = CUTS[col][1]
        elif col == "lncoins":
            # log(coinsurance + 1) of the plans' rates 0, 25, 50 and 95 %.
            doms[col] = ["0.0", "3.3", "3.9", "4.6"]
        else:
            doms[col] = ["0", "1"]
    return doms


def tvd(a, b, cols):
    pa = a.groupby(list(cols)).size() / len(a)
    pb = b.groupby(list(cols)).size() / len(b)
    pa, pb = pa.align(pb, fill_value=0.0)
    return 0.5 * float(np.abs(pa - pb).sum())


def utility(real, synth):
    cols = list(real.columns)
    one = np.mean([tvd(real, synth, [c]) for c in cols])
    two = np.mean([tvd(real, synth, list(p)) for p in itertools.combinations(cols, 2)])
    return one, two


def ours(bench, real, doms, epsilon, tmp):
    src = os.path.join(tmp, "real.csv")
    table = real.copy()
    table.insert(0, "person", [f"p{i}" for i in range(len(table))])
    table.to_csv(src, index=False)
    terms = {
        "unit_column": "person",
        "epsilon": epsilon,
        "max_epsilon_per_run": epsilon,
        "columns": {c: {"categories": v} for c, v in doms.items()},
    }
    dom_file = os.path.join(tmp, "dp.json")
    with open(dom_file, "w") as f:
        json.dump(terms, f)
    out = os.path.join(tmp, "ours.csv")
    start = time.time()
    subprocess.run(
        [bench, "preview", src, dom_file, str(epsilon), str(len(real)), out],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    took = time.time() - start
    synth = pd.read_csv(out, dtype=str).drop(columns=["person"]).fillna("(other)")
    return synth, took


def theirs(real, epsilon):
    from snsynth.mst import MSTSynthesizer

    start = time.time()
    mst = MSTSynthesizer(epsilon=epsilon)
    mst.fit(real, categorical_columns=list(real.columns), preprocessor_eps=0.0)
    synth = mst.sample(len(real)).astype(str)
    return synth, time.time() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--epsilons", default="0.5 1 4")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    real = real_table()
    doms = domains(real)
    for col, values in doms.items():
        outside = set(real[col]) - set(values)
        assert not outside, f"{col}: values {outside} outside the declared domain"
    print(f"RAND HIE (statsmodels randhie): {len(real)} rows, {len(real.columns)} columns")
    print()
    print("| ε | ours: 1-way TVD | ours: 2-way TVD | ours: time | MST: 1-way TVD | MST: 2-way TVD | MST: time |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for eps in [float(e) for e in args.epsilons.split()]:
            o, t = [], []
            to = tt = 0.0
            for _ in range(args.repeats):
                s, took = ours(args.bench, real, doms, eps, tmp)
                o.append(utility(real, s))
                to += took
                s, took = theirs(real, eps)
                t.append(utility(real, s))
                tt += took
            o, t = np.mean(o, axis=0), np.mean(t, axis=0)
            n = args.repeats
            print(
                f"| {eps} | {o[0]:.4f} | {o[1]:.4f} | {to / n:.1f} s | {t[0]:.4f} | {t[1]:.4f} | {tt / n:.1f} s |"
            )


if __name__ == "__main__":
    main()
