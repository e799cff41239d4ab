//! Three cleanroomd workers on loopback sharing one PostgreSQL and one S3-compatible object
//! store (started by `scripts/cluster-services.sh`, which `scripts/test.sh` runs): one enclave
//! identity by attested key release, runs claimed exactly once, a worker killed mid-run, a
//! worker without valid evidence, and the operator editing rows and objects.

use cleanroom_tests::cluster::{Cluster, Worker, count};
use cleanroom_tests::*;
use serde_json::Value;

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
    let holder = loop {
        let row = c
            .db()
            .query_opt("SELECT worker FROM run_queue WHERE run_id = $1", &[&run])
            .unwrap()
            .and_then(|r| r.get::<_, Option<String>>(0));
        let (_, status) = c.get(&ws[1], "researcher", &format!("/v1/runs/{run}"));
        assert!(
            matches!(status["state"].as_str(), Some("queued" | "running")),
            "{status}"
        );
        if let Some(worker) = row
            && status["state"] == "running"
        {
            break worker;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let [w1, w2, w3] = ws;
    let (victim, survivors): (Vec<Worker>, Vec<Worker>) = [w1, w2, w3]
        .into_iter()
        .partition(|w| holder.starts_with(&format!("{}-", w.name)));
    assert_eq!(victim.len(), 1, "{holder}");
    victim.into_iter().next().unwrap().kill9();

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
