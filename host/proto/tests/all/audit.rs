use cleanroom_proto::{
    AuditEntry, AuditError, AuditItem, Identity, MerkleLog, SignedHead, verify_consistency,
    verify_inclusion, verify_items,
};
use serde_json::json;

const T: u64 = 1_700_000_000;

fn entry(i: u64, subject: &str) -> AuditEntry {
    let owner = Identity::generate().party();
    AuditEntry {
        seq: i,
        time: T + i,
        actor: (!i.is_multiple_of(3)).then_some(owner),
        action: "run.submit".into(),
        subject: subject.into(),
        detail: json!({"i": i, "z": [1, {"b": 2, "a": 1}]}),
        parties: i.is_multiple_of(2).then(|| vec![owner]),
        salt: format!("{i:032x}"),
    }
}

fn entries(n: u64) -> Vec<AuditEntry> {
    (0..n).map(|i| entry(i, &format!("run-{i}"))).collect()
}

fn log_of(entries: &[AuditEntry]) -> MerkleLog {
    let mut log = MerkleLog::new();
    for e in entries {
        log.push(e.hash());
    }
    log
}

/// What a party that sees everything is served.
fn items(entries: &[AuditEntry]) -> Vec<AuditItem> {
    entries
        .iter()
        .map(|e| AuditItem {
            seq: e.seq,
            hash: hex::encode(e.hash()),
            entry: Some(e.clone()),
        })
        .collect()
}

fn setup() -> (Identity, Vec<AuditEntry>, SignedHead) {
    let enclave = Identity::generate();
    let entries = entries(20);
    let head = log_of(&entries).sign_head(T + 100, enclave.signing_key());
    (enclave, entries, head)
}

#[test]
fn a_whole_log_verifies_against_its_head_and_survives_json() {
    let (enclave, entries, head) = setup();
    assert_eq!(head.size, 20);
    verify_items(&items(&entries), &head, Some(&enclave.party())).unwrap();
    let json = serde_json::to_string(&items(&entries)).unwrap();
    let parsed: Vec<AuditItem> = serde_json::from_str(&json).unwrap();
    verify_items(&parsed, &head, None).unwrap();
}

#[test]
fn hidden_entries_still_verify_as_leaves() {
    let (enclave, entries, head) = setup();
    let reader = Identity::generate().party();
    let view: Vec<AuditItem> = entries
        .iter()
        .map(|e| AuditItem::view(e, &reader))
        .collect();
    // Only the entries with no party list concern a stranger.
    assert_eq!(view.iter().filter(|i| i.entry.is_some()).count(), 10);
    verify_items(&view, &head, Some(&enclave.party())).unwrap();
}

#[test]
fn an_edited_entry_is_caught() {
    let (_, entries, head) = setup();
    let mut edited = items(&entries);
    edited[7].entry.as_mut().unwrap().action = "run.released".into();
    assert_eq!(
        verify_items(&edited, &head, None).unwrap_err(),
        AuditError::EntryHash { seq: 7 }
    );
    // Recomputing the leaf to match does not help: the root no longer matches.
    edited[7].hash = hex::encode(edited[7].entry.as_ref().unwrap().hash());
    assert_eq!(
        verify_items(&edited, &head, None).unwrap_err(),
        AuditError::Root {
            entries: 20,
            size: 20
        }
    );
}

#[test]
fn deleted_inserted_and_reordered_entries_are_caught() {
    let (_, entries, head) = setup();
    let mut deleted = items(&entries);
    deleted.remove(5);
    assert!(matches!(
        verify_items(&deleted, &head, None),
        Err(AuditError::Sequence { index: 5, .. })
    ));
    let mut last_gone = items(&entries);
    last_gone.pop();
    assert!(matches!(
        verify_items(&last_gone, &head, None),
        Err(AuditError::Root { entries: 19, .. })
    ));
    let mut swapped = items(&entries);
    swapped.swap(3, 4);
    assert!(matches!(
        verify_items(&swapped, &head, None),
        Err(AuditError::Sequence { index: 3, .. })
    ));
    assert_eq!(
        verify_items(&[], &head, None).unwrap_err(),
        AuditError::Empty
    );
}

#[test]
fn a_forged_or_foreign_head_is_refused() {
    let (enclave, entries, mut head) = setup();
    let other = Identity::generate();
    let foreign = log_of(&entries).sign_head(T, other.signing_key());
    assert!(matches!(
        verify_items(&items(&entries), &foreign, Some(&enclave.party())),
        Err(AuditError::Head(_))
    ));
    head.size = 19;
    assert!(matches!(
        verify_items(&items(&entries[..19]), &head, None),
        Err(AuditError::Head(_))
    ));
}

#[test]
fn a_log_that_grew_is_consistent_with_every_older_head() {
    let enclave = Identity::generate();
    let all = entries(37);
    let new_log = log_of(&all);
    let new = new_log.sign_head(T + 2, enclave.signing_key());
    for old_size in [0u64, 1, 2, 7, 16, 20, 36, 37] {
        let old = log_of(&all[..old_size as usize]).sign_head(T + 1, enclave.signing_key());
        let proof = new_log.prove_consistency(old_size).unwrap();
        verify_consistency(&old, &new, &proof, Some(&enclave.party()))
            .unwrap_or_else(|e| panic!("old size {old_size}: {e}"));
    }
    // No proof towards a larger tree.
    assert!(new_log.prove_consistency(38).is_none());
}

#[test]
fn truncated_rewritten_and_forked_logs_are_caught_by_a_party_holding_an_older_head() {
    let enclave = Identity::generate();
    let all = entries(30);
    let seen = log_of(&all[..20]).sign_head(T, enclave.signing_key());

    // Truncated: the operator restores a copy with 12 entries; the enclave signs it.
    let truncated = log_of(&all[..12]);
    let head = truncated.sign_head(T + 1, enclave.signing_key());
    assert_eq!(
        verify_consistency(&seen, &head, "", None).unwrap_err(),
        AuditError::Inconsistent {
            old_size: 20,
            new_size: 12
        }
    );

    // Rewritten: same length, entry 4 replaced.
    let mut rewritten = all.clone();
    rewritten[4] = entry(4, "run-rewritten");
    let rewritten_log = log_of(&rewritten[..20]);
    let head = rewritten_log.sign_head(T + 1, enclave.signing_key());
    assert!(matches!(
        verify_consistency(&seen, &head, "", None),
        Err(AuditError::Inconsistent { .. })
    ));

    // Forked: the old prefix diverges, then grows past what the party saw; no proof from the
    // forked tree satisfies the party's head.
    let mut forked = all.clone();
    forked[15] = entry(15, "run-forked");
    let forked_log = log_of(&forked);
    let head = forked_log.sign_head(T + 1, enclave.signing_key());
    let proof = forked_log.prove_consistency(20).unwrap();
    assert!(matches!(
        verify_consistency(&seen, &head, &proof, None),
        Err(AuditError::Inconsistent { .. })
    ));
    // A garbage proof is refused, not a panic.
    assert!(verify_consistency(&seen, &head, "zz", None).is_err());
    assert!(verify_consistency(&seen, &head, &"00".repeat(33), None).is_err());
}

#[test]
fn an_older_head_from_another_enclave_is_not_a_reference() {
    let enclave = Identity::generate();
    let other = Identity::generate();
    let all = entries(10);
    let log = log_of(&all);
    let old = log_of(&all[..5]).sign_head(T, other.signing_key());
    let new = log.sign_head(T + 1, enclave.signing_key());
    let proof = log.prove_consistency(5).unwrap();
    assert!(matches!(
        verify_consistency(&old, &new, &proof, Some(&enclave.party())),
        Err(AuditError::Head(_))
    ));
}

#[test]
fn inclusion_proofs_show_one_entry_is_in_the_log() {
    let enclave = Identity::generate();
    let all = entries(25);
    let log = log_of(&all);
    let head = log.sign_head(T, enclave.signing_key());
    for seq in [0u64, 1, 12, 24] {
        let proof = log.prove_inclusion(seq).unwrap();
        verify_inclusion(&all[seq as usize], &head, &proof, Some(&enclave.party())).unwrap();
        // Another entry with the same proof does not verify.
        let other = &all[((seq + 1) % 25) as usize];
        let mut moved = other.clone();
        moved.seq = seq;
        assert_eq!(
            verify_inclusion(&moved, &head, &proof, None).unwrap_err(),
            AuditError::NotIncluded { seq, size: 25 }
        );
    }
    assert!(log.prove_inclusion(25).is_none());
    // An entry that was never logged, claimed at a valid position.
    let proof = log.prove_inclusion(3).unwrap();
    let forged = entry(3, "run-never-logged");
    assert!(verify_inclusion(&forged, &head, &proof, None).is_err());
    assert!(verify_inclusion(&all[3], &head, "not hex", None).is_err());
}

#[test]
fn every_action_reads_back_as_itself_and_strangers_are_not_actions() {
    use cleanroom_proto::{Action, RunState};
    let mut seen = std::collections::BTreeSet::new();
    let named = [
        Action::DatasetUploaded,
        Action::PolicyGranted,
        Action::PolicyRevoked,
        Action::ModuleUploaded,
        Action::ModuleSource,
        Action::PipelineStored,
        Action::AccessRequested,
        Action::PreviewPublished,
        Action::DerivedKept,
        Action::RunQueued,
        Action::RunStarted,
        Action::RunCancelRequested,
        Action::RunHeldForReview,
        Action::ReviewReleased,
        Action::ReviewWithheld,
        Action::RequestRefused,
        Action::EnclaveHandover,
        Action::ClusterJoin,
    ];
    let finished = RunState::ALL
        .into_iter()
        .filter(RunState::is_final)
        .map(Action::RunFinished);
    for action in named.into_iter().chain(finished) {
        let text = action.as_string();
        assert!(!text.is_empty(), "{action:?} has no string");
        assert!(seen.insert(text.clone()), "{text} names two actions");
        assert_eq!(Action::parse(&text), Some(action), "{text}");
    }
    // The strings the log has always carried (signed bytes do not change).
    assert_eq!(
        Action::RunFinished(RunState::Released).as_string(),
        "run.released"
    );
    assert_eq!(Action::RunHeldForReview.as_string(), "run.held_for_review");
    for stranger in [
        "run.running",
        "run.queued ",
        "RUN.RELEASED",
        "policy.publish",
        "",
    ] {
        assert_eq!(Action::parse(stranger), None, "{stranger:?}");
    }
}
