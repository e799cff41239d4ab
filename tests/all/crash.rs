//! kill -9 during upload, run and release, restart, and check that nothing
//! acknowledged is lost and nothing is corrupt.

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};

use cleanroom_tests::*;
use serde_json::Value;

struct Proc {
    child: Child,
    url: String,
    measurement: String,
}

fn spawn(dir: &std::path::Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_serve"))
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the test server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut parts = line.split_whitespace().skip(1);
    let url = format!("https://{}", parts.next().expect("address"));
    let measurement = parts.next().expect("measurement").to_string();
    Proc {
        child,
        url,
        measurement,
    }
}

impl Proc {
    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn cli(
        &self,
        dir: &std::path::Path,
        key: Option<&str>,
        args: &[&str],
    ) -> anyhow::Result<Value> {
        let mut argv: Vec<String> = vec!["cleanroom".into()];
        argv.extend(args.iter().map(|s| s.to_string()));
        argv.extend(["--server".into(), self.url.clone(), "--json".into()]);
        // Every connection is attested.
        if !args.contains(&"--measurement") {
            argv.extend(["--measurement".into(), self.measurement.clone()]);
        }
        if !args.contains(&"--accept-insecure-simulation") {
            argv.push("--accept-insecure-simulation".into());
        }
        if let Some(k) = key {
            argv.extend([
                "--key".into(),
                dir.join(format!("{k}.json")).display().to_string(),
            ]);
        }
        cleanroom_cli::run_capture(argv)
    }
}

#[test]
fn kill_9_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, data) = (tmp.path(), tmp.path().join("server"));
    for k in ["owner", "researcher"] {
        let path = dir.join(format!("{k}.json"));
        cleanroom_cli::run(["cleanroom", "keygen", "-o", path.to_str().unwrap()]).unwrap();
    }
    std::fs::write(dir.join("a.csv"), SITE_A_CSV).unwrap();
    let sim = "--accept-insecure-simulation";

    // 1. Killed right after an upload was acknowledged.
    let p = spawn(&data);
    let a = p
        .cli(
            dir,
            Some("owner"),
            &["dataset", "push", dir.join("a.csv").to_str().unwrap(), sim],
        )
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    p.kill9();

    // 2. Killed in the middle of another upload: a partial body is never a dataset.
    let p = spawn(&data);
    let listed = p.cli(dir, Some("owner"), &["dataset", "list"]).unwrap();
    assert_eq!(
        listed["datasets"][0]["id"],
        a.as_str(),
        "the acknowledged upload survived"
    );
    let addr = p.url.trim_start_matches("https://").to_string();
    let mut stream = tls_connect(&addr);
    // A signed upload (accepted from its headers), cut after 1 MiB of 10 MB.
    let path = "/v1/datasets/00112233445566778899aabbccddeeff";
    let body = vec![0u8; 10_000_000];
    let owner = cleanroom_proto::Identity::load(&dir.join("owner.json")).unwrap();
    let h = cleanroom_proto::httpsig::sign_request(
        &owner,
        "PUT",
        path,
        &body,
        cleanroomd::now(),
        &cleanroom_proto::httpsig::new_nonce(),
    );
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: x\r\ncontent-digest: {}\r\nsignature-input: {}\r\n\
         signature: {}\r\nContent-Length: {}\r\n\r\n",
        h.content_digest,
        h.signature_input,
        h.signature,
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..1 << 20]).unwrap();
    stream.flush().unwrap();
    p.kill9();

    // 3. Killed right after a run was acknowledged (queued or running).
    let p = spawn(&data);
    assert_eq!(
        p.cli(dir, Some("owner"), &["dataset", "list"]).unwrap()["datasets"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let module = p
        .cli(dir, Some("researcher"), &["module", "push", ECHO])
        .unwrap()["module"]
        .as_str()
        .unwrap()
        .to_string();
    p.cli(
        dir,
        Some("owner"),
        &[
            "policy",
            "grant",
            "--dataset",
            &a,
            "--module",
            &module,
            "--review",
            "--any-researcher",
            "--unlimited",
        ],
    )
    .unwrap();
    let input = format!("data={a}");
    let run = p
        .cli(
            dir,
            Some("researcher"),
            &["run", "submit", "--module", &module, "--input", &input],
        )
        .unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    p.kill9();

    // 4. Restarted: a queued run is re-queued and reaches review; a run the kill caught
    // running is failed as interrupted (never silently re-run), and is submitted again.
    let p = spawn(&data);
    let run = match p.cli(dir, Some("researcher"), &["run", "watch", &run]) {
        Ok(status) => {
            assert_eq!(status["state"], "held_for_review");
            run
        }
        Err(e) => {
            assert!(format!("{e:#}").contains("ended failed"), "{e:#}");
            let again = p
                .cli(
                    dir,
                    Some("researcher"),
                    &[
                        "run", "submit", "--module", &module, "--input", &input, "--wait",
                    ],
                )
                .unwrap();
            assert_eq!(again["state"], "held_for_review");
            again["run"].as_str().unwrap().to_string()
        }
    };
    p.cli(dir, Some("owner"), &["review", "release", &run])
        .unwrap();
    p.kill9();

    // 5. The release survived, the result decrypts, and the audit log verifies.
    let p = spawn(&data);
    let out = dir.join("results");
    p.cli(
        dir,
        Some("researcher"),
        &["result", "fetch", &run, "--out", out.to_str().unwrap(), sim],
    )
    .unwrap();
    let echo: Value =
        serde_json::from_slice(&std::fs::read(out.join("echo.json")).unwrap()).unwrap();
    assert_eq!(echo["tables"]["data"], 6);
    let audit = p
        .cli(dir, Some("owner"), &["audit", "verify", sim])
        .unwrap();
    assert_eq!(audit["verified"], true);
    p.kill9();
}
