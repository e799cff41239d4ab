//! Aggregates under differential privacy: groups from the owner's public domains only,
//! contributions bounded per person, every statistic noised, the ε spent returned.

use super::*;

pub(super) fn private(
    rows: Rows,
    spec: &Spec,
    dp: &DpRequirement,
    epsilon: Epsilon,
) -> Result<Aggregate, AggregateError> {
    let (cells, index, binning) = public_cells(&rows.key_names, dp)?;
    let rows = binned(rows, &binning);
    let bounds = dp_bounds(spec, dp)?;
    // Contribution bounding: at most k rows per person, in table order.
    let k = dp.max_rows_per_unit as i64;
    let n = cells.len();
    let (lo, hi) = bounds.unwrap_or((0.0, 1.0));
    let (counts, sums, hist) = bounded_totals(
        rows.keys,
        rows.values,
        rows.units,
        spec,
        &index,
        n,
        k,
        (lo, hi),
    );
    let (out_values, spent) = noised(spec, epsilon, k, (lo, hi), counts, sums, hist)?;
    Ok(Aggregate {
        batch: table(
            &rows.key_names,
            &spec.statistics,
            cells,
            out_values,
            "dp",
            Some(spent),
        )?,
        codes: vec![Code::DpNoised],
        refused: false,
        spent,
    })
}

/// Groups: the cartesian product of public domains (declared categories, or the bins of a
/// numeric column's declared bounds: a histogram). The cells, each cell's index by its keys,
/// and each key's binning (`None`: categories).
#[allow(clippy::type_complexity)]
fn public_cells(
    key_names: &[String],
    dp: &DpRequirement,
) -> Result<
    (
        Vec<Vec<Option<String>>>,
        BTreeMap<Vec<Option<String>>, usize>,
        Vec<Option<(f64, f64)>>,
    ),
    AggregateError,
> {
    let mut domains: Vec<Vec<String>> = Vec::new();
    let mut binning: Vec<Option<(f64, f64)>> = Vec::new();
    for name in key_names {
        if let Some(values) = dp.categories(name) {
            domains.push(values.to_vec());
            binning.push(None);
        } else if let Some((lo, hi)) = dp.bounds(name) {
            domains.push((0..HISTOGRAM_BINS).map(|b| bin_label(lo, hi, b)).collect());
            binning.push(Some((lo, hi)));
        } else {
            return Err(AggregateError::NotAllowed(format!(
                "column {name} has no declared categories or bounds in the dataset's DP terms: \
                 groups must come from a public domain, or a group's presence would reveal \
                 someone"
            )));
        }
    }
    let cells_n = domains
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(d.len()));
    if cells_n.is_none_or(|n| n > MAX_CELLS) {
        return Err(invalid(format!(
            "the declared domains give more than {MAX_CELLS} groups"
        )));
    }
    let mut index: BTreeMap<Vec<Option<String>>, usize> = BTreeMap::new();
    let mut cells: Vec<Vec<Option<String>>> = vec![vec![]];
    for d in &domains {
        cells = cells
            .into_iter()
            .flat_map(|prefix| {
                d.iter().map(move |v| {
                    let mut k = prefix.clone();
                    k.push(Some(v.clone()));
                    k
                })
            })
            .collect();
    }
    for (i, k) in cells.iter().enumerate() {
        index.insert(k.clone(), i);
    }
    Ok((cells, index, binning))
}

/// The rows with each numeric key replaced by the label of its bin (values outside are
/// clamped).
fn binned(rows: Rows, binning: &[Option<(f64, f64)>]) -> Rows {
    Rows {
        keys: rows
            .keys
            .into_iter()
            .map(|keys| {
                keys.into_iter()
                    .zip(binning)
                    .map(|(k, bins)| match bins {
                        None => k,
                        Some((lo, hi)) => k.and_then(|t| t.parse::<f64>().ok()).map(|v| {
                            let x = (v.clamp(*lo, *hi) - lo) / (hi - lo);
                            let b = ((x * HISTOGRAM_BINS as f64) as usize).min(HISTOGRAM_BINS - 1);
                            bin_label(*lo, *hi, b)
                        }),
                    })
                    .collect()
            })
            .collect(),
        ..rows
    }
}

/// The value bounds sums, means and quantiles are clamped to: the request's, or the owner's
/// declared bounds of the value column.
fn dp_bounds(spec: &Spec, dp: &DpRequirement) -> Result<Option<(f64, f64)>, AggregateError> {
    let valued = needs_values(&spec.statistics);
    let bounds = match (
        spec.bounds,
        spec.value.as_deref().and_then(|c| dp.bounds(c)),
    ) {
        (Some(b), _) | (None, Some(b)) => Some(b),
        (None, None) if valued => {
            return Err(AggregateError::NotAllowed(
                "DP sums, means and quantiles need bounds: pass them, or ask the owner to \
                 declare the column's bounds"
                    .into(),
            ));
        }
        (None, None) => None,
    };
    Ok(bounds)
}

/// Each cell's exact count, clamped sum and value histogram, with at most `k` rows per person
/// (in table order).
#[allow(clippy::too_many_arguments)]
fn bounded_totals(
    keys: Vec<Vec<Option<String>>>,
    values: Vec<Option<f64>>,
    units: Vec<String>,
    spec: &Spec,
    index: &BTreeMap<Vec<Option<String>>, usize>,
    n: usize,
    k: i64,
    (lo, hi): (f64, f64),
) -> (Vec<i64>, Vec<f64>, Vec<i64>) {
    let mut taken: BTreeMap<String, i64> = BTreeMap::new();
    let mut counts = vec![0i64; n];
    let mut sums = vec![0f64; n];
    let mut hist = vec![0i64; n * QUANTILE_BINS];
    for ((keys, value), unit) in keys.into_iter().zip(values).zip(units) {
        let Some(&cell) = index.get(&keys) else {
            continue;
        };
        // With a value column, a row without a value is left out (so that a mean's count and
        // sum are of the same rows) and does not use up its person's quota.
        if spec.value.is_some() && !value.is_some_and(f64::is_finite) {
            continue;
        }
        let used = taken.entry(unit).or_default();
        if *used >= k {
            continue;
        }
        *used += 1;
        counts[cell] += 1;
        if let Some(v) = value.filter(|v| v.is_finite()) {
            let v = v.clamp(lo, hi);
            sums[cell] += v;
            let bin = (((v - lo) / (hi - lo)) * QUANTILE_BINS as f64) as usize;
            hist[cell * QUANTILE_BINS + bin.min(QUANTILE_BINS - 1)] += 1;
        }
    }
    (counts, sums, hist)
}

/// The statistics of each cell, noised, and the ε they spent together.
#[allow(clippy::type_complexity)]
fn noised(
    spec: &Spec,
    epsilon: Epsilon,
    k: i64,
    (lo, hi): (f64, f64),
    counts: Vec<i64>,
    sums: Vec<f64>,
    hist: Vec<i64>,
) -> Result<(Vec<Vec<Option<f64>>>, Epsilon), AggregateError> {
    let n = counts.len();
    let want = |f: fn(&Statistic) -> bool| spec.statistics.iter().any(f);
    let need_count = want(|s| matches!(s, Statistic::Count | Statistic::Mean));
    let need_sum = want(|s| matches!(s, Statistic::Sum | Statistic::Mean));
    let need_hist = want(|s| matches!(s, Statistic::Quantile(_)));
    let parts = [need_count, need_sum, need_hist]
        .iter()
        .filter(|b| **b)
        .count();
    let each = dp::split(epsilon, parts);
    let noise_err = |e: dp::NoiseError| invalid(e.to_string());
    let noisy_counts = if need_count {
        dp::noisy_counts(counts, k, each).map_err(noise_err)?
    } else {
        vec![]
    };
    let noisy_sums = if need_sum {
        // A sum can only overflow with absurd bounds; clamped, it can never make the noise
        // step fail, which would tell the guest something exact about the rows.
        let sums = sums
            .into_iter()
            .map(|v| v.clamp(f64::MIN, f64::MAX))
            .collect();
        dp::noisy_values(sums, k as f64 * lo.abs().max(hi.abs()), each).map_err(noise_err)?
    } else {
        vec![]
    };
    let noisy_hist = if need_hist {
        dp::noisy_counts(hist, k, each).map_err(noise_err)?
    } else {
        vec![]
    };
    let mut out_values = Vec::with_capacity(n);
    for cell in 0..n {
        let count = noisy_counts.get(cell).map(|&c| c.max(0) as f64);
        let stats = spec
            .statistics
            .iter()
            .map(|s| match s {
                Statistic::Count => count,
                Statistic::Sum => noisy_sums.get(cell).copied(),
                Statistic::Mean => {
                    let c = count.unwrap_or(0.0).max(1.0);
                    noisy_sums.get(cell).map(|s| (s / c).clamp(lo, hi))
                }
                Statistic::Quantile(p) => Some(quantile_from_histogram(
                    &noisy_hist[cell * QUANTILE_BINS..(cell + 1) * QUANTILE_BINS],
                    *p,
                    lo,
                    hi,
                )),
            })
            .collect();
        out_values.push(stats);
    }
    let spent = Epsilon::from_micros(each.micros() * parts as u64);
    Ok((out_values, spent))
}

/// The label of bin `b` of `[lo, hi]`: `[lower, upper)`, the last one closed.
fn bin_label(lo: f64, hi: f64, b: usize) -> String {
    let w = (hi - lo) / HISTOGRAM_BINS as f64;
    let (a, z) = (lo + w * b as f64, lo + w * (b + 1) as f64);
    if b + 1 == HISTOGRAM_BINS {
        format!("[{a}, {z}]")
    } else {
        format!("[{a}, {z})")
    }
}

/// The p-quantile read off a (noisy) histogram over `[lo, hi]`, interpolating inside a bin.
fn quantile_from_histogram(bins: &[i64], p: f64, lo: f64, hi: f64) -> f64 {
    let counts: Vec<f64> = bins.iter().map(|&c| c.max(0) as f64).collect();
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return (lo + hi) / 2.0;
    }
    let width = (hi - lo) / bins.len() as f64;
    let target = p * total;
    let mut seen = 0.0;
    for (i, c) in counts.iter().enumerate() {
        if seen + c >= target && *c > 0.0 {
            return lo + width * (i as f64 + (target - seen) / c);
        }
        seen += c;
    }
    hi
}
