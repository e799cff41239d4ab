//! Stable codes for every decision the enclave reports: admission denials, how a run ended,
//! and what happened to each output. Clients match on these, never on message text; messages
//! are written by the host from the code and the limits in force, never by a module.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable, machine-readable decision code (snake_case on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Code {
    // --- admission ---
    /// The run names no input dataset.
    NoInputs,
    /// The module was never uploaded.
    UnknownModule,
    /// The researcher's result key is not an X25519 public key.
    BadResearcherKey,
    /// An input's table name is not allowed.
    BadInputName,
    /// An input dataset does not exist.
    UnknownDataset,
    /// An input dataset has no policy yet.
    NoPolicy,
    /// The stored policy does not verify (signature, signer, dataset): state was tampered with.
    PolicyInvalid,
    /// The dataset's current policy grants nothing.
    Revoked,
    /// No grant names this module.
    ModuleNotGranted,
    /// The module's grants do not name this researcher.
    ResearcherNotNamed,
    /// The grant pins other params.
    ParamsNotApproved,
    /// The grant pins another input set.
    InputsNotApproved,
    /// The grant expired.
    GrantExpired,
    /// The grant's total runs are used up.
    RunLimitReached,
    /// Review is required but no reviewer other than the submitting researcher is named.
    NoIndependentReviewer,
    /// An input is a derived dataset, and an owner upstream of it no longer allows the
    /// pipeline that produced it.
    DerivedRevoked,
    /// An input requires differential privacy and the run asks to spend no ε (or is not of a
    /// kind that can be made private).
    DpRequired,
    /// The run asks for more ε than an input allows per run.
    DpRunLimit,
    /// The run would exceed an input's total budget or the researcher's share of it.
    DpBudgetExhausted,

    // --- how a run ended ---
    /// The wall-clock limit was reached.
    Timeout,
    /// The memory limit was reached.
    MemoryLimit,
    /// The call stack overflowed.
    StackOverflow,
    /// The output budget was exceeded.
    OutputLimit,
    /// The log budget was exceeded.
    LogLimit,
    /// The params are larger than allowed.
    ParamsTooLarge,
    /// A sandbox resource limit (handles, rewinds) was exceeded.
    ResourceLimit,
    /// The module trapped (a panic, an out-of-bounds access).
    Trap,
    /// The module returned an error (its text is a held output, not a status).
    AnalysisError,
    /// The researcher cancelled the run.
    Cancelled,
    /// The service restarted while the run was running.
    Interrupted,
    /// The host failed; the module and its inputs are not at fault.
    Internal,

    // --- outputs ---
    /// A table has a column named like an identifier column.
    IdentifierColumn,
    /// An output contains the value of an identifier.
    IdentifierValue,
    /// Groups below the minimum count were suppressed.
    SmallGroupsSuppressed,
    /// Groups below the minimum count refuse the output.
    SmallGroupsRefused,
    /// Counts were rounded (and small ones redacted).
    CountsRounded,
    /// A declared total column was recomputed from rounded cells.
    TotalsRecomputed,
    /// A model output has fewer residual degrees of freedom than allowed.
    ResidualDf,
    /// The host cannot check this output; the owners' rules refuse unchecked outputs.
    UncheckedRefused,
    /// The host cannot check this output; it waits for review.
    UncheckedHeld,
    /// The outputs together are larger than the owners allow.
    OutputTooLarge,
    /// The run published more outputs than the owners allow.
    TooManyOutputs,
    /// A declared count column is not an integer column.
    BadCountColumn,
    /// The module's logs and error text are withheld by the owners' rules.
    LogsWithheld,
    /// A run on a dataset that requires differential privacy released only what was made
    /// private: this output was not.
    NotPrivate,
    /// Made differentially private by the host (noise added, budget charged).
    DpNoised,
    /// Computed by the host's aggregation with the owners' disclosure rules applied to each cell.
    HostAggregated,
    /// A cell was suppressed because one or two contributors dominate it (p% or n-k rule).
    DominantContributors,
    /// A JSON output is not one document a reviewer sees whole (not JSON, or an object that
    /// repeats a key, whose second value a viewer would not show): refused.
    MalformedJson,

    // --- review and revocation ---
    /// A reviewer withheld the outputs.
    WithheldByReviewer,
    /// A policy was revoked while the run was running or held.
    RevokedDuringRun,
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).map_err(|_| fmt::Error)?;
        f.write_str(s.as_str().unwrap_or("unknown"))
    }
}

/// A decision reported to parties: its code and a message the host wrote (never module text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// The stable code.
    pub code: Code,
    /// What happened and what to do, in words; figures are limits, never what a module asked.
    pub message: String,
}

impl Reason {
    /// A reason with a message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}
