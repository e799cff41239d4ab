use cleanroom_proto::policy::{DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MIN_GROUP_COUNT};
use cleanroom_proto::{
    Error, Grant, GrantDecision, Identity, OutputRules, PartyId, Policy, Researchers, SignedPolicy,
    SmallGroups, params_digest,
};

const NOW: u64 = 1_700_000_000;

fn module(n: u8) -> String {
    hex::encode([n; 32])
}

fn grant(researchers: Researchers) -> Grant {
    Grant {
        module: module(1),
        researchers,
        params_digest: None,
        expires_at: None,
        max_runs: None,
        note: Some("SELECT count(*) FROM t".into()),
    }
}

fn policy(grants: Vec<Grant>) -> Policy {
    Policy {
        dataset: "d00d".into(),
        version: 3,
        grants,
        hidden_columns: vec!["name".into()],
        identifier_columns: vec!["patient_id".into()],
        output: OutputRules::default(),
        issued_at: NOW - 10,
    }
}

#[test]
fn sign_verify_and_digest() {
    let owner = Identity::generate();
    let signed = SignedPolicy::sign(policy(vec![grant(Researchers::Any)]), &owner);
    signed.verify().unwrap();
    assert_eq!(signed.owner, owner.party());
    assert_eq!(signed.digest().len(), 64);

    // Survives a JSON round trip: the CLI signs, the server parses and verifies.
    let json = serde_json::to_string_pretty(&signed).unwrap();
    let parsed: SignedPolicy = serde_json::from_str(&json).unwrap();
    parsed.verify().unwrap();
    assert_eq!(parsed.digest(), signed.digest());
}

#[test]
fn tampered_policy_fails() {
    let owner = Identity::generate();
    let signed = SignedPolicy::sign(policy(vec![grant(Researchers::Only(vec![]))]), &owner);

    let mut t = signed.clone();
    t.policy.grants[0].researchers = Researchers::Any;
    assert!(matches!(
        t.verify().unwrap_err(),
        Error::BadSignature { what: "policy" }
    ));

    let mut t = signed.clone();
    t.policy.version += 1;
    assert!(t.verify().is_err());
    assert_ne!(t.digest(), signed.digest());

    let mut t = signed.clone();
    t.policy.output.min_group_count = 1;
    assert!(t.verify().is_err());

    let mut t = signed.clone();
    t.owner = Identity::generate().party();
    assert!(t.verify().is_err());

    let mut t = signed.clone();
    t.signature = "zz".into();
    assert!(matches!(t.verify().unwrap_err(), Error::Malformed { .. }));
}

#[test]
fn json_shape_and_validation() {
    let researcher = Identity::generate().party();
    let json = format!(
        r#"{{"dataset":"d00d","version":1,"issued_at":5,"grants":[
            {{"module":"{m}","researchers":"any"}},
            {{"module":"{m}","researchers":["{researcher}"],"max_runs":2}}]}}"#,
        m = module(1)
    );
    let parsed: Policy = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed.grants[0].researchers, Researchers::Any);
    assert_eq!(
        parsed.grants[1].researchers,
        Researchers::Only(vec![researcher])
    );
    assert_eq!(parsed.output, OutputRules::default());
    assert_eq!(parsed.output.max_output_bytes, DEFAULT_MAX_OUTPUT_BYTES);
    assert_eq!(parsed.output.min_group_count, DEFAULT_MIN_GROUP_COUNT);
    assert_eq!(parsed.output.small_groups, SmallGroups::Suppress);
    let value = serde_json::to_value(&parsed).unwrap();
    assert_eq!(value["grants"][0]["researchers"], "any");

    for (name, bad) in [
        (
            "unknown field",
            json.replace("\"issued_at\"", "\"extra\":1,\"issued_at\""),
        ),
        (
            "researchers missing",
            json.replace(",\"researchers\":\"any\"", ""),
        ),
        ("researchers word", json.replace("\"any\"", "\"all\"")),
        ("module not hex", json.replacen(&module(1), "xyz", 1)),
        ("dataset not hex", json.replace("d00d", "D00D")),
        (
            "unknown rule",
            json.replace("\"issued_at\"", "\"output\":{\"k\":5},\"issued_at\""),
        ),
    ] {
        assert!(
            serde_json::from_str::<Policy>(&bad).is_err(),
            "{name} should be rejected"
        );
    }
}

#[test]
fn decide_matrix() {
    let alice = Identity::generate().party();
    let bob = Identity::generate().party();
    let approved = params_digest("{\"age\":40}");
    let other = params_digest("{\"age\":41}");
    let only_alice = Researchers::Only(vec![alice]);
    let pinned = Grant {
        params_digest: Some(approved.clone()),
        ..grant(only_alice.clone())
    };
    let expiring = Grant {
        expires_at: Some(NOW),
        ..grant(Researchers::Any)
    };
    let limited = Grant {
        max_runs: Some(2),
        ..grant(Researchers::Any)
    };
    type Case<'a> = (
        &'a str,
        Vec<Grant>,
        String,
        PartyId,
        &'a str,
        u64,
        Option<usize>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "listed researcher",
            vec![grant(only_alice.clone())],
            module(1),
            alice,
            &other,
            0,
            Some(0),
            "",
        ),
        (
            "module not granted",
            vec![grant(Researchers::Any)],
            module(2),
            alice,
            &other,
            0,
            None,
            "does not grant module",
        ),
        (
            "researcher not listed",
            vec![grant(only_alice.clone())],
            module(1),
            bob,
            &other,
            0,
            None,
            "not named",
        ),
        (
            "empty list",
            vec![grant(Researchers::Only(vec![]))],
            module(1),
            alice,
            &other,
            0,
            None,
            "not named",
        ),
        (
            "any",
            vec![grant(Researchers::Any)],
            module(1),
            bob,
            &other,
            0,
            Some(0),
            "",
        ),
        (
            "params pinned, match",
            vec![pinned.clone()],
            module(1),
            alice,
            &approved,
            0,
            Some(0),
            "",
        ),
        (
            "params pinned, mismatch",
            vec![pinned.clone()],
            module(1),
            alice,
            &other,
            0,
            None,
            "approved params",
        ),
        (
            "expired at expiry",
            vec![expiring.clone()],
            module(1),
            alice,
            &other,
            0,
            None,
            "expired",
        ),
        (
            "max runs left",
            vec![limited.clone()],
            module(1),
            alice,
            &other,
            1,
            Some(0),
            "",
        ),
        (
            "max runs reached",
            vec![limited.clone()],
            module(1),
            alice,
            &other,
            2,
            None,
            "runs were used",
        ),
        (
            "revoked",
            vec![],
            module(1),
            alice,
            &other,
            0,
            None,
            "revoked",
        ),
        (
            "second grant allows",
            vec![grant(only_alice.clone()), grant(Researchers::Any)],
            module(1),
            bob,
            &other,
            0,
            Some(1),
            "",
        ),
    ];
    for (name, grants, module, who, params, runs, allow, reason) in cases {
        let decision = policy(grants).decide(&module, &who, params, NOW, runs);
        match (allow, &decision) {
            (Some(i), GrantDecision::Allow { grant_index }) => {
                assert_eq!(*grant_index, i, "{name}")
            }
            (None, GrantDecision::Deny(why)) => {
                assert!(why.contains(reason), "{name}: {why}");
                assert!(
                    why.contains("v3"),
                    "{name}: reason names the policy version: {why}"
                );
                assert!(
                    why.contains("ask") || why.contains("run with"),
                    "{name}: {why}"
                );
            }
            _ => panic!("{name}: unexpected {decision:?}"),
        }
    }
    let before = Grant {
        expires_at: Some(NOW + 1),
        ..grant(Researchers::Any)
    };
    assert_eq!(
        policy(vec![before]).decide(&module(1), &bob, &other, NOW, 0),
        GrantDecision::Allow { grant_index: 0 }
    );
}

#[test]
fn strictest_rules() {
    let a = OutputRules {
        max_output_bytes: 1000,
        min_group_count: 5,
        count_columns: vec!["n".into()],
        small_groups: SmallGroups::Suppress,
        release_logs: true,
        review_required: false,
    };
    let b = OutputRules {
        max_output_bytes: 5000,
        min_group_count: 20,
        count_columns: vec!["patients".into(), "n".into()],
        small_groups: SmallGroups::Refuse,
        release_logs: false,
        review_required: true,
    };
    let s = OutputRules::strictest([&a, &b]);
    assert_eq!(s.max_output_bytes, 1000);
    assert_eq!(s.min_group_count, 20);
    assert_eq!(
        s.count_columns,
        vec!["n".to_string(), "patients".to_string()]
    );
    assert_eq!(s.small_groups, SmallGroups::Refuse);
    assert!(!s.release_logs);
    assert!(s.review_required);
    assert_eq!(
        OutputRules::strictest([&a, &b]),
        OutputRules::strictest([&b, &a]).with_columns_sorted()
    );

    let both_release = OutputRules::strictest([&a, &a]);
    assert!(both_release.release_logs);
    assert!(!both_release.review_required);
    assert_eq!(both_release.small_groups, SmallGroups::Suppress);
    assert_eq!(OutputRules::strictest([]), OutputRules::default());
}

trait SortColumns {
    fn with_columns_sorted(self) -> Self;
}

impl SortColumns for OutputRules {
    fn with_columns_sorted(mut self) -> Self {
        self.count_columns.sort();
        self
    }
}
