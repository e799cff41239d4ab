use cleanroom_proto::{
    Error, Identity, Receipt, ReceiptInput, ReceiptOutput, RunState, SignedReceipt, params_digest,
};

fn receipt(researcher: &Identity) -> Receipt {
    Receipt {
        run_id: "run-1".into(),
        module: "ab".repeat(32),
        researcher: researcher.party(),
        inputs: vec![ReceiptInput {
            name: "patients".into(),
            dataset: "d00d".into(),
            manifest_digest: "cd".repeat(32),
            policy_version: 3,
            policy_digest: "ef".repeat(32),
            grant_digest: "12".repeat(32),
            terms_digest: "34".repeat(32),
            via: None,
        }],
        params_digest: params_digest("{}"),
        outputs: vec![ReceiptOutput {
            index: 0,
            kind: cleanroom_proto::run::OutputKind::Table,
            ciphertext_sha256: "01".repeat(32),
        }],
        state: RunState::Released,
        measurement: "aa".repeat(48),
        enclave_key: researcher.party(), // overwritten by sign
        issued_at: 1_700_000_000,
        steps: vec![],
    }
}

#[test]
fn sign_and_verify() {
    let enclave = Identity::generate();
    let signed = SignedReceipt::sign(receipt(&Identity::generate()), enclave.signing_key());
    assert_eq!(signed.receipt.enclave_key, enclave.party());
    signed.verify(None).unwrap();
    signed.verify(Some(&enclave.party())).unwrap();

    let json = serde_json::to_string(&signed).unwrap();
    assert!(json.contains("\"state\":\"released\""));
    let parsed: SignedReceipt = serde_json::from_str(&json).unwrap();
    parsed.verify(Some(&enclave.party())).unwrap();
    assert_eq!(parsed.digest(), signed.digest());
}

#[test]
fn tampered_receipt_fails() {
    let enclave = Identity::generate();
    let signed = SignedReceipt::sign(receipt(&Identity::generate()), enclave.signing_key());
    let edits: [fn(&mut Receipt); 6] = [
        |r| r.state = RunState::Withheld,
        |r| r.outputs[0].index += 1,
        |r| r.inputs[0].policy_version = 2,
        |r| r.params_digest = params_digest("{\"x\":1}"),
        |r| r.researcher = Identity::generate().party(),
        |r| r.outputs.clear(),
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut t = signed.clone();
        edit(&mut t.receipt);
        let err = t.verify(Some(&enclave.party())).unwrap_err();
        assert!(
            matches!(err, Error::BadSignature { what: "receipt" }),
            "edit {i}: {err}"
        );
    }
}

#[test]
fn wrong_enclave_fails() {
    let enclave = Identity::generate();
    let impostor = Identity::generate();
    let signed = SignedReceipt::sign(receipt(&Identity::generate()), impostor.signing_key());
    let err = signed.verify(Some(&enclave.party())).unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongSigner {
                what: "receipt",
                ..
            }
        ),
        "{err}"
    );

    // Claiming the real enclave's key without its signature fails too.
    let mut t = signed.clone();
    t.receipt.enclave_key = enclave.party();
    assert!(matches!(
        t.verify(Some(&enclave.party())).unwrap_err(),
        Error::BadSignature { .. }
    ));
}

#[test]
fn run_states() {
    use RunState::*;
    for (state, text, is_final) in [
        (Submitted, "submitted", false),
        (Rejected, "rejected", true),
        (Queued, "queued", false),
        (Running, "running", false),
        (Failed, "failed", true),
        (HeldForReview, "held_for_review", false),
        (Released, "released", true),
        (Withheld, "withheld", true),
        (Cancelled, "cancelled", true),
    ] {
        assert_eq!(state.to_string(), text);
        assert_eq!(serde_json::to_value(state).unwrap(), text);
        assert_eq!(state.is_final(), is_final, "{state}");
    }
}

#[test]
fn run_request_json() {
    let json = format!(
        r#"{{"module":"{m}","inputs":{{"patients":"d00d"}},"params":"{{}}","researcher_hpke":"{k}"}}"#,
        m = "ab".repeat(32),
        k = hex::encode(Identity::generate().hpke_public())
    );
    let request: cleanroom_proto::RunRequest = serde_json::from_str(&json).unwrap();
    assert_eq!(request.inputs["patients"], "d00d");
    assert_eq!(request.params_digest(), params_digest("{}"));
    request.researcher_hpke_key().unwrap();
    let extra = json.replace("\"params\"", "\"nonce\":\"x\",\"params\"");
    assert!(serde_json::from_str::<cleanroom_proto::RunRequest>(&extra).is_err());
}
