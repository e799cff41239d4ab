//! Upgrades that keep the data and rollbacks that do not: the running image hands its state
//! key only to an image the author signed with a higher SVN (simulation stands in for
//! SEV-SNP: each simulated measurement has its own sealing key, as on the hardware).

use cleanroom_proto::Identity;
use cleanroom_proto::upgrade::{SignedUpgradeStatement, UpgradeStatement};

use crate::egress::copy_dir;
use crate::server::{TestServer, err_text, push, read};

const OLD: &str = "11";
const NEW: &str = "22";

fn measurement(byte: &str) -> String {
    byte.repeat(48)
}

fn image(author: &Identity, byte: &str, svn: u32) -> impl FnOnce(&mut cleanroomd::Config) {
    let author = author.party();
    let m = measurement(byte);
    move |c: &mut cleanroomd::Config| {
        c.svn = svn;
        c.author_key = Some(author);
        c.simulation_measurement = Some(m);
    }
}

fn statement(author: &Identity, byte: &str, svn: u32) -> SignedUpgradeStatement {
    SignedUpgradeStatement::sign(
        UpgradeStatement {
            measurement: measurement(byte),
            svn,
            issued_at: cleanroomd::now(),
        },
        author.signing_key(),
    )
}

/// The new image's configuration on `dir`.
fn new_config(dir: &tempfile::TempDir, author: &Identity, svn: u32) -> cleanroomd::Config {
    let mut config = cleanroomd::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("server"),
        insecure_simulation: true,
        ..Default::default()
    };
    image(author, NEW, svn)(&mut config);
    config
}

/// A directory for the new image on `old`'s machine (the same simulated chip secret).
fn same_machine(old: &TestServer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("server")).unwrap();
    std::fs::copy(
        old.path("server/simulation-secret"),
        dir.path().join("server/simulation-secret"),
    )
    .unwrap();
    dir
}

/// POST a hand-over request to `old`: (status, body).
fn post(old: &TestServer, request: &cleanroomd::upgrade::HandoverRequest) -> (u16, String) {
    let resp = old
        .agent()
        .post(format!("{}/v1/upgrade/handover", old.url))
        .send(serde_json::to_vec(request).unwrap())
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().read_to_string().unwrap())
}

#[test]
fn an_author_signed_upgrade_keeps_the_state_and_nothing_else_gets_it() {
    let author = Identity::generate();
    let old = TestServer::start_configured(tempfile::tempdir().unwrap(), image(&author, OLD, 1));
    assert_eq!(old.measurement, measurement(OLD));
    old.keygen("owner");
    let dataset = push(&old, "owner", "x\n1\n2\n", "t.csv");
    let enclave = old.enclave_keys()["signing_public_key"].clone();
    // The owner verifies the log (and keeps its head).
    old.cli(Some("owner"), &["audit", "verify"]).unwrap();

    // The new image prepares, on the same machine (same chip secret), its request.
    let new_dir = same_machine(&old);
    let config = new_config(&new_dir, &author, 2);
    let request = |s: SignedUpgradeStatement| {
        cleanroomd::upgrade::handover_request(&config, true, s).unwrap()
    };

    // Another author's statement, a statement at the old SVN (a rollback or a replay), and
    // a statement for another measurement than the evidence's: nothing is handed over.
    let (status, body) = post(&old, &request(statement(&Identity::generate(), NEW, 2)));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("upgrade statement"), "{body}");
    let (status, body) = post(&old, &request(statement(&author, NEW, 1)));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not above"), "{body}");
    let (status, body) = post(&old, &request(statement(&author, "33", 2)));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("evidence"), "{body}");

    // A new deployment that runs at a lower SVN than the statement it presents signs: it
    // could later be handed "up" to an image older than itself. Refused.
    let low = new_config(&new_dir, &author, 1);
    let low =
        cleanroomd::upgrade::handover_request(&low, true, statement(&author, NEW, 2)).unwrap();
    let (status, body) = post(&old, &low);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("does not run at the SVN"), "{body}");

    // The genuine upgrade.
    let (status, body) = post(&old, &request(statement(&author, NEW, 2)));
    assert_eq!(status, 200, "{body}");
    let answer_path = new_dir.path().join("handover.json");
    std::fs::write(&answer_path, &body).unwrap();
    // The old image changes nothing more.
    let err = err_text(old.cli(Some("owner"), &["module", "push", cleanroom_tests::EMPTY]));
    assert!(err.contains("handed its state"), "{err}");

    // The operator moves the disk to the new image.
    let old_dir = old.stop();
    copy_dir(
        &old_dir.path().join("server"),
        &new_dir.path().join("server"),
    );
    std::fs::copy(
        old_dir.path().join("owner.json"),
        new_dir.path().join("owner.json"),
    )
    .unwrap();
    std::fs::copy(
        old_dir.path().join("owner.json.audit-heads.json"),
        new_dir.path().join("owner.json.audit-heads.json"),
    )
    .unwrap();

    // Without the answer the new image cannot open the state.
    let (_rt, started) = TestServer::try_start_configured(&new_dir, image(&author, NEW, 2));
    let err = format!("{:#}", started.unwrap_err());
    assert!(err.contains("sealed by another image"), "{err}");

    let answer = answer_path.clone();
    let new = TestServer::start_configured(new_dir, move |c| {
        image(&author, NEW, 2)(c);
        c.handover = Some(answer);
    });
    assert_eq!(new.measurement, measurement(NEW));
    // Same enclave identity, same data, and the log continues the one the owner verified.
    assert_eq!(new.enclave_keys()["signing_public_key"], enclave);
    let listed = new.cli(Some("owner"), &["dataset", "list"]).unwrap();
    assert_eq!(listed["datasets"][0]["id"], dataset.as_str(), "{listed}");
    new.cli(Some("owner"), &["audit", "verify"]).unwrap();
    let log = read(&new.path("owner.json.audit-heads.json"));
    assert!(!log.is_empty());
    let actions = crate::server::audit_actions_of(&new, "owner");
    assert!(
        actions.iter().any(|a| a == "enclave.handover"),
        "{actions:?}"
    );
}

#[test]
fn a_deployment_without_an_author_key_accepts_no_upgrade() {
    let old = TestServer::start();
    let author = Identity::generate();
    let new_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(new_dir.path().join("server")).unwrap();
    let config = new_config(&new_dir, &author, 2);
    let request =
        cleanroomd::upgrade::handover_request(&config, true, statement(&author, NEW, 2)).unwrap();
    let (status, body) = post(&old, &request);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("no author key"), "{body}");
}

#[test]
fn clients_can_pin_the_author_and_a_minimum_svn_instead_of_a_measurement() {
    let author = Identity::generate();
    let dir = tempfile::tempdir().unwrap();
    let statement_path = dir.path().join("statement.json");
    std::fs::write(
        &statement_path,
        serde_json::to_vec(&statement(&author, OLD, 3)).unwrap(),
    )
    .unwrap();
    let path = statement_path.clone();
    let configure = image(&author, OLD, 3);
    let s = TestServer::start_configured(dir, move |c| {
        configure(c);
        c.upgrade_statement = Some(path);
    });
    s.keygen("owner");
    let key = s.path("owner.json").display().to_string();
    let list = |extra: &[&str]| {
        let mut argv = vec![
            "cleanroom",
            "dataset",
            "list",
            "--server",
            &s.url,
            "--key",
            &key,
            "--json",
            "--accept-insecure-simulation",
        ];
        argv.extend(extra);
        cleanroom_cli::run_capture(argv).map_err(|e| format!("{e:#}"))
    };
    let author_hex = author.party().to_string();
    list(&["--author-key", &author_hex, "--min-svn", "3"]).unwrap();
    // `attest verify` says what was pinned and over which channel.
    let shown = cleanroom_cli::run_capture([
        "cleanroom",
        "attest",
        "verify",
        "--server",
        &s.url,
        "--json",
        "--accept-insecure-simulation",
        "--author-key",
        &author_hex,
    ])
    .unwrap();
    assert_eq!(shown["upgrade_statement"]["svn"], 3, "{shown}");
    assert!(
        shown["channel"]
            .as_str()
            .unwrap()
            .starts_with("attested TLS"),
        "{shown}"
    );
    let err = list(&["--author-key", &author_hex, "--min-svn", "4"]).unwrap_err();
    assert!(err.contains("below the minimum"), "{err}");
    let other = Identity::generate().party().to_string();
    let err = list(&["--author-key", &other]).unwrap_err();
    assert!(err.contains("not the author's"), "{err}");
}

#[test]
fn a_hand_over_keeps_the_tcb_floor_and_needs_a_platform_that_meets_it() {
    use cleanroom_trust::attester::simulation::SIMULATED_TCB;
    let author = Identity::generate();
    let old_image = image(&author, OLD, 1);
    let old = TestServer::start_configured(tempfile::tempdir().unwrap(), move |c| {
        old_image(c);
        c.minimum_tcb = Some(SIMULATED_TCB);
    });
    let new_dir = same_machine(&old);
    let ask = |config: &cleanroomd::Config| {
        let request =
            cleanroomd::upgrade::handover_request(config, true, statement(&author, NEW, 2))
                .unwrap();
        post(&old, &request)
    };
    // A new deployment without the floor: it could then join or hand over to anything.
    let (status, body) = ask(&new_config(&new_dir, &author, 2));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("lowers the TCB floor"), "{body}");
    // The floor kept, on a platform below it (older SNP firmware).
    let mut below = new_config(&new_dir, &author, 2);
    below.minimum_tcb = Some(SIMULATED_TCB);
    below.simulation_tcb = Some(cleanroom_trust::Tcb {
        snp: SIMULATED_TCB.snp - 1,
        ..SIMULATED_TCB
    });
    let (status, body) = ask(&below);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("evidence"), "{body}");
    // The floor kept, on a platform that meets it.
    let mut kept = new_config(&new_dir, &author, 2);
    kept.minimum_tcb = Some(SIMULATED_TCB);
    let (status, body) = ask(&kept);
    assert_eq!(status, 200, "{body}");
}
