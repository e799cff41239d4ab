use cleanroom_proto::{Error, Identity, PartyId, verify_signature};

#[test]
fn identity_save_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.json");
    let identity = Identity::generate();
    identity.save(&path).unwrap();

    let loaded = Identity::load(&path).unwrap();
    assert_eq!(loaded.party(), identity.party());
    assert_eq!(loaded.hpke_public(), identity.hpke_public());
    assert_eq!(loaded.hpke_secret(), identity.hpke_secret());

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["version"], 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "identity file must be owner-only");
    }
}

#[test]
fn identity_save_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.json");
    let first = Identity::generate();
    first.save(&path).unwrap();
    let err = Identity::generate().save(&path).unwrap_err();
    assert!(matches!(err, Error::IdentityExists(_)), "{err}");
    assert_eq!(Identity::load(&path).unwrap().party(), first.party());
}

#[test]
fn identity_load_missing_and_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    assert!(matches!(
        Identity::load(&missing).unwrap_err(),
        Error::IdentityMissing(_)
    ));

    let cases = [
        ("not json", "not json at all"),
        (
            "unknown field",
            r#"{"version":1,"signing_key":"00","hpke_secret":"00","x":1}"#,
        ),
        (
            "short key",
            r#"{"version":1,"signing_key":"00","hpke_secret":"00"}"#,
        ),
        (
            "bad version",
            &format!(
                r#"{{"version":2,"signing_key":"{0}","hpke_secret":"{0}"}}"#,
                "11".repeat(32)
            ),
        ),
    ];
    for (name, text) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let err = Identity::load(&path).unwrap_err();
        assert!(
            matches!(err, Error::IdentityMalformed { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn party_id_text_form() {
    let identity = Identity::generate();
    let party = identity.party();
    let text = party.to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text, text.to_lowercase());
    assert_eq!(text.parse::<PartyId>().unwrap(), party);
    assert_eq!(party.short(), text[..12]);
    assert_eq!(
        serde_json::to_string(&party).unwrap(),
        format!("\"{text}\"")
    );
    assert_eq!(
        serde_json::from_str::<PartyId>(&format!("\"{text}\"")).unwrap(),
        party
    );

    assert!(text.to_uppercase().parse::<PartyId>().is_err());
    assert!(text[..63].parse::<PartyId>().is_err());
    assert!("zz".repeat(32).parse::<PartyId>().is_err());
}

#[test]
fn sign_and_verify_signature() {
    let identity = Identity::generate();
    let sig = identity.sign(b"hello");
    verify_signature(&identity.party(), b"hello", &sig).unwrap();
    assert!(verify_signature(&identity.party(), b"hellO", &sig).is_err());
    assert!(verify_signature(&Identity::generate().party(), b"hello", &sig).is_err());
}

#[test]
fn identity_debug_hides_secrets() {
    let identity = Identity::generate();
    let debug = format!("{identity:?}");
    assert!(debug.contains(&identity.party().to_string()));
    assert!(!debug.contains(&hex::encode(identity.hpke_secret())));
    assert!(!debug.contains(&hex::encode(identity.signing_key().to_bytes())));
}
