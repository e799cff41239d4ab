use super::*;
use crate::settings::{BlockingRule, Comparison};

type Row = [String; 4];

fn row(key: &str, first: &str, surname: &str, dob: &str) -> Row {
    [key, first, surname, dob].map(str::to_string)
}

fn source(name: &str, rows: &[Row]) -> Source {
    let col = |i: usize| {
        rows.iter()
            .map(|r| Some(r[i].clone()).filter(|s| !s.is_empty()))
            .collect::<Vec<_>>()
    };
    let columns = [("first_name", 1), ("surname", 2), ("dob", 3)]
        .into_iter()
        .map(|(c, i)| (c.to_string(), col(i)))
        .collect();
    Source {
        name: name.into(),
        keys: rows.iter().map(|r| r[0].clone()).collect(),
        columns,
    }
}

fn settings() -> Settings {
    serde_json::from_value(serde_json::json!({
        "blocking": [["surname"], ["dob"]],
        "comparisons": [
            {"column": "first_name", "method": {"jaro_winkler": [0.92, 0.8]}, "tf": true},
            {"column": "surname", "method": {"jaro_winkler": [0.92, 0.8]}},
            {"column": "dob", "method": {"date": {"within_days": [365]}}}
        ],
        "u_sample_pairs": 20000
    }))
    .unwrap()
}

#[test]
fn levels_follow_the_method() {
    let t = |s: &str| Value::Text(normalise(s));
    let jw = Method::JaroWinkler(vec![0.92, 0.8]);
    assert_eq!(level(&jw, &t("Smith"), &t("smith")), 1);
    assert_eq!(level(&jw, &t("Smith"), &t("Smyth")), 3);
    assert_eq!(level(&jw, &t("Smith"), &t("Okafor")), 4);
    assert_eq!(level(&jw, &Value::Null, &t("Okafor")), 0);
    let date = |s: &str| {
        let ymd = parse_date(s).unwrap();
        Value::Date {
            text: s.into(),
            days: days_from_civil(ymd),
            ymd,
        }
    };
    let d = Method::Date {
        within_days: vec![30],
    };
    assert_eq!(
        level(&d, &date("1980-03-04"), &date("1980-04-03")),
        2,
        "swapped day and month"
    );
    assert_eq!(
        level(&d, &date("1980-03-04"), &date("1980-03-05")),
        2,
        "one digit off"
    );
    assert_eq!(level(&d, &date("1980-03-04"), &date("1980-03-25")), 3);
    assert_eq!(level(&d, &date("1980-03-04"), &date("1981-07-25")), 4);
    assert_eq!(days_from_civil((1970, 1, 1)), 0);
    assert_eq!(days_from_civil((2000, 3, 1)), 11_017);
    let p = Method::Prefix(vec![4, 2]);
    assert_eq!(level(&p, &t("AB12 3CD"), &t("AB12 9ZZ")), 2);
    assert_eq!(level(&p, &t("AB12 3CD"), &t("AB77 9ZZ")), 3);
}

#[test]
fn links_the_same_people_despite_typos_and_no_shared_identifier() {
    let firsts = [
        "anna", "ben", "carla", "dmitri", "eve", "farid", "gita", "hugo", "ines", "jon",
    ];
    let surnames = [
        "smith", "okafor", "nguyen", "garcia", "kowalski", "haddad", "tanaka", "murphy",
    ];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..400 {
        let f = firsts[i % firsts.len()];
        let s = surnames[(i / firsts.len()) % surnames.len()];
        let dob = format!(
            "{}-{:02}-{:02}",
            1940 + i / 336,
            1 + (i / 28) % 12,
            1 + i % 28
        );
        a.push(row(&format!("a{i}"), f, s, &dob));
        if i % 2 == 0 {
            // The same person at the other hospital, with a typo every third time.
            let f = if i % 3 == 0 {
                format!("{f}h")
            } else {
                f.to_string()
            };
            b.push(row(&format!("b{i}"), &f, s, &dob));
        } else {
            b.push(row(&format!("b{i}"), "zed", s, "2001-01-01"));
        }
    }
    let (sa, sb) = (source("a", &a), source("b", &b));
    let out = link(&[sa.clone(), sb.clone()], &settings()).unwrap();
    let found: Vec<(String, String)> = out
        .links
        .iter()
        .map(|l| {
            let key = |r: u32| {
                let (s, row) = out.records[r as usize];
                [&sa, &sb][s as usize].keys[row as usize].clone()
            };
            (key(l.left), key(l.right))
        })
        .collect();
    let true_links = found.iter().filter(|(x, y)| x[1..] == y[1..]).count();
    assert!(true_links >= 195, "found {true_links} of 200 true links");
    assert!(
        found.len() - true_links <= 5,
        "{} false links",
        found.len() - true_links
    );
    assert_eq!(out.stats.links as usize, found.len());
    // Linked records share a cluster; the rest are alone.
    for l in &out.links {
        assert_eq!(
            out.clusters[l.left as usize],
            out.clusters[l.right as usize]
        );
    }
    // m for an exact first name is high among matches, u low.
    let first = &out.stats.parameters[0];
    assert!(first.m[1] > 0.5 && first.u[1] < 0.2, "{first:?}");
    // A deterministic rule links pairs the model would not: same surname and first name.
    let mut forced = settings();
    forced.deterministic = vec![BlockingRule(vec![
        BlockKey::Column("surname".into()),
        BlockKey::Column("first_name".into()),
    ])];
    let with_rule = link(&[sa.clone(), sb.clone()], &forced).unwrap();
    assert!(with_rule.stats.deterministic_links > 0);
    assert!(with_rule.links.len() > out.links.len());
    // The same seed gives the same links.
    let again = link(&[sa, sb], &settings()).unwrap();
    assert_eq!(again.links, out.links);
}

#[test]
fn careless_blocking_is_refused_not_run() {
    let rows: Vec<Row> = (0..300)
        .map(|i| row(&i.to_string(), "x", "same", "2000-01-01"))
        .collect();
    let mut s = settings();
    s.max_pairs = 1000;
    let err = link(&[source("a", &rows), source("b", &rows)], &s).unwrap_err();
    assert!(err.contains("max_pairs"), "{err}");
    let mut bad = settings();
    bad.blocking = vec![BlockingRule(vec![BlockKey::Column("surname".into())])];
    bad.comparisons.push(Comparison {
        column: "surname".into(),
        method: Method::Exact,
        tf: false,
    });
    assert!(bad.validate().unwrap_err().contains("compared twice"));
}
