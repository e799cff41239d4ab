//! Admission: whether a run may happen, under which policies, with which rules.

use std::collections::{BTreeMap, BTreeSet};

use cleanroom_proto::dp::{DpRequirement, DpRun, Epsilon};
use cleanroom_proto::policy::{Grant, OutputRules, SignedPolicy};
use cleanroom_proto::receipt::ReceiptInput;
use cleanroom_proto::{Code, PartyId, Reason};

/// What the store knows about a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetFacts {
    /// Its owner, as recorded at upload (from the owner-signed manifest).
    pub owner: PartyId,
    /// SHA-256 hex of the manifest.
    pub manifest_digest: String,
}

/// What the store knows about a derived dataset (a table a pipeline kept inside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedFacts {
    /// The sealed datasets upstream of it.
    pub roots: Vec<String>,
    /// The pipeline (digest) whose run produced it.
    pub pipeline: String,
    /// The researcher whose run produced it.
    pub researcher: PartyId,
}

/// What admission needs to look up. Implemented by the server's storage and by tests.
pub trait Facts {
    /// The store's error.
    type Error;
    /// Whether the module was uploaded.
    fn module_exists(&self, module: &str) -> Result<bool, Self::Error>;
    /// What an uploaded module is (asked only when an input requires DP).
    fn module_kind(&self, module: &str) -> Result<ModuleKind, Self::Error>;
    /// A dataset's facts.
    fn dataset(&self, id: &str) -> Result<Option<DatasetFacts>, Self::Error>;
    /// A derived dataset's facts (`None`: no such derived dataset).
    fn derived(&self, id: &str) -> Result<Option<DerivedFacts>, Self::Error> {
        let _ = id;
        Ok(None)
    }
    /// A dataset's current (highest-version) policy, as stored: verified here, not trusted.
    fn policy(&self, id: &str) -> Result<Option<SignedPolicy>, Self::Error>;
    /// The ε charged to `dataset`'s ledger, in total and by `researcher`, not counting run
    /// `exclude`.
    fn dp_spent(
        &self,
        dataset: &str,
        researcher: &PartyId,
        exclude: Option<&str>,
    ) -> Result<crate::dp::Spent, Self::Error>;
    /// Runs admitted under the grant with `grant_digest` on `dataset`, by any researcher,
    /// not counting run `exclude`.
    fn grant_runs(
        &self,
        dataset: &str,
        grant_digest: &str,
        exclude: Option<&str>,
    ) -> Result<u64, Self::Error>;
}

/// A run to decide on.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionRequest<'a> {
    /// The module id.
    pub module: &'a str,
    /// The submitting researcher.
    pub researcher: &'a PartyId,
    /// SHA-256 hex of the params.
    pub params_digest: &'a str,
    /// Table name the guest sees -> dataset id.
    pub inputs: &'a BTreeMap<String, String>,
    /// The researcher's X25519 result key (hex).
    pub researcher_hpke: &'a str,
    /// Now (Unix seconds).
    pub now: u64,
    /// When re-deciding at run start: the run itself, which its grant already counts.
    pub run: Option<&'a str>,
    /// What the run asks to spend of DP budgets.
    pub dp: Option<&'a DpRun>,
    /// The enclave's run time limit (seconds): a DP run's fixed duration must fit in it.
    pub run_limit_secs: u64,
}

/// What a run executes: it decides what the run may read of a table under DP (host
/// aggregates and sample and aggregate only: a pipeline's steps and an R script read rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// An analysis component (Rust, Python, SQL), possibly under sample and aggregate.
    Component,
    /// An R script run by the R engine.
    REngine,
    /// A pipeline of components.
    Pipeline,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The run may happen, under these terms.
    Allow(Admitted),
    /// It may not.
    Deny(Reason),
}

/// The terms a run is admitted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// Each input, with the policy and grant that allowed it.
    pub inputs: Vec<AdmittedInput>,
    /// The strictest output rules over all inputs.
    pub rules: OutputRules,
    /// Who must review before anything is released.
    pub review: ReviewRoute,
    /// The ε the run spends on each input that requires DP (`None`: no input does).
    pub epsilon: Option<Epsilon>,
}

impl Admitted {
    /// Identifier column names across all inputs (lowercase).
    pub fn identifier_columns(&self) -> BTreeSet<String> {
        self.inputs
            .iter()
            .flat_map(|i| i.identifier_columns.iter().map(|c| c.to_ascii_lowercase()))
            .collect()
    }

    /// Owners of the inputs.
    pub fn owners(&self) -> BTreeSet<PartyId> {
        self.inputs.iter().map(|i| i.owner).collect()
    }
}

/// One admitted input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedInput {
    /// The receipt's record of it: dataset, manifest, policy version and digest, grant digest.
    pub receipt: ReceiptInput,
    /// The dataset's owner.
    pub owner: PartyId,
    /// Columns the guest never sees.
    pub hidden_columns: Vec<String>,
    /// Columns never released, caught by name and by value.
    pub identifier_columns: Vec<String>,
    /// The owner's differential-privacy terms, if the dataset requires DP.
    pub dp: Option<DpRequirement>,
}

/// Who must release a run's outputs before they leave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewRoute {
    /// One group per input whose owner requires review.
    pub groups: Vec<ReviewGroup>,
}

/// The reviewers of one input: `needed` distinct parties among `reviewers` must release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewGroup {
    /// The dataset.
    pub dataset: String,
    /// Who may review (never the submitting researcher).
    pub reviewers: Vec<PartyId>,
    /// How many distinct releases are needed.
    pub needed: u32,
}

impl ReviewRoute {
    /// Whether any review is required.
    pub fn required(&self) -> bool {
        !self.groups.is_empty()
    }

    /// Reviewers still awaited, given who has released so far.
    pub fn pending(&self, released: &[PartyId]) -> Vec<PartyId> {
        let mut out = BTreeSet::new();
        for g in &self.groups {
            let done = g.reviewers.iter().filter(|r| released.contains(r)).count() as u32;
            if done < g.needed {
                out.extend(
                    g.reviewers
                        .iter()
                        .filter(|r| !released.contains(r))
                        .copied(),
                );
            }
        }
        out.into_iter().collect()
    }

    /// Whether every group has its releases.
    pub fn satisfied(&self, released: &[PartyId]) -> bool {
        self.pending(released).is_empty()
    }

    /// Whether `party` may review.
    pub fn is_reviewer(&self, party: &PartyId) -> bool {
        self.groups.iter().any(|g| g.reviewers.contains(party))
    }
}

fn deny<T>(code: Code, message: impl Into<String>) -> Result<Decision, T> {
    Ok(Decision::Deny(Reason::new(code, message)))
}

/// A refusal, or what was looked up: the inner result of every step of admission.
type Step<T> = Result<T, Reason>;

fn refuse<T, E>(code: Code, message: impl Into<String>) -> Result<Step<T>, E> {
    Ok(Err(Reason::new(code, message)))
}

/// The step's value, or the run's denial.
macro_rules! step {
    ($e:expr) => {
        match $e? {
            Ok(value) => value,
            Err(reason) => return Ok(Decision::Deny(reason)),
        }
    };
}

/// Decide whether a run may happen. The same function runs at submission and at start.
pub fn admit<F: Facts>(facts: &F, req: &AdmissionRequest<'_>) -> Result<Decision, F::Error> {
    step!(check_request(facts, req));
    let mut inputs = Vec::new();
    let mut rules = Vec::new();
    let mut review = ReviewRoute::default();
    for (name, dataset) in req.inputs {
        if !valid_input_name(name) {
            return deny(
                Code::BadInputName,
                "input names must be 1 to 64 ASCII letters, digits, '-', '_' or '.'",
            );
        }
        // A derived dataset is used under the consent of every owner upstream of it: each
        // root's policy must grant this run (and still allow the pipeline that produced it).
        let (roots, via) = step!(roots_of(facts, dataset));
        for (root, facts_of) in roots {
            let root = Root {
                name,
                dataset: &root,
                facts: facts_of,
                via: via.as_ref(),
            };
            let (input, output, group) = step!(admit_root(facts, req, &root));
            rules.push(output);
            review.groups.extend(group);
            inputs.push(input);
        }
    }
    let epsilon = match dp_terms(facts, req, &inputs)? {
        Ok(epsilon) => epsilon,
        Err(reason) => return Ok(Decision::Deny(reason)),
    };
    Ok(Decision::Allow(Admitted {
        inputs,
        rules: OutputRules::strictest(rules.iter()),
        review,
        epsilon,
    }))
}

/// What is checked of the request itself: inputs named, the module uploaded, the
/// researcher's key well formed.
fn check_request<F: Facts>(facts: &F, req: &AdmissionRequest<'_>) -> Result<Step<()>, F::Error> {
    if req.inputs.is_empty() {
        return refuse(
            Code::NoInputs,
            "a run needs at least one input dataset: nothing runs without an owner's grant",
        );
    }
    if !facts.module_exists(req.module)? {
        return refuse(
            Code::UnknownModule,
            format!("module {} was not uploaded; push it first", req.module),
        );
    }
    if !cleanroom_proto::keys::is_hex64(req.researcher_hpke) {
        return refuse(
            Code::BadResearcherKey,
            "researcher_hpke must be a 32-byte X25519 public key in lowercase hex",
        );
    }
    Ok(Ok(()))
}

/// The sealed datasets whose owners decide on input `dataset`: itself, or every root of the
/// derived dataset it names (with that derived dataset's facts).
#[allow(clippy::type_complexity)]
fn roots_of<F: Facts>(
    facts: &F,
    dataset: &str,
) -> Result<Step<(Vec<(String, DatasetFacts)>, Option<DerivedFacts>)>, F::Error> {
    if let Some(facts_of) = facts.dataset(dataset)? {
        return Ok(Ok((vec![(dataset.to_string(), facts_of)], None)));
    }
    let Some(derived) = facts.derived(dataset)? else {
        return refuse(Code::UnknownDataset, format!("no dataset {dataset}"));
    };
    let mut roots = Vec::new();
    for root in &derived.roots {
        let Some(facts_of) = facts.dataset(root)? else {
            return refuse(
                Code::UnknownDataset,
                format!("dataset {root}, upstream of derived dataset {dataset}, is gone"),
            );
        };
        roots.push((root.clone(), facts_of));
    }
    Ok(Ok((roots, Some(derived))))
}

/// A root as admitted: the input, its owner's output rules, its owner's review group.
type AdmittedRoot = (AdmittedInput, OutputRules, Option<ReviewGroup>);

/// One sealed dataset an input reads (directly, or upstream of a derived input).
struct Root<'a> {
    /// The input's name in the run.
    name: &'a String,
    dataset: &'a String,
    facts: DatasetFacts,
    /// The derived dataset the input names, if it is one.
    via: Option<&'a DerivedFacts>,
}

/// Whether `root`'s owner admits the run: a trusted policy, still allowing the pipeline that
/// produced a derived input, with a grant that admits this request. The input as admitted,
/// the owner's output rules, and the owner's review group if the owner reviews.
fn admit_root<F: Facts>(
    facts: &F,
    req: &AdmissionRequest<'_>,
    root: &Root<'_>,
) -> Result<Step<AdmittedRoot>, F::Error> {
    let dataset = root.dataset;
    let Some(signed) = facts.policy(dataset)? else {
        return refuse(
            Code::NoPolicy,
            format!("dataset {dataset} has no policy: its owner has granted nothing yet"),
        );
    };
    // The store is the operator's: a policy is trusted only if its owner signed it for this
    // very dataset.
    if crate::trust::trusted(&signed, dataset, &root.facts.owner).is_none() {
        return refuse(
            Code::PolicyInvalid,
            format!(
                "the stored policy of dataset {dataset} does not verify against its owner; \
             refusing to run on tampered state"
            ),
        );
    }
    let policy = &signed.policy;
    let version = policy.version;
    if let Some(derived) = root.via
        && !produced_under(policy, derived, req.now)
    {
        return refuse(
            Code::DerivedRevoked,
            format!(
                "policy v{version} of dataset {dataset} no longer allows pipeline {} of \
             researcher {}, which produced this derived input: it cannot be used",
                derived.pipeline, derived.researcher
            ),
        );
    }
    if policy.grants.is_empty() {
        return refuse(
            Code::Revoked,
            format!(
                "policy v{version} of dataset {dataset} grants nothing (access was revoked); \
             ask the data owner for a new policy"
            ),
        );
    }
    let grant = match granting(facts, req, dataset, policy)? {
        Ok(grant) => grant,
        Err(reason) => return Ok(Err(reason)),
    };
    let group = match review_group(req, dataset, &signed) {
        Ok(group) => group,
        Err(reason) => return Ok(Err(reason)),
    };
    let input = AdmittedInput {
        receipt: ReceiptInput {
            name: root.name.clone(),
            dataset: dataset.clone(),
            manifest_digest: root.facts.manifest_digest.clone(),
            policy_version: version,
            policy_digest: signed.digest(),
            grant_digest: grant.digest(),
            terms_digest: terms_digest(grant, policy),
            via: root.via.map(|_| req.inputs[root.name].clone()),
        },
        owner: signed.owner,
        hidden_columns: policy.hidden_columns.clone(),
        identifier_columns: policy.identifier_columns.clone(),
        dp: policy.dp.clone(),
    };
    Ok(Ok((input, policy.output.clone(), group)))
}

/// The first grant of `policy` that admits the request, or why none does (the first
/// refusal's code, every grant's reason in the text).
fn granting<'p, F: Facts>(
    facts: &F,
    req: &AdmissionRequest<'_>,
    dataset: &str,
    policy: &'p cleanroom_proto::policy::Policy,
) -> Result<Step<&'p Grant>, F::Error> {
    let version = policy.version;
    let mut refusals: Vec<(Code, String)> = Vec::new();
    for (i, grant) in policy.grants.iter().enumerate() {
        if grant.module != req.module {
            continue;
        }
        let runs = facts.grant_runs(dataset, &grant.digest(), req.run)?;
        match refusal(grant, req, runs) {
            None => return Ok(Ok(grant)),
            Some((code, why)) => refusals.push((code, format!("grant {i}: {why}"))),
        }
    }
    let Some((code, _)) = refusals.first() else {
        return refuse(
            Code::ModuleNotGranted,
            format!(
                "policy v{version} of dataset {dataset} does not grant module {}; \
             ask the data owner to approve it",
                req.module
            ),
        );
    };
    let text: Vec<&str> = refusals.iter().map(|(_, t)| t.as_str()).collect();
    refuse(
        *code,
        format!(
            "dataset {dataset} (policy v{version}) refuses module {}: {}",
            req.module,
            text.join("; ")
        ),
    )
}

/// The owner's review group, if the owner reviews: distinct reviewers other than the
/// submitting researcher, at least as many as the policy requires.
fn review_group(
    req: &AdmissionRequest<'_>,
    dataset: &str,
    signed: &SignedPolicy,
) -> Step<Option<ReviewGroup>> {
    let output = &signed.policy.output;
    if !output.review_required {
        return Ok(None);
    }
    let named = if output.reviewers.is_empty() {
        vec![signed.owner]
    } else {
        output.reviewers.clone()
    };
    // Distinct parties only: a name listed twice is still one reviewer.
    let reviewers: Vec<PartyId> = named
        .into_iter()
        .filter(|r| r != req.researcher)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if (reviewers.len() as u32) < output.min_reviewers {
        return Err(Reason::new(
            Code::NoIndependentReviewer,
            format!(
                "dataset {dataset} needs {} reviewer(s) other than the submitting \
             researcher; nobody reviews a run they submitted",
                output.min_reviewers
            ),
        ));
    }
    Ok(Some(ReviewGroup {
        dataset: dataset.to_string(),
        reviewers,
        needed: output.min_reviewers,
    }))
}

/// The ε a run spends if any input requires DP, after checking every such input's budget.
fn dp_terms<F: Facts>(
    facts: &F,
    req: &AdmissionRequest<'_>,
    inputs: &[AdmittedInput],
) -> Result<Result<Option<Epsilon>, Reason>, F::Error> {
    let private: BTreeMap<&str, (&DpRequirement, bool)> = inputs
        .iter()
        .filter_map(|i| {
            let dp = i.dp.as_ref()?;
            Some((i.receipt.dataset.as_str(), (dp, i.receipt.via.is_some())))
        })
        .collect();
    let required = |message: String| Ok(Err(Reason::new(Code::DpRequired, message)));
    if private.is_empty() {
        if req.dp.is_some_and(|run| run.sample_aggregate.is_some()) {
            return required(
                "sample and aggregate splits the people of an input that requires differential \
                 privacy, and no input of this run does"
                    .into(),
            );
        }
        return Ok(Ok(None));
    }
    let Some(run) = req.dp.filter(|run| run.epsilon > Epsilon::ZERO) else {
        let (dataset, (dp, _)) = private.first_key_value().expect("not empty");
        return required(format!(
            "dataset {dataset} requires differential privacy: the run must say how much ε it              spends (at most {} per run) and use the aggregate interface or sample and              aggregate",
            dp.max_epsilon_per_run
        ));
    };
    if let Some(sa) = &run.sample_aggregate
        && let Err(why) = sa.validate()
    {
        return required(why);
    }
    for (dataset, (dp, derived)) in private {
        if derived {
            return required(format!(
                "a derived input comes from dataset {dataset}, which now requires differential                  privacy: its rows cannot be read by a pipeline's tables"
            ));
        }
        let spent = facts.dp_spent(dataset, req.researcher, req.run)?;
        if let Some(reason) =
            crate::dp::budget_refusal(dataset, dp, spent, run.epsilon, req.researcher)
        {
            return Ok(Err(reason));
        }
    }
    let secs = run.duration().as_secs();
    if secs == 0 || secs > req.run_limit_secs {
        return Ok(Err(Reason::new(
            Code::DpRunLimit,
            format!(
                "a DP run's fixed duration must be 1 to {} s (this enclave's run time \
                 limit), not {secs} s",
                req.run_limit_secs
            ),
        )));
    }
    match facts.module_kind(req.module)? {
        ModuleKind::Component => Ok(Ok(Some(run.epsilon))),
        ModuleKind::Pipeline => required(
            "an input requires differential privacy, and a pipeline's steps read their tables \
             row by row: run a module with the aggregate interface or sample and aggregate"
                .into(),
        ),
        ModuleKind::REngine => required(
            "an input requires differential privacy, and an R script reads its tables row by \
             row: R analyses cannot read tables that require differential privacy yet"
                .into(),
        ),
    }
}

/// Whether `policy` still allows the pipeline run that produced a derived dataset: a grant
/// naming the pipeline, for its researcher, not expired. (Its run count is not checked: the
/// run that produced the table was counted when it ran.)
pub fn produced_under(policy: &cleanroom_proto::Policy, derived: &DerivedFacts, now: u64) -> bool {
    policy.grants.iter().any(|g| {
        g.module == derived.pipeline
            && g.researchers.allows(&derived.researcher)
            && g.expires_at.is_none_or(|t| now < t)
    })
}

/// Why `grant` does not allow the run, or `None` if it does.
fn refusal(grant: &Grant, req: &AdmissionRequest<'_>, runs: u64) -> Option<(Code, String)> {
    if !grant.researchers.allows(req.researcher) {
        return Some((
            Code::ResearcherNotNamed,
            format!(
                "researcher {} is not named; ask the data owner to add this party id",
                req.researcher
            ),
        ));
    }
    if let Some(pinned) = &grant.params_digest
        && pinned != req.params_digest
    {
        return Some((
            Code::ParamsNotApproved,
            format!(
                "only params with digest {pinned} are approved, these have digest {}; run with \
                 the approved params or ask for approval of the new ones",
                req.params_digest
            ),
        ));
    }
    if let Some(pinned) = &grant.inputs
        && pinned != req.inputs
    {
        return Some((
            Code::InputsNotApproved,
            "the grant pins the run's exact input set and this run's inputs differ".into(),
        ));
    }
    if let Some(expires_at) = grant.expires_at
        && req.now >= expires_at
    {
        return Some((
            Code::GrantExpired,
            format!("the grant expired at {expires_at}; ask the data owner to renew it"),
        ));
    }
    if let Some(max_runs) = grant.max_runs
        && runs >= max_runs
    {
        return Some((
            Code::RunLimitReached,
            format!(
                "all {max_runs} runs this grant allows (across all researchers) were used; ask \
                 the data owner for more"
            ),
        ));
    }
    None
}

/// Input (guest table) names: a small charset, as output names.
pub fn valid_input_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// SHA-256 hex of the terms a run is held to (see `ReceiptInput::terms_digest`). The structs
/// serialise with a fixed field order and no maps, so the JSON is deterministic.
fn terms_digest(grant: &Grant, policy: &cleanroom_proto::policy::Policy) -> String {
    use sha2::Digest;
    let terms = (
        grant,
        &policy.output,
        &policy.hidden_columns,
        &policy.identifier_columns,
    );
    let bytes = serde_json::to_vec(&terms).expect("policy types always serialise");
    let mut h = sha2::Sha256::new();
    h.update(b"cleanroom/terms/v1\n");
    h.update(&bytes);
    // DP terms are part of the terms when present (appended, so digests of policies without
    // them are unchanged).
    if let Some(dp) = &policy.dp {
        h.update(serde_json::to_vec(dp).expect("policy types always serialise"));
    }
    hex::encode(h.finalize())
}
