use cleanroom_proto::policy::{DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MIN_GROUP_COUNT};
use cleanroom_proto::{
    Error, Grant, Identity, OutputRules, Policy, Researchers, SignedPolicy, SmallGroups,
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
        inputs: None,
        unlimited: false,
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
        dp: None,
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
    // Verified (and so remembered) first: what is remembered must not vouch for any change.
    signed.verify().unwrap();
    signed.verify().unwrap();

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
fn strictest_rules() {
    let a = OutputRules {
        max_output_bytes: 1000,
        min_group_count: 5,
        count_columns: vec!["n".into()],
        small_groups: SmallGroups::Suppress,
        release_logs: true,
        review_required: false,
        ..OutputRules::default()
    };
    let b = OutputRules {
        max_output_bytes: 5000,
        min_group_count: 20,
        count_columns: vec!["patients".into(), "n".into()],
        small_groups: SmallGroups::Refuse,
        release_logs: false,
        review_required: true,
        rounding: cleanroom_proto::policy::Rounding::Redact7Round5,
        max_outputs: 8,
        ..OutputRules::default()
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
    assert_eq!(s.rounding, cleanroom_proto::policy::Rounding::Redact7Round5);
    assert_eq!(s.max_outputs, 8);
    assert_eq!(
        s.unchecked_outputs(),
        cleanroom_proto::policy::Unchecked::Refuse,
        "a does not review, so it refuses unchecked outputs: b's reviewer never reads a's data"
    );
    assert_eq!(
        OutputRules::strictest([&b, &b]).unchecked_outputs(),
        cleanroom_proto::policy::Unchecked::Review,
        "unchecked outputs are reviewed where every owner reviews"
    );
    let a_allows = OutputRules {
        unchecked: Some(cleanroom_proto::policy::Unchecked::Review),
        ..a.clone()
    };
    assert_eq!(
        OutputRules::strictest([&a_allows, &b]).unchecked_outputs(),
        cleanroom_proto::policy::Unchecked::Review,
        "or where an owner who does not review says others' review is enough"
    );
    assert_eq!(
        OutputRules::strictest([&a, &a]).unchecked_outputs(),
        cleanroom_proto::policy::Unchecked::Refuse,
        "and refused where nobody does"
    );
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
