//! Which stored policies count, and who may see a dataset's schema, policy and budget.
//!
//! The store is the operator's: a stored policy is trusted only if the dataset's owner
//! signed it, for that very dataset, and it passes the range checks ([`trusted`]). Every
//! reader of a stored policy (admission, derived tables, previews, the dataset listing)
//! asks here; an untrusted policy counts as none, so a forged grant never shows anyone a
//! schema, and a forged revocation is not needed to deny (absence denies).

use cleanroom_proto::PartyId;
use cleanroom_proto::policy::{Policy, SignedPolicy};

/// `signed`'s policy if `owner` signed it for `dataset` and it is in range, else `None`.
pub fn trusted<'a>(signed: &'a SignedPolicy, dataset: &str, owner: &PartyId) -> Option<&'a Policy> {
    (signed.owner == *owner
        && signed.policy.dataset == dataset
        && signed.verify().is_ok()
        && signed.policy.validate().is_ok())
    .then_some(&signed.policy)
}

/// Whether `party` may see `dataset`'s column names, policy and DP budget: its owner, and
/// the researchers a grant of its trusted policy names (or any researcher, where a grant
/// says so).
pub fn may_see_schema(
    owner: &PartyId,
    stored: Option<&SignedPolicy>,
    dataset: &str,
    party: &PartyId,
) -> bool {
    *party == *owner
        || stored
            .and_then(|s| trusted(s, dataset, owner))
            .is_some_and(|p| p.grants.iter().any(|g| g.researchers.allows(party)))
}

/// Whether `party` may read an upload (a module or a pipeline, and its source): its
/// uploader, an owner whose dataset's trusted policy grants it, or an owner a researcher asked
/// to grant it (`access.requested`). Anyone else — other researchers, owners of unrelated
/// datasets — is told it does not exist: an analysis's code is its author's until an owner
/// has a reason to read it.
pub fn may_read_upload(
    party: &PartyId,
    uploader: &PartyId,
    granted_by_party: bool,
    requested_of_party: bool,
) -> bool {
    party == uploader || granted_by_party || requested_of_party
}
