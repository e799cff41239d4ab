//! Differential privacy: the ledger check, the noise (OpenDP), and the sample-and-aggregate
//! release.
//!
//! **Mechanisms.** Every release adds Laplace noise through OpenDP's `make_laplace`: on
//! integer vectors (counts, histograms) it is the discrete Laplace mechanism, on float
//! vectors (sums, sample-and-aggregate means) OpenDP's floating-point-safe Laplace, which
//! samples exactly on a lattice and so avoids the attacks on naive float noise (Mironov 2012).
//! Both are pure ε-DP for the L1 sensitivity we state, so a dataset's ledger composes by
//! adding ε (basic composition). We take each measurement's ε from OpenDP's privacy map,
//! not from our own arithmetic, and refuse if it exceeds what was charged.
//!
//! **Randomness.** OpenDP is built without its `use-openssl` feature (which would compile a
//! second OpenSSL into the enclave); it then draws from `rand`'s `thread_rng`, a ChaCha
//! CSPRNG seeded and reseeded from the operating system (`getrandom`, inside the SNP guest).

use cleanroom_proto::dp::{DpRequirement, Epsilon};
use cleanroom_proto::{Code, PartyId, Reason};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_laplace;
use opendp::metrics::L1Distance;

/// Why noise could not be added (a bug or a misuse, never a data-dependent condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoiseError(pub String);

impl std::fmt::Display for NoiseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoiseError {}

fn opendp_err(e: opendp::error::Error) -> NoiseError {
    NoiseError(format!("OpenDP: {e}"))
}

/// The Laplace scale that makes L1 sensitivity `sensitivity` cost at most `epsilon`, with a
/// hair of slack for OpenDP's conservative rounding of the privacy map.
fn scale(sensitivity: f64, epsilon: Epsilon) -> Result<f64, NoiseError> {
    if epsilon == Epsilon::ZERO {
        return Err(NoiseError("no ε to spend".into()));
    }
    Ok(sensitivity / epsilon.as_f64() * (1.0 + 1e-9))
}

/// Discrete Laplace noise on counts whose vector has L1 sensitivity `sensitivity`, costing at
/// most `epsilon`.
pub fn noisy_counts(
    counts: Vec<i64>,
    sensitivity: i64,
    epsilon: Epsilon,
) -> Result<Vec<i64>, NoiseError> {
    let m = make_laplace(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L1Distance::<i64>::default(),
        scale(sensitivity as f64, epsilon)?,
        None,
    )
    .map_err(opendp_err)?;
    check_cost(m.map(&sensitivity).map_err(opendp_err)?, epsilon)?;
    m.invoke(&counts).map_err(opendp_err)
}

/// Laplace noise on a float vector with L1 sensitivity `sensitivity`, costing at most
/// `epsilon`. Values must be finite (clamped beforehand).
pub fn noisy_values(
    values: Vec<f64>,
    sensitivity: f64,
    epsilon: Epsilon,
) -> Result<Vec<f64>, NoiseError> {
    if values.iter().any(|v| !v.is_finite()) {
        return Err(NoiseError("values must be finite before noise".into()));
    }
    let m = make_laplace(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L1Distance::<f64>::default(),
        scale(sensitivity, epsilon)?,
        None,
    )
    .map_err(opendp_err)?;
    check_cost(m.map(&sensitivity).map_err(opendp_err)?, epsilon)?;
    m.invoke(&values).map_err(opendp_err)
}

/// The exponential mechanism (OpenDP's report-noisy-max with Gumbel noise): the index of a
/// high score, each score having sensitivity `sensitivity`, costing at most `epsilon`.
pub fn noisy_argmax(
    scores: Vec<f64>,
    sensitivity: f64,
    epsilon: Epsilon,
) -> Result<usize, NoiseError> {
    use opendp::measurements::make_noisy_max;
    use opendp::measures::MaxDivergence;
    use opendp::metrics::LInfDistance;
    let make = |scale: f64| {
        make_noisy_max(
            VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
            LInfDistance::<f64>::default(),
            MaxDivergence,
            scale,
            false,
        )
        .map_err(opendp_err)
    };
    // The privacy map is linear in 1 / scale: one probe gives the scale for `epsilon`.
    let probe = make(sensitivity)?.map(&sensitivity).map_err(opendp_err)?;
    let m = make(scale(sensitivity * probe, epsilon)?)?;
    check_cost(m.map(&sensitivity).map_err(opendp_err)?, epsilon)?;
    m.invoke(&scores).map_err(opendp_err)
}

fn check_cost(cost: f64, epsilon: Epsilon) -> Result<(), NoiseError> {
    if cost <= epsilon.as_f64() * (1.0 + 1e-6) {
        Ok(())
    } else {
        Err(NoiseError(format!(
            "the mechanism would cost ε = {cost}, more than the {epsilon} charged"
        )))
    }
}

/// Split `total` into `parts` equal shares (rounded down, so the shares never sum to more).
pub fn split(total: Epsilon, parts: usize) -> Epsilon {
    Epsilon::from_micros(total.micros() / parts.max(1) as u64)
}

/// What a dataset's ledger says so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// By every run and preview.
    pub total: Epsilon,
    /// By the researcher asking.
    pub researcher: Epsilon,
}

/// Whether a run spending `epsilon` fits a dataset's budget; the denial otherwise.
pub fn budget_refusal(
    dataset: &str,
    dp: &DpRequirement,
    spent: Spent,
    epsilon: Epsilon,
    researcher: &PartyId,
) -> Option<Reason> {
    if epsilon > dp.max_epsilon_per_run {
        return Some(Reason::new(
            Code::DpRunLimit,
            format!(
                "dataset {dataset} allows at most ε = {} per run; ask for less",
                dp.max_epsilon_per_run
            ),
        ));
    }
    if spent.total.plus(epsilon) > dp.epsilon {
        return Some(Reason::new(
            Code::DpBudgetExhausted,
            format!(
                "dataset {dataset} has ε = {} left of its {}; this run asks for {epsilon}",
                dp.epsilon.minus(spent.total),
                dp.epsilon
            ),
        ));
    }
    if let Some(share) = dp.max_epsilon_per_researcher
        && spent.researcher.plus(epsilon) > share
    {
        return Some(Reason::new(
            Code::DpBudgetExhausted,
            format!(
                "researcher {researcher} has ε = {} left of their share ({share}) of dataset \
                 {dataset}; this run asks for {epsilon}",
                share.minus(spent.researcher)
            ),
        ));
    }
    None
}

/// The sample-and-aggregate release (GUPT, Mohan et al., SIGMOD 2012): each block's vector
/// (`None` where a block failed or published no valid vector: the midpoint stands in for it,
/// so failure reveals nothing) is clamped to `bounds`, the blocks are averaged, and each
/// coordinate gets Laplace noise for its own sensitivity `(upper − lower) / blocks` with an
/// equal share of `epsilon` (basic composition): one person is in one block, so they move
/// one block's clamped vector, and so each average by at most its width over the blocks.
/// (One vector-valued Laplace with the summed sensitivity would give a narrow coordinate the
/// noise of the widest.)
pub fn sample_aggregate_release(
    blocks: &[Option<Vec<f64>>],
    bounds: &[(f64, f64)],
    epsilon: Epsilon,
) -> Result<Vec<f64>, NoiseError> {
    let b = blocks.len();
    if b == 0 || bounds.is_empty() {
        return Err(NoiseError("no blocks or no coordinates".into()));
    }
    let each = split(epsilon, bounds.len());
    let mut out = Vec::with_capacity(bounds.len());
    for (i, &(lo, hi)) in bounds.iter().enumerate() {
        let mean: f64 = blocks
            .iter()
            .map(|block| {
                block
                    .as_ref()
                    .and_then(|v| v.get(i).copied())
                    .filter(|v| v.is_finite())
                    .unwrap_or((lo + hi) / 2.0)
                    .clamp(lo, hi)
            })
            .sum::<f64>()
            / b as f64;
        let noisy = noisy_values(vec![mean], (hi - lo) / b as f64, each)?[0];
        out.push(noisy.clamp(lo, hi));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variance(xs: &[f64]) -> f64 {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    }

    /// The noise has the scale the privacy map promises: Laplace(b) has variance 2b², and the
    /// discrete Laplace with the same scale nearly so. 20,000 draws put the sample variance
    /// within a few percent of it; a scale off by a factor of 1.2 would be far outside.
    #[test]
    fn noise_variance_matches_theory() {
        let eps = Epsilon::from_micros(500_000);
        let draws = noisy_values(vec![0.0; 20_000], 3.0, eps).unwrap();
        let b: f64 = 3.0 / 0.5;
        let ratio = variance(&draws) / (2.0 * b * b);
        assert!(
            (0.9..1.1).contains(&ratio),
            "float Laplace variance ratio {ratio}"
        );

        let counts = noisy_counts(vec![100; 20_000], 2, Epsilon::from_micros(1_000_000)).unwrap();
        let xs: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
        // Discrete Laplace with t = 2: variance 2e^{-1/t} / (1 - e^{-1/t})^2.
        let q = (-1.0f64 / 2.0).exp();
        let theory = 2.0 * q / (1.0 - q).powi(2);
        let ratio = variance(&xs) / theory;
        assert!(
            (0.9..1.1).contains(&ratio),
            "discrete Laplace variance ratio {ratio}"
        );
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 100.0).abs() < 0.2, "noise is centred: mean {mean}");
    }

    #[test]
    fn budget_is_enforced_for_the_dataset_and_each_researcher() {
        let dp: DpRequirement = serde_json::from_value(serde_json::json!({
            "unit_column": "patient_id", "epsilon": 1.0, "max_epsilon_per_run": 0.5,
            "max_epsilon_per_researcher": 0.6
        }))
        .unwrap();
        let who = PartyId([7; 32]);
        let e = |x: u64| Epsilon::from_micros(x);
        assert_eq!(
            budget_refusal("d", &dp, Spent::default(), e(600_000), &who).map(|r| r.code),
            Some(Code::DpRunLimit)
        );
        assert!(budget_refusal("d", &dp, Spent::default(), e(500_000), &who).is_none());
        let spent = Spent {
            total: e(700_000),
            researcher: e(100_000),
        };
        assert!(budget_refusal("d", &dp, spent, e(300_000), &who).is_none());
        assert_eq!(
            budget_refusal("d", &dp, spent, e(300_001), &who).map(|r| r.code),
            Some(Code::DpBudgetExhausted)
        );
        let mine = Spent {
            total: e(200_000),
            researcher: e(500_000),
        };
        let refusal = budget_refusal("d", &dp, mine, e(200_000), &who).unwrap();
        assert!(refusal.message.contains("share"), "{}", refusal.message);
    }

    #[test]
    fn sample_and_aggregate_clamps_and_stands_in_for_failed_blocks() {
        // 100 blocks, one wild and one failed: the average moves by at most range / blocks.
        let mut blocks: Vec<Option<Vec<f64>>> = vec![Some(vec![5.0]); 98];
        blocks.push(Some(vec![1e12]));
        blocks.push(None);
        let out =
            sample_aggregate_release(&blocks, &[(0.0, 10.0)], Epsilon::from_micros(1_000_000_000))
                .unwrap();
        let exact = (98.0 * 5.0 + 10.0 + 5.0) / 100.0;
        assert!((out[0] - exact).abs() < 0.01, "{} vs {exact}", out[0]);
    }
}
