//! Output rules: what a run may release. A run's rules are the strictest over all its inputs;
//! review is routed per input (see `cleanroom-policy`).

use serde::{Deserialize, Serialize};

use crate::keys::PartyId;

/// Default [`OutputRules::max_output_bytes`]: 64 MiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;
/// Default [`OutputRules::min_group_count`].
pub const DEFAULT_MIN_GROUP_COUNT: u64 = 10;
/// Default [`OutputRules::count_columns`].
pub const DEFAULT_COUNT_COLUMNS: [&str; 3] = ["count", "n", "patients"];
/// Default [`OutputRules::max_outputs`].
pub const DEFAULT_MAX_OUTPUTS: u32 = 32;
/// Default [`OutputRules::min_residual_df`] (the SACRO/ACRO default).
pub const DEFAULT_MIN_RESIDUAL_DF: u64 = 10;

/// What happens to result rows whose group count is below the minimum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SmallGroups {
    /// Drop the small groups and release the rest (the default).
    #[default]
    Suppress,
    /// Refuse the whole output.
    Refuse,
}

/// What happens to outputs the host cannot check: free-form JSON, files, tables without a
/// declared count column, tables with nested columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Unchecked {
    /// Hold them for the owners' review.
    Review,
    /// Never release them.
    Refuse,
}

/// Rounding of released counts (after small-cell suppression). Stricter rules sort later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Counts are released as they are.
    #[default]
    None,
    /// OpenSAFELY's redact-then-round: counts of 7 or less are redacted (null), the rest
    /// rounded to the nearest 5; declared total columns are recomputed from the rounded cells.
    Redact7Round5,
    /// Midpoint-6 rounding: each count becomes the midpoint of its band of 6
    /// (1-6 -> 3, 7-12 -> 9, ...); zero stays zero.
    Midpoint6,
}

/// Limits on released outputs, set by a dataset's owner. Missing fields take the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct OutputRules {
    /// Largest total size of all released outputs, in bytes.
    pub max_output_bytes: u64,
    /// Smallest group count `k` allowed in a declared count column of a released table.
    pub min_group_count: u64,
    /// Column names declared as holding group counts (modules may declare more with Arrow
    /// field metadata `cleanroom:count = "true"`).
    pub count_columns: Vec<String>,
    /// What to do with groups below `min_group_count`.
    pub small_groups: SmallGroups,
    /// Whether zero counts are disclosive (suppressed like any count below `k`).
    pub zeros_disclosive: bool,
    /// Rounding applied to declared counts.
    pub rounding: Rounding,
    /// Smallest residual degrees of freedom (n - parameters) of a declared model output.
    pub min_residual_df: u64,
    /// Most outputs a run may publish.
    pub max_outputs: u32,
    /// What happens to outputs the host cannot check. Unset: review where an owner reviews,
    /// otherwise refuse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchecked: Option<Unchecked>,
    /// Whether the module's logs and error text may be released to the researcher.
    pub release_logs: bool,
    /// Whether outputs must be reviewed before release.
    pub review_required: bool,
    /// Who reviews for this dataset (empty: its owner).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reviewers: Vec<PartyId>,
    /// How many distinct reviewers must release (OpenSAFELY uses two).
    pub min_reviewers: u32,
}

impl Default for OutputRules {
    fn default() -> Self {
        Self {
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            min_group_count: DEFAULT_MIN_GROUP_COUNT,
            count_columns: DEFAULT_COUNT_COLUMNS.map(String::from).to_vec(),
            small_groups: SmallGroups::Suppress,
            zeros_disclosive: true,
            rounding: Rounding::None,
            min_residual_df: DEFAULT_MIN_RESIDUAL_DF,
            max_outputs: DEFAULT_MAX_OUTPUTS,
            unchecked: None,
            release_logs: false,
            review_required: false,
            reviewers: vec![],
            min_reviewers: 1,
        }
    }
}

impl OutputRules {
    /// The strictest combination: smallest byte and output limits, largest `k` and residual
    /// degrees of freedom, union of count columns (first-seen order), `Refuse` over
    /// `Suppress`, zeros disclosive if any says so, the strictest rounding, `Refuse` over
    /// `Review` for unchecked outputs (each input's own answer, so one owner's review never
    /// overrides another's refusal), logs only if every input releases them, review if any
    /// input requires it. Reviewer lists are not merged: review is routed per input. With no
    /// rules at all, returns the defaults.
    pub fn strictest<'a>(rules: impl IntoIterator<Item = &'a Self>) -> Self {
        let mut rules = rules.into_iter();
        let Some(first) = rules.next() else {
            return Self::default();
        };
        let mut out = first.clone();
        // Each input's own answer for unchecked outputs, before merging: an owner who does
        // not review (and so refuses unchecked outputs) must not find its data held for
        // another owner's reviewer because that other owner reviews.
        out.unchecked = Some(first.unchecked_outputs());
        for rule in rules {
            out.max_output_bytes = out.max_output_bytes.min(rule.max_output_bytes);
            out.min_group_count = out.min_group_count.max(rule.min_group_count);
            for column in &rule.count_columns {
                if !out.count_columns.contains(column) {
                    out.count_columns.push(column.clone());
                }
            }
            if rule.small_groups == SmallGroups::Refuse {
                out.small_groups = SmallGroups::Refuse;
            }
            out.zeros_disclosive |= rule.zeros_disclosive;
            out.rounding = out.rounding.max(rule.rounding);
            out.min_residual_df = out.min_residual_df.max(rule.min_residual_df);
            out.max_outputs = out.max_outputs.min(rule.max_outputs);
            out.unchecked = out.unchecked.max(Some(rule.unchecked_outputs()));
            out.release_logs &= rule.release_logs;
            out.review_required |= rule.review_required;
            out.min_reviewers = out.min_reviewers.max(rule.min_reviewers);
        }
        out.reviewers.clear();
        out
    }

    /// What happens to unchecked outputs under these (merged) rules.
    pub fn unchecked_outputs(&self) -> Unchecked {
        self.unchecked.unwrap_or(if self.review_required {
            Unchecked::Review
        } else {
            Unchecked::Refuse
        })
    }

    /// Range checks the server applies to a new policy.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_outputs == 0 || self.max_outputs > DEFAULT_MAX_OUTPUTS {
            return Err(format!(
                "max_outputs must be 1 to {DEFAULT_MAX_OUTPUTS} (owners may only lower it)"
            ));
        }
        if self.min_reviewers == 0 {
            return Err("min_reviewers must be at least 1".into());
        }
        let available = self.reviewers.len().max(1);
        if self.review_required && self.min_reviewers as usize > available {
            return Err(format!(
                "min_reviewers is {} but only {available} reviewer(s) are named; list them in reviewers",
                self.min_reviewers
            ));
        }
        Ok(())
    }
}
