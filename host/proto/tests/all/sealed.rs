use cleanroom_proto::run::output_context;
use cleanroom_proto::{Error, Identity, open_sealed, seal_to};

#[test]
fn round_trip() {
    let researcher = Identity::generate();
    let context = output_context("run-1", "result", 0);
    let plaintext = b"age_band,n\n40-49,17\n";
    let sealed = seal_to(&researcher.hpke_public(), &context, plaintext).unwrap();
    assert_ne!(&sealed[32..], plaintext.as_slice());
    assert_eq!(
        open_sealed(&researcher, &context, &sealed).unwrap(),
        plaintext
    );

    let empty = seal_to(&researcher.hpke_public(), &context, b"").unwrap();
    assert_eq!(open_sealed(&researcher, &context, &empty).unwrap(), b"");
}

#[test]
fn wrong_recipient_or_context_fails() {
    let researcher = Identity::generate();
    let context = output_context("run-1", "result", 0);
    let sealed = seal_to(&researcher.hpke_public(), &context, b"secret").unwrap();

    let other = Identity::generate();
    assert!(matches!(
        open_sealed(&other, &context, &sealed),
        Err(Error::Open)
    ));
    for wrong in ["run-2/summary", "run-1/log", ""] {
        assert!(
            matches!(open_sealed(&researcher, wrong, &sealed), Err(Error::Open)),
            "{wrong}"
        );
    }
    let mut flipped = sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(matches!(
        open_sealed(&researcher, &context, &flipped),
        Err(Error::Open)
    ));
    assert!(matches!(
        open_sealed(&researcher, &context, &sealed[..10]),
        Err(Error::Open)
    ));
}

#[test]
fn sealing_to_a_low_order_key_fails() {
    // The all-zero X25519 point gives an all-zero shared secret, which HPKE must refuse.
    assert!(matches!(
        seal_to(&[0; 32], "run/out", b"x"),
        Err(Error::Seal(_))
    ));
}

#[test]
fn held_bundles_are_signed_by_the_enclave() {
    use cleanroom_proto::run::{HeldBundle, SealedOutput};
    let enclave = Identity::generate();
    let reviewer = Identity::generate();
    let sealed = cleanroom_proto::seal_to(&reviewer.hpke_public(), "ctx", b"genuine").unwrap();
    let bundle = HeldBundle {
        run: "run-1".into(),
        reports: vec![],
        outputs: vec![SealedOutput {
            index: 0,
            sealed: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &sealed),
        }],
        signature: String::new(),
    }
    .sign(enclave.signing_key());
    bundle.verify(&enclave.party()).unwrap();
    // Anyone can seal something harmless to the reviewer's public key: without the enclave's
    // signature it is not shown.
    let forged = cleanroom_proto::seal_to(&reviewer.hpke_public(), "ctx", b"harmless").unwrap();
    let mut swapped = bundle.clone();
    swapped.outputs[0].sealed =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &forged);
    assert!(swapped.verify(&enclave.party()).is_err());
    assert!(bundle.verify(&reviewer.party()).is_err(), "another signer");
}

#[test]
fn sealed_outputs_are_padded_and_round_trip() {
    use cleanroom_proto::run::{OutputKind, PlainOutput, open_output, padded_len, seal_output};
    let researcher = Identity::generate();
    let context = output_context("run-1", "result", 0);
    let mut sizes = std::collections::BTreeSet::new();
    for len in [0usize, 1, 500, 900] {
        let output = PlainOutput {
            name: "summary".into(),
            kind: OutputKind::Json,
            bytes: vec![b'7'; len],
        };
        let sealed = seal_output(&researcher.hpke_public(), &context, &output).unwrap();
        sizes.insert(sealed.len());
        assert_eq!(open_output(&researcher, &context, &sealed).unwrap(), output);
    }
    assert_eq!(
        sizes.len(),
        1,
        "small outputs are indistinguishable by size: {sizes:?}"
    );
    assert_eq!(padded_len(1025), 2048);
    // Another position, purpose or run does not open it.
    let output = PlainOutput {
        name: "t".into(),
        kind: OutputKind::Table,
        bytes: vec![1, 2, 3],
    };
    let sealed = seal_output(&researcher.hpke_public(), &context, &output).unwrap();
    for other in [
        output_context("run-1", "result", 1),
        output_context("run-1", "review", 0),
        output_context("run-2", "result", 0),
    ] {
        assert!(open_output(&researcher, &other, &sealed).is_err());
    }
}
