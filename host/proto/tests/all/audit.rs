use cleanroom_proto::audit::GENESIS_PREV;
use cleanroom_proto::{AuditChain, AuditEntry, AuditError, Identity, SignedHead, verify_log};
use serde_json::json;

fn chain(n: u64) -> AuditChain {
    let owner = Identity::generate().party();
    let mut chain = AuditChain::new();
    for i in 0..n {
        let actor = (i % 3 != 0).then_some(owner);
        chain.append(
            1_700_000_000 + i,
            actor,
            "run.submit",
            format!("run-{i}"),
            json!({"i": i, "z": [1, {"b": 2, "a": 1}]}),
        );
    }
    chain
}

fn setup() -> (Identity, Vec<AuditEntry>, SignedHead) {
    let enclave = Identity::generate();
    let chain = chain(20);
    let head = chain
        .sign_head(1_700_000_100, enclave.signing_key())
        .unwrap();
    (enclave, chain.entries().to_vec(), head)
}

#[test]
fn twenty_entries_verify() {
    let (enclave, entries, head) = setup();
    assert_eq!(entries.len(), 20);
    assert_eq!(entries[0].prev, GENESIS_PREV);
    assert_eq!(head.seq, 19);
    assert_eq!(head.hash, hex::encode(entries[19].hash()));
    verify_log(&entries, &head, Some(&enclave.party())).unwrap();
    verify_log(&entries, &head, None).unwrap();

    // Entries survive storage as JSON and resume into a chain.
    let json = serde_json::to_string(&entries).unwrap();
    let parsed: Vec<AuditEntry> = serde_json::from_str(&json).unwrap();
    verify_log(&parsed, &head, Some(&enclave.party())).unwrap();
    let mut resumed = AuditChain::from_entries(parsed).unwrap();
    resumed.append(1, None, "run.release", "run-20", json!(null));
    assert_eq!(resumed.entries()[20].prev, head.hash);
}

#[test]
fn edited_entry_fails() {
    let (enclave, entries, head) = setup();
    let mut edited = entries.clone();
    edited[7].detail = json!({"i": 70});
    assert_eq!(
        verify_log(&edited, &head, Some(&enclave.party())),
        Err(AuditError::BrokenLink { seq: 8 })
    );

    let mut edited = entries.clone();
    edited[19].action = "run.withhold".into();
    assert_eq!(
        verify_log(&edited, &head, None),
        Err(AuditError::HeadHash { seq: 19 })
    );
}

#[test]
fn deleted_entry_fails() {
    let (_, entries, head) = setup();
    let mut deleted = entries.clone();
    deleted.remove(10);
    assert_eq!(
        verify_log(&deleted, &head, None),
        Err(AuditError::Sequence {
            index: 10,
            expected: 10,
            found: 11
        })
    );
    let mut last_gone = entries.clone();
    last_gone.pop();
    assert_eq!(
        verify_log(&last_gone, &head, None),
        Err(AuditError::HeadSequence {
            head_seq: 19,
            last_seq: 18
        })
    );
    assert_eq!(verify_log(&[], &head, None), Err(AuditError::Empty));
}

#[test]
fn inserted_entry_fails() {
    let (_, entries, head) = setup();
    let mut inserted = entries.clone();
    let mut forged = entries[5].clone();
    forged.action = "policy.publish".into();
    inserted.insert(6, forged);
    assert_eq!(
        verify_log(&inserted, &head, None),
        Err(AuditError::Sequence {
            index: 6,
            expected: 6,
            found: 5
        })
    );
    // Renumbering everything after the insertion moves the break to the forged entry's link.
    for (i, e) in inserted.iter_mut().enumerate() {
        e.seq = i as u64;
    }
    assert_eq!(
        verify_log(&inserted, &head, None),
        Err(AuditError::BrokenLink { seq: 6 })
    );
}

#[test]
fn reordered_entries_fail() {
    let (_, entries, head) = setup();
    let mut swapped = entries.clone();
    swapped.swap(3, 4);
    assert_eq!(
        verify_log(&swapped, &head, None),
        Err(AuditError::Sequence {
            index: 3,
            expected: 3,
            found: 4
        })
    );
    // Swapping contents but keeping seq numbers in place breaks the links instead.
    let (a, b) = (swapped[3].seq, swapped[4].seq);
    swapped[3].seq = b;
    swapped[4].seq = a;
    assert_eq!(
        verify_log(&swapped, &head, None),
        Err(AuditError::BrokenLink { seq: 3 })
    );
}

#[test]
fn truncated_or_stale_head_fails() {
    let (enclave, entries, head) = setup();
    // A head signed earlier, at seq 9, does not vouch for the 20 entries.
    let old = SignedHead::sign(9, entries[9].hash(), 1, enclave.signing_key());
    assert_eq!(
        verify_log(&entries, &old, None),
        Err(AuditError::HeadSequence {
            head_seq: 9,
            last_seq: 19
        })
    );
    // ...but it does vouch for the prefix it covers.
    verify_log(&entries[..=9], &old, Some(&enclave.party())).unwrap();

    let mut cut = head.clone();
    cut.hash.truncate(32);
    assert!(matches!(
        verify_log(&entries, &cut, None),
        Err(AuditError::Head(_))
    ));

    let mut moved = head.clone();
    moved.seq = 18;
    assert!(matches!(
        verify_log(&entries[..19], &moved, None),
        Err(AuditError::Head(_))
    ));
}

#[test]
fn forged_head_fails() {
    let (enclave, entries, head) = setup();
    let mut forged = head.clone();
    let mut sig = hex::decode(&forged.signature).unwrap();
    sig[0] ^= 1;
    forged.signature = hex::encode(sig);
    let err = verify_log(&entries, &forged, Some(&enclave.party())).unwrap_err();
    assert!(matches!(err, AuditError::Head(_)), "{err}");

    // A head signed by another key, over the true hash: fine for integrity, not for provenance.
    let impostor = Identity::generate();
    let other = SignedHead::sign(
        head.seq,
        entries[19].hash(),
        head.time,
        impostor.signing_key(),
    );
    verify_log(&entries, &other, None).unwrap();
    let err = verify_log(&entries, &other, Some(&enclave.party())).unwrap_err();
    assert!(
        matches!(err, AuditError::Head(ref why) if why.contains("expected enclave")),
        "{err}"
    );

    // Claiming the enclave's key on the impostor's signature.
    let mut claimed = other.clone();
    claimed.enclave_key = enclave.party();
    assert!(matches!(
        verify_log(&entries, &claimed, Some(&enclave.party())),
        Err(AuditError::Head(_))
    ));
}
