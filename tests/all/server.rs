//! A real cleanroomd on 127.0.0.1, driven through the `cleanroom` CLI as
//! owners and researchers drive it: the allow/deny matrix, review, receipts,
//! the audit log, and a load test.

use std::path::{Path, PathBuf};

use cleanroom_tests::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A server in its own data directory, on its own tokio runtime.
pub(crate) struct TestServer {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) url: String,
    pub(crate) measurement: String,
    server: Option<cleanroomd::Server>,
    rt: tokio::runtime::Runtime,
}

impl TestServer {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir)
    }

    pub(crate) fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_configured(dir, |_| {})
    }

    /// Start with `edit` applied to the simulation configuration.
    pub(crate) fn start_configured(
        dir: tempfile::TempDir,
        edit: impl FnOnce(&mut cleanroomd::Config),
    ) -> Self {
        let (rt, started) = Self::try_start_configured(&dir, edit);
        let server = started.expect("cleanroomd starts");
        let url = format!("https://{}", server.addr());
        let measurement = server.service().measurement.clone();
        Self {
            dir,
            url,
            measurement,
            server: Some(server),
            rt,
        }
    }

    /// Start a simulation server on `dir` (loopback, any port): its runtime and the outcome.
    pub(crate) fn try_start(
        dir: &tempfile::TempDir,
    ) -> (tokio::runtime::Runtime, anyhow::Result<cleanroomd::Server>) {
        Self::try_start_configured(dir, |_| {})
    }

    /// [`TestServer::try_start`] with `edit` applied to the configuration.
    pub(crate) fn try_start_configured(
        dir: &tempfile::TempDir,
        edit: impl FnOnce(&mut cleanroomd::Config),
    ) -> (tokio::runtime::Runtime, anyhow::Result<cleanroomd::Server>) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut config = cleanroomd::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("server"),
            insecure_simulation: true,
            ..Default::default()
        };
        edit(&mut config);
        let started = rt.block_on(cleanroomd::start(config, true));
        (rt, started)
    }

    pub(crate) fn stop(mut self) -> tempfile::TempDir {
        let server = self.server.take().expect("running");
        self.rt.block_on(server.shutdown()).unwrap();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// Entries in the server's audit log.
    pub(crate) fn service_audit_len(&self) -> u64 {
        self.server.as_ref().expect("running").service().audit.len()
    }

    /// An HTTP agent on this server's attested TLS session.
    pub(crate) fn agent(&self) -> ureq::Agent {
        cleanroom_cli::attested_agent(&self.url, &self.measurement, true).unwrap()
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Run a CLI command against this server; returns its JSON output.
    pub(crate) fn cli(&self, key: Option<&str>, args: &[&str]) -> anyhow::Result<Value> {
        let mut argv: Vec<String> = vec!["cleanroom".into()];
        argv.extend(args.iter().map(|s| s.to_string()));
        argv.extend(["--server".into(), self.url.clone(), "--json".into()]);
        // Every connection is attested: the simulation's measurement, unless a test says.
        if !args.contains(&"--measurement") {
            argv.extend(self.trust());
        }
        if let Some(k) = key {
            argv.extend([
                "--key".into(),
                self.path(&format!("{k}.json")).display().to_string(),
            ]);
        }
        cleanroom_cli::run_capture(argv)
    }

    pub(crate) fn trust(&self) -> [String; 3] {
        [
            "--measurement".into(),
            self.measurement.clone(),
            "--accept-insecure-simulation".into(),
        ]
    }

    pub(crate) fn enclave_keys(&self) -> Value {
        let trust = self.trust();
        let mut args = vec!["attest", "verify"];
        args.extend(trust.iter().map(String::as_str));
        self.cli(None, &args).unwrap()["enclave_keys"].clone()
    }

    pub(crate) fn keygen(&self, name: &str) -> String {
        let path = self.path(&format!("{name}.json"));
        cleanroom_cli::run(["cleanroom", "keygen", "-o", path.to_str().unwrap()]).unwrap();
        cleanroom_proto::Identity::load(&path)
            .unwrap()
            .party()
            .to_string()
    }
}

/// Two hospitals with datasets, a researcher, and a module; no grants yet.
pub(crate) struct Study {
    pub s: TestServer,
    pub(crate) a: String,
    pub(crate) b: String,
    pub(crate) module: String,
    pub(crate) researcher: String,
}

pub(crate) fn push(s: &TestServer, key: &str, csv: &str, file: &str) -> String {
    std::fs::write(s.path(file), csv).unwrap();
    let path = s.path(file).display().to_string();
    let trust = s.trust();
    let mut args = vec!["dataset", "push", &path];
    args.extend(trust.iter().map(String::as_str));
    let out = s.cli(Some(key), &args).unwrap();
    out["id"].as_str().unwrap().to_string()
}

pub(crate) fn push_module(s: &TestServer, path: &str) -> String {
    let out = s
        .cli(Some("researcher"), &["module", "push", path])
        .unwrap();
    let module = out["module"].as_str().unwrap().to_string();
    assert_eq!(
        module,
        hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
    );
    module
}

impl Study {
    pub(crate) fn new() -> Self {
        Self::with_data(SITE_A_CSV, SITE_B_CSV)
    }

    /// The study on other hospital tables (same layouts).
    pub(crate) fn with_data(site_a: &str, site_b: &str) -> Self {
        let s = TestServer::start();
        s.keygen("st_marys");
        s.keygen("northfield");
        let researcher = s.keygen("researcher");
        s.keygen("stranger");
        let a = push(&s, "st_marys", site_a, "a.csv");
        let b = push(&s, "northfield", site_b, "b.csv");
        let module = push_module(&s, COHORT_STATS_RUST);
        Self {
            s,
            a,
            b,
            module,
            researcher,
        }
    }

    /// Stop the server, let `tamper` edit its blob directory, start it again.
    pub(crate) fn restart(self, tamper: impl FnOnce(&Path)) -> Self {
        let Self {
            s,
            a,
            b,
            module,
            researcher,
        } = self;
        let dir = s.stop();
        tamper(&dir.path().join("server/blobs"));
        Self {
            s: TestServer::start_in(dir),
            a,
            b,
            module,
            researcher,
        }
    }

    pub(crate) fn grant(
        &self,
        owner: &str,
        dataset: &str,
        module: &str,
        extra: &[&str],
    ) -> anyhow::Result<Value> {
        let mut args = vec!["policy", "grant", "--dataset", dataset, "--module", module];
        args.extend(extra);
        // Name the researcher or say any; a grant to any researcher must cap its runs or
        // say it is unlimited.
        if !extra.contains(&"--researcher") {
            args.push("--any-researcher");
            if !extra.contains(&"--max-runs") {
                args.push("--unlimited");
            }
        }
        self.s.cli(Some(owner), &args)
    }

    /// Both owners grant `module`, with their identifier columns and `extra`.
    pub(crate) fn grant_both_module(&self, module: &str, extra: &[&str]) {
        self.grant(
            "st_marys",
            &self.a,
            module,
            &[&["--identifier", "patient_id"], extra].concat(),
        )
        .unwrap();
        self.grant(
            "northfield",
            &self.b,
            module,
            &[&["--identifier", "mrn"], extra].concat(),
        )
        .unwrap();
    }

    pub(crate) fn grant_both(&self, extra: &[&str]) {
        self.grant(
            "st_marys",
            &self.a,
            &self.module,
            &[&["--identifier", "patient_id"], extra].concat(),
        )
        .unwrap();
        self.grant(
            "northfield",
            &self.b,
            &self.module,
            &[&["--identifier", "mrn"], extra].concat(),
        )
        .unwrap();
    }

    pub(crate) fn submit(&self, module: &str, params: &str) -> anyhow::Result<String> {
        self.submit_as("researcher", module, params)
    }

    pub(crate) fn submit_as(
        &self,
        key: &str,
        module: &str,
        params: &str,
    ) -> anyhow::Result<String> {
        let a = format!("st_marys={}", self.a);
        let b = format!("northfield={}", self.b);
        let out = self.s.cli(
            Some(key),
            &[
                "run", "submit", "--module", module, "--input", &a, "--input", &b, "--params",
                params,
            ],
        )?;
        Ok(out["run"].as_str().unwrap().to_string())
    }

    /// Wait for a run to end in `state` with reason code `code`.
    pub(crate) fn expect_end(&self, run: &str, state: &str, code: &str) -> Value {
        let (got, status) = self.watch(run);
        assert_eq!(got, state, "{status}");
        assert_eq!(status["reason"]["code"], code, "{status}");
        status
    }

    /// Wait for a run's final (or held) state.
    pub(crate) fn watch(&self, run: &str) -> (String, Value) {
        match self.s.cli(Some("researcher"), &["run", "watch", run]) {
            Ok(v) => (v["state"].as_str().unwrap().to_string(), v),
            Err(e) => {
                let status = self.status(run);
                assert!(e.to_string().contains("ended"), "{e:#}");
                (status["state"].as_str().unwrap().to_string(), status)
            }
        }
    }

    pub(crate) fn status(&self, run: &str) -> Value {
        let path = format!("/v1/runs/{run}");
        signed_get(&self.s, "researcher", &path)
    }

    /// Everything `key` may read of the audit log, as text (all pages).
    pub(crate) fn audit_text(&self, key: &str) -> String {
        let mut text = String::new();
        let mut from = 0;
        loop {
            let page = signed_get(&self.s, key, &format!("/v1/audit?from={from}"));
            text.push_str(&page.to_string());
            match page["next"].as_u64() {
                Some(n) => from = n,
                None => return text,
            }
        }
    }

    /// The actions of the audit entries `key` may read in full.
    pub(crate) fn audit_actions(&self, key: &str) -> Vec<String> {
        audit_actions_of(&self.s, key)
    }

    pub(crate) fn fetch(&self, run: &str) -> anyhow::Result<PathBuf> {
        let out = self.s.path(&format!("results-{run}"));
        let trust = self.s.trust();
        let out_s = out.display().to_string();
        let mut args = vec!["result", "fetch", run, "--out", &out_s];
        args.extend(trust.iter().map(String::as_str));
        self.s.cli(Some("researcher"), &args).map(|_| out)
    }
}

/// A signed request with the party's key, bypassing the CLI: the raw response.
pub(crate) fn signed_request_raw(
    s: &TestServer,
    key: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> ureq::http::Response<ureq::Body> {
    let id = cleanroom_proto::Identity::load(&s.path(&format!("{key}.json"))).unwrap();
    signed_request(&s.agent(), &id, &s.url, method, path, body)
}

/// A signed GET with the party's key, bypassing the CLI: the raw response.
pub(crate) fn signed_get_raw(
    s: &TestServer,
    key: &str,
    path: &str,
) -> ureq::http::Response<ureq::Body> {
    signed_request_raw(s, key, "GET", path, b"")
}

/// The actions of the audit entries `key` may read in full (first page).
pub(crate) fn audit_actions_of(s: &TestServer, key: &str) -> Vec<String> {
    let page = signed_get(s, key, "/v1/audit?from=0");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["entry"]["action"].as_str().map(str::to_string))
        .collect()
}

/// A signed GET with the party's key, bypassing the CLI (for raw checks).
pub(crate) fn signed_get(s: &TestServer, key: &str, path: &str) -> Value {
    let resp = signed_get_raw(s, key, path);
    serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap()
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn err_text(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", r.expect_err("expected a refusal"))
}

#[test]
fn study_runs_and_releases_with_verified_receipt_and_audit() {
    let st = Study::new();
    // Owners' k = 4 is stricter than the analysis's own min_group 1: the
    // enclave suppresses E11 (1 patient) itself.
    st.grant_both(&["--min-group", "4"]);
    let run = st.submit(&st.module, r#"{"min_group": 1}"#).unwrap();
    assert_eq!(st.watch(&run).0, "released");
    let out = st.fetch(&run).unwrap();
    assert_eq!(
        read(&out.join("cohort_stats.csv")),
        "group,patients,mean_age,mean_los_days,mortality_pct\nI21,4,62.5,5.0,25.0\nJ18,4,57.5,6.25,50.0\n"
    );
    let saved: cleanroom_proto::receipt::LoggedReceipt =
        serde_json::from_str(&read(&out.join("receipt.json"))).unwrap();
    let receipt = &saved.receipt.receipt;
    assert_eq!(receipt.module, st.module);
    assert_eq!(receipt.inputs.len(), 2);
    assert!(
        !out.join("log.txt").exists(),
        "logs are withheld unless every owner releases them"
    );

    // The free-form JSON summary cannot be checked: nobody reviews, so it is refused.
    assert!(!out.join("summary.json").exists());
    let status = st.status(&run);
    assert_eq!(status["outputs"][0]["disposition"], "release");
    assert_eq!(status["outputs"][1]["disposition"], "refuse");
    assert_eq!(status["outputs"][1]["codes"][0], "unchecked_refused");
    assert_eq!(
        receipt.outputs.len(),
        1,
        "the receipt lists what was released"
    );

    // Anyone can check the receipt offline: signed by the attested enclave, and its run's
    // release is in the audit log (an inclusion proof in a signed tree head).
    let enclave = st.s.enclave_keys()["signing_public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let file = out.join("receipt.json").display().to_string();
    let checked =
        st.s.cli(
            None,
            &["receipt", "verify", &file, "--enclave-key", &enclave],
        )
        .unwrap();
    assert_eq!(checked["verified"], true);
    assert_eq!(checked["entry"], saved.logged.entry.seq);
    // A receipt edited to claim another output, a log entry that names another receipt, or
    // a proof against another head: refused.
    let tampered = |edit: &dyn Fn(&mut cleanroom_proto::receipt::LoggedReceipt)| {
        let mut copy = saved.clone();
        edit(&mut copy);
        let path = st.s.path("tampered-receipt.json");
        std::fs::write(&path, serde_json::to_vec(&copy).unwrap()).unwrap();
        let path = path.display().to_string();
        err_text(st.s.cli(None, &["receipt", "verify", &path]))
    };
    let err = tampered(&|r| r.receipt.receipt.outputs.clear());
    assert!(err.contains("does not verify"), "{err}");
    let err = tampered(&|r| r.logged.entry.detail["receipt"] = "00".repeat(32).into());
    assert!(err.contains("naming this receipt"), "{err}");
    let err = tampered(&|r| r.logged.head.size += 1);
    assert!(err.contains("does not verify"), "{err}");
    let other = cleanroom_proto::Identity::generate().party().to_string();
    let err = err_text(st.s.cli(None, &["receipt", "verify", &file, "--enclave-key", &other]));
    assert!(err.contains("does not verify"), "{err}");

    let trust = st.s.trust();
    let mut args = vec!["audit", "verify"];
    args.extend(trust.iter().map(String::as_str));
    let audit = st.s.cli(Some("researcher"), &args).unwrap();
    assert_eq!(audit["verified"], true);
    let actions = st.audit_actions("researcher");
    assert!(
        !actions.iter().any(|a| a == "dataset.uploaded"),
        "an owner's upload is the owner's: others see its hash"
    );
    for expected in [
        "module.uploaded",
        "policy.granted",
        "run.queued",
        "run.started",
        "run.released",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "audit log lacks {expected}: {actions:?}"
        );
    }
}

#[test]
fn a_tampered_audit_log_does_not_verify() {
    let st = Study::new();
    st.grant_both(&[]);
    let saved = st.s.path("audit.json");
    let trust = st.s.trust();
    let saved_s = saved.display().to_string();
    let mut args = vec!["audit", "verify", "--save", &saved_s];
    args.extend(trust.iter().map(String::as_str));
    let verified = st.s.cli(Some("researcher"), &args).unwrap();
    let enclave = verified["head"]["enclave_key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut log: Value = serde_json::from_str(&read(&saved)).unwrap();
    let shown = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .position(|i| !i["entry"].is_null())
        .unwrap();
    log["items"][shown]["entry"]["subject"] = Value::String("someone-else".into());
    std::fs::write(&saved, serde_json::to_vec(&log).unwrap()).unwrap();
    let err = err_text(st.s.cli(
        Some("researcher"),
        &[
            "audit",
            "verify",
            "--file",
            &saved_s,
            "--enclave-key",
            &enclave,
        ],
    ));
    assert!(err.contains("does not verify"), "{err}");
}

#[test]
fn unsigned_stale_and_replayed_requests_are_refused_and_audited() {
    let st = Study::new();
    let url = format!("{}/v1/runs", st.s.url);
    let agent = st.s.agent();
    let unsigned = agent.post(&url).send("{}").unwrap();
    assert_eq!(unsigned.status(), 401);

    let id = cleanroom_proto::Identity::load(&st.s.path("researcher.json")).unwrap();
    let send = |created: u64, nonce: &str| {
        let h = cleanroom_proto::httpsig::sign_request(&id, "GET", "/v1/runs", b"", created, nonce);
        agent
            .get(&url)
            .header("content-digest", &h.content_digest)
            .header("signature-input", &h.signature_input)
            .header("signature", &h.signature)
            .call()
            .unwrap()
    };
    let stale = send(cleanroomd::now() - 3600, "stale-nonce-0123456789");
    assert_eq!(stale.status(), 401);
    let fresh = send(cleanroomd::now(), "replay-nonce-0123456789");
    assert_eq!(fresh.status(), 200);
    let replayed = send(cleanroomd::now(), "replay-nonce-0123456789");
    assert_eq!(replayed.status(), 401);
    assert!(
        replayed
            .into_body()
            .read_to_string()
            .unwrap()
            .contains("nonce reused")
    );

    // The replay came from a known party: it sees its own refusal. Unsigned and stale
    // requests have no party: they are in the log as hashes for everyone.
    assert!(
        st.audit_actions("researcher")
            .iter()
            .any(|a| a == "request.refused")
    );
    let metrics = |s: &TestServer| -> u64 {
        let text = signed_get_raw(s, "researcher", "/metrics")
            .into_body()
            .read_to_string()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("cleanroom_requests_refused_total "))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(metrics(&st.s), 3, "every refusal is counted");
    // A flood of refusals is counted, and audited compactly: the log does not grow with it.
    let before = st.s.service_audit_len();
    for _ in 0..200 {
        assert_eq!(agent.post(&url).send("{}").unwrap().status(), 401);
    }
    assert_eq!(metrics(&st.s), 203);
    let grown = st.s.service_audit_len() - before;
    assert!(
        grown <= 2,
        "200 refusals grew the audit log by {grown} entries"
    );
}

#[test]
fn deny_matrix() {
    let st = Study::new();
    let stranger = st.s.keygen("stranger2");

    // Nothing granted yet.
    let err = err_text(st.submit(&st.module, "{}"));
    assert!(err.contains("has no policy"), "{err}");

    // Only one owner grants: the other input still refuses.
    st.grant("st_marys", &st.a, &st.module, &[]).unwrap();
    let err = err_text(st.submit(&st.module, "{}"));
    assert!(
        err.contains(&format!("dataset {} has no policy", st.b)),
        "{err}"
    );

    // The wrong owner cannot set a policy on someone else's dataset: the CLI will not
    // build on a policy it did not sign, and the server refuses one signed by another.
    let err = err_text(st.grant("northfield", &st.a, &st.module, &[]));
    assert!(err.contains("not signed by you"), "{err}");
    let northfield = cleanroom_proto::Identity::load(&st.s.path("northfield.json")).unwrap();
    let mut policy = signed_get(&st.s, "st_marys", &format!("/v1/datasets/{}/policy", st.a));
    policy["policy"]["version"] = 99.into();
    let forged = cleanroom_proto::SignedPolicy::sign(
        serde_json::from_value(policy["policy"].clone()).unwrap(),
        &northfield,
    );
    let path = format!("/v1/datasets/{}/policy", st.a);
    let body = serde_json::to_vec(&forged).unwrap();
    let resp = signed_request_raw(&st.s, "northfield", "PUT", &path, &body);
    assert_eq!(
        resp.status(),
        403,
        "only the dataset's owner may set its policy"
    );

    // Granted to another researcher only.
    st.grant(
        "northfield",
        &st.b,
        &st.module,
        &["--researcher", &stranger],
    )
    .unwrap();
    let err = err_text(st.submit(&st.module, "{}"));
    assert!(
        err.contains("researcher_not_named") && err.contains(&format!("dataset {}", st.b)),
        "{err}"
    );

    // Params pinned: other params are refused.
    st.grant(
        "northfield",
        &st.b,
        &st.module,
        &[
            "--researcher",
            &st.researcher,
            "--params",
            r#"{"min_group":3}"#,
        ],
    )
    .unwrap();
    let err = err_text(st.submit(&st.module, r#"{"min_group":1}"#));
    assert!(err.contains("params"), "{err}");
    let ok = st.submit(&st.module, r#"{"min_group":3}"#).unwrap();
    assert_eq!(st.watch(&ok).0, "released");

    // An unapproved module hash.
    let other = push_module(&st.s, ECHO);
    let err = err_text(st.submit(&other, "{}"));
    assert!(err.contains("does not grant module"), "{err}");

    // Expired and exhausted grants.
    st.grant("st_marys", &st.a, &other, &["--expires-in-days", "0"])
        .unwrap();
    st.grant("northfield", &st.b, &other, &[]).unwrap();
    let err = err_text(st.submit(&other, "{}"));
    assert!(err.contains("expired"), "{err}");
    st.grant("st_marys", &st.a, &other, &["--max-runs", "1"])
        .unwrap();
    let first = st.submit(&other, "{}").unwrap();
    // Admitted and run; its only output is free-form JSON, which nobody reviews: refused.
    st.expect_end(&first, "withheld", "unchecked_refused");
    let err = err_text(st.submit(&other, "{}"));
    assert!(err.contains("run_limit_reached"), "{err}");

    // Revocation stops new runs at once.
    st.s.cli(Some("st_marys"), &["policy", "revoke", "--dataset", &st.a])
        .unwrap();
    let err = err_text(st.submit(&st.module, r#"{"min_group":3}"#));
    assert!(err.contains("revoked"), "{err}");
}

#[test]
fn hidden_columns_never_reach_the_guest() {
    let st = Study::new();
    st.grant("st_marys", &st.a, &st.module, &["--hide", "age"])
        .unwrap();
    st.grant("northfield", &st.b, &st.module, &[]).unwrap();
    let run = st.submit(&st.module, "{}").unwrap();
    let status = st.expect_end(&run, "failed", "analysis_error");
    assert!(
        !status.to_string().contains("missing column"),
        "the module's error text is not a status: {status}"
    );
    // Its text is an output: it reaches the researcher only where every owner releases logs.
    assert!(st.fetch(&run).is_err(), "nothing was released");
    st.grant(
        "st_marys",
        &st.a,
        &st.module,
        &["--hide", "age", "--release-logs"],
    )
    .unwrap();
    st.grant("northfield", &st.b, &st.module, &["--release-logs"])
        .unwrap();
    let run = st.submit(&st.module, "{}").unwrap();
    st.expect_end(&run, "failed", "analysis_error");
    let out = st.fetch(&run).unwrap();
    assert!(read(&out.join("error.txt")).contains("missing column \"age\""));
}

#[test]
fn identifiers_in_outputs_are_never_released() {
    let st = Study::new();
    let copier = push_module(&st.s, COPY_TABLE);
    st.grant(
        "st_marys",
        &st.a,
        &copier,
        &["--identifier", "patient_id", "--min-group", "1"],
    )
    .unwrap();
    st.grant(
        "northfield",
        &st.b,
        &copier,
        &["--identifier", "mrn", "--min-group", "1"],
    )
    .unwrap();
    let run = st.submit(&copier, "{}").unwrap();
    st.expect_end(&run, "withheld", "identifier_column");
    let err = err_text(st.fetch(&run));
    assert!(err.contains("withheld"), "{err}");
}

#[test]
fn small_groups_can_refuse_and_outputs_are_size_capped() {
    let st = Study::new();
    st.grant_both(&["--min-group", "5", "--refuse-small-groups"]);
    let run = st.submit(&st.module, r#"{"min_group": 1}"#).unwrap();
    st.expect_end(&run, "withheld", "small_groups_refused");

    st.grant(
        "northfield",
        &st.b,
        &st.module,
        &["--identifier", "mrn", "--max-output-mib", "0"],
    )
    .unwrap();
    // The owners' byte limit is the sandbox's output budget: the run ends
    // as soon as it publishes more.
    let run = st.submit(&st.module, r#"{"min_group": 10}"#).unwrap();
    st.expect_end(&run, "failed", "output_limit");
}

#[test]
fn review_holds_outputs_until_every_reviewer_releases() {
    let st = Study::new();
    st.grant_both(&["--review", "--min-group", "3"]);
    let run = st.submit(&st.module, "{}").unwrap();
    let (state, status) = st.watch(&run);
    assert_eq!(state, "held_for_review");
    assert_eq!(status["pending_reviews"].as_array().unwrap().len(), 2);
    let err = err_text(st.fetch(&run));
    assert!(err.contains("held_for_review"), "{err}");
    // The researcher cannot review.
    let err = err_text(st.s.cli(Some("researcher"), &["review", "release", &run]));
    assert!(
        err.contains("does not await your review") || err.contains("no run"),
        "{err}"
    );
    st.s.cli(Some("st_marys"), &["review", "release", &run])
        .unwrap();
    assert_eq!(
        st.status(&run)["state"],
        "held_for_review",
        "one reviewer is still pending"
    );
    st.s.cli(
        Some("northfield"),
        &["review", "release", &run, "--reason", "aggregates only"],
    )
    .unwrap();
    assert_eq!(st.status(&run)["state"], "released");
    st.fetch(&run).unwrap();

    // A withhold by any reviewer ends the run.
    let run = st.submit(&st.module, "{}").unwrap();
    assert_eq!(st.watch(&run).0, "held_for_review");
    st.s.cli(
        Some("northfield"),
        &["review", "withhold", &run, "--reason", "not yet"],
    )
    .unwrap();
    let status = st.status(&run);
    assert_eq!(status["state"], "withheld");
    assert_eq!(status["reason"]["code"], "withheld_by_reviewer");
    assert!(
        status["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("not yet")
    );
}

/// `GET /v1/runs/{id}?wait=N` answers when the run leaves the state it was in, so clients
/// follow a run without polling; a stranger waiting on someone else's run learns nothing.
#[test]
fn a_status_request_waits_for_the_run_to_change() {
    let st = Study::new();
    st.grant_both(&["--review", "--min-group", "3"]);
    let run = st.submit(&st.module, "{}").unwrap();
    assert_eq!(st.watch(&run).0, "held_for_review");
    // A stranger's wait is refused at once, like any look at another party's run.
    let seen = signed_get(&st.s, "stranger", &format!("/v1/runs/{run}?wait=30"));
    assert_eq!(seen["type"], "not-found");
    // Unknown parameters are refused, not ignored.
    let seen = signed_get(&st.s, "researcher", &format!("/v1/runs/{run}?wiat=30"));
    assert_eq!(seen["type"], "bad-request", "{seen}");
    let after_review = std::thread::scope(|scope| {
        let waiting =
            scope.spawn(|| signed_get(&st.s, "researcher", &format!("/v1/runs/{run}?wait=30")));
        // The first release changes the run's row but not its state: the wait goes on.
        st.s.cli(Some("st_marys"), &["review", "release", &run])
            .unwrap();
        st.s.cli(Some("northfield"), &["review", "release", &run])
            .unwrap();
        waiting.join().unwrap()
    });
    assert_eq!(after_review["state"], "released", "{after_review}");
}

#[test]
fn another_party_cannot_see_or_fetch_a_run() {
    let st = Study::new();
    st.grant_both(&["--min-group", "3"]);
    let run = st.submit(&st.module, "{}").unwrap();
    assert_eq!(st.watch(&run).0, "released");
    let seen = signed_get(&st.s, "stranger", &format!("/v1/runs/{run}"));
    assert_eq!(seen["type"], "not-found");
    let seen = signed_get(&st.s, "stranger", &format!("/v1/runs/{run}/result"));
    assert_eq!(seen["type"], "not-found");
}

#[test]
fn load_200_runs_with_concurrency_8_none_lost() {
    let st = Study::new();
    let echo = push_module(&st.s, ECHO);
    st.grant("st_marys", &st.a, &echo, &[]).unwrap();
    st.grant("northfield", &st.b, &echo, &[]).unwrap();
    let runs = spread(8, 200, |_| st.submit(&echo, "{}").unwrap());
    assert_eq!(runs.len(), 200);
    let unique: std::collections::BTreeSet<_> = runs.iter().collect();
    assert_eq!(unique.len(), 200);
    for run in &runs {
        // Echo publishes only free-form JSON, which nobody reviews here: every run ends,
        // none is lost, and nothing unchecked is released.
        assert_eq!(st.watch(run).0, "withheld", "run {run}");
    }
    let listed = signed_get(&st.s, "researcher", "/v1/runs");
    assert_eq!(listed["runs"].as_array().unwrap().len(), 200);
}

#[test]
fn state_survives_a_restart() {
    let st = Study::new();
    st.grant_both(&["--min-group", "3"]);
    let run = st.submit(&st.module, "{}").unwrap();
    assert_eq!(st.watch(&run).0, "released");
    let enclave_before = st.s.enclave_keys();
    let st = st.restart(|_| {});
    assert_eq!(
        enclave_before,
        st.s.enclave_keys(),
        "the sealed identity is restored"
    );
    st.fetch(&run).unwrap();
    let run = st.submit(&st.module, "{}").unwrap();
    assert_eq!(
        st.watch(&run).0,
        "released",
        "the restored enclave still opens the sealed datasets"
    );
}

/// Flip a bit in the middle of a file.
fn flip(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn tampered_module_files_on_disk_are_never_run() {
    let st = Study::new();
    st.grant_both(&["--min-group", "3"]);
    let module = st.module.clone();
    // A modified sealed artifact does not open: it is refused and the module
    // is recompiled from its (hash-checked) component bytes.
    let st = st.restart(|blobs| flip(&blobs.join("artifacts").join(&module)));
    let run = st.submit(&st.module, "{}").unwrap();
    assert_eq!(st.watch(&run).0, "released");

    // Modified component bytes (and no usable artifact) are refused outright.
    let st = st.restart(|blobs| {
        flip(&blobs.join("modules").join(&module));
        flip(&blobs.join("artifacts").join(&module));
    });
    let run = st.submit(&st.module, "{}").unwrap();
    st.expect_end(&run, "failed", "internal");
}

/// Live events for `key`, one JSON value per `data:` line, on a channel.
pub(crate) fn subscribe(s: &TestServer, key: &str) -> std::sync::mpsc::Receiver<Value> {
    use std::io::BufRead;
    let resp = signed_get_raw(s, key, "/v1/events");
    assert_eq!(resp.status(), 200);
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Some(data) = line.strip_prefix("data: ")
                && tx.send(serde_json::from_str(data).unwrap()).is_err()
            {
                break;
            }
        }
    });
    rx
}

#[test]
fn live_events_reach_only_the_parties_concerned() {
    let st = Study::new();
    let researcher = subscribe(&st.s, "researcher");
    let stranger = subscribe(&st.s, "stranger");
    st.grant_both(&["--min-group", "3"]);
    let run = st.submit(&st.module, "{}").unwrap();
    let wait = std::time::Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.iter().any(|a: &String| a == "run.released") {
        let event = researcher
            .recv_timeout(wait)
            .expect("the researcher sees their run's events");
        if event["entry"]["subject"] == run.as_str() {
            seen.push(event["entry"]["action"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(seen, ["run.queued", "run.started", "run.released"]);
    // The stranger sees public events (grants) but nothing of this run.
    while let Ok(event) = stranger.recv_timeout(std::time::Duration::from_millis(500)) {
        assert_ne!(
            event["entry"]["subject"],
            run.as_str(),
            "a stranger saw someone else's run"
        );
    }
}

#[test]
fn access_requests_reach_only_the_owners_asked_and_grant_nothing() {
    let st = Study::new();
    let params = r#"{"group_by":"diagnosis"}"#;
    let asked =
        st.s.cli(
            Some("researcher"),
            &[
                "run",
                "request",
                "--module",
                &st.module,
                "--input",
                &format!("st_marys={}", st.a),
                "--params",
                params,
                "--note",
                "cohort statistics",
            ],
        )
        .unwrap();
    assert_eq!(
        asked["params_digest"],
        cleanroom_proto::run::params_digest(params)
    );
    // St Mary's (asked) reads the request in full; Northfield (not asked) and a stranger see
    // only its hash.
    let entry = |key: &str| -> Option<Value> {
        let page = signed_get(&st.s, key, "/v1/audit?from=0");
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["entry"]["action"] == "access.requested")
            .map(|i| i["entry"].clone())
    };
    let seen = entry("st_marys").expect("the owner asked sees the request");
    assert_eq!(seen["detail"]["request"]["params"], params);
    assert_eq!(seen["detail"]["request"]["note"], "cohort statistics");
    assert_eq!(seen["subject"], st.module.as_str());
    assert!(entry("northfield").is_none());
    assert!(entry("stranger").is_none());
    // Asking grants nothing: the run is still refused.
    let refused = err_text(st.submit(&st.module, params));
    assert!(refused.contains("no_policy"), "{refused}");

    // Requests no owner could act on are refused, and nothing is recorded for them.
    let before = st.s.service_audit_len();
    let request = |body: Value| {
        let resp = signed_request_raw(
            &st.s,
            "researcher",
            "POST",
            "/v1/requests",
            body.to_string().as_bytes(),
        );
        let status = resp.status().as_u16();
        (status, resp.into_body().read_to_string().unwrap())
    };
    let inputs = serde_json::json!({ "st_marys": st.a });
    for (body, why) in [
        (
            serde_json::json!({ "module": "ab".repeat(32), "inputs": inputs }),
            "not uploaded",
        ),
        (
            serde_json::json!({ "module": st.module, "inputs": { "x": "00".repeat(16) } }),
            "no dataset",
        ),
        (
            serde_json::json!({ "module": st.module, "inputs": {} }),
            "at least one input",
        ),
        (
            serde_json::json!({ "module": st.module, "inputs": inputs, "note": "x".repeat(1001) }),
            "note",
        ),
        (
            serde_json::json!({ "module": st.module, "inputs": inputs, "grant": true }),
            "unknown field",
        ),
    ] {
        let (status, text) = request(body);
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(why), "{why}: {text}");
    }
    assert_eq!(st.s.service_audit_len(), before);
}
