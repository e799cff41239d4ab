//! A cleanroomd cluster on loopback for tests and benchmarks: workers (the `serve` binary)
//! sharing one PostgreSQL and one S3-compatible object store, started by
//! `scripts/cluster-services.sh` (which `scripts/test.sh` runs).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::{SITE_A_CSV, SITE_B_CSV, signed_request};

/// The services the tests run against, from the environment `cluster-services.sh` prints.
#[derive(Debug)]
pub struct Services {
    /// A connection string for creating databases.
    pub admin_url: String,
    /// The object store's endpoint.
    pub endpoint: String,
    /// The object store's root directory (s3s-fs keeps objects as files there).
    pub root: PathBuf,
}

pub fn services() -> Services {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: start PostgreSQL and the object store with \
                 `eval \"$(scripts/cluster-services.sh start /tmp/cleanroom-services)\"` \
                 (scripts/test.sh does)"
            )
        })
    };
    Services {
        admin_url: var("CLEANROOM_POSTGRES_ADMIN_URL"),
        endpoint: var("CLEANROOM_S3_ENDPOINT"),
        root: var("CLEANROOM_S3_ROOT").into(),
    }
}

pub const BUCKET: &str = "cleanroom";

/// One cluster: its own database and key prefix on the shared services.
#[derive(Debug)]
pub struct Cluster {
    /// Keys, CSVs and each worker's directory.
    pub tmp: tempfile::TempDir,
    services: Services,
    serve: PathBuf,
    db_url: String,
    prefix: String,
    lease_secs: u64,
}

#[derive(Debug)]
pub struct Worker {
    child: Child,
    /// Its name (`[cluster] worker`).
    pub name: String,
    /// Its attested TLS address.
    pub url: String,
    /// The measurement it reports.
    pub measurement: String,
    log: PathBuf,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    /// Stop (SIGSTOP) or resume (SIGCONT) the process: a worker stalled by the operator.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// What the worker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and wait for it.
    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Cluster {
    /// A new cluster (its own database and key prefix) of `serve` workers.
    pub fn new(serve: &str) -> Self {
        let services = services();
        let mut id = [0u8; 6];
        random_bytes(&mut id);
        let db = format!("cluster_{}", hex::encode(id));
        let mut admin = postgres::Client::connect(&services.admin_url, postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
        // s3s-fs keeps a bucket as a directory of its root.
        std::fs::create_dir_all(services.root.join(BUCKET)).unwrap();
        let db_url = services
            .admin_url
            .replace("dbname=postgres", &format!("dbname={db}"));
        let tmp = tempfile::tempdir().unwrap();
        for k in ["st_marys", "northfield", "researcher"] {
            let path = tmp.path().join(format!("{k}.json"));
            cleanroom_cli::run(["cleanroom", "keygen", "-o", path.to_str().unwrap()]).unwrap();
        }
        Self {
            tmp,
            services,
            serve: serve.into(),
            db_url,
            prefix: db,
            lease_secs: 30,
        }
    }

    /// Workers started from now on hold a claimed run `secs` without renewal (default 30).
    pub fn with_lease(mut self, secs: u64) -> Self {
        self.lease_secs = secs;
        self
    }

    /// The database's address (for a store opened beside the workers).
    pub fn db_url(&self) -> &str {
        &self.db_url
    }

    /// A connection to this cluster's database (as the operator has one).
    pub fn db(&self) -> postgres::Client {
        postgres::Client::connect(&self.db_url, postgres::NoTls).unwrap()
    }

    /// Start worker `name` (joining through `join`, if given) with `extra` settings.
    pub fn try_spawn(&self, name: &str, join: Option<&str>, extra: &str) -> anyhow::Result<Worker> {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let join = join.map(|j| format!("join = {j:?}\n")).unwrap_or_default();
        let config = format!(
            "storage = \"postgres+s3\"\nworkers = 2\nqueue_capacity = 4096\n{extra}\n\
             [postgres]\nurl = {:?}\npool = 6\n\
             [s3]\nendpoint = {:?}\nbucket = {BUCKET:?}\nprefix = {:?}\n\
             [cluster]\nworker = {name:?}\nlease_secs = {}\n{join}",
            self.db_url, self.services.endpoint, self.prefix, self.lease_secs,
        );
        let config_path = dir.join("cleanroomd.toml");
        std::fs::write(&config_path, config)?;
        let log = dir.join("stderr.log");
        let mut child = Command::new(&self.serve)
            .arg(dir.join("data"))
            .arg(&config_path)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        if line.is_empty() {
            let _ = child.wait();
            anyhow::bail!("{}", std::fs::read_to_string(&log)?);
        }
        let mut parts = line.split_whitespace().skip(1);
        Ok(Worker {
            child,
            name: name.to_string(),
            url: format!("https://{}", parts.next().expect("address")),
            measurement: parts.next().expect("measurement").to_string(),
            log,
        })
    }

    pub fn spawn(&self, name: &str, join: Option<&str>, extra: &str) -> Worker {
        self.try_spawn(name, join, extra)
            .unwrap_or_else(|e| panic!("worker {name} does not start: {e:#}"))
    }

    /// Three workers: the first creates the cluster, the others join through it.
    pub fn three(&self, extra: &str) -> [Worker; 3] {
        let w1 = self.spawn("w1", None, extra);
        let w2 = self.spawn("w2", Some(&w1.url), extra);
        let w3 = self.spawn("w3", Some(&w1.url), extra);
        [w1, w2, w3]
    }

    pub fn cli(&self, w: &Worker, key: Option<&str>, args: &[&str]) -> anyhow::Result<Value> {
        let mut argv: Vec<String> = vec!["cleanroom".into()];
        argv.extend(args.iter().map(|s| s.to_string()));
        argv.extend([
            "--server".into(),
            w.url.clone(),
            "--json".into(),
            "--measurement".into(),
            w.measurement.clone(),
            "--accept-insecure-simulation".into(),
        ]);
        if let Some(k) = key {
            argv.extend(["--key".into(), self.key(k).display().to_string()]);
        }
        cleanroom_cli::run_capture(argv)
    }

    pub fn key(&self, name: &str) -> PathBuf {
        self.tmp.path().join(format!("{name}.json"))
    }

    /// Upload the two hospitals' tables and the module, and grant it on both.
    pub fn study(
        &self,
        ws: &[Worker],
        module_path: &str,
        grant: &[&str],
    ) -> (String, String, String) {
        let mut ids = Vec::new();
        for (i, (owner, csv)) in [("st_marys", SITE_A_CSV), ("northfield", SITE_B_CSV)]
            .into_iter()
            .enumerate()
        {
            let path = self.tmp.path().join(format!("{owner}.csv"));
            std::fs::write(&path, csv).unwrap();
            let out = self
                .cli(
                    &ws[i % ws.len()],
                    Some(owner),
                    &["dataset", "push", path.to_str().unwrap()],
                )
                .unwrap();
            ids.push(out["id"].as_str().unwrap().to_string());
        }
        let module = self
            .cli(
                ws.last().unwrap(),
                Some("researcher"),
                &["module", "push", module_path],
            )
            .unwrap()["module"]
            .as_str()
            .unwrap()
            .to_string();
        for (i, (owner, id, ident)) in [
            ("st_marys", &ids[0], "patient_id"),
            ("northfield", &ids[1], "mrn"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut args = vec![
                "policy",
                "grant",
                "--dataset",
                id,
                "--module",
                &module,
                "--any-researcher",
                "--unlimited",
                "--identifier",
                ident,
            ];
            args.extend(grant);
            self.cli(&ws[(i + 1) % ws.len()], Some(owner), &args)
                .unwrap();
        }
        (ids[0].clone(), ids[1].clone(), module)
    }

    pub fn submit(&self, w: &Worker, study: &(String, String, String), params: &str) -> String {
        let a = format!("st_marys={}", study.0);
        let b = format!("northfield={}", study.1);
        self.cli(
            w,
            Some("researcher"),
            &[
                "run", "submit", "--module", &study.2, "--input", &a, "--input", &b, "--params",
                params,
            ],
        )
        .unwrap()["run"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `GET path` on `w`, signed by `key`: the status and the body.
    pub fn get(&self, w: &Worker, key: &str, path: &str) -> (u16, Value) {
        let agent = cleanroom_cli::attested_agent(&w.url, &w.measurement, true).unwrap();
        let id = cleanroom_proto::Identity::load(&self.key(key)).unwrap();
        let resp = signed_request(&agent, &id, &w.url, "GET", path, b"");
        let status = resp.status().as_u16();
        let body = resp.into_body().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// Which of `ws` runs `run`, once one does.
    pub fn holder(&self, ws: &[Worker], run: &str) -> usize {
        loop {
            let row = self
                .db()
                .query_opt("SELECT worker FROM run_queue WHERE run_id = $1", &[&run])
                .unwrap()
                .and_then(|r| r.get::<_, Option<String>>(0));
            let (_, status) = self.get(&ws[0], "researcher", &format!("/v1/runs/{run}"));
            assert!(
                matches!(status["state"].as_str(), Some("queued" | "running")),
                "{status}"
            );
            if let Some(worker) = row
                && status["state"] == "running"
            {
                return ws
                    .iter()
                    .position(|w| worker.starts_with(&format!("{}-", w.name)))
                    .unwrap_or_else(|| panic!("{worker} is none of the workers"));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The run's status on `w`, once it is no longer queued or running.
    pub fn watch(&self, w: &Worker, run: &str) -> (String, Value) {
        loop {
            let (code, status) = self.get(w, "researcher", &format!("/v1/runs/{run}?wait=20"));
            assert_eq!(code, 200, "{status}");
            let state = status["state"].as_str().unwrap().to_string();
            if state != "queued" && state != "running" {
                return (state, status);
            }
        }
    }

    /// Every audit entry, straight from the shared database: (action, subject).
    pub fn logged_actions(&self) -> Vec<(String, String)> {
        self.db()
            .query("SELECT body FROM audit ORDER BY seq", &[])
            .unwrap()
            .into_iter()
            .map(|r| {
                let entry: Value = serde_json::from_str(r.get(0)).unwrap();
                (
                    entry["action"].as_str().unwrap().to_string(),
                    entry["subject"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The object store's file of `kind/id`.
    pub fn object(&self, kind: &str, id: &str) -> PathBuf {
        self.services
            .root
            .join(BUCKET)
            .join(&self.prefix)
            .join(kind)
            .join(id)
    }
}

/// Fill `buf` from the system's random source.
pub fn random_bytes(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

/// How many entries of `action` name `run`.
pub fn count(log: &[(String, String)], action: &str, run: &str) -> usize {
    log.iter().filter(|(a, s)| a == action && s == run).count()
}
