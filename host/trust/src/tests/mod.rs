//! Unit tests: real AMD evidence (fixtures) and simulated evidence for every policy check.

mod real_evidence;
mod simulated_evidence;
#[cfg(feature = "snp")]
mod snp_attester;

use crate::error::{Check, Error};

/// A VCEK-signed report captured on a Milan machine, and its VCEK.
pub(crate) const VCEK_REPORT: &[u8] = include_bytes!("../../tests/fixtures/test-report.bin");
pub(crate) const VCEK_DER: &[u8] = include_bytes!("../../tests/fixtures/test-vcek.der");
/// A VLEK-signed report (AWS, Milan), and its VLEK.
pub(crate) const VLEK_REPORT: &[u8] = include_bytes!("../../tests/fixtures/test-vlek-report.bin");
pub(crate) const VLEK_DER: &[u8] = include_bytes!("../../tests/fixtures/test-vlek.der");

/// Asserts that `result` failed with `check`.
#[track_caller]
pub(crate) fn assert_check<T: std::fmt::Debug>(result: Result<T, Error>, check: Check) {
    match result {
        Err(error) => assert_eq!(error.failed_check(), Some(check), "wrong failure: {error}"),
        Ok(value) => panic!("expected check {check} to fail, got {value:?}"),
    }
}

/// `bytes` with one bit flipped.
pub(crate) fn flip(bytes: &[u8], offset: usize, bit: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[offset] ^= 1 << bit;
    out
}
