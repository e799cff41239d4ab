//! Reads checked against the audit log while running.
//!
//! A row's MAC says the enclave wrote it once; it does not say the row is the version the
//! enclave wrote *last*. The database is the operator's, and with several workers it is
//! shared and live: deleting the newest policy version (a revocation) leaves an older,
//! validly MAC'd and validly signed grant in its place; restoring a run or a preview row from
//! an older copy looks just as authentic. Start-up compares every row with the log
//! ([`Storage::check_logged_rows`]); [`Checked`] does the same on every read while running:
//! each row must be the version the log last recorded, a row the log wrote must be there,
//! and a row the log never wrote must not.
//!
//! Where workers share the log, another worker may have written a row after the last entry
//! this one folded in. A row that matches nothing this worker knows is therefore compared
//! with the log's later entries (read from the storage, each MAC'd and in sequence) before it
//! counts as tampering: a newer version another worker logged passes, an older or unlogged
//! one does not.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{
    Appended, Fence, LoggedRows, RowKey, RowWrite, Storage, StoredEntry, body_digest, from_json,
};
use crate::error::{ApiError, ApiResult};
use cleanroom_proto::audit::AuditEntry;
use cleanroom_proto::policy::SignedPolicy;

/// The version of each row the log last wrote, as far as this worker has read the log.
#[derive(Debug, Default)]
pub struct RowBook {
    inner: RwLock<Book>,
}

#[derive(Debug, Default)]
struct Book {
    /// Per logged table: key → (seq of the entry that wrote it last, body digest).
    tables: HashMap<String, HashMap<String, (u64, String)>>,
    /// How many entries of the log are folded in.
    known: u64,
}

impl RowBook {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Book> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fold in one entry of the log (called in order, by the audit log).
    pub fn wrote(&self, stored: &StoredEntry) {
        let mut book = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((row, digest)) = &stored.row
            && let Some((table, key)) = row.split_once('/')
        {
            book.tables
                .entry(table.to_string())
                .or_default()
                .insert(key.to_string(), (stored.entry.seq, digest.clone()));
        }
        book.known = book.known.max(stored.entry.seq + 1);
    }

    /// Every row's digest (for the start-up comparison of every row).
    pub fn snapshot(&self) -> LoggedRows {
        let book = self.read();
        book.tables
            .iter()
            .flat_map(|(table, rows)| {
                rows.iter()
                    .map(move |(key, (_, digest))| (format!("{table}/{key}"), digest.clone()))
            })
            .collect()
    }

    fn expected(&self, table: &str, key: &str) -> (Option<String>, u64) {
        let book = self.read();
        let digest = book
            .tables
            .get(table)
            .and_then(|rows| rows.get(key))
            .map(|(_, d)| d.clone());
        (digest, book.known)
    }

    fn known(&self) -> u64 {
        self.read().known
    }

    /// Keys of `table` the log wrote in its first `before` entries.
    fn keys_before(&self, table: &str, before: u64) -> Vec<String> {
        self.read()
            .tables
            .get(table)
            .map(|rows| {
                rows.iter()
                    .filter(|(_, (seq, _))| *seq < before)
                    .map(|(key, _)| key.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The name the log gives a table's rows (`modules/<hash>` for `module_rows`).
fn logged_table(table: &str) -> &str {
    match table {
        "module_rows" => "modules",
        other => other,
    }
}

/// A storage whose typed reads are checked against the log (see the module docs); writes,
/// the log itself and the cluster pass through.
pub struct Checked {
    inner: Arc<dyn Storage>,
    book: Arc<RowBook>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked").finish_non_exhaustive()
    }
}

impl Checked {
    /// Check `inner`'s reads against `book` (the audit log's [`crate::audit::AuditLog::rows`]).
    pub fn new(inner: Arc<dyn Storage>, book: Arc<RowBook>) -> Self {
        Self { inner, book }
    }

    /// The digest of `table/key` in the log's entries after the first `from`, if one of them
    /// wrote it (the last such). Read from the storage: each entry MAC'd and in sequence.
    fn later_write(&self, table: &str, key: &str, from: u64) -> ApiResult<Option<String>> {
        let row = format!("{table}/{key}");
        let mut last = None;
        super::each_entry(self.inner.as_ref(), from, |stored| {
            if let Some((r, digest)) = stored.row
                && r == row
            {
                last = Some(digest);
            }
            Ok(())
        })?;
        Ok(last)
    }

    /// Whether `body` (None: no row) is the version of `table/key` the log wrote last.
    /// `before` is what the book said before the row was read (a write of this worker may
    /// have landed in between).
    fn verify(
        &self,
        table: &str,
        key: &str,
        body: Option<&str>,
        before: &Option<String>,
    ) -> ApiResult<()> {
        let digest = body.map(body_digest);
        let (now, known) = self.book.expected(table, key);
        if digest == now || digest == *before {
            return Ok(());
        }
        if let Some(later) = self.later_write(table, key, known)?
            && Some(&later) == digest.as_ref()
        {
            return Ok(());
        }
        Err(ApiError::Tampered(match (body, now) {
            (None, _) => {
                format!("{table}/{key} was deleted outside the enclave (the audit log wrote it)")
            }
            (Some(_), None) => format!(
                "{table}/{key} was never written by the enclave: it was inserted outside it"
            ),
            (Some(_), Some(_)) => format!(
                "{table}/{key} is not the version the audit log last wrote: it was edited or \
                 restored from an older copy outside the enclave"
            ),
        }))
    }

    /// One pass over every row of `table`: each checked, none of the logged ones missing.
    fn all_once(&self, table: &'static str, order: &'static str) -> ApiResult<Vec<String>> {
        let name = logged_table(table);
        let known = self.book.known();
        let rows = self.inner.authenticated_all_keyed(table, order)?;
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        for (key, body) in &rows {
            self.verify(name, key, Some(body), &None)?;
            seen.insert(key.as_str());
        }
        // Rows the log wrote before this read began must all be there.
        if let Some(missing) = self
            .book
            .keys_before(name, known)
            .into_iter()
            .find(|k| !seen.contains(k.as_str()))
        {
            return Err(ApiError::Tampered(format!(
                "{name}/{missing} was deleted outside the enclave (the audit log wrote it)"
            )));
        }
        Ok(rows.into_iter().map(|(_, body)| body).collect())
    }
}

impl Storage for Checked {
    fn row_key(&self) -> &RowKey {
        self.inner.row_key()
    }

    fn raw_row(&self, table: &'static str, key: &str) -> ApiResult<Option<(String, String)>> {
        self.inner.raw_row(table, key)
    }

    fn raw_rows(
        &self,
        table: &'static str,
        order: &'static str,
    ) -> ApiResult<Vec<(String, String, String)>> {
        self.inner.raw_rows(table, order)
    }

    fn raw_policy(&self, dataset: &str) -> ApiResult<Option<(String, String)>> {
        self.inner.raw_policy(dataset)
    }

    fn authenticated(&self, table: &'static str, key: &str) -> ApiResult<Option<String>> {
        let name = logged_table(table);
        let (before, _) = self.book.expected(name, key);
        let body = self.inner.authenticated(table, key)?;
        self.verify(name, key, body.as_deref(), &before)?;
        Ok(body)
    }

    fn authenticated_all(
        &self,
        table: &'static str,
        order: &'static str,
    ) -> ApiResult<Vec<String>> {
        // A write landing between the read and the book is read again once; what is still
        // out of step after that is tampering.
        match self.all_once(table, order) {
            Err(ApiError::Tampered(_)) => self.all_once(table, order),
            other => other,
        }
    }

    /// Existence: the log wrote it (the component is loaded by its hash and checked against
    /// it), or a later entry did.
    fn has_module(&self, hash: &str) -> ApiResult<bool> {
        if self.book.expected("modules", hash).0.is_some() {
            return Ok(true);
        }
        Ok(self.module(hash)?.is_some())
    }

    fn policy(&self, dataset: &str) -> ApiResult<Option<SignedPolicy>> {
        let (before, _) = self.book.expected("policies", dataset);
        let body = self.inner.authenticated_policy(dataset)?;
        self.verify("policies", dataset, body.as_deref(), &before)?;
        body.map(|b| from_json(&b)).transpose()
    }

    fn append_audit(
        &self,
        known: u64,
        entry: AuditEntry,
        write: Option<RowWrite<'_>>,
        fences: &[Fence],
    ) -> ApiResult<Appended> {
        self.inner.append_audit(known, entry, write, fences)
    }

    fn audit(&self, from: u64, limit: u64) -> ApiResult<Vec<StoredEntry>> {
        self.inner.audit(from, limit)
    }

    fn last_write(&self, row: &str) -> ApiResult<Option<AuditEntry>> {
        self.inner.last_write(row)
    }

    fn check_logged_rows(&self, logged: &LoggedRows) -> ApiResult<()> {
        self.inner.check_logged_rows(logged)
    }

    fn cluster(&self) -> Option<&dyn super::Cluster> {
        self.inner.cluster()
    }

    fn remember_nonce(&self, party: &str, nonce: &str, created: u64) -> ApiResult<bool> {
        self.inner.remember_nonce(party, nonce, created)
    }
}
