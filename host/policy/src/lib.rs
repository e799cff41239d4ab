//! The one policy decision point of cleanroom.
//!
//! Every decision about who may run what, on which columns, and what may leave the sandbox is
//! made here, with typed outcomes and stable [`Code`]s:
//!
//! - [`admit`]: may this researcher run this module with these params on these inputs? Called
//!   at submission *and* again when the run starts (a revocation in between stops it), so the
//!   two paths agree by construction. It verifies every stored policy before trusting it.
//! - [`AdmittedInput::hidden_columns`]: what the guest never sees.
//! - [`egress::decide`]: per output, release / hold for review / refuse, and why; small-cell
//!   suppression, rounding, residual degrees of freedom, identifiers caught by value.
//! - [`ReviewRoute`]: who must review, how many of them, never the submitter.
//! - [`trust::trusted`]: whether a stored policy counts at all (signed by the dataset's owner
//!   for that dataset); [`trust::may_see_schema`]: who may see a dataset's schema and policy.
//!
//! No wasmtime, no HTTP: the server, `cleanroom run-local --policy` and the tests call the
//! same functions.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admission;
pub mod aggregate;
pub mod canonical;
pub mod dp;
pub mod egress;
pub mod identifiers;
pub mod preview;
pub mod trust;

pub use admission::{
    AdmissionRequest, Admitted, AdmittedInput, DatasetFacts, Decision, DerivedFacts, Facts,
    ModuleKind, ReviewGroup, ReviewRoute, admit,
};
pub use cleanroom_proto::{Code, Reason};
pub use egress::{
    Candidate, Content, Decided, EgressInput, Verdict, decide, decide_failed, release_verdict,
    verdict,
};
pub use identifiers::{IdentifierCollector, IdentifierSet, MIN_IDENTIFIER_BYTES};
pub use trust::{may_read_upload, may_see_schema, trusted};
