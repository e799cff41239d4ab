//! The admission decision as a table of cases: each attack or mistake gets its typed code.

#![allow(clippy::unwrap_used)] // tests and their helpers fail loudly by design

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use cleanroom_policy::dp::Spent;
use cleanroom_policy::{AdmissionRequest, DatasetFacts, Decision, Facts, ModuleKind, admit};
use cleanroom_proto::dp::{DpRun, Epsilon};
use cleanroom_proto::policy::{Grant, OutputRules, Policy, Researchers, SignedPolicy};
use cleanroom_proto::{Code, Identity, PartyId, params_digest};
use rstest::rstest;

const NOW: u64 = 1_700_000_000;
const DATASET: &str = "d00d";

struct World {
    owner: Identity,
    stored: RefCell<Option<SignedPolicy>>,
    runs: u64,
    spent: Spent,
    kind: Cell<ModuleKind>,
}

impl Facts for World {
    type Error = std::convert::Infallible;

    fn module_exists(&self, module: &str) -> Result<bool, Self::Error> {
        Ok(module != module_id(9))
    }

    fn module_kind(&self, _: &str) -> Result<ModuleKind, Self::Error> {
        Ok(self.kind.get())
    }

    fn dataset(&self, id: &str) -> Result<Option<DatasetFacts>, Self::Error> {
        Ok((id == DATASET).then(|| DatasetFacts {
            owner: self.owner.party(),
            manifest_digest: "aa".repeat(32),
        }))
    }

    fn policy(&self, id: &str) -> Result<Option<SignedPolicy>, Self::Error> {
        Ok(self.stored.borrow().clone().filter(|_| id == DATASET))
    }

    fn grant_runs(&self, _: &str, _: &str, _: Option<&str>) -> Result<u64, Self::Error> {
        Ok(self.runs)
    }

    fn dp_spent(&self, _: &str, _: &PartyId, _: Option<&str>) -> Result<Spent, Self::Error> {
        Ok(self.spent)
    }
}

fn module_id(n: u8) -> String {
    hex::encode([n; 32])
}

fn grant(researchers: Researchers) -> Grant {
    Grant {
        module: module_id(1),
        researchers,
        params_digest: None,
        expires_at: None,
        max_runs: Some(5),
        note: None,
        inputs: None,
        unlimited: false,
    }
}

fn policy(grants: Vec<Grant>, output: OutputRules) -> Policy {
    Policy {
        dataset: DATASET.into(),
        version: 2,
        grants,
        hidden_columns: vec![],
        identifier_columns: vec!["patient_id".into()],
        output,
        dp: None,
        issued_at: NOW - 10,
    }
}

/// What a case changes: the grant, the rules, the stored policy, the request.
#[derive(Debug, Clone, Copy)]
enum Case {
    Allowed,
    NoInputs,
    UnknownModule,
    BadKey,
    BadInputName,
    UnknownDataset,
    NoPolicy,
    /// The operator edits the stored policy (adds a grant) without the owner's key.
    TamperedPolicy,
    /// A policy signed by someone else for this dataset.
    ForeignSigner,
    Revoked,
    OtherModule,
    OtherResearcher,
    OtherParams,
    /// The grant pins the input set; the researcher adds their own table.
    ExtraInput,
    Expired,
    /// Runs are counted per grant, across researchers: fresh keys do not multiply them.
    RunsUsedByOthers,
    /// Review is required and the only reviewer is the submitter.
    SelfReview,
}

fn decide(case: Case) -> Decision {
    let owner = Identity::generate();
    let researcher = Identity::generate().party();
    let other = Identity::generate().party();
    let mut g = grant(Researchers::Only(vec![researcher]));
    let mut rules = OutputRules::default();
    let mut module = module_id(1);
    let mut inputs = BTreeMap::from([("st_marys".to_string(), DATASET.to_string())]);
    let mut key = "ab".repeat(32);
    let mut runs = 0;
    let mut signer = None;
    match case {
        Case::Allowed => {}
        Case::NoInputs => inputs.clear(),
        Case::UnknownModule => module = module_id(9),
        Case::BadKey => key = "zz".into(),
        Case::BadInputName => {
            inputs = BTreeMap::from([("../etc".to_string(), DATASET.to_string())]);
        }
        Case::UnknownDataset => {
            inputs = BTreeMap::from([("x".to_string(), "beef".to_string())]);
        }
        Case::NoPolicy | Case::TamperedPolicy | Case::Revoked => {}
        Case::ForeignSigner => signer = Some(Identity::generate()),
        Case::OtherModule => g.module = module_id(2),
        Case::OtherResearcher => g.researchers = Researchers::Only(vec![other]),
        Case::OtherParams => g.params_digest = Some(params_digest("{\"k\":1}")),
        Case::ExtraInput => {
            g.inputs = Some(inputs.clone());
            inputs.insert("mine".into(), DATASET.into());
        }
        Case::Expired => g.expires_at = Some(NOW),
        Case::RunsUsedByOthers => runs = 5,
        Case::SelfReview => {
            rules.review_required = true;
            rules.reviewers = vec![researcher];
        }
    }
    let mut p = policy(vec![g], rules);
    if matches!(case, Case::Revoked) {
        p.grants.clear();
    }
    let mut signed = SignedPolicy::sign(p, signer.as_ref().unwrap_or(&owner));
    if matches!(case, Case::TamperedPolicy) {
        signed.policy.grants.push(grant(Researchers::Any));
    }
    let world = World {
        owner,
        stored: RefCell::new((!matches!(case, Case::NoPolicy)).then_some(signed)),
        runs,
        spent: Spent::default(),
        kind: Cell::new(ModuleKind::Component),
    };
    ask(
        &world,
        &module,
        &researcher,
        &params_digest("{}"),
        &inputs,
        &key,
    )
}

/// Admission of one request at `NOW`.
fn ask(
    world: &World,
    module: &str,
    researcher: &PartyId,
    params_digest: &str,
    inputs: &BTreeMap<String, String>,
    key: &str,
) -> Decision {
    let request = AdmissionRequest {
        module,
        researcher,
        params_digest,
        inputs,
        researcher_hpke: key,
        now: NOW,
        run: None,
        dp: None,
        run_limit_secs: 300,
    };
    match admit(world, &request) {
        Ok(d) => d,
        Err(never) => match never {},
    }
}

#[rstest]
#[case::no_inputs(Case::NoInputs, Code::NoInputs)]
#[case::unknown_module(Case::UnknownModule, Code::UnknownModule)]
#[case::bad_key(Case::BadKey, Code::BadResearcherKey)]
#[case::bad_input_name(Case::BadInputName, Code::BadInputName)]
#[case::unknown_dataset(Case::UnknownDataset, Code::UnknownDataset)]
#[case::no_policy(Case::NoPolicy, Code::NoPolicy)]
#[case::tampered_policy(Case::TamperedPolicy, Code::PolicyInvalid)]
#[case::foreign_signer(Case::ForeignSigner, Code::PolicyInvalid)]
#[case::revoked(Case::Revoked, Code::Revoked)]
#[case::other_module(Case::OtherModule, Code::ModuleNotGranted)]
#[case::other_researcher(Case::OtherResearcher, Code::ResearcherNotNamed)]
#[case::other_params(Case::OtherParams, Code::ParamsNotApproved)]
#[case::extra_input(Case::ExtraInput, Code::InputsNotApproved)]
#[case::expired(Case::Expired, Code::GrantExpired)]
#[case::runs_used_by_others(Case::RunsUsedByOthers, Code::RunLimitReached)]
#[case::self_review(Case::SelfReview, Code::NoIndependentReviewer)]
fn denied(#[case] case: Case, #[case] code: Code) {
    match decide(case) {
        Decision::Deny(reason) => assert_eq!(reason.code, code, "{case:?}: {reason}"),
        Decision::Allow(_) => panic!("{case:?} was allowed"),
    }
}

#[test]
fn allowed_with_the_terms_applied() {
    let Decision::Allow(admitted) = decide(Case::Allowed) else {
        panic!("the plain case is allowed")
    };
    assert_eq!(admitted.inputs.len(), 1);
    let input = &admitted.inputs[0];
    assert_eq!(input.receipt.policy_version, 2);
    assert_eq!(
        input.receipt.grant_digest.len(),
        64,
        "the grant is named by its digest"
    );
    assert_eq!(input.identifier_columns, vec!["patient_id".to_string()]);
    assert!(!admitted.review.required());
}

#[test]
fn several_grants_for_one_module_each_pin_their_params() {
    // Two approved SQL queries on one dataset: each runs, a third does not.
    let owner = Identity::generate();
    let researcher = Identity::generate().party();
    let q1 = params_digest("{\"sql\":\"SELECT 1\"}");
    let q2 = params_digest("{\"sql\":\"SELECT 2\"}");
    let grants = [&q1, &q2]
        .map(|d| Grant {
            params_digest: Some(d.clone()),
            ..grant(Researchers::Only(vec![researcher]))
        })
        .to_vec();
    let world = World {
        stored: RefCell::new(Some(SignedPolicy::sign(
            policy(grants, OutputRules::default()),
            &owner,
        ))),
        owner,
        runs: 0,
        spent: Spent::default(),
        kind: Cell::new(ModuleKind::Component),
    };
    let inputs = BTreeMap::from([("t".to_string(), DATASET.to_string())]);
    let key = "ab".repeat(32);
    let module = module_id(1);
    let ask = |digest: &str| ask(&world, &module, &researcher, digest, &inputs, &key);
    assert!(matches!(ask(&q1), Decision::Allow(_)));
    assert!(matches!(ask(&q2), Decision::Allow(_)));
    assert!(matches!(
        ask(&params_digest("{\"sql\":\"SELECT 3\"}")),
        Decision::Deny(r) if r.code == Code::ParamsNotApproved
    ));
}

#[test]
fn an_any_grant_without_a_run_limit_must_say_unlimited() {
    let mut p = policy(vec![grant(Researchers::Any)], OutputRules::default());
    p.grants[0].max_runs = None;
    assert!(p.validate().unwrap_err().contains("max_runs"));
    p.grants[0].unlimited = true;
    p.validate().unwrap();
}

/// A dataset that requires DP admits only runs that say what they spend, within the per-run
/// limit and what is left of the total; the researcher cannot skip the ledger by leaving ε
/// out.
#[test]
fn a_dp_dataset_admits_only_runs_within_its_budget() {
    let owner = Identity::generate();
    let researcher = Identity::generate().party();
    let mut p = policy(vec![grant(Researchers::Any)], OutputRules::default());
    p.dp = Some(
        serde_json::from_value(serde_json::json!({
            "unit_column": "patient_id", "epsilon": 1.0, "max_epsilon_per_run": 0.5
        }))
        .unwrap(),
    );
    let world = World {
        stored: RefCell::new(Some(SignedPolicy::sign(p, &owner))),
        owner,
        runs: 0,
        spent: Spent {
            total: Epsilon::from_micros(700_000),
            researcher: Epsilon::ZERO,
        },
        kind: Cell::new(ModuleKind::Component),
    };
    let inputs = BTreeMap::from([("patients".to_string(), DATASET.to_string())]);
    let key = "ab".repeat(32);
    let digest = "cd".repeat(32);
    let module = module_id(1);
    let run_as = |epsilon: Option<u64>, kind: ModuleKind, duration_secs: Option<u32>| {
        world.kind.set(kind);
        let run = epsilon.map(|e| DpRun {
            epsilon: Epsilon::from_micros(e),
            sample_aggregate: None,
            duration_secs,
        });
        let request = AdmissionRequest {
            module: &module,
            researcher: &researcher,
            params_digest: &digest,
            inputs: &inputs,
            researcher_hpke: &key,
            now: NOW,
            run: None,
            dp: run.as_ref(),
            run_limit_secs: 300,
        };
        match admit(&world, &request) {
            Ok(Decision::Deny(r)) => Err(r.code),
            Ok(Decision::Allow(a)) => Ok(a.epsilon),
            Err(never) => match never {},
        }
    };
    let with = |epsilon: Option<u64>| run_as(epsilon, ModuleKind::Component, None);
    assert_eq!(with(None), Err(Code::DpRequired));
    assert_eq!(with(Some(0)), Err(Code::DpRequired));
    assert_eq!(with(Some(600_000)), Err(Code::DpRunLimit));
    assert_eq!(with(Some(400_000)), Err(Code::DpBudgetExhausted));
    // What reads rows cannot run on a DP table, and is refused before any ε is charged (an R
    // script used to be admitted, charged and then failed at run time).
    let within = Some(200_000);
    assert_eq!(
        run_as(within, ModuleKind::REngine, None),
        Err(Code::DpRequired)
    );
    assert_eq!(
        run_as(within, ModuleKind::Pipeline, None),
        Err(Code::DpRequired)
    );
    // A DP run's fixed schedule fits in the enclave's run limit.
    assert_eq!(
        run_as(within, ModuleKind::Component, Some(0)),
        Err(Code::DpRunLimit)
    );
    assert_eq!(
        run_as(within, ModuleKind::Component, Some(301)),
        Err(Code::DpRunLimit)
    );
    assert!(run_as(within, ModuleKind::Component, Some(300)).is_ok());
    assert_eq!(with(Some(300_000)), Ok(Some(Epsilon::from_micros(300_000))));
}
