//! Identifiers caught by value: while the host reads a run's inputs it collects the values of
//! every identifier column; no released byte sequence may contain one.
//!
//! Values are compared as text (the Arrow display form: strings as they are, integers in
//! decimal), so a renamed identifier column, an identifier inside a CSV file or JSON text, or
//! in an output name, is found. Values shorter than [`MIN_IDENTIFIER_BYTES`] are not scanned:
//! a two-character id would match almost any output.
//!
//! What is compared is normalised on both sides ([`normalise`]): JSON `\uXXXX` escapes are
//! decoded, then Unicode NFKC (full-width digits, ligatures and other compatibility forms
//! become their plain form) and lower case. An output is searched twice: its bytes as they
//! are (ASCII case ignored) and its normalised text, so `"\u0050AT-0001"`, `ＰＡＴ-０００１`
//! and `pat-0001` are all caught for `PAT-0001`.
//!
//! What a scan cannot catch, and review is for: binary re-encodings (an integer id written as
//! raw bytes, base64, hashes), ids split across cells or interleaved with other characters,
//! arithmetic on ids (an id plus one), homoglyphs NFKC does not fold (Cyrillic `А` for Latin
//! `A`), and escapes of other formats (HTML entities, percent-encoding).

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
            let patterns: HashSet<Vec<u8>> = values.iter().map(|v| normalise(v)).collect();
            AhoCorasick::builder()
                .kind(Some(AhoCorasickKind::NoncontiguousNFA))
                .ascii_case_insensitive(true)
                .build(patterns.iter())
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

    /// Whether `haystack` contains an identifier value, as it is or normalised.
    pub fn found_in(&self, haystack: &[u8]) -> bool {
        match &self.matcher {
            Some(m) => {
                m.is_match(haystack)
                    // ASCII without escapes normalises to its own lower case, which the
                    // ASCII-case-insensitive scan above has covered: skip the second pass.
                    || ((!haystack.is_ascii() || has_escape(haystack))
                        && m.is_match(&normalise(haystack)))
            }
            // A set that has values but could not be built matches everything: fail closed.
            None => self.count > 0,
        }
    }
}

fn has_escape(haystack: &[u8]) -> bool {
    haystack.windows(2).any(|w| w == b"\\u")
}

/// The form identifiers are compared in: the bytes as (lossy) UTF-8, JSON `\uXXXX` escapes
/// (surrogate pairs included) decoded, Unicode NFKC, lower case.
pub fn normalise(bytes: &[u8]) -> Vec<u8> {
    use unicode_normalization::UnicodeNormalization;
    let text = String::from_utf8_lossy(bytes);
    let unescaped = decode_json_escapes(&text);
    unescaped
        .nfkc()
        .collect::<String>()
        .to_lowercase()
        .into_bytes()
}

/// `\uXXXX` escapes decoded where they are valid; everything else kept as it is (the text need
/// not be JSON: an escape inside a CSV cell or a log line is decoded too).
fn decode_json_escapes(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("\\u") {
        return std::borrow::Cow::Borrowed(text);
    }
    fn hex4(s: &str) -> Option<u32> {
        let h = s.get(..4)?;
        h.bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then(|| u32::from_str_radix(h, 16).ok())
            .flatten()
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\\u") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match hex4(after) {
            Some(hi @ 0xD800..=0xDBFF) => {
                let low = after
                    .get(4..6)
                    .filter(|s| *s == "\\u")
                    .and_then(|_| hex4(&after[6..]))
                    .filter(|lo| (0xDC00..=0xDFFF).contains(lo));
                match low
                    .and_then(|lo| char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)))
                {
                    Some(c) => {
                        out.push(c);
                        rest = &after[10..];
                    }
                    None => {
                        out.push_str("\\u");
                        rest = after;
                    }
                }
            }
            Some(code) => match char::from_u32(code) {
                Some(c) => {
                    out.push(c);
                    rest = &after[4..];
                }
                None => {
                    out.push_str("\\u");
                    rest = after;
                }
            },
            None => {
                out.push_str("\\u");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[&str]) -> IdentifierSet {
        let c = IdentifierCollector::new();
        for v in values {
            c.insert(v);
        }
        c.build()
    }

    /// Each hiding place of the review: the scan finds the id through it.
    #[test]
    fn escapes_compatibility_forms_and_case_do_not_hide_an_identifier() {
        let ids = set(&["PAT-0001", "Müller-42"]);
        for hidden in [
            r#"{"x": "\u0050AT-0001"}"#,
            r#"{"x": "\u0050\u0041\u0054-0001"}"#,
            "ＰＡＴ－０００１",
            "pat-0001",
            "MÜLLER-42",
            // u + combining diaeresis, as a JSON escape and as the character.
            r"mu\u0308ller-42",
            "Mu\u{308}ller-42",
        ] {
            assert!(
                ids.found_in(hidden.as_bytes()),
                "{hidden:?} hides an identifier"
            );
        }
        assert!(!ids.found_in(br#"{"x": "PAT-0002", "y": "\u00"}"#));
    }

    #[test]
    fn surrogate_pairs_and_broken_escapes_decode_safely() {
        assert_eq!(decode_json_escapes(r"a\ud83d\ude00b"), "a\u{1F600}b");
        assert_eq!(decode_json_escapes(r"\ud83d"), r"\ud83d");
        assert_eq!(decode_json_escapes(r"\u12"), r"\u12");
        assert_eq!(decode_json_escapes(r"x\u0041"), "xA");
    }
}
