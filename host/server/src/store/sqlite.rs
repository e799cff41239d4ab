//! The embedded backend: SQLite in the data directory, each row MAC'd, each run written
//! only over the version the audit log last wrote.

use super::*;

/// SQLite in WAL mode plus a blob directory.
///
/// The disk is the operator's: every dataset, run and audit row carries an HMAC-SHA256 under a
/// key derived from the enclave's sealing key, over the table, the row's key and its body, and
/// is verified on every read. An edited or swapped row fails closed with
/// [`ApiError::Tampered`] naming it; policies are also owner-signed and verified when used.
/// Which version of each row is current is the audit log's word, checked at start and on
/// every read ([`super::Checked`]). Whole-state rollback (log and rows together) is caught by
/// the parties, who keep the audit heads they verified: SEV-SNP has no monotonic counter.
pub struct SqliteStorage {
    conn: Mutex<Connection>,
    dir: PathBuf,
    rows: RowKey,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS datasets (id TEXT PRIMARY KEY, body TEXT NOT NULL, mac TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS module_rows (id TEXT PRIMARY KEY, body TEXT NOT NULL, mac TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pipelines (id TEXT PRIMARY KEY, body TEXT NOT NULL, mac TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS derived (id TEXT PRIMARY KEY, body TEXT NOT NULL, mac TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS previews (id TEXT PRIMARY KEY, body TEXT NOT NULL, mac TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS policies (dataset TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL, mac TEXT NOT NULL, PRIMARY KEY (dataset, version));
CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, created INTEGER NOT NULL, body TEXT NOT NULL, mac TEXT NOT NULL);
DROP TABLE IF EXISTS run_grants;
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, body TEXT NOT NULL, hash TEXT NOT NULL, row TEXT, row_digest TEXT, mac TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_by_row ON audit (row, seq);
CREATE TABLE IF NOT EXISTS nonces (party TEXT NOT NULL, nonce TEXT NOT NULL, created INTEGER NOT NULL, PRIMARY KEY (party, nonce));
";

impl SqliteStorage {
    /// Open (creating) the store in `dir`.
    pub fn open(dir: &Path, rows: RowKey) -> ApiResult<Self> {
        std::fs::create_dir_all(dir)?;
        let conn = Connection::open(dir.join("state.db"))?;
        // Every statement is prepared once and reused (parsing was ~6% of a run's CPU).
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Acknowledged writes survive a crash of the process or the machine.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        // Policy rows gained a MAC: a store from before has none, and its policy rows fail
        // closed as unauthenticated (owners sign and publish them again).
        if !conn
            .prepare("SELECT 1 FROM pragma_table_info('policies') WHERE name = 'mac'")?
            .exists([])?
        {
            conn.execute_batch("ALTER TABLE policies ADD COLUMN mac TEXT NOT NULL DEFAULT ''")?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            dir: dir.to_path_buf(),
            rows,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().expect("database lock is never poisoned")
    }
}

impl Storage for SqliteStorage {
    fn row_key(&self) -> &RowKey {
        &self.rows
    }

    fn raw_row(&self, table: &'static str, key: &str) -> ApiResult<Option<(String, String)>> {
        let sql = format!("SELECT body, mac FROM {table} WHERE id = ?1");
        Ok(self
            .conn()
            .prepare_cached(&sql)?
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn raw_rows(
        &self,
        table: &'static str,
        order: &'static str,
    ) -> ApiResult<Vec<(String, String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id, body, mac FROM {table} ORDER BY {order}"
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Existence only, without decoding the row and its source bundle (admission asks this on
    /// every run). A row inserted on disk gains nothing: the component is loaded by its hash
    /// and checked against it, and start-up refuses rows the audit log never wrote.
    fn has_module(&self, hash: &str) -> ApiResult<bool> {
        Ok(self
            .conn()
            .prepare_cached("SELECT 1 FROM module_rows WHERE id = ?1")?
            .query_row([hash], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn raw_policy(&self, dataset: &str) -> ApiResult<Option<(String, String)>> {
        // Also owner-signed: verified by whoever uses it (admission, the owner's CLI).
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT body, mac FROM policies WHERE dataset = ?1 ORDER BY version DESC LIMIT 1",
            )?
            .query_row([dataset], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn append_audit(
        &self,
        known: u64,
        mut entry: AuditEntry,
        write: Option<RowWrite<'_>>,
        // One process owns this database: no cluster locks to fence.
        _fences: &[Fence],
    ) -> ApiResult<Appended> {
        // One process owns this database: nobody else appends.
        entry.seq = known;
        let seq = entry.seq;
        let hash = hex::encode(entry.hash());
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // One authenticated row: its body and MAC (replaced where the row changes over time).
        let put = |table: &str, id: &str, body: String, replace: bool| -> ApiResult<String> {
            let conflict = if replace {
                " ON CONFLICT (id) DO UPDATE SET body = excluded.body, mac = excluded.mac"
            } else {
                ""
            };
            tx.prepare_cached(&format!(
                "INSERT INTO {table} (id, body, mac) VALUES (?1, ?2, ?3){conflict}"
            ))?
            .execute(params![id, body, self.rows.mac(table, id, &body)])?;
            Ok(body)
        };
        let (row, row_digest) = match write {
            Some(write) => {
                let body = match write {
                    RowWrite::Dataset(d) => put("datasets", &d.id, to_json(d)?, false)?,
                    RowWrite::Policy(p) => {
                        let body = to_json(p)?;
                        let mac = self.rows.mac_parts("policies", &[&p.policy.dataset, &body]);
                        tx.prepare_cached(
                            "INSERT INTO policies (dataset, version, body, mac) \
                             VALUES (?1, ?2, ?3, ?4)",
                        )?
                        .execute(params![
                            p.policy.dataset,
                            p.policy.version as i64,
                            body,
                            mac
                        ])?;
                        body
                    }
                    RowWrite::Run(r) => put_run_tx(&tx, r, &self.rows)?,
                    RowWrite::Module(m) => put("module_rows", &m.module, to_json(m)?, true)?,
                    RowWrite::Pipeline(p) => put("pipelines", &p.id, to_json(p)?, false)?,
                    RowWrite::Derived(d) => put("derived", &d.id, to_json(d)?, false)?,
                    RowWrite::Preview(p) => put("previews", &p.preview.dataset, to_json(p)?, true)?,
                };
                (write.row(), body_digest(&body))
            }
            None => (String::new(), String::new()),
        };
        let body = to_json(&entry)?;
        let mac = self
            .rows
            .mac_parts("audit", &[&seq.to_string(), &body, &row, &row_digest]);
        tx.prepare_cached("INSERT INTO audit (seq, body, hash, row, row_digest, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(params![seq as i64, body, hash, row, row_digest, mac],
        )?;
        tx.commit()?;
        Ok(Appended {
            entry: StoredEntry {
                entry,
                row: (!row.is_empty()).then_some((row, row_digest)),
            },
            missed: vec![],
        })
    }

    fn audit(&self, from: u64, limit: u64) -> ApiResult<Vec<StoredEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, body, row, row_digest, mac FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![from as i64, limit.min(i64::MAX as u64) as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    r.get::<_, String>(4)?,
                ))
            },
        )?;
        rows.map(|r| {
            let (seq, body, row, row_digest, mac) = r?;
            self.rows.audit_entry(seq, body, row, row_digest, &mac)
        })
        .collect()
    }

    fn last_write(&self, row: &str) -> ApiResult<Option<AuditEntry>> {
        let seq: Option<i64> = self
            .conn()
            .prepare_cached("SELECT seq FROM audit WHERE row = ?1 ORDER BY seq DESC LIMIT 1")?
            .query_row([row], |r| r.get(0))
            .optional()?;
        let Some(seq) = seq else { return Ok(None) };
        // Read back through the MAC check.
        Ok(self.audit(seq as u64, 1)?.pop().map(|s| s.entry))
    }

    fn check_logged_rows(&self, logged: &crate::store::LoggedRows) -> ApiResult<()> {
        let mut stored: Vec<(String, String)> = Vec::new();
        {
            let conn = self.conn();
            for (table, sql) in LOGGED_TABLES {
                let mut stmt = conn.prepare(sql)?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                for row in rows {
                    let (key, body) = row?;
                    stored.push((format!("{table}/{key}"), body_digest(&body)));
                }
            }
        }
        compare_logged(&stored, logged)
    }

    fn remember_nonce(&self, party: &str, nonce: &str, created: u64) -> ApiResult<bool> {
        let conn = self.conn();
        // Nonces older than twice the allowed skew can no longer pass the
        // freshness check, so they need not be kept.
        let horizon = created.saturating_sub(2 * cleanroom_proto::httpsig::MAX_CLOCK_SKEW_SECS);
        // Remembering a nonce is not worth an fsync of its own: it becomes
        // durable with the next durable write (WAL frames are synced in
        // order), which for a mutating request is the mutation itself.
        conn.pragma_update(None, "synchronous", "OFF")?;
        let result = (|| -> ApiResult<bool> {
            conn.prepare_cached("DELETE FROM nonces WHERE created < ?1")?
                .execute([horizon as i64])?;
            let inserted = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO nonces (party, nonce, created) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![party, nonce, created as i64])?;
            Ok(inserted == 1)
        })();
        conn.pragma_update(None, "synchronous", "FULL")?;
        result
    }
}

/// Insert or update a run (and, when new, its input rows) inside `tx`.
/// Write a run row, as PostgreSQL's store does: only over the authenticated row of the
/// version before it, which must also be the version the audit log last wrote. The operator
/// can edit the file underneath a running enclave; a run restored to an older copy (a
/// withheld run back to held, say) is refused at its next write instead of going on from it.
pub(super) fn put_run_tx(
    tx: &rusqlite::Transaction<'_>,
    run: &RunRow,
    rows: &RowKey,
) -> ApiResult<String> {
    let body = to_json(run)?;
    let mac = rows.mac("runs", &run.id, &body);
    let current: Option<(String, String)> = tx
        .prepare_cached("SELECT body, mac FROM runs WHERE id = ?1")?
        .query_row(params![run.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let id = &run.id;
    match current {
        None if run.version <= 1 => {
            tx.prepare_cached("INSERT INTO runs (id, created, body, mac) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![id, run.created as i64, &body, mac])?;
        }
        None => {
            return Err(ApiError::Tampered(format!(
                "runs/{id} is missing from the database (the audit log wrote it)"
            )));
        }
        Some((stored, stored_mac)) => {
            rows.check("runs", id, &stored, &stored_mac)?;
            let logged: Option<String> = tx
                .prepare_cached(
                    "SELECT row_digest FROM audit WHERE row = ?1 ORDER BY seq DESC LIMIT 1",
                )?
                .query_row(params![format!("runs/{id}")], |r| r.get(0))
                .optional()?;
            if logged.as_deref() != Some(body_digest(&stored).as_str()) {
                return Err(ApiError::Tampered(format!(
                    "runs/{id} is not the version the audit log last wrote: it was edited or \
                     restored from an older copy outside the enclave"
                )));
            }
            let stored: RunRow = from_json(&stored)?;
            if stored.version + 1 != run.version {
                return Err(ApiError::Conflict(format!(
                    "run {id} changed underneath this write (version {} is stored, the write \
                     follows {})",
                    stored.version,
                    run.version.saturating_sub(1)
                )));
            }
            tx.prepare_cached("UPDATE runs SET body = ?2, mac = ?3 WHERE id = ?1")?
                .execute(params![id, &body, mac])?;
        }
    }
    Ok(body)
}
