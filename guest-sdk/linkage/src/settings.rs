//! What a linkage run is told to do: blocking rules, comparisons and thresholds (the `params`
//! of the analysis, JSON). Unknown fields are refused, so a misspelt option never silently falls
//! back to a default.

use serde::{Deserialize, Serialize};

/// Settings of one linkage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Candidate pairs are the pairs of records (from different sources) that agree on every key
    /// of at least one rule. At least one rule; comparisons on a rule's columns are not trained
    /// on that rule's pairs, so give each comparison a rule that does not use its column.
    pub blocking: Vec<BlockingRule>,
    /// Deterministic rules: a pair of records agreeing on every key of one of these is a link
    /// whatever its score (e.g. a national patient number both sources hold). Not used for
    /// training.
    #[serde(default)]
    pub deterministic: Vec<BlockingRule>,
    /// How candidate pairs are compared, one comparison per column.
    pub comparisons: Vec<Comparison>,
    /// Smallest match probability kept as a link.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Keep each record in at most one link (greedily, by weight). Right when neither source
    /// holds duplicates of a person.
    #[serde(default)]
    pub one_to_one: bool,
    /// Refuse blocking that would compare more pairs than this.
    #[serde(default = "default_max_pairs")]
    pub max_pairs: u64,
    /// Iterations of expectation–maximisation per training session.
    #[serde(default = "default_em_iterations")]
    pub em_iterations: u32,
    /// Random pairs compared to estimate the u probabilities.
    #[serde(default = "default_u_sample_pairs")]
    pub u_sample_pairs: u64,
    /// Seed of the random-pair sample (the same seed gives the same links).
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_threshold() -> f64 {
    0.9
}
fn default_max_pairs() -> u64 {
    50_000_000
}
fn default_em_iterations() -> u32 {
    25
}
fn default_u_sample_pairs() -> u64 {
    1_000_000
}
fn default_seed() -> u64 {
    42
}

/// Keys that must all agree (normalised, nulls never agree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlockingRule(pub Vec<BlockKey>);

/// One key of a blocking rule: a whole column, or its first `prefix` characters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BlockKey {
    /// The column's normalised value.
    Column(String),
    /// The first characters of the normalised value.
    Prefix {
        /// The column.
        column: String,
        /// How many characters.
        prefix: usize,
    },
}

impl BlockKey {
    /// The column the key reads.
    pub fn column(&self) -> &str {
        match self {
            Self::Column(c) | Self::Prefix { column: c, .. } => c,
        }
    }
}

/// How one column is compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// The column (present in every source).
    pub column: String,
    /// The comparison levels.
    pub method: Method,
    /// Adjust the exact-match weight by how common the value is (a match on "smith" says less
    /// than a match on "featherstonehaugh").
    #[serde(default)]
    pub tf: bool,
}

/// Comparison levels, from most to least similar. Every method has the levels "null" (either
/// side missing: no evidence), "exact", its own intermediate levels, and "else".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Method {
    /// Exact or not.
    Exact,
    /// Jaro–Winkler similarity at or above each threshold (descending).
    JaroWinkler(Vec<f64>),
    /// Levenshtein distance at or below each bound (ascending).
    Levenshtein(Vec<usize>),
    /// ISO dates (`YYYY-MM-DD`): a near miss (day and month swapped, or one character off),
    /// then within each number of days (ascending).
    Date {
        /// Tolerances in days.
        #[serde(default)]
        within_days: Vec<u32>,
    },
    /// Same first characters, for each length (descending), e.g. postcode district and area.
    Prefix(Vec<usize>),
}

impl Method {
    /// The level names, index 0 being "null".
    pub fn level_names(&self) -> Vec<String> {
        let mut names = vec!["null".to_string(), "exact".to_string()];
        match self {
            Self::Exact => {}
            Self::JaroWinkler(t) => names.extend(t.iter().map(|t| format!("jaro_winkler>={t}"))),
            Self::Levenshtein(d) => names.extend(d.iter().map(|d| format!("levenshtein<={d}"))),
            Self::Date { within_days } => {
                names.push("near_miss".into());
                names.extend(within_days.iter().map(|d| format!("within_{d}_days")));
            }
            Self::Prefix(p) => names.extend(p.iter().map(|p| format!("prefix_{p}"))),
        }
        names.push("else".into());
        names
    }
}

impl Settings {
    /// Checks what the types cannot, with a message a researcher can act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.blocking.is_empty()
            || self
                .blocking
                .iter()
                .chain(&self.deterministic)
                .any(|r| r.0.is_empty())
        {
            return Err("blocking needs at least one rule, and every rule at least one key".into());
        }
        if self.comparisons.is_empty() {
            return Err("comparisons needs at least one column".into());
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err("threshold must be a probability strictly between 0 and 1".into());
        }
        for c in &self.comparisons {
            let bad = match &c.method {
                Method::JaroWinkler(t) => {
                    t.is_empty()
                        || t.windows(2).any(|w| w[0] <= w[1])
                        || t.iter().any(|t| !(0.0..1.0).contains(t))
                }
                Method::Levenshtein(d) => {
                    d.is_empty() || d.windows(2).any(|w| w[0] >= w[1]) || d[0] == 0
                }
                Method::Date { within_days } => within_days.windows(2).any(|w| w[0] >= w[1]),
                Method::Prefix(p) => {
                    p.is_empty() || p.windows(2).any(|w| w[0] <= w[1]) || p.contains(&0)
                }
                Method::Exact => false,
            };
            if bad {
                return Err(format!(
                    "comparison on {:?}: thresholds must be non-empty and strictly ordered from most \
                     to least similar (jaro_winkler descending in [0, 1), levenshtein ascending from \
                     1, prefix descending from the longest, date tolerances ascending)",
                    c.column
                ));
            }
            if self
                .comparisons
                .iter()
                .filter(|o| o.column == c.column)
                .count()
                > 1
            {
                return Err(format!("column {:?} is compared twice", c.column));
            }
        }
        for (i, c) in self.comparisons.iter().enumerate() {
            if self
                .blocking
                .iter()
                .all(|r| r.0.iter().any(|k| k.column() == c.column))
            {
                return Err(format!(
                    "comparison {i} ({:?}) uses a column in every blocking rule, so its m \
                     probabilities cannot be estimated: add a blocking rule without it",
                    c.column
                ));
            }
        }
        if self.em_iterations == 0 || self.u_sample_pairs == 0 {
            return Err("em_iterations and u_sample_pairs must be positive".into());
        }
        Ok(())
    }
}
