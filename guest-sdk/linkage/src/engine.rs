//! Probabilistic record linkage in the Fellegi–Sunter model.
//!
//! 1. **Blocking**: candidate pairs are records of different sources that agree on every key of
//!    some rule; a pair found by an earlier rule is not emitted again.
//! 2. **Comparison**: each candidate pair gets one level per comparison (null, exact, the
//!    method's intermediate levels, else).
//! 3. **u** (probability of a level among non-matches) is estimated from a seeded sample of
//!    random pairs, where matches are vanishingly rare.
//! 4. **m** (probability of a level among matches) is estimated by expectation–maximisation,
//!    one training session per blocking rule: the pairs agreeing on that rule's keys, with the
//!    comparisons on the rule's own columns left out (their agreement was forced by blocking).
//!    Each comparison's m is the mean over the sessions that trained it.
//! 5. **Prior**: session r estimates the share of matches among its pairs; the largest expected
//!    number of matches over the sessions, divided by the number of all cross-source pairs, is
//!    the probability that two random records match.
//! 6. **Deterministic rules** add their pairs to the candidates and make them links whatever
//!    their score; they are not used for training.
//! 7. **Scoring**: match weight = log2(prior odds) + Σ log2(m/u), with the exact level's u
//!    replaced by the value's frequency where term-frequency adjustment is on; probability =
//!    1 / (1 + 2^-weight). Pairs at or above the threshold are links; connected components
//!    of links are clusters.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::settings::{BlockKey, Method, Settings};

/// One source's records: row keys and the compared columns as text (null = `None`).
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The source's name (the table).
    pub name: String,
    /// Internal row keys, one per record.
    pub keys: Vec<String>,
    /// Column name -> one value per record.
    pub columns: BTreeMap<String, Vec<Option<String>>>,
}

/// A pair kept as a link. Records are numbered across sources in order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// The record of the earlier source.
    pub left: u32,
    /// The record of the later source.
    pub right: u32,
    /// log2 of the likelihood ratio, prior included.
    pub weight: f64,
    /// Posterior match probability.
    pub probability: f64,
}

/// Estimated parameters of one comparison (aggregate: no record-level data).
#[derive(Debug, Clone, Serialize)]
pub struct ComparisonParams {
    /// The column.
    pub column: String,
    /// Level names, from "null".
    pub levels: Vec<String>,
    /// m probability per level (index 0, null, unused).
    pub m: Vec<f64>,
    /// u probability per level.
    pub u: Vec<f64>,
}

/// Aggregate statistics of a linkage (what may be released, under the owners' rules).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Records per source.
    pub records: BTreeMap<String, u64>,
    /// Candidate pairs emitted per blocking rule, then per deterministic rule (a pair counts
    /// for its first rule only).
    pub candidate_pairs: Vec<u64>,
    /// Candidate pairs that a deterministic rule links.
    pub deterministic_links: u64,
    /// Links at or above the threshold.
    pub links: u64,
    /// Clusters with more than one record.
    pub linked_clusters: u64,
    /// Probability that two random records match.
    pub prior: f64,
    /// EM iterations per training session.
    pub em_iterations: Vec<u32>,
    /// The trained model.
    pub parameters: Vec<ComparisonParams>,
}

/// The result of a linkage.
#[derive(Debug, Clone)]
pub struct Linkage {
    /// Links, by descending weight.
    pub links: Vec<Link>,
    /// Cluster id of every record (dense, in record order).
    pub clusters: Vec<u32>,
    /// (lower edge of a one-unit weight bin, candidate pairs in it).
    pub histogram: Vec<(i32, u64)>,
    /// Aggregates.
    pub stats: Stats,
    /// (source index, row) of every record.
    pub records: Vec<(u16, u32)>,
}

/// A linkage that cannot run, with a message for the researcher.
pub type Error = String;

/// A compared value, normalised once per record.
#[derive(Debug, Clone)]
enum Value {
    Null,
    Text(String),
    Date {
        text: String,
        days: i64,
        ymd: (i32, u32, u32),
    },
}

/// Per record, per comparison: the normalised value. Per blocking rule: an interned key id.
struct Prepared {
    source_of: Vec<u16>,
    starts: Vec<usize>,
    values: Vec<Vec<Value>>,
    block_keys: Vec<Vec<Option<u32>>>,
    tf: Vec<Option<FxHashMap<String, f64>>>,
}

/// Link the records of two or more sources.
pub fn link(sources: &[Source], settings: &Settings) -> Result<Linkage, Error> {
    settings.validate()?;
    if sources.len() < 2 {
        return Err("linkage needs at least two sources".into());
    }
    let prep = prepare(sources, settings)?;
    let n = prep.source_of.len();
    let (pairs, per_rule) = candidate_pairs(&prep, settings)?;
    let levels: Vec<usize> = settings
        .comparisons
        .iter()
        .map(|c| c.method.level_names().len())
        .collect();
    let k = levels.len();
    let mut gammas = Vec::with_capacity(pairs.len() * k);
    for &(a, b) in &pairs {
        for (c, cmp) in settings.comparisons.iter().enumerate() {
            gammas.push(level(
                &cmp.method,
                &prep.values[c][a as usize],
                &prep.values[c][b as usize],
            ));
        }
    }
    let u = estimate_u(&prep, settings, &levels);
    let (m, prior, em_iterations) = estimate_m(&prep, settings, &levels, &u, &pairs, &gammas)?;

    // Scoring.
    let prior_weight = (prior / (1.0 - prior)).log2();
    let weights: Vec<Vec<f64>> = (0..k)
        .map(|c| {
            (0..levels[c])
                .map(|l| {
                    if l == 0 {
                        0.0
                    } else {
                        (m[c][l] / u[c][l]).log2()
                    }
                })
                .collect()
        })
        .collect();
    let threshold_weight = (settings.threshold / (1.0 - settings.threshold)).log2();
    let mut links = Vec::new();
    let mut deterministic_links = 0u64;
    let mut histogram: BTreeMap<i32, u64> = BTreeMap::new();
    for (i, &(a, b)) in pairs.iter().enumerate() {
        let mut w = prior_weight;
        for c in 0..k {
            let l = gammas[i * k + c] as usize;
            w += match (&prep.tf[c], l) {
                (Some(tf), 1) => {
                    let v = prep.values[c][a as usize].text();
                    let freq = tf.get(v).copied().unwrap_or(u[c][1]);
                    (m[c][1] / freq).log2()
                }
                _ => weights[c][l],
            };
        }
        *histogram.entry(w.floor() as i32).or_default() += 1;
        let deterministic = prep.block_keys[settings.blocking.len()..]
            .iter()
            .any(|k| k[a as usize].is_some() && k[a as usize] == k[b as usize]);
        if deterministic {
            deterministic_links += 1;
        }
        if w >= threshold_weight || deterministic {
            links.push(Link {
                left: a,
                right: b,
                weight: w,
                probability: 1.0 / (1.0 + (-w).exp2()),
            });
        }
    }
    links.sort_by(|x, y| {
        y.weight
            .total_cmp(&x.weight)
            .then((x.left, x.right).cmp(&(y.left, y.right)))
    });
    if settings.one_to_one {
        let mut used = vec![false; n];
        links.retain(|l| {
            let free = !used[l.left as usize] && !used[l.right as usize];
            if free {
                used[l.left as usize] = true;
                used[l.right as usize] = true;
            }
            free
        });
    }
    let clusters = clusters(n, &links);
    let mut sizes: FxHashMap<u32, u32> = FxHashMap::default();
    for &c in &clusters {
        *sizes.entry(c).or_default() += 1;
    }
    let stats = Stats {
        records: sources
            .iter()
            .map(|s| (s.name.clone(), s.keys.len() as u64))
            .collect(),
        candidate_pairs: per_rule,
        deterministic_links,
        links: links.len() as u64,
        linked_clusters: sizes.values().filter(|&&s| s > 1).count() as u64,
        prior,
        em_iterations,
        parameters: settings
            .comparisons
            .iter()
            .enumerate()
            .map(|(c, cmp)| ComparisonParams {
                column: cmp.column.clone(),
                levels: cmp.method.level_names(),
                m: m[c].clone(),
                u: u[c].clone(),
            })
            .collect(),
    };
    let records = (0..n)
        .map(|i| {
            let s = prep.source_of[i];
            (s, (i - prep.starts[s as usize]) as u32)
        })
        .collect();
    Ok(Linkage {
        links,
        clusters,
        histogram: histogram.into_iter().collect(),
        stats,
        records,
    })
}

impl Value {
    fn text(&self) -> &str {
        match self {
            Self::Null => "",
            Self::Text(t) | Self::Date { text: t, .. } => t,
        }
    }
}

/// Lowercase letters and digits only: "O'Brien" and "o brien" compare equal.
pub fn normalise(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn parse_date(text: &str) -> Option<(i32, u32, u32)> {
    let t = text.trim();
    let mut parts = t.splitn(3, '-');
    let y: i32 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then_some((y, m, d))
}

/// Days since 1970-01-01 (proleptic Gregorian; Howard Hinnant's algorithm).
fn days_from_civil((y, m, d): (i32, u32, u32)) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn prepare(sources: &[Source], settings: &Settings) -> Result<Prepared, Error> {
    let mut source_of = Vec::new();
    let mut starts = Vec::new();
    for (s, src) in sources.iter().enumerate() {
        starts.push(source_of.len());
        source_of.extend(std::iter::repeat_n(s as u16, src.keys.len()));
    }
    let n = source_of.len();
    if n > u32::MAX as usize {
        return Err("too many records".into());
    }
    let column = |name: &str| -> Result<Vec<&Option<String>>, Error> {
        let mut all = Vec::with_capacity(n);
        for src in sources {
            let col = src.columns.get(name).ok_or_else(|| {
                format!(
                    "source {:?} has no column {name:?} (harmonise the sources first)",
                    src.name
                )
            })?;
            if col.len() != src.keys.len() {
                return Err(format!(
                    "source {:?}: column {name:?} has the wrong length",
                    src.name
                ));
            }
            all.extend(col.iter());
        }
        Ok(all)
    };
    let mut values = Vec::new();
    let mut tf = Vec::new();
    for cmp in &settings.comparisons {
        let raw = column(&cmp.column)?;
        let vals: Vec<Value> = raw
            .iter()
            .map(|v| match v.as_deref().map(str::trim) {
                None | Some("") => Value::Null,
                Some(text) => match &cmp.method {
                    Method::Date { .. } => match parse_date(text) {
                        Some(ymd) => Value::Date {
                            text: format!("{:04}-{:02}-{:02}", ymd.0, ymd.1, ymd.2),
                            days: days_from_civil(ymd),
                            ymd,
                        },
                        None => Value::Null,
                    },
                    _ => {
                        let t = normalise(text);
                        if t.is_empty() {
                            Value::Null
                        } else {
                            Value::Text(t)
                        }
                    }
                },
            })
            .collect();
        tf.push(cmp.tf.then(|| {
            let mut counts: FxHashMap<String, f64> = FxHashMap::default();
            let mut total = 0.0;
            for v in &vals {
                if !matches!(v, Value::Null) {
                    *counts.entry(v.text().to_string()).or_default() += 1.0;
                    total += 1.0;
                }
            }
            counts.values_mut().for_each(|c| *c /= total);
            counts
        }));
        values.push(vals);
    }
    let mut block_keys = Vec::new();
    // Blocking rules, then deterministic rules: both generate candidate pairs.
    for rule in settings.blocking.iter().chain(&settings.deterministic) {
        let cols: Vec<Vec<&Option<String>>> = rule
            .0
            .iter()
            .map(|k| column(k.column()))
            .collect::<Result<_, _>>()?;
        let mut interned: FxHashMap<String, u32> = FxHashMap::default();
        let mut ids = Vec::with_capacity(n);
        'record: for i in 0..n {
            let mut key = String::new();
            for (k, col) in rule.0.iter().zip(&cols) {
                let Some(text) = col[i].as_deref() else {
                    ids.push(None);
                    continue 'record;
                };
                let mut t = normalise(text);
                if let BlockKey::Prefix { prefix, .. } = k {
                    t = t.chars().take(*prefix).collect();
                }
                if t.is_empty() {
                    ids.push(None);
                    continue 'record;
                }
                key.push_str(&t);
                key.push('\u{1f}');
            }
            let next = interned.len() as u32;
            ids.push(Some(*interned.entry(key).or_insert(next)));
        }
        block_keys.push(ids);
    }
    Ok(Prepared {
        source_of,
        starts,
        values,
        block_keys,
        tf,
    })
}

/// Candidate pairs, and how many each blocking rule emitted.
type Candidates = (Vec<(u32, u32)>, Vec<u64>);

/// Pairs of records from different sources agreeing on some rule, each once.
fn candidate_pairs(prep: &Prepared, settings: &Settings) -> Result<Candidates, Error> {
    let mut pairs = Vec::new();
    let mut per_rule = Vec::new();
    for (r, keys) in prep.block_keys.iter().enumerate() {
        let mut blocks: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        for (i, key) in keys.iter().enumerate() {
            if let Some(key) = key {
                blocks.entry(*key).or_default().push(i as u32);
            }
        }
        // Count before building, so a careless rule is refused, not run out of memory.
        let mut total: u64 = 0;
        let mut blocks: Vec<Vec<u32>> = blocks.into_values().collect();
        blocks.sort_unstable();
        for members in &blocks {
            let mut per_source: FxHashMap<u16, u64> = FxHashMap::default();
            for &i in members {
                *per_source.entry(prep.source_of[i as usize]).or_default() += 1;
            }
            let all: u64 = per_source.values().sum();
            let same: u64 = per_source.values().map(|c| c * c).sum();
            total += (all * all - same) / 2;
        }
        if total + pairs.len() as u64 > settings.max_pairs {
            return Err(format!(
                "blocking rule {r} would bring the candidate pairs to {} (max_pairs is {}): make \
                 the rule stricter (more keys, or longer prefixes)",
                total + pairs.len() as u64,
                settings.max_pairs
            ));
        }
        let before = pairs.len();
        for members in &blocks {
            for (x, &a) in members.iter().enumerate() {
                for &b in &members[x + 1..] {
                    if prep.source_of[a as usize] == prep.source_of[b as usize] {
                        continue;
                    }
                    let earlier = prep.block_keys[..r]
                        .iter()
                        .any(|k| k[a as usize].is_some() && k[a as usize] == k[b as usize]);
                    if !earlier {
                        pairs.push((a.min(b), a.max(b)));
                    }
                }
            }
        }
        per_rule.push((pairs.len() - before) as u64);
    }
    Ok((pairs, per_rule))
}

/// The comparison level of two values.
fn level(method: &Method, a: &Value, b: &Value) -> u8 {
    if matches!(a, Value::Null) || matches!(b, Value::Null) {
        return 0;
    }
    let (x, y) = (a.text(), b.text());
    if x == y {
        return 1;
    }
    let intermediate = match method {
        Method::Exact => None,
        Method::JaroWinkler(thresholds) => {
            let s = strsim::jaro_winkler(x, y);
            thresholds.iter().position(|t| s >= *t)
        }
        Method::Levenshtein(bounds) => {
            let d = strsim::levenshtein(x, y);
            bounds.iter().position(|b| d <= *b)
        }
        Method::Date { within_days } => match (a, b) {
            (
                Value::Date {
                    days: d1,
                    ymd: (y1, m1, dd1),
                    ..
                },
                Value::Date {
                    days: d2,
                    ymd: (y2, m2, dd2),
                    ..
                },
            ) => {
                let swapped = y1 == y2 && m1 == dd2 && dd1 == m2;
                if swapped || strsim::hamming(x, y).is_ok_and(|h| h <= 1) {
                    Some(0)
                } else {
                    let gap = (d1 - d2).unsigned_abs();
                    within_days
                        .iter()
                        .position(|w| gap <= u64::from(*w))
                        .map(|p| p + 1)
                }
            }
            _ => None,
        },
        Method::Prefix(lengths) => lengths.iter().position(|&p| {
            x.chars().count() >= p
                && y.chars().count() >= p
                && x.chars().take(p).eq(y.chars().take(p))
        }),
    };
    let last = method.level_names().len() - 1;
    intermediate.map_or(last as u8, |i| (i + 2) as u8)
}

/// u per comparison level from a seeded sample of random cross-source pairs (Laplace-smoothed).
fn estimate_u(prep: &Prepared, settings: &Settings, levels: &[usize]) -> Vec<Vec<f64>> {
    let n = prep.source_of.len();
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let mut counts: Vec<Vec<f64>> = levels.iter().map(|&l| vec![1.0; l]).collect();
    let mut drawn = 0u64;
    let mut attempts = 0u64;
    while drawn < settings.u_sample_pairs && attempts < settings.u_sample_pairs * 20 {
        attempts += 1;
        let (a, b) = (rng.gen_range(0..n), rng.gen_range(0..n));
        if prep.source_of[a] == prep.source_of[b] {
            continue;
        }
        drawn += 1;
        for (c, cmp) in settings.comparisons.iter().enumerate() {
            let l = level(&cmp.method, &prep.values[c][a], &prep.values[c][b]) as usize;
            counts[c][l] += 1.0;
        }
    }
    counts
        .into_iter()
        .map(|c| {
            let non_null: f64 = c[1..].iter().sum();
            let mut u = vec![0.0];
            u.extend(c[1..].iter().map(|x| x / non_null));
            u
        })
        .collect()
}

type Trained = (Vec<Vec<f64>>, f64, Vec<u32>);

/// m per comparison level by EM, one session per blocking rule; and the prior.
fn estimate_m(
    prep: &Prepared,
    settings: &Settings,
    levels: &[usize],
    u: &[Vec<f64>],
    pairs: &[(u32, u32)],
    gammas: &[u8],
) -> Result<Trained, Error> {
    let k = levels.len();
    let mut sums: Vec<Vec<f64>> = levels.iter().map(|&l| vec![0.0; l]).collect();
    let mut trained = vec![0u32; k];
    let mut expected_matches: f64 = 0.0;
    let mut iterations = Vec::new();
    for (r, rule) in settings.blocking.iter().enumerate() {
        let active: Vec<bool> = settings
            .comparisons
            .iter()
            .map(|c| !rule.0.iter().any(|key| key.column() == c.column))
            .collect();
        // The session's pairs, as counts of distinct comparison patterns.
        let keys = &prep.block_keys[r];
        let mut patterns: FxHashMap<Vec<u8>, f64> = FxHashMap::default();
        for (i, &(a, b)) in pairs.iter().enumerate() {
            if keys[a as usize].is_none() || keys[a as usize] != keys[b as usize] {
                continue;
            }
            let pattern: Vec<u8> = (0..k)
                .map(|c| if active[c] { gammas[i * k + c] } else { 0 })
                .collect();
            *patterns.entry(pattern).or_default() += 1.0;
        }
        let total: f64 = patterns.values().sum();
        if total == 0.0 {
            iterations.push(0);
            continue;
        }
        let mut patterns: Vec<(Vec<u8>, f64)> = patterns.into_iter().collect();
        patterns.sort_by(|a, b| a.0.cmp(&b.0));
        let (m, lambda, its) = em(&patterns, levels, u, &active, settings.em_iterations);
        iterations.push(its);
        for c in (0..k).filter(|&c| active[c]) {
            for l in 1..levels[c] {
                sums[c][l] += m[c][l];
            }
            trained[c] += 1;
        }
        expected_matches = expected_matches.max(lambda * total);
    }
    let mut m = sums;
    for c in 0..k {
        if trained[c] == 0 {
            return Err(format!(
                "comparison on {:?} was never trained: no blocking rule without it found pairs",
                settings.comparisons[c].column
            ));
        }
        for v in &mut m[c][1..] {
            *v = (*v / f64::from(trained[c])).max(1e-9);
        }
    }
    // Every pair of records from different sources.
    let mut sizes: FxHashMap<u16, f64> = FxHashMap::default();
    for &s in &prep.source_of {
        *sizes.entry(s).or_default() += 1.0;
    }
    let all: f64 = sizes.values().sum();
    let cross = (all * all - sizes.values().map(|c| c * c).sum::<f64>()) / 2.0;
    let prior = (expected_matches.max(1.0) / cross).clamp(1e-12, 0.5);
    Ok((m, prior, iterations))
}

/// EM over one session's pattern counts: the share of matches, m, and the session's own u.
///
/// u is estimated here too (starting from the random-pair u) and then thrown away: the
/// non-matches of a session are not random pairs. Pairs agreeing on a postcode are mostly
/// households, whose members share a surname far more often than random pairs do; with u
/// fixed at the random-pair value, "same surname" would look like a match and EM would
/// learn that matches often differ in first name and birth date. With the session's u free,
/// the households are explained as non-matches and m stays clean. m is what carries over:
/// among true matches, agreement on one column does not depend on how the pair was blocked.
fn em(
    patterns: &[(Vec<u8>, f64)],
    levels: &[usize],
    u_random: &[Vec<f64>],
    active: &[bool],
    max_iterations: u32,
) -> (Vec<Vec<f64>>, f64, u32) {
    // Start with most matches agreeing exactly and the rest spread thinly.
    let mut m: Vec<Vec<f64>> = levels
        .iter()
        .map(|&l| {
            let mut v = vec![0.0; l];
            let rest = (l - 2).max(1) as f64;
            v[1] = 0.8;
            for x in &mut v[2..] {
                *x = 0.2 / rest;
            }
            v
        })
        .collect();
    let mut u = u_random.to_vec();
    let mut lambda = 0.1;
    let total: f64 = patterns.iter().map(|p| p.1).sum();
    // One M-step's normalisation: level shares among the non-null levels.
    let normalise = |sums: &[f64], into: &mut [f64]| -> f64 {
        let denom: f64 = sums[1..].iter().sum();
        let mut change: f64 = 0.0;
        if denom > 0.0 {
            for l in 1..sums.len() {
                let v = (sums[l] / denom).max(1e-9);
                change = change.max((v - into[l]).abs());
                into[l] = v;
            }
        }
        change
    };
    for it in 1..=max_iterations {
        let mut m_sum: Vec<Vec<f64>> = levels.iter().map(|&l| vec![0.0; l]).collect();
        let mut u_sum = m_sum.clone();
        let mut match_weight = 0.0;
        for (pattern, count) in patterns {
            let (mut pm, mut pu) = (lambda, 1.0 - lambda);
            for (c, &l) in pattern.iter().enumerate() {
                if active[c] && l > 0 {
                    pm *= m[c][l as usize];
                    pu *= u[c][l as usize];
                }
            }
            let w = pm / (pm + pu);
            match_weight += w * count;
            for (c, &l) in pattern.iter().enumerate() {
                if active[c] && l > 0 {
                    m_sum[c][l as usize] += w * count;
                    u_sum[c][l as usize] += (1.0 - w) * count;
                }
            }
        }
        let new_lambda = (match_weight / total).clamp(1e-9, 1.0 - 1e-9);
        let mut change = (new_lambda - lambda).abs();
        for c in (0..levels.len()).filter(|&c| active[c]) {
            change = change.max(normalise(&m_sum[c], &mut m[c]));
            normalise(&u_sum[c], &mut u[c]);
        }
        lambda = new_lambda;
        if change < 1e-6 {
            return (m, lambda, it);
        }
    }
    (m, lambda, max_iterations)
}

/// Connected components of the links (union–find), numbered densely in record order.
fn clusters(n: usize, links: &[Link]) -> Vec<u32> {
    let mut parent: Vec<u32> = (0..n as u32).collect();
    fn find(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            parent[x as usize] = parent[parent[x as usize] as usize];
            x = parent[x as usize];
        }
        x
    }
    for l in links {
        let (a, b) = (find(&mut parent, l.left), find(&mut parent, l.right));
        if a != b {
            parent[a.max(b) as usize] = a.min(b);
        }
    }
    let mut ids: FxHashMap<u32, u32> = FxHashMap::default();
    (0..n as u32)
        .map(|i| {
            let root = find(&mut parent, i);
            let next = ids.len() as u32;
            *ids.entry(root).or_insert(next)
        })
        .collect()
}

#[cfg(test)]
mod tests;
