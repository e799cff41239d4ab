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
