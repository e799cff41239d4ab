//! Output rules: what a run may release. A run's rules are the strictest over all its inputs.

use serde::{Deserialize, Serialize};

/// Default [`OutputRules::max_output_bytes`]: 64 MiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;
/// Default [`OutputRules::min_group_count`].
pub const DEFAULT_MIN_GROUP_COUNT: u64 = 10;
/// Default [`OutputRules::count_columns`].
pub const DEFAULT_COUNT_COLUMNS: [&str; 3] = ["count", "n", "patients"];

/// What happens to result rows whose group count is below the minimum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmallGroups {
    /// Drop the small groups and release the rest (the default).
    #[default]
    Suppress,
    /// Withhold the whole output.
    Refuse,
}

/// Limits on released outputs, set by a dataset's owner. Missing fields take the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputRules {
    /// Largest total size of all released outputs, in bytes.
    pub max_output_bytes: u64,
    /// Smallest group count `k` allowed in a count column of a released table.
    pub min_group_count: u64,
    /// Column names holding group counts, checked against `min_group_count`.
    pub count_columns: Vec<String>,
    /// What to do with groups below `min_group_count`.
    pub small_groups: SmallGroups,
    /// Whether the module's logs may be released to the researcher.
    pub release_logs: bool,
    /// Whether the owner must review outputs before release.
    pub review_required: bool,
}

impl Default for OutputRules {
    fn default() -> Self {
        Self {
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            min_group_count: DEFAULT_MIN_GROUP_COUNT,
            count_columns: DEFAULT_COUNT_COLUMNS.map(String::from).to_vec(),
            small_groups: SmallGroups::Suppress,
            release_logs: false,
            review_required: false,
        }
    }
}

impl OutputRules {
    /// The strictest combination: smallest byte limit, largest `k`, union of count columns
    /// (first-seen order), `Refuse` over `Suppress`, logs only if every input releases them,
    /// review if any input requires it. With no rules at all, returns the defaults.
    pub fn strictest<'a>(rules: impl IntoIterator<Item = &'a OutputRules>) -> OutputRules {
        let mut rules = rules.into_iter();
        let Some(first) = rules.next() else {
            return OutputRules::default();
        };
        let mut out = first.clone();
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
            out.release_logs &= rule.release_logs;
            out.review_required |= rule.review_required;
        }
        out
    }
}
