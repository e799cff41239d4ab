//! Three cleanroomd workers on loopback sharing one PostgreSQL and one S3-compatible object
//! store (started by `scripts/cluster-services.sh`, which `scripts/test.sh` runs): one enclave
//! identity by attested key release, runs claimed exactly once, a worker killed mid-run, a
//! worker without valid evidence, and the operator editing rows and objects.

use cleanroom_tests::cluster::{Cluster, Worker, count};
use cleanroom_tests::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn cluster() -> Cluster {
    Cluster::new(env!("CARGO_BIN_EXE_serve"))
}

#[test]
fn three_workers_share_one_identity_and_run_1000_runs_once_each() {
    let c = cluster();
    let ws = c.three("");
    // One enclave identity: every worker attests the same keys.
    let keys: Vec<Value> = ws
        .iter()
        .map(|w| c.cli(w, None, &["attest", "verify"]).unwrap()["enclave_keys"].clone())
        .collect();
    assert!(keys[0].is_object(), "{}", keys[0]);
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[0], keys[2]);

    let study = c.study(&ws, COHORT_STATS_RUST, &["--min-group", "1"]);
    // 1,000 runs at concurrency 32, submitted round-robin to the three workers.
    let runs = spread(32, 1000, |i| c.submit(&ws[i % 3], &study, "{}"));
    assert_eq!(runs.len(), 1000);
    let mut states = std::collections::BTreeMap::<String, usize>::new();
    for (i, run) in runs.iter().enumerate() {
        *states.entry(c.watch(&ws[(i + 1) % 3], run).0).or_default() += 1;
    }
    assert_eq!(states.get("released"), Some(&1000), "{states:?}");

    // Each run started once and released once, in one log; none lost.
    let log = c.logged_actions();
    for run in &runs {
        assert_eq!(count(&log, "run.queued", run), 1, "{run}");
        assert_eq!(count(&log, "run.started", run), 1, "{run}");
        assert_eq!(count(&log, "run.released", run), 1, "{run}");
    }
    // The work was shared: every worker released some of it.
    let released: Vec<u64> = ws
        .iter()
        .map(|w| {
            let (code, text) = c.get(w, "st_marys", "/metrics");
            assert_eq!(code, 200, "{text}");
            let text = text.as_str().unwrap().to_string();
            text.lines()
                .find_map(|l| l.strip_prefix("cleanroom_runs_released_total "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no released counter in {text}"))
        })
        .collect();
    assert_eq!(released.iter().sum::<u64>(), 1000, "{released:?}");
    assert!(released.iter().all(|&n| n > 0), "{released:?}");

    // A result released by one worker is fetched from another, and every worker's signed
    // head verifies over the one log.
    let out = c.tmp.path().join("result");
    c.cli(
        &ws[2],
        Some("researcher"),
        &["result", "fetch", &runs[0], "--out", out.to_str().unwrap()],
    )
    .unwrap();
    assert!(out.read_dir().unwrap().count() > 0);
    for w in &ws {
        c.cli(w, Some("st_marys"), &["audit", "verify"]).unwrap();
    }
}

#[test]
fn a_worker_killed_mid_run_has_its_run_failed_once_by_another() {
    // Short leases (10 s) so the test does not wait long for the takeover.
    let c = cluster().with_lease(10);
    let ws = c.three("run_timeout_secs = 600");
    let study = c.study(&ws, INFINITE_LOOP, &[]);
    let run = c.submit(&ws[0], &study, "{}");
    // Wait until a worker holds it running.
    let holder = c.holder(&ws, &run);
    let mut survivors: Vec<Worker> = ws.into_iter().collect();
    survivors.remove(holder).kill9();

    let (state, status) = c.watch(&survivors[0], &run);
    assert_eq!(state, "failed", "{status}");
    assert_eq!(status["reason"]["code"], "interrupted", "{status}");
    let log = c.logged_actions();
    assert_eq!(count(&log, "run.started", &run), 1);
    assert_eq!(count(&log, "run.failed", &run), 1);
    assert_eq!(count(&log, "run.released", &run), 0);
    // Nothing is left on the queue.
    let queued: i64 = c
        .db()
        .query_one("SELECT COUNT(*) FROM run_queue", &[])
        .unwrap()
        .get(0);
    assert_eq!(queued, 0);
}

#[test]
fn a_worker_without_valid_evidence_gets_no_keys() {
    let c = cluster();
    let w1 = c.spawn("w1", None, "");
    // Another image (another launch measurement) asks to join: refused, and it does not start.
    let other = format!("simulation_measurement = {:?}", "ab".repeat(48));
    let err = c
        .try_spawn("impostor", Some(&w1.url), &other)
        .err()
        .unwrap();
    let err = format!("{err:#}");
    assert!(err.contains("refused to release the key"), "{err}");
    assert!(err.contains("measurement"), "{err}");
    // The same image with another deployment configuration (a longer time limit): refused.
    let err = c
        .try_spawn("other-deployment", Some(&w1.url), "run_timeout_secs = 9999")
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("deployment"), "{err:#}");
    // No join at all: a worker cannot start a second identity over the cluster's state.
    let err = c.try_spawn("loner", None, "").err().unwrap();
    assert!(format!("{err:#}").contains("set [cluster] join"), "{err:#}");
    // Forged evidence sent by hand: refused.
    let agent = cleanroom_cli::attested_agent(&w1.url, &w1.measurement, true).unwrap();
    // (The member's own evidence, replayed: it binds the member's keys, not a joiner's, and
    // its deployment is not the one sent.)
    let evidence: Value = agent
        .get(format!("{}/v1/attestation", w1.url))
        .call()
        .unwrap()
        .into_body()
        .read_json()
        .unwrap();
    let forged = serde_json::json!({ "evidence": evidence["evidence"].clone(), "deployment": "x" });
    let resp = agent
        .post(format!("{}/v1/cluster/join", w1.url))
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(&forged)
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    // None of it is in the log as a release.
    assert!(
        c.logged_actions().iter().all(|(a, _)| a != "cluster.join"),
        "{:?}",
        c.logged_actions()
    );
}

#[test]
fn the_operator_editing_rows_or_objects_is_detected() {
    let c = cluster();
    let ws = c.three("");
    let study = c.study(&ws, COHORT_STATS_RUST, &["--min-group", "1"]);

    // A byte of a sealed dataset flipped in the object store before any worker read it: the
    // run on it fails, and nothing is released.
    let path = c.object("datasets", &study.0);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let run = c.submit(&ws[2], &study, "{}");
    let (state, status) = c.watch(&ws[0], &run);
    assert_eq!(state, "failed", "{status}");
    assert!(
        status["outputs"].as_array().is_none_or(|o| o.is_empty()),
        "{status}"
    );
    assert_eq!(count(&c.logged_actions(), "run.released", &run), 0);

    // The run's row edited in PostgreSQL to say it was released: every worker refuses it
    // (last: a worker yet to fold that run into its books refuses to go on).
    c.db()
        .execute(
            "UPDATE runs SET body = replace(body, '\"failed\"', '\"released\"') WHERE id = $1",
            &[&run],
        )
        .unwrap();
    for w in &ws {
        let (code, body) = c.get(w, "researcher", &format!("/v1/runs/{run}"));
        assert_eq!(code, 500, "{body}");
        assert_eq!(body["type"], "tampered", "{body}");
        assert!(
            body.to_string().contains("modified outside the enclave"),
            "{body}"
        );
    }

    // An audit row deleted: a worker starting on the database refuses it.
    c.db()
        .execute("DELETE FROM audit WHERE seq = 3", &[])
        .unwrap();
    let err = c.try_spawn("w4", Some(&ws[0].url), "").err().unwrap();
    assert!(format!("{err:#}").contains("missing"), "{err:#}");
}

#[test]
fn a_revocation_deleted_from_the_database_is_never_admitted_under() {
    let c = cluster();
    let ws = c.three("");
    let study = c.study(&ws, COHORT_STATS_RUST, &["--min-group", "1"]);
    // Runs under the grant on every worker, so each has folded the grant into its books.
    for w in &ws {
        let run = c.submit(w, &study, "{}");
        assert_eq!(c.watch(w, &run).0, "released");
    }
    // st_marys revokes through worker 0; the operator deletes that newest policy version,
    // leaving the older version (validly MAC'd, validly signed, granting) as the newest row.
    c.cli(
        &ws[0],
        Some("st_marys"),
        &["policy", "revoke", "--dataset", &study.0],
    )
    .unwrap();
    let deleted = c
        .db()
        .execute(
            "DELETE FROM policies WHERE dataset = $1 AND version = \
             (SELECT MAX(version) FROM policies WHERE dataset = $1)",
            &[&study.0],
        )
        .unwrap();
    assert_eq!(deleted, 1);
    let queued_before = c
        .logged_actions()
        .iter()
        .filter(|(a, _)| a == "run.queued")
        .count();
    // No worker admits under the old grant: each refuses the row as tampered. (The old code
    // read the newest row it found, MAC'd or not, and admitted.)
    let a = format!("st_marys={}", study.0);
    let b = format!("northfield={}", study.1);
    for w in &ws {
        let err = c
            .cli(
                w,
                Some("researcher"),
                &[
                    "run", "submit", "--module", &study.2, "--input", &a, "--input", &b,
                ],
            )
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("policies/{}", study.0))
                && text.contains("not the version the audit log last wrote"),
            "{}: {text}",
            w.name
        );
    }
    let queued_after = c
        .logged_actions()
        .iter()
        .filter(|(a, _)| a == "run.queued")
        .count();
    assert_eq!(queued_before, queued_after);
}

#[test]
fn a_worker_that_lost_the_cluster_lock_writes_nothing() {
    use cleanroomd::store::{LockKey, RowKey, Storage, held_fences};
    use cleanroomd::store_pg::PgStorage;
    use std::sync::Arc;

    let c = cluster();
    let key = [7u8; 32];
    let a = PgStorage::open(c.db_url(), 1, RowKey::derive(&key)).unwrap();
    let b = Arc::new(PgStorage::open(c.db_url(), 1, RowKey::derive(&key)).unwrap());
    let entry = |subject: &str| cleanroom_proto::audit::AuditEntry {
        seq: 0,
        time: 1,
        actor: None,
        action: "run.queued".into(),
        subject: subject.into(),
        detail: Value::Null,
        parties: None,
        salt: "00".into(),
    };

    // Worker A takes the admissions lock and decides...
    let held = a.cluster().unwrap().lock(LockKey::Admissions).unwrap();
    let fences = held_fences();
    assert_eq!(fences, vec![held.fence()]);
    // ...when the operator kills the connection its session lock lives on: the database
    // drops the lock, and A does not know.
    let killed = c
        .db()
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
             AND granted AND ((classid::bigint << 32) | objid::bigint) = $1",
            &[&LockKey::Admissions.id()],
        )
        .unwrap();
    assert_eq!(killed.len(), 1, "the lock holder's backend");

    // Worker B takes the lock (a thread of its own, as another process would) and admits.
    let b2 = b.clone();
    let appended = std::thread::spawn(move || {
        let _lock = b2.cluster().unwrap().lock(LockKey::Admissions).unwrap();
        b2.append_audit(0, entry("run-b"), None, &held_fences())
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(appended.entry.entry.seq, 0);

    // A, still believing it holds the lock, writes its decision: refused, nothing written.
    let err = a
        .append_audit(0, entry("run-a"), None, &fences)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("lost the cluster's Admissions lock"),
        "{err}"
    );
    assert_eq!(
        c.logged_actions(),
        vec![("run.queued".to_string(), "run-b".to_string())]
    );
    // Without a fence (outside any lock section) appends go on as before.
    drop(held);
    assert!(held_fences().is_empty());
    a.append_audit(1, entry("run-c"), None, &[]).unwrap();
}

#[test]
fn a_stalled_worker_writes_nothing_for_a_run_failed_elsewhere() {
    // Leases of 10 s; the analysis loops until its 20 s limit, and its error text is released.
    let c = cluster().with_lease(10);
    let ws = c.three("run_timeout_secs = 20");
    let study = c.study(&ws, INFINITE_LOOP, &["--release-logs"]);
    let run = c.submit(&ws[0], &study, "{}");
    let stalled = &ws[c.holder(&ws, &run)];
    let other = ws.iter().find(|w| w.name != stalled.name).unwrap();
    // The operator stalls the worker running it: its lease runs out, another worker takes the
    // run over and fails it as interrupted.
    stalled.signal("STOP");
    let (state, status) = c.watch(other, &run);
    assert_eq!(state, "failed", "{status}");
    assert_eq!(status["reason"]["code"], "interrupted", "{status}");
    // Resumed, the stalled worker's analysis hits its time limit and the worker concludes:
    // it finds the run failed elsewhere and writes nothing. (The old code wrote the timed-out
    // run's released error text as the result blob of a run the log records as failed, and
    // only then found the row changed.)
    stalled.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !stalled
        .log()
        .lines()
        .any(|l| l.contains("run failed inside the service") && l.contains(&run))
    {
        assert!(Instant::now() < deadline, "{}", stalled.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !c.object("results", &run).exists(),
        "a result blob was written"
    );
    assert!(!c.object("held", &run).exists(), "a held blob was written");
    let log = c.logged_actions();
    assert_eq!(count(&log, "run.failed", &run), 1);
    assert_eq!(count(&log, "run.released", &run), 0);
    let (state, _) = c.watch(other, &run);
    assert_eq!(state, "failed");
}

#[test]
fn cancels_and_revocations_reach_the_worker_running_the_run() {
    let c = cluster();
    let ws = c.three("run_timeout_secs = 300");
    let study = c.study(&ws, INFINITE_LOOP, &[]);

    // The researcher cancels through a worker that does not run the run (the old code
    // answered that the run was already running, and it ran to its time limit).
    let run = c.submit(&ws[0], &study, "{}");
    let holder = c.holder(&ws, &run);
    let other = (holder + 1) % 3;
    c.cli(&ws[other], Some("researcher"), &["run", "cancel", &run])
        .unwrap();
    let (state, status) = c.watch(&ws[other], &run);
    assert_eq!(state, "cancelled", "{status}");
    assert_eq!(count(&c.logged_actions(), "run.cancel_requested", &run), 1);

    // An owner revokes through a worker that does not run the run: the worker running it
    // stops it at once, and nothing is released.
    let run = c.submit(&ws[0], &study, "{}");
    let holder = c.holder(&ws, &run);
    let other = (holder + 1) % 3;
    c.cli(
        &ws[other],
        Some("st_marys"),
        &["policy", "revoke", "--dataset", &study.0],
    )
    .unwrap();
    let (state, status) = c.watch(&ws[holder], &run);
    assert_eq!(state, "withheld", "{status}");
    assert_eq!(status["reason"]["code"], "revoked_during_run", "{status}");
    assert_eq!(count(&c.logged_actions(), "run.released", &run), 0);
}

#[test]
fn a_joiner_below_the_deployments_tcb_floor_gets_no_keys() {
    // The simulated platform reports bootloader 3, tee 0, snp 8, microcode 115.
    let floor = "minimum_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }";
    let c = cluster();
    let w1 = c.spawn("w1", None, floor);
    // A worker on older SNP firmware, same image and deployment: refused (the old code
    // accepted joiners at any TCB).
    let older = format!(
        "{floor}\nsimulation_tcb = {{ bootloader = 3, tee = 0, snp = 7, microcode = 115 }}"
    );
    let err = c.try_spawn("w2", Some(&w1.url), &older).err().unwrap();
    let text = format!("{err:#}");
    assert!(
        text.contains("refused to release the key") && text.to_lowercase().contains("tcb"),
        "{text}"
    );
    // On a platform that meets the floor, it joins.
    let w3 = c.spawn("w3", Some(&w1.url), floor);
    let keys: Vec<Value> = [&w1, &w3]
        .iter()
        .map(|w| c.cli(w, None, &["attest", "verify"]).unwrap()["enclave_keys"].clone())
        .collect();
    assert_eq!(keys[0], keys[1]);
}
