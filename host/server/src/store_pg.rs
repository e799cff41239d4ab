//! Metadata in PostgreSQL, shared by every worker of a cluster.
//!
//! The database is the operator's, exactly as the embedded store's disk is: every row is
//! authenticated with the same [`RowKey`] MAC, the audit log says which version of each row
//! is current, and what runs used is counted in enclave memory. Several workers append to
//! the one audit log: the append takes a transaction-scoped advisory lock, returns what the
//! others appended since the caller last looked, and numbers the new entry after them.
//!
//! The `postgres` client blocks on a runtime of its own, which may not run on a thread that
//! drives async tasks; so each connection lives on a thread of its own, and a call hands it
//! a job and waits for the answer (as a call into SQLite waits for its mutex).

use std::sync::mpsc::{Receiver, Sender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cleanroom_proto::audit::AuditEntry;
use postgres::{Client, NoTls};

use crate::error::{ApiError, ApiResult};
use crate::store::{
    Appended, LOGGED_TABLES, RowKey, RowWrite, RunRow, Storage, StoredEntry, body_digest,
    from_json, to_json,
};
use crate::store::{Cluster, ClusterLock, Fence, LockKey};

impl From<postgres::Error> for ApiError {
    fn from(e: postgres::Error) -> Self {
        Self::Busy(format!("database: {e}"))
    }
}

/// The advisory lock key of audit appends (transaction-scoped).
const AUDIT_LOCK: i64 = 0x636c_6e72_0001;
/// The advisory lock key of schema migrations (transaction-scoped).
const MIGRATE_LOCK: i64 = 0x636c_6e72_0002;

/// Schema versions, applied in order, once, under [`MIGRATE_LOCK`].
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE datasets (id TEXT PRIMARY KEY, body TEXT NOT NULL, mac TEXT NOT NULL);
CREATE TABLE module_rows (id TEXT PRIMARY KEY, body TEXT NOT NULL, mac TEXT NOT NULL);
CREATE TABLE pipelines (id TEXT PRIMARY KEY, body TEXT NOT NULL, mac TEXT NOT NULL);
CREATE TABLE derived (id TEXT PRIMARY KEY, body TEXT NOT NULL, mac TEXT NOT NULL);
CREATE TABLE previews (id TEXT PRIMARY KEY, body TEXT NOT NULL, mac TEXT NOT NULL);
CREATE TABLE policies (dataset TEXT NOT NULL, version BIGINT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (dataset, version));
CREATE TABLE runs (id TEXT PRIMARY KEY, created BIGINT NOT NULL, body TEXT NOT NULL,
    mac TEXT NOT NULL);
CREATE TABLE audit (seq BIGINT PRIMARY KEY, body TEXT NOT NULL, hash TEXT NOT NULL,
    row_key TEXT NOT NULL, row_digest TEXT NOT NULL, mac TEXT NOT NULL);
CREATE INDEX audit_by_row ON audit (row_key, seq);
CREATE TABLE nonces (party TEXT NOT NULL, nonce TEXT NOT NULL, created BIGINT NOT NULL,
    PRIMARY KEY (party, nonce));
CREATE TABLE run_queue (run_id TEXT PRIMARY KEY, enqueued BIGSERIAL, worker TEXT,
    lease_until TIMESTAMPTZ);
CREATE INDEX run_queue_order ON run_queue (enqueued);
CREATE TABLE cluster_identity (id INT PRIMARY KEY CHECK (id = 1), sealed BYTEA NOT NULL);
",
    "
-- Policy rows are MAC'd like every other row (rows written before this have none and fail
-- closed); cluster locks carry a fencing epoch.
ALTER TABLE policies ADD COLUMN mac TEXT NOT NULL DEFAULT '';
CREATE TABLE cluster_fences (lock BIGINT PRIMARY KEY, epoch BIGINT NOT NULL);
",
];

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A connection owned by its thread, reconnected after it breaks.
struct Connection {
    url: String,
    client: Option<Client>,
}

impl Connection {
    fn get(&mut self) -> Result<&mut Client, postgres::Error> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let mut client = Client::connect(&self.url, NoTls)?;
            // Commits wait for their WAL flush only where they must: nonces and queue moves
            // are not worth an fsync each (a crash loses at most the last few, which a
            // restart re-creates or the freshness window bounds; the embedded store does the
            // same for nonces). Audit appends, which carry every state change, and the kept
            // identity are durable before they return (`durable`).
            client.batch_execute("SET synchronous_commit = off")?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }
}

/// Threads that each own a connection and take jobs from one queue.
struct Pool {
    jobs: Sender<Job>,
}

impl Pool {
    fn new(url: &str, size: usize, name: &str) -> ApiResult<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..size {
            let rx: Arc<Mutex<Receiver<Job>>> = rx.clone();
            let mut conn = Connection {
                url: url.to_string(),
                client: None,
            };
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().expect("job queue lock").recv();
                        let Ok(job) = job else { break };
                        job(&mut conn);
                    }
                })?;
        }
        Ok(Self { jobs: tx })
    }

    /// Run `f` on a connection and wait for its answer.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let (tx, rx) = sync_channel(1);
        self.jobs
            .send(Box::new(move |conn: &mut Connection| {
                let answer = conn.get().map_err(ApiError::from).and_then(f);
                let _ = tx.send(answer);
            }))
            .map_err(|_| ApiError::Internal("the database threads stopped".into()))?;
        rx.recv()
            .map_err(|_| ApiError::Internal("a database thread stopped".into()))?
    }
}

/// PostgreSQL metadata storage (see the module docs).
pub struct PgStorage {
    pool: Pool,
    /// One connection per cluster lock: a session advisory lock lives on its connection.
    locks: [Arc<Pool>; 2],
    rows: Arc<RowKey>,
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStorage").finish_non_exhaustive()
    }
}

/// The cluster's sealed identity, if a worker created one (read before the row key exists).
pub fn cluster_identity(url: &str) -> ApiResult<Option<Vec<u8>>> {
    let pool = Pool::new(url, 1, "postgres-setup")?;
    pool.run(migrate)?;
    pool.run(|c| {
        Ok(
            c.query_opt("SELECT sealed FROM cluster_identity WHERE id = 1", &[])?
                .map(|r| r.get(0)),
        )
    })
}

/// A transaction whose commit returns only once it is on disk.
fn durable(c: &mut Client) -> Result<postgres::Transaction<'_>, postgres::Error> {
    let mut tx = c.transaction()?;
    tx.batch_execute("SET LOCAL synchronous_commit = on")?;
    Ok(tx)
}

fn migrate(c: &mut Client) -> ApiResult<()> {
    let mut tx = durable(c)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL)")?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version",
            &[],
        )?
        .get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// A row write, owned, so it can go to a connection thread.
enum PgWrite {
    Row {
        table: &'static str,
        id: String,
        body: String,
        mac: String,
        replace: bool,
    },
    Run {
        id: String,
        created: i64,
        /// The version being written: the stored row must be the one before it.
        version: u64,
        body: String,
        mac: String,
    },
    Policy {
        dataset: String,
        version: i64,
        body: String,
        mac: String,
    },
}

impl PgStorage {
    /// Connect (`pool` connections), migrate the schema, and authenticate rows with `rows`.
    pub fn open(url: &str, pool: usize, rows: RowKey) -> ApiResult<Self> {
        let storage = Self {
            pool: Pool::new(url, pool.max(1), "postgres")?,
            locks: [
                Arc::new(Pool::new(url, 1, "postgres-lock-a")?),
                Arc::new(Pool::new(url, 1, "postgres-lock-t")?),
            ],
            rows: Arc::new(rows),
        };
        storage.pool.run(migrate)?;
        Ok(storage)
    }

    fn owned(&self, write: RowWrite<'_>) -> ApiResult<(PgWrite, String)> {
        let row = |table: &'static str, id: &str, body: String, replace: bool| PgWrite::Row {
            table,
            id: id.to_string(),
            mac: self.rows.mac(table, id, &body),
            body,
            replace,
        };
        let owned = match write {
            RowWrite::Dataset(d) => row("datasets", &d.id, to_json(d)?, false),
            RowWrite::Module(m) => row("module_rows", &m.module, to_json(m)?, true),
            RowWrite::Pipeline(p) => row("pipelines", &p.id, to_json(p)?, false),
            RowWrite::Derived(d) => row("derived", &d.id, to_json(d)?, false),
            RowWrite::Preview(p) => row("previews", &p.preview.dataset, to_json(p)?, true),
            RowWrite::Run(r) => {
                let body = to_json(r)?;
                PgWrite::Run {
                    id: r.id.clone(),
                    created: r.created as i64,
                    version: r.version,
                    mac: self.rows.mac("runs", &r.id, &body),
                    body,
                }
            }
            RowWrite::Policy(p) => {
                let body = to_json(p)?;
                PgWrite::Policy {
                    dataset: p.policy.dataset.clone(),
                    version: p.policy.version as i64,
                    mac: self.rows.mac_parts("policies", &[&p.policy.dataset, &body]),
                    body,
                }
            }
        };
        let body = match &owned {
            PgWrite::Row { body, .. }
            | PgWrite::Run { body, .. }
            | PgWrite::Policy { body, .. } => body,
        };
        let digest = body_digest(body);
        Ok((owned, digest))
    }
}

fn write_row(tx: &mut postgres::Transaction<'_>, rows: &RowKey, write: &PgWrite) -> ApiResult<()> {
    match write {
        PgWrite::Row {
            table,
            id,
            body,
            mac,
            replace,
        } => {
            let conflict = if *replace {
                " ON CONFLICT (id) DO UPDATE SET body = excluded.body, mac = excluded.mac"
            } else {
                ""
            };
            tx.execute(
                &format!("INSERT INTO {table} (id, body, mac) VALUES ($1, $2, $3){conflict}"),
                &[id, body, mac],
            )?;
        }
        PgWrite::Run {
            id,
            created,
            version,
            body,
            mac,
        } => {
            // Several workers may hold a copy of this run: only a writer that read the current
            // version writes the next (checked on the authenticated row, which must also be
            // the version the log last wrote, so an operator's rollback cannot let a stale
            // worker through).
            let current =
                tx.query_opt("SELECT body, mac FROM runs WHERE id = $1 FOR UPDATE", &[id])?;
            match current {
                None if *version == 1 => {
                    tx.execute(
                        "INSERT INTO runs (id, created, body, mac) VALUES ($1, $2, $3, $4)",
                        &[id, created, body, mac],
                    )?;
                }
                None => {
                    return Err(ApiError::Tampered(format!(
                        "runs/{id} is missing from the database (the audit log wrote it)"
                    )));
                }
                Some(r) => {
                    let (stored, stored_mac): (String, String) = (r.get(0), r.get(1));
                    rows.check("runs", id, &stored, &stored_mac)?;
                    let logged: Option<String> = tx
                        .query_opt(
                            "SELECT row_digest FROM audit WHERE row_key = $1 \
                             ORDER BY seq DESC LIMIT 1",
                            &[&format!("runs/{id}")],
                        )?
                        .map(|r| r.get(0));
                    if logged.as_deref() != Some(body_digest(&stored).as_str()) {
                        return Err(ApiError::Tampered(format!(
                            "runs/{id} is not the version the audit log last wrote"
                        )));
                    }
                    let stored: RunRow = from_json(&stored)?;
                    if stored.version + 1 != *version {
                        return Err(ApiError::Conflict(format!(
                            "run {id} was changed by another worker (version {} is stored, \
                             this worker read {})",
                            stored.version,
                            version.saturating_sub(1)
                        )));
                    }
                    tx.execute(
                        "UPDATE runs SET body = $2, mac = $3 WHERE id = $1",
                        &[id, body, mac],
                    )?;
                }
            }
        }
        PgWrite::Policy {
            dataset,
            version,
            body,
            mac,
        } => {
            tx.execute(
                "INSERT INTO policies (dataset, version, body, mac) VALUES ($1, $2, $3, $4)",
                &[dataset, version, body, mac],
            )?;
        }
    }
    Ok(())
}

fn audit_rows(
    c: &mut impl postgres::GenericClient,
    rows: &RowKey,
    from: u64,
    limit: u64,
) -> ApiResult<Vec<StoredEntry>> {
    c.query(
        "SELECT seq, body, row_key, row_digest, mac FROM audit WHERE seq >= $1 ORDER BY seq \
         LIMIT $2",
        &[&(from as i64), &(limit.min(i64::MAX as u64) as i64)],
    )?
    .into_iter()
    .map(|r| {
        let mac: String = r.get(4);
        rows.audit_entry(r.get(0), r.get(1), r.get(2), r.get(3), &mac)
    })
    .collect()
}

impl Storage for PgStorage {
    fn row_key(&self) -> &RowKey {
        &self.rows
    }

    fn raw_row(&self, table: &'static str, key: &str) -> ApiResult<Option<(String, String)>> {
        let key = key.to_string();
        self.pool.run(move |c| {
            Ok(c.query_opt(
                &format!("SELECT body, mac FROM {table} WHERE id = $1"),
                &[&key],
            )?
            .map(|r| (r.get(0), r.get(1))))
        })
    }

    fn raw_rows(
        &self,
        table: &'static str,
        order: &'static str,
    ) -> ApiResult<Vec<(String, String, String)>> {
        self.pool.run(move |c| {
            Ok(c.query(
                &format!("SELECT id, body, mac FROM {table} ORDER BY {order}"),
                &[],
            )?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
        })
    }

    fn raw_policy(&self, dataset: &str) -> ApiResult<Option<(String, String)>> {
        let dataset = dataset.to_string();
        self.pool.run(move |c| {
            Ok(c.query_opt(
                "SELECT body, mac FROM policies WHERE dataset = $1 ORDER BY version DESC LIMIT 1",
                &[&dataset],
            )?
            .map(|r| (r.get(0), r.get(1))))
        })
    }

    fn append_audit(
        &self,
        known: u64,
        mut entry: AuditEntry,
        write: Option<RowWrite<'_>>,
        fences: &[Fence],
    ) -> ApiResult<Appended> {
        let (write, row) = match write {
            Some(w) => {
                let row = w.row();
                let (owned, digest) = self.owned(w)?;
                (Some(owned), (row, digest))
            }
            None => (None, (String::new(), String::new())),
        };
        let rows = self.rows.clone();
        let fences = fences.to_vec();
        self.pool.run(move |c| {
            let mut tx = durable(c)?;
            // One appender at a time across the cluster; released at commit.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
            // Written under cluster locks: only while each is still held at the epoch it was
            // taken at. `FOR SHARE` holds the epoch until commit, so a worker taking the lock
            // next bumps it only after this append is in the log it then catches up with.
            for fence in &fences {
                let epoch: Option<i64> = tx
                    .query_opt(
                        "SELECT epoch FROM cluster_fences WHERE lock = $1 FOR SHARE",
                        &[&fence.key.id()],
                    )?
                    .map(|r| r.get(0));
                if epoch != Some(fence.epoch) {
                    return Err(ApiError::Conflict(format!(
                        "this worker lost the cluster's {:?} lock (taken at epoch {}, now {}) \
                         before it wrote: nothing was written; try again",
                        fence.key,
                        fence.epoch,
                        epoch.map_or("none".to_string(), |e| e.to_string())
                    )));
                }
            }
            let missed = audit_rows(&mut tx, &rows, known, u64::MAX)?;
            for (i, stored) in missed.iter().enumerate() {
                if stored.entry.seq != known + i as u64 {
                    return Err(ApiError::Tampered(format!(
                        "audit entry {} is missing from the shared log",
                        known + i as u64
                    )));
                }
            }
            entry.seq = known + missed.len() as u64;
            if let Some(write) = &write {
                write_row(&mut tx, &rows, write)?;
            }
            let body = to_json(&entry)?;
            let seq = entry.seq.to_string();
            let mac = rows.mac_parts("audit", &[&seq, &body, &row.0, &row.1]);
            tx.execute(
                "INSERT INTO audit (seq, body, hash, row_key, row_digest, mac) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &(entry.seq as i64),
                    &body,
                    &hex::encode(entry.hash()),
                    &row.0,
                    &row.1,
                    &mac,
                ],
            )?;
            tx.commit()?;
            Ok(Appended {
                entry: StoredEntry {
                    entry,
                    row: (!row.0.is_empty()).then_some(row),
                },
                missed,
            })
        })
    }

    fn audit(&self, from: u64, limit: u64) -> ApiResult<Vec<StoredEntry>> {
        let rows = self.rows.clone();
        self.pool.run(move |c| audit_rows(c, &rows, from, limit))
    }

    fn last_write(&self, row: &str) -> ApiResult<Option<AuditEntry>> {
        let row = row.to_string();
        let seq: Option<i64> = self.pool.run(move |c| {
            Ok(c.query_opt(
                "SELECT seq FROM audit WHERE row_key = $1 ORDER BY seq DESC LIMIT 1",
                &[&row],
            )?
            .map(|r| r.get(0)))
        })?;
        let Some(seq) = seq else { return Ok(None) };
        Ok(self.audit(seq as u64, 1)?.pop().map(|s| s.entry))
    }

    fn check_logged_rows(&self, logged: &crate::store::LoggedRows) -> ApiResult<()> {
        let stored = self.pool.run(|c| {
            let mut stored = Vec::new();
            for (table, sql) in LOGGED_TABLES {
                for r in c.query(sql, &[])? {
                    let (key, body): (String, String) = (r.get(0), r.get(1));
                    stored.push((format!("{table}/{key}"), body_digest(&body)));
                }
            }
            Ok(stored)
        })?;
        crate::store::compare_logged(&stored, logged)
    }

    fn cluster(&self) -> Option<&dyn Cluster> {
        Some(self)
    }

    fn remember_nonce(&self, party: &str, nonce: &str, created: u64) -> ApiResult<bool> {
        let horizon = created.saturating_sub(2 * cleanroom_proto::httpsig::MAX_CLOCK_SKEW_SECS);
        let (party, nonce) = (party.to_string(), nonce.to_string());
        self.pool.run(move |c| {
            c.execute(
                "DELETE FROM nonces WHERE created < $1",
                &[&(horizon as i64)],
            )?;
            let inserted = c.execute(
                "INSERT INTO nonces (party, nonce, created) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&party, &nonce, &(created as i64)],
            )?;
            Ok(inserted == 1)
        })
    }
}

impl Cluster for PgStorage {
    fn lock(&self, key: LockKey) -> ApiResult<ClusterLock> {
        let pool = self.locks[key as usize].clone();
        let id = key.id();
        let epoch = pool.run(move |c| {
            c.execute("SELECT pg_advisory_lock($1)", &[&id])?;
            // The next epoch, taken on the lock's own connection after the lock: whoever held
            // it before (and perhaps still believes so) can no longer append (`append_audit`).
            // Durably: an epoch lost in a database crash could be handed out twice.
            let taken = durable(c).and_then(|mut tx| {
                let epoch: i64 = tx
                    .query_one(
                        "INSERT INTO cluster_fences (lock, epoch) VALUES ($1, 1) \
                         ON CONFLICT (lock) DO UPDATE SET epoch = cluster_fences.epoch + 1 \
                         RETURNING epoch",
                        &[&id],
                    )?
                    .get(0);
                tx.commit()?;
                Ok(epoch)
            });
            match taken {
                Ok(epoch) => Ok(epoch),
                Err(e) => {
                    let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&id]);
                    Err(e.into())
                }
            }
        })?;
        Ok(ClusterLock::new(Fence { key, epoch }, move || {
            // The unlock queues behind nothing: the caller's local mutex orders lockers.
            let _ = pool.run(move |c| {
                c.execute("SELECT pg_advisory_unlock($1)", &[&id])?;
                Ok(())
            });
        }))
    }

    fn enqueue(&self, run: &str) -> ApiResult<()> {
        let run = run.to_string();
        self.pool.run(move |c| {
            c.execute(
                "INSERT INTO run_queue (run_id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&run],
            )?;
            Ok(())
        })
    }

    fn queued(&self) -> ApiResult<u64> {
        self.pool.run(|c| {
            let n: i64 = c
                .query_one("SELECT COUNT(*) FROM run_queue WHERE worker IS NULL", &[])?
                .get(0);
            Ok(n as u64)
        })
    }

    fn claim(&self, worker: &str, lease: Duration) -> ApiResult<Option<String>> {
        let (worker, secs) = (worker.to_string(), lease.as_secs_f64());
        self.pool.run(move |c| {
            Ok(c.query_opt(
                "UPDATE run_queue SET worker = $1, \
                     lease_until = now() + make_interval(secs => $2) \
                 WHERE run_id = (SELECT run_id FROM run_queue \
                     WHERE worker IS NULL OR lease_until < now() \
                     ORDER BY enqueued LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING run_id",
                &[&worker, &secs],
            )?
            .map(|r| r.get(0)))
        })
    }

    fn renew(&self, worker: &str, lease: Duration) -> ApiResult<()> {
        let (worker, secs) = (worker.to_string(), lease.as_secs_f64());
        self.pool.run(move |c| {
            c.execute(
                "UPDATE run_queue SET lease_until = now() + make_interval(secs => $2) \
                 WHERE worker = $1",
                &[&worker, &secs],
            )?;
            Ok(())
        })
    }

    fn done(&self, run: &str, worker: &str) -> ApiResult<()> {
        let (run, worker) = (run.to_string(), worker.to_string());
        self.pool.run(move |c| {
            c.execute(
                "DELETE FROM run_queue WHERE run_id = $1 AND worker = $2",
                &[&run, &worker],
            )?;
            Ok(())
        })
    }

    fn keep_identity(&self, sealed: &[u8]) -> ApiResult<Vec<u8>> {
        let sealed = sealed.to_vec();
        self.pool.run(move |c| {
            let mut tx = durable(c)?;
            tx.execute(
                "INSERT INTO cluster_identity (id, sealed) VALUES (1, $1) ON CONFLICT DO NOTHING",
                &[&sealed],
            )?;
            let kept = tx
                .query_one("SELECT sealed FROM cluster_identity WHERE id = 1", &[])?
                .get(0);
            tx.commit()?;
            Ok(kept)
        })
    }
}
