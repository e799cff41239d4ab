//! Identifiers caught by value: while the host reads a run's inputs it collects the values of
//! every identifier column; no released byte sequence may contain one.
//!
//! Values are compared as text (the Arrow display form: strings as they are, integers in
//! decimal), so a renamed identifier column, an identifier inside a CSV file or JSON text, or
//! in an output name, is found. Values shorter than [`MIN_IDENTIFIER_BYTES`] are not scanned:
//! a two-character id would match almost any output. Binary re-encodings (an integer id
//! written as raw bytes, or hashed) are beyond a byte scan; that is what review is for.

use std::collections::HashSet;
use std::sync::Mutex;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};

/// Shortest identifier value that is scanned for, in bytes.
pub const MIN_IDENTIFIER_BYTES: usize = 4;

/// Collects identifier values from input batches as the host hands them to the guest.
#[derive(Debug, Default)]
pub struct IdentifierCollector {
    values: Mutex<HashSet<Vec<u8>>>,
}

impl IdentifierCollector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Collect the values of `columns` (matched case-insensitively) in `batch`.
    pub fn collect(&self, batch: &RecordBatch, columns: &[String]) {
        let schema = batch.schema();
        let mut found = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            if !columns.iter().any(|c| c.eq_ignore_ascii_case(field.name())) {
                continue;
            }
            for_each_cell(batch.column(i).as_ref(), |text| {
                if text.len() >= MIN_IDENTIFIER_BYTES {
                    found.push(text.as_bytes().to_vec());
                }
            });
        }
        if !found.is_empty() {
            self.values
                .lock()
                .expect("identifier lock is never poisoned")
                .extend(found);
        }
    }

    /// Add one value directly (tests, and names that are identifiers).
    pub fn insert(&self, value: &str) {
        if value.len() >= MIN_IDENTIFIER_BYTES {
            self.values
                .lock()
                .expect("identifier lock is never poisoned")
                .insert(value.as_bytes().to_vec());
        }
    }

    /// Every value collected so far, as text (sealed beside a derived table, so that later
    /// runs reading it scan for the identifiers upstream of it too).
    pub fn values(&self) -> Vec<String> {
        let values = self
            .values
            .lock()
            .expect("identifier lock is never poisoned");
        let mut out: Vec<String> = values
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        out.sort_unstable();
        out
    }

    /// The automaton over everything collected.
    pub fn build(&self) -> IdentifierSet {
        let values = self
            .values
            .lock()
            .expect("identifier lock is never poisoned");
        let count = values.len();
        let matcher = if values.is_empty() {
            None
        } else {
            // A noncontiguous NFA builds fastest (a run may have read millions of identifiers)
            // and outputs are small, so its slower scan does not matter. Building only fails
            // for absurd pattern sizes; then the set matches everything (fail closed).
            // ASCII case is ignored: upper-casing an alphanumeric id must not hide it.
            AhoCorasick::builder()
                .kind(Some(AhoCorasickKind::NoncontiguousNFA))
                .ascii_case_insensitive(true)
                .build(values.iter())
                .ok()
        };
        IdentifierSet { matcher, count }
    }
}

/// A set of identifier values to search outputs for.
#[derive(Debug, Clone)]
pub struct IdentifierSet {
    matcher: Option<AhoCorasick>,
    count: usize,
}

impl IdentifierSet {
    /// No identifiers.
    pub fn empty() -> Self {
        Self {
            matcher: None,
            count: 0,
        }
    }

    /// How many distinct values are searched for.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is searched for.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether `haystack` contains an identifier value.
    pub fn found_in(&self, haystack: &[u8]) -> bool {
        match &self.matcher {
            Some(m) => m.is_match(haystack),
            // A set that has values but could not be built matches everything: fail closed.
            None => self.count > 0,
        }
    }
}

/// Call `f` with the display text of every non-null cell of `array`.
pub(crate) fn for_each_cell(array: &dyn arrow_array::Array, mut f: impl FnMut(&str)) {
    let options = FormatOptions::default();
    let Ok(formatter) = ArrayFormatter::try_new(array, &options) else {
        return;
    };
    let mut text = String::new();
    for row in 0..array.len() {
        if array.is_null(row) {
            continue;
        }
        text.clear();
        use std::fmt::Write as _;
        if write!(text, "{}", formatter.value(row)).is_ok() {
            f(&text);
        }
    }
}
