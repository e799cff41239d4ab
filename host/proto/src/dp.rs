//! Differential privacy terms: what an owner requires of a dataset, what a run asks to spend,
//! and the budget each party is shown. The mechanisms and the accounting live in
//! `cleanroom-policy::dp`.
//!
//! Privacy loss is accounted in **pure ε-DP with basic sequential composition**: every
//! mechanism the enclave runs is a Laplace mechanism (discrete Laplace for counts, Laplace on
//! floats for sums), so the ε of a dataset's releases add up exactly and no δ is needed.
//! ε travels as a JSON number with at most six decimals and is kept as an integer number of
//! millionths ([`Epsilon`]), so sums never round in a researcher's favour.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Millionths of ε per unit.
const MICROS: f64 = 1_000_000.0;

/// A privacy-loss parameter ε, as an integer number of millionths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epsilon(u64);

impl Epsilon {
    /// Zero.
    pub const ZERO: Self = Self(0);

    /// From millionths.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// Millionths of ε.
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// From a float with at most six decimals (`None` for negative, non-finite or finer values).
    pub fn from_f64(value: f64) -> Option<Self> {
        if !value.is_finite() || !(0.0..=1e9).contains(&value) {
            return None;
        }
        let micros = (value * MICROS).round();
        (micros / MICROS == value).then_some(Self(micros as u64))
    }

    /// As a float.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / MICROS
    }

    /// `self + other`, saturating.
    pub fn plus(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    /// `self - other`, or zero.
    pub fn minus(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Epsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

impl Serialize for Epsilon {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Epsilon {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        Self::from_f64(value).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "epsilon must be a non-negative number with at most six decimals, not {value}"
            ))
        })
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Epsilon {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .minimum(Some(0))
            .description(Some("ε, a non-negative number with at most six decimals"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Epsilon {}

/// A finite float (no NaN, no infinity), so that the types holding it compare and sign
/// exactly.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Finite(f64);

// A finite float equals itself: the one gap between `PartialEq` and `Eq` (NaN) is excluded.
impl Eq for Finite {}

impl Finite {
    /// `value` if it is finite.
    pub fn new(value: f64) -> Option<Self> {
        value.is_finite().then_some(Self(value))
    }

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Finite {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        Self::new(value).ok_or_else(|| serde::de::Error::custom("expected a finite number"))
    }
}

/// An owner's requirement that everything released from a dataset be differentially private.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DpRequirement {
    /// The column naming the person a row is about: the privacy unit. A person with many rows
    /// is one unit.
    pub unit_column: String,
    /// The dataset's total ε over every run and preview, ever.
    pub epsilon: Epsilon,
    /// The most one run may spend.
    pub max_epsilon_per_run: Epsilon,
    /// If set, the most one researcher may spend in total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_epsilon_per_researcher: Option<Epsilon>,
    /// How many rows of one unit enter an aggregate at most (more are dropped, in table order).
    #[serde(default = "one")]
    pub max_rows_per_unit: u32,
    /// Public domains of columns, declared by the owner: bounds of numeric columns (values
    /// are clamped to them) and the categories of columns that may be grouped by.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnDomain>,
}

fn one() -> u32 {
    1
}

/// A column's public domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ColumnDomain {
    /// A numeric column's values lie in `[lower, upper]` (others are clamped).
    Numeric {
        /// Lower bound.
        lower: Finite,
        /// Upper bound.
        upper: Finite,
    },
    /// A categorical column's possible values (as text); others form no group.
    Categories(Vec<String>),
}

impl DpRequirement {
    /// What the types cannot check.
    pub fn validate(&self) -> Result<(), String> {
        if self.unit_column.is_empty() {
            return Err("dp.unit_column must name the column identifying a person".into());
        }
        if self.epsilon == Epsilon::ZERO || self.max_epsilon_per_run == Epsilon::ZERO {
            return Err("dp.epsilon and dp.max_epsilon_per_run must be above zero".into());
        }
        if self.max_epsilon_per_run > self.epsilon {
            return Err("dp.max_epsilon_per_run cannot exceed the total dp.epsilon".into());
        }
        if self.max_rows_per_unit == 0 {
            return Err("dp.max_rows_per_unit must be at least 1".into());
        }
        for (name, domain) in &self.columns {
            match domain {
                ColumnDomain::Numeric { lower, upper } if lower.get() >= upper.get() => {
                    return Err(format!("dp.columns.{name}: lower must be below upper"));
                }
                ColumnDomain::Categories(values) if values.is_empty() || values.len() > 10_000 => {
                    return Err(format!("dp.columns.{name}: 1 to 10000 categories"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The declared bounds of a numeric column.
    pub fn bounds(&self, column: &str) -> Option<(f64, f64)> {
        match self.columns.get(column) {
            Some(ColumnDomain::Numeric { lower, upper }) => Some((lower.get(), upper.get())),
            _ => None,
        }
    }

    /// The declared categories of a column.
    pub fn categories(&self, column: &str) -> Option<&[String]> {
        match self.columns.get(column) {
            Some(ColumnDomain::Categories(values)) => Some(values),
            _ => None,
        }
    }
}

/// What a run on a dataset that requires DP asks to spend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DpRun {
    /// The ε this run spends, charged to every DP input's ledger when the run starts.
    pub epsilon: Epsilon,
    /// Run the module by sample and aggregate instead of giving it the aggregate interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_aggregate: Option<SampleAggregate>,
    /// The run's fixed duration in seconds ([`DpRun::DEFAULT_DURATION_SECS`] when absent):
    /// its outcome is decided and shown exactly this long after it starts (or a whole
    /// multiple of it, if the host's own work outran it), never earlier, so that how long
    /// it took says nothing about the rows. It is also the analysis's time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u32>,
}

impl DpRun {
    /// The fixed duration of a DP run that names none.
    pub const DEFAULT_DURATION_SECS: u32 = 10;

    /// The run's fixed duration.
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(
            self.duration_secs.unwrap_or(Self::DEFAULT_DURATION_SECS),
        ))
    }
}

/// Sample and aggregate (GUPT): the module runs once per disjoint block of privacy units, in a
/// fresh instance, and publishes a fixed-shape numeric JSON array; the host clamps each
/// coordinate, averages across blocks and adds noise calibrated to range / blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SampleAggregate {
    /// Number of disjoint blocks (2 to 1000).
    pub blocks: u32,
    /// The name of the JSON output each block publishes: an array of numbers.
    pub output: String,
    /// Per coordinate, the range its values are clamped to: `[lower, upper]`.
    pub bounds: Vec<(Finite, Finite)>,
}

impl SampleAggregate {
    /// Most blocks.
    pub const MAX_BLOCKS: u32 = 1000;
    /// Most coordinates.
    pub const MAX_COORDINATES: usize = 1000;

    /// What the types cannot check.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=Self::MAX_BLOCKS).contains(&self.blocks) {
            return Err(format!(
                "sample_aggregate.blocks must be 2 to {}",
                Self::MAX_BLOCKS
            ));
        }
        if self.bounds.is_empty() || self.bounds.len() > Self::MAX_COORDINATES {
            return Err(format!(
                "sample_aggregate.bounds must give 1 to {} coordinates",
                Self::MAX_COORDINATES
            ));
        }
        if self.bounds.iter().any(|(lo, hi)| lo.get() >= hi.get()) {
            return Err("sample_aggregate.bounds: each lower must be below its upper".into());
        }
        Ok(())
    }
}

/// A dataset's budget as shown to a party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DpBudget {
    /// The dataset.
    pub dataset: String,
    /// Its total ε.
    pub epsilon: Epsilon,
    /// Spent by every run and preview so far.
    pub spent: Epsilon,
    /// What is left of the total.
    pub remaining: Epsilon,
    /// The most one run may spend.
    pub max_epsilon_per_run: Epsilon,
    /// The asking researcher's own spending and what their share leaves them (`None` for
    /// owners, or when there is no per-researcher share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yours: Option<DpShare>,
}

/// One researcher's share of a budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DpShare {
    /// Spent by this researcher's runs.
    pub spent: Epsilon,
    /// What they may still spend: the smaller of their share's rest and the dataset's.
    pub remaining: Epsilon,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsilon_is_exact_millionths() {
        let e: Epsilon = serde_json::from_str("0.1").unwrap();
        assert_eq!(e.micros(), 100_000);
        assert_eq!(serde_json::to_string(&e).unwrap(), "0.1");
        let sum = (0..10).fold(Epsilon::ZERO, |a, _| a.plus(e));
        assert_eq!(sum, Epsilon::from_micros(1_000_000));
        assert!(serde_json::from_str::<Epsilon>("0.0000001").is_err());
        assert!(serde_json::from_str::<Epsilon>("-1").is_err());
    }

    #[test]
    fn requirement_is_validated() {
        let mut r = DpRequirement {
            unit_column: "patient_id".into(),
            epsilon: Epsilon::from_micros(1_000_000),
            max_epsilon_per_run: Epsilon::from_micros(2_000_000),
            max_epsilon_per_researcher: None,
            max_rows_per_unit: 1,
            columns: BTreeMap::new(),
        };
        assert!(r.validate().unwrap_err().contains("cannot exceed"));
        r.max_epsilon_per_run = Epsilon::from_micros(500_000);
        r.validate().unwrap();
        r.columns.insert(
            "age".into(),
            ColumnDomain::Numeric {
                lower: Finite::new(90.0).unwrap(),
                upper: Finite::new(0.0).unwrap(),
            },
        );
        assert!(r.validate().is_err());
    }
}

/// An owner's request to publish a preview of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The ε the preview spends, once, from the dataset's budget.
    pub epsilon: Epsilon,
    /// How many synthetic rows to draw (1 to 100,000).
    pub synthetic_rows: u32,
}

impl PreviewRequest {
    /// Most synthetic rows.
    pub const MAX_ROWS: u32 = 100_000;
}

/// A dataset's preview, computed inside the enclave under differential privacy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Preview {
    /// The dataset.
    pub dataset: String,
    /// The ε it spent.
    pub epsilon: Epsilon,
    /// When it was computed (Unix seconds, enclave clock).
    pub created: u64,
    /// Every column a guest would see, with its Arrow type.
    pub schema: Vec<(String, String)>,
    /// The number of people, with noise.
    pub people: u64,
    /// Per column: a DP summary, or why there is none.
    pub columns: Vec<PreviewColumn>,
    /// The pairs of columns whose joint distribution was measured (a spanning tree).
    pub pairs: Vec<(String, String)>,
    /// The synthetic table, an Arrow IPC stream (base64), with the dataset's schema.
    pub synthetic: String,
}

/// One column of a preview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PreviewColumn {
    /// The column.
    pub name: String,
    /// Its summary.
    pub summary: ColumnSummary,
}

/// A column's DP summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ColumnSummary {
    /// Noisy counts per declared category (`null` counts everything else).
    Categories(Vec<(Option<String>, u64)>),
    /// A noisy histogram over the declared bounds and quantiles read from it.
    Numeric {
        /// `(lower, upper, count)` per bin; values outside the bounds were clamped.
        bins: Vec<(f64, f64, u64)>,
        /// Nulls, with noise.
        nulls: u64,
        /// `(p, value)` for p = 0.25, 0.5, 0.75.
        quantiles: Vec<(f64, f64)>,
    },
    /// Not summarised: the owner declared no domain for it (or it is the privacy unit).
    Undeclared,
}
