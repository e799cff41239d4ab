#!/usr/bin/env python3
"""Generate two hospitals' patient tables from one synthetic population, with known truth.

    scripts/gen-linkage.py --out DIR [--records 10000] [--overlap 0.5] [--seed 11]

Each hospital holds --records patients; a share --overlap of St Mary's patients were also
treated at Northfield. No identifier is shared: St Mary's numbers its patients SM..., Northfield
MRN NF..., and the tables are shaped differently:

  st_marys_patients.csv   patient_id, given_name, family_name, birth_date (YYYY-MM-DD),
                          sex (M/F), postcode, diagnosis (ICD-10 category), died (0/1)
  northfield_patients.csv mrn, name ("FAMILY, Given"), dob (DD/MM/YYYY), gender (male/female),
                          post_code, dx_code (ICD-10 with subcode), outcome (discharged/deceased)
  truth.csv               source, key, person   (never uploaded: the answer key)

Northfield's copy of a shared patient carries realistic errors: typos in names, nicknames
(William -> Bill), a changed surname, swapped day and month or a mistyped digit in the birth
date, a moved postcode, missing values. Families share surnames and postcodes, and common names
are common (Zipf-distributed), so names alone do not identify anyone. No real person is
represented.
"""

import argparse
import csv
import datetime as dt
import os
import random

GIVEN_F = (
    "Mary Elizabeth Sarah Margaret Emma Olivia Sophie Jessica Emily Hannah Charlotte Amelia Grace "
    "Lucy Chloe Ella Ava Isla Mia Ruby Evie Freya Alice Lily Poppy Daisy Phoebe Florence Matilda "
    "Rosie Zara Aisha Fatima Priya Anjali Mei Yuki Ingrid Katarzyna Agnieszka Maria Ana Lucia "
    "Chiara Sofia Nadia Leila Amara Chioma Ngozi Deborah Rebecca Rachel Catherine Victoria "
    "Alexandra Josephine Patricia Susan Jennifer Linda Barbara Dorothy Joan Jean Ann Helen Ruth"
).split()
GIVEN_M = (
    "James John William Robert Michael David Richard Thomas Charles Joseph Daniel Matthew Anthony "
    "Christopher Andrew Edward George Harry Oliver Jack Jacob Noah Leo Oscar Arthur Alfie Henry "
    "Theo Freddie Archie Samuel Benjamin Alexander Nicholas Jonathan Stephen Peter Paul Mark "
    "Kevin Brian Gary Ian Neil Colin Mohammed Ahmed Ali Omar Hassan Ravi Arjun Vikram Wei Jun "
    "Hiroshi Lars Piotr Tomasz Jakub Mateo Luca Marco Diego Kwame Chidi Emeka Tunde Patrick Sean"
).split()
NICKNAMES = {
    "William": ["Bill", "Will", "Billy"], "Robert": ["Bob", "Rob", "Bobby"],
    "Elizabeth": ["Liz", "Beth", "Lizzie"], "Margaret": ["Maggie", "Peggy", "Meg"],
    "Richard": ["Dick", "Rick"], "James": ["Jim", "Jimmy"], "Michael": ["Mike", "Mick"],
    "Thomas": ["Tom", "Tommy"], "Charles": ["Charlie", "Chuck"], "Joseph": ["Joe"],
    "Daniel": ["Dan", "Danny"], "Matthew": ["Matt"], "Anthony": ["Tony"],
    "Christopher": ["Chris"], "Andrew": ["Andy", "Drew"], "Edward": ["Ed", "Ted", "Eddie"],
    "Alexander": ["Alex", "Sandy"], "Benjamin": ["Ben"], "Samuel": ["Sam"],
    "Nicholas": ["Nick"], "Jonathan": ["Jon"], "Stephen": ["Steve"], "Patricia": ["Pat", "Trish"],
    "Jennifer": ["Jen", "Jenny"], "Catherine": ["Kate", "Cathy"], "Victoria": ["Vicky"],
    "Alexandra": ["Alex", "Lexi"], "Rebecca": ["Becky"], "Susan": ["Sue"], "Deborah": ["Debbie"],
    "Josephine": ["Jo", "Josie"], "Dorothy": ["Dot"], "Katarzyna": ["Kasia"], "Henry": ["Harry"],
}
COMMON_SURNAMES = (
    "Smith Jones Williams Taylor Brown Davies Evans Wilson Thomas Johnson Roberts Robinson "
    "Thompson Wright Walker White Edwards Hughes Green Hall Lewis Harris Clarke Patel Jackson "
    "Wood Turner Martin Cooper Hill Ward Morris Moore Clark Lee King Baker Harrison Morgan Allen "
    "James Scott Phillips Watson Davis Parker Price Bennett Young Griffiths Mitchell Kelly Cook "
    "Carter Richardson Bailey Collins Bell Shaw Murphy Miller Cox Richards Khan Marshall Anderson "
    "Simpson Ellis Adams Singh Begum Wilkinson Foster Chapman Powell Webb Rogers Gray Mason Ali "
    "Hunt Hussain Campbell Matthews Owen Palmer Holmes Mills Barnes Knight Lloyd Butler Russell "
    "Barker Fisher Stevens Jenkins Murray Dixon Harvey Nguyen Kowalski Okafor Haddad Tanaka"
).split()
SYLLABLES = "ash ber bro cal dar den ell fen gar ham har kel lan ley mar mer nor oak pen ric ros sel ston thw wick wor by ton field ford well".split()
DIAGNOSES = ["I21", "I50", "J18", "J44", "N39", "K35", "S72", "E11", "A41", "C34", "G45", "T40"]
DX_WEIGHTS = [14, 12, 16, 10, 9, 8, 9, 7, 6, 5, 3, 1]
AREAS = ["AB", "BN", "CF", "DE", "EH", "GL", "HU", "LS", "M", "NE", "NG", "OX", "PL", "S", "SO", "YO"]


def zipf_choice(rng, items, s=1.1):
    weights = [1.0 / (i + 1) ** s for i in range(len(items))]
    return rng.choices(items, weights)[0]


def surname_pool(rng, extra):
    """Common surnames plus a long tail of rarer generated ones."""
    pool = list(COMMON_SURNAMES)
    seen = set(pool)
    while len(pool) < len(COMMON_SURNAMES) + extra:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice([2, 2, 3]))).capitalize()
        if name not in seen:
            seen.add(name)
            pool.append(name)
    return pool


def postcode(rng, area=None, district=None):
    area = area or rng.choice(AREAS)
    district = district if district is not None else rng.randrange(1, 30)
    return f"{area}{district} {rng.randrange(1, 10)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"


def population(rng, n):
    surnames = surname_pool(rng, max(200, n // 8))
    people = []
    while len(people) < n:
        # A household: one to four people sharing a surname and a postcode.
        family = zipf_choice(rng, surnames, 0.9)
        home = postcode(rng)
        for _ in range(min(rng.choice([1, 1, 1, 2, 2, 3, 4]), n - len(people))):
            female = rng.random() < 0.51
            given = zipf_choice(rng, GIVEN_F if female else GIVEN_M, 1.0)
            birth = dt.date(1925, 1, 1) + dt.timedelta(days=rng.randrange(365 * 80))
            people.append({
                "person": len(people), "given": given, "family": family, "birth": birth,
                "female": female, "postcode": home,
                "dx": rng.choices(DIAGNOSES, DX_WEIGHTS)[0], "died": rng.random() < 0.07,
            })
    return people


def typo(rng, word):
    if len(word) < 3:
        return word
    i = rng.randrange(1, len(word))
    kind = rng.random()
    letters = "abcdefghijklmnopqrstuvwxyz"
    if kind < 0.3:
        return word[:i] + word[i + 1:]  # deletion
    if kind < 0.6:
        return word[:i] + rng.choice(letters) + word[i + 1:]  # substitution
    if kind < 0.8 and i < len(word) - 1:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]  # transposition
    return word[:i] + rng.choice(letters) + word[i:]  # insertion


def corrupt(rng, p, surnames):
    """Northfield's copy of a person: the same human, recorded by other staff."""
    q = dict(p)
    r = rng.random()
    if r < 0.08 and q["given"] in NICKNAMES:
        q["given"] = rng.choice(NICKNAMES[q["given"]])
    elif r < 0.18:
        q["given"] = typo(rng, q["given"])
    r = rng.random()
    if r < 0.03 and q["female"]:
        q["family"] = zipf_choice(rng, surnames, 0.9)  # married
    elif r < 0.11:
        q["family"] = typo(rng, q["family"])
    b = q["birth"]
    r = rng.random()
    if r < 0.03 and b.day <= 12 and b.day != b.month:
        q["birth"] = dt.date(b.year, b.day, b.month)
    elif r < 0.06:
        day = min(28, max(1, b.day + rng.choice([-1, 1, -10, 10])))
        q["birth"] = dt.date(b.year, b.month, day)
    elif r < 0.08:
        q["birth"] = None
    r = rng.random()
    if r < 0.10:
        area = q["postcode"].split(" ")[0].rstrip("0123456789")
        q["postcode"] = postcode(rng, area=area)  # moved within the area
    elif r < 0.15:
        q["postcode"] = postcode(rng)  # moved away
    elif r < 0.20:
        q["postcode"] = None
    if rng.random() < 0.02:
        q["female"] = None
    return q


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--records", type=int, default=10000)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    n = args.records
    shared = int(n * args.overlap)
    people = population(rng, 2 * n - shared)
    rng.shuffle(people)
    at_a = people[:n]
    at_b = people[:shared] + people[n:n + n - shared]
    rng.shuffle(at_b)
    surnames = surname_pool(random.Random(args.seed + 1), 200)
    os.makedirs(args.out, exist_ok=True)
    truth = []
    with open(os.path.join(args.out, "st_marys_patients.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "given_name", "family_name", "birth_date", "sex", "postcode", "diagnosis", "died"])
        for i, p in enumerate(at_a):
            key = f"SM{200000 + i}"
            truth.append(("st_marys", key, p["person"]))
            w.writerow([key, p["given"], p["family"], p["birth"].isoformat(), "F" if p["female"] else "M",
                        p["postcode"], p["dx"], int(p["died"])])
    with open(os.path.join(args.out, "northfield_patients.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mrn", "name", "dob", "gender", "post_code", "dx_code", "outcome"])
        for i, p in enumerate(at_b):
            q = corrupt(rng, p, surnames)
            key = f"NF{700000 + i}"
            truth.append(("northfield", key, p["person"]))
            gender = "" if q["female"] is None else ("female" if q["female"] else "male")
            dob = "" if q["birth"] is None else q["birth"].strftime("%d/%m/%Y")
            w.writerow([key, f"{q['family'].upper()}, {q['given']}", dob, gender, q["postcode"] or "",
                        f"{q['dx'].lower()}.{rng.randrange(10)}", "deceased" if q["died"] else "discharged"])
    with open(os.path.join(args.out, "truth.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "key", "person"])
        w.writerows(truth)


if __name__ == "__main__":
    main()
