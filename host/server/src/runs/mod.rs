//! Runs: admission and execution through the policy decision point
//! (`cleanroom-policy`), a bounded queue, workers on blocking threads, review,
//! revocation, encryption to the researcher, receipts.
//!
//! Nothing a module controls reaches a run row, an event or the audit log:
//! failures are reported by code with the limit in force, and the module's
//! own error text is an output like its log, decided by the same rules.

//!
//! The rooms: [`admission`], [`queue`] and [`workers`] (scheduling), [`execute`] and
//! [`engines`] (execution), [`transitions`] and [`results`].

mod admission;
mod engines;
mod execute;
pub(crate) mod queue;
mod results;
mod transitions;
mod workers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cleanroom_policy::{
    AdmissionRequest, Admitted, Candidate, Content, DatasetFacts, Decided, Decision, EgressInput,
    Facts, IdentifierCollector, ModuleKind, Verdict,
};
use cleanroom_proto::dp::SampleAggregate;
use cleanroom_proto::policy::SignedPolicy;
use cleanroom_proto::receipt::{Receipt, ReceiptOutput, SignedReceipt};
use cleanroom_proto::run::{
    Disposition, HeldBundle, OutputKind, OutputReport, PlainOutput, ResultBundle, RunRequest,
    RunState, SealedOutput, output_context, seal_output,
};
use cleanroom_proto::{Code, PartyId, Reason};
use cleanroom_runtime::blocks::BlockPlan;
use cleanroom_runtime::tables::Tapped;
use cleanroom_runtime::{
    Aggregation, CancelToken, Grants, Limits, RunError, TableMode, TableSource, TableTerms,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, mpsc};

use cleanroom_trust::Purpose;

use crate::app::{Metrics, Service};
use crate::error::{ApiError, ApiResult};
use crate::events::Audience;
use crate::store::{DpCharge, ReviewGroupRow, RunRow};
use crate::tables::EnvelopeTable;

pub use admission::{admission, new_row};
pub use execute::failure_reason;
pub use results::{held_bundle, result_bundle};
pub(crate) use transitions::{cancel_here, stop_revoked_here, transitions};
pub use transitions::{finish_review, on_policy_change};
pub use workers::start;

use admission::*;
use execute::*;
use results::*;
use transitions::*;

/// Outputs held for review are host state, sealed under the state subkey
/// with the run id as associated data.
const HELD_PURPOSE: Purpose = Purpose::State;
