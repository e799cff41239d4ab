//! Signing-format test vectors: objects signed before canonical JSON moved to RFC 8785 (JCS,
//! the `serde_jcs` crate) hash and verify to the same values after, so every stored policy,
//! receipt and audit entry keeps verifying.

use cleanroom_proto::{
    AuditEntry, Grant, Identity, OutputRules, Policy, Researchers, SignedPolicy,
};
use serde_json::json;

fn owner() -> Identity {
    Identity::from_secrets([7; 32], [9; 32])
}

fn policy() -> Policy {
    Policy {
        dataset: "0123456789abcdef0123456789abcdef".into(),
        version: 4,
        grants: vec![Grant {
            module: hex::encode([1; 32]),
            researchers: Researchers::Only(vec![owner().party()]),
            params_digest: Some(hex::encode([2; 32])),
            expires_at: Some(1_800_000_000),
            max_runs: Some(5),
            note: Some("SQL: SELECT \"a\", 'é' FROM t\n\tWHERE x < 10".into()),
            inputs: Some(
                [
                    ("site_b".to_string(), "d2".to_string()),
                    ("Site_A".to_string(), "d1".to_string()),
                ]
                .into(),
            ),
            unlimited: false,
        }],
        hidden_columns: vec!["name".into()],
        identifier_columns: vec!["patient_id".into(), "mrn".into()],
        output: OutputRules::default(),
        dp: None,
        issued_at: 1_700_000_000,
    }
}

#[test]
fn a_policy_signed_with_the_first_format_still_verifies_to_the_same_digest() {
    let signed = SignedPolicy::sign(policy(), &owner());
    assert_eq!(
        signed.signature,
        "74bebfb1380dec7c5fd2d595ca92145fbc0bd017d242cf0202ce2a4947a450fa1063625cf641633763548461271f5a86aac5f1082e9dcb0d4078935513c77a0c",
        "the signed bytes of a policy changed"
    );
    assert_eq!(
        signed.digest(),
        "a4e21ccbb0705c2e836eba233d88f596ffd4e1933db7c5b4b01dd6385afea82f"
    );
    signed.verify().unwrap();
}

#[test]
fn an_audit_entry_hashes_as_before() {
    let entry = AuditEntry {
        seq: 42,
        time: 1_700_000_123,
        actor: Some(owner().party()),
        action: "run.released".into(),
        subject: "run-0123".into(),
        detail: json!({
            "z": [3, 1, 2], "a": {"nested": true, "n": -7, "big": 9_007_199_254_740_991u64},
            "text": "line\nbreak \u{1}ctl \"q\" é", "empty": {}, "null": null,
        }),
        parties: Some(vec![owner().party()]),
        salt: "00ff".into(),
    };
    assert_eq!(
        hex::encode(entry.hash()),
        "e9619ac492cff6e295b534e2a7f1b9393a127adac918cf4884ccad89a549acff"
    );
}

#[test]
fn a_policy_with_a_number_signed_json_cannot_carry_exactly_is_invalid() {
    let mut p = policy();
    p.grants[0].inputs = None;
    p.version = (1 << 53) + 1;
    let err = p.validate().unwrap_err();
    assert!(err.contains("2^53"), "{err}");
    p.version = (1 << 53) - 1;
    p.validate().unwrap();
}
