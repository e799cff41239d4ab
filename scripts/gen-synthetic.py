#!/usr/bin/env python3
"""Generate synthetic admissions for two hospitals with different schemas.

    scripts/gen-synthetic.py --out data/ [--rows 5000] [--seed 7]

St Mary's (site A) records age, sex (M/F), a 3-character ICD-10 category,
admission and discharge dates and a died flag. Northfield (site B) records
birth and admission years, gender (male/female), a full ICD-10 code in lower
or upper case, length of stay in days and an outcome word. Both draw from the
same clinical model (diagnosis mix, age, stay and mortality by diagnosis), so
a harmonised analysis pools them meaningfully. About 1% of rows have a
missing field. No real patient is represented.
"""

import argparse
import csv
import datetime as dt
import os
import random

# ICD-10 category: (name, prevalence weight, mean age, mean stay days, base mortality)
DIAGNOSES = {
    "I21": ("acute myocardial infarction", 14, 68, 5.5, 0.07),
    "I50": ("heart failure", 12, 77, 7.5, 0.09),
    "J18": ("pneumonia", 16, 71, 6.0, 0.10),
    "J44": ("COPD exacerbation", 10, 70, 5.0, 0.04),
    "N39": ("urinary tract infection", 9, 74, 4.5, 0.02),
    "K35": ("appendicitis", 8, 31, 2.5, 0.002),
    "S72": ("hip fracture", 9, 82, 10.0, 0.06),
    "E11": ("type 2 diabetes", 7, 63, 4.0, 0.01),
    "A41": ("sepsis", 6, 69, 9.0, 0.18),
    "C34": ("lung cancer", 5, 67, 8.0, 0.12),
    "G45": ("transient ischaemic attack", 3, 72, 2.0, 0.005),
    "T40": ("opioid poisoning", 1, 38, 1.5, 0.03),
}
SUBCODES = "0123489"


def admission(rng):
    codes = list(DIAGNOSES)
    weights = [DIAGNOSES[c][1] for c in codes]
    code = rng.choices(codes, weights)[0]
    _, _, mean_age, mean_los, mortality = DIAGNOSES[code]
    age = max(18, min(99, int(rng.gauss(mean_age, 11))))
    female = rng.random() < 0.52
    los = max(0.5, rng.lognormvariate(0, 0.5) * mean_los)
    risk = mortality * (1.0 + max(0, age - 65) / 25.0)
    died = rng.random() < risk
    admit = dt.date(2023, 1, 1) + dt.timedelta(days=rng.randrange(730))
    return code, age, female, los, died, admit


def site_a(rng, rows, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "age", "sex", "diagnosis", "admit_date", "discharge_date", "died"])
        for i in range(rows):
            code, age, female, los, died, admit = admission(rng)
            discharge = admit + dt.timedelta(days=max(0, round(los)))
            row = [f"SM{100000 + i}", age, "F" if female else "M", code, admit.isoformat(), discharge.isoformat(), int(died)]
            if rng.random() < 0.01:
                row[rng.choice([1, 3, 5])] = ""
            w.writerow(row)


def site_b(rng, rows, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mrn", "birth_year", "admit_year", "gender", "dx_code", "los_days", "outcome"])
        for i in range(rows):
            code, age, female, los, died, admit = admission(rng)
            dx = f"{code}.{rng.choice(SUBCODES)}"
            if rng.random() < 0.3:
                dx = dx.lower()
            row = [f"NF-{rng.randrange(16**8):08x}", admit.year - age, admit.year, "female" if female else "male", dx, round(los, 1), "deceased" if died else "discharged"]
            if rng.random() < 0.01:
                row[rng.choice([1, 4, 5])] = ""
            w.writerow(row)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for st_marys.csv and northfield.csv")
    p.add_argument("--rows", type=int, default=5000, help="admissions per hospital")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)
    site_a(rng, args.rows, os.path.join(args.out, "st_marys.csv"))
    site_b(rng, int(args.rows * 0.8), os.path.join(args.out, "northfield.csv"))
    print(f"wrote {args.out}/st_marys.csv ({args.rows} rows) and {args.out}/northfield.csv ({int(args.rows * 0.8)} rows)")


if __name__ == "__main__":
    main()
