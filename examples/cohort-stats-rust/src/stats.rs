//! Group statistics with small-cell suppression.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Admission;

/// What to group admissions by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// ICD-10 category.
    #[default]
    Diagnosis,
    /// Sex.
    Sex,
    /// Ten-year age band (`40-49`).
    AgeBand,
}

/// Statistics of one released group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStats {
    /// The group's key.
    pub group: String,
    /// Admissions in the group.
    pub patients: u64,
    /// Mean age, years.
    pub mean_age: f64,
    /// Mean length of stay, days.
    pub mean_los_days: f64,
    /// In-hospital mortality, percent.
    pub mortality_pct: f64,
}

/// Per-group statistics, sorted by group, with groups under `min_group`
/// removed; also returns how many groups were suppressed.
pub fn cohort_stats(
    admissions: &[Admission],
    by: GroupBy,
    min_group: u64,
) -> (Vec<GroupStats>, usize) {
    #[derive(Default)]
    struct Acc {
        n: u64,
        age: f64,
        los: f64,
        deaths: u64,
    }
    let mut groups: BTreeMap<String, Acc> = BTreeMap::new();
    for a in admissions {
        let key = match by {
            GroupBy::Diagnosis => a.diagnosis.clone(),
            GroupBy::Sex => a.sex.to_string(),
            GroupBy::AgeBand => {
                let lo = (a.age as u64 / 10) * 10;
                format!("{lo}-{}", lo + 9)
            }
        };
        let acc = groups.entry(key).or_default();
        acc.n += 1;
        acc.age += a.age;
        acc.los += a.los_days;
        acc.deaths += u64::from(a.died);
    }
    let total = groups.len();
    let released: Vec<GroupStats> = groups
        .into_iter()
        .filter(|(_, acc)| acc.n >= min_group)
        .map(|(group, acc)| GroupStats {
            group,
            patients: acc.n,
            mean_age: acc.age / acc.n as f64,
            mean_los_days: acc.los / acc.n as f64,
            mortality_pct: 100.0 * acc.deaths as f64 / acc.n as f64,
        })
        .collect();
    let suppressed = total - released.len();
    (released, suppressed)
}
