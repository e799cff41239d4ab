//! The audit log: every upload, grant, revocation, run, release, withhold and refused
//! request, persisted before it is acknowledged, as leaves of an RFC 6962 Merkle tree whose
//! heads the enclave signs. Every stored row the enclave acts on (datasets, policies, runs) is
//! written in the same transaction as the entry that records it, with its digest, so at start
//! the log says which version of each row is the current one.

use std::sync::{Arc, Mutex};

use cleanroom_proto::PartyId;
use cleanroom_proto::audit::{AuditEntry, ConsistencyAnswer, LoggedEntry, MerkleLog, SignedHead};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::events::{Audience, EventBus};
use crate::store::{RowBook, RowWrite, Storage, StoredEntry};

/// What this worker has read of the log: the Merkle tree, and (shared with the storage's
/// checked reads) which version of each row the log wrote last.
struct Books {
    tree: MerkleLog,
    rows: Arc<RowBook>,
}

impl Books {
    /// Add the next stored entry, refusing a gap.
    fn push_next(&mut self, stored: &StoredEntry) -> ApiResult<()> {
        if stored.entry.seq != self.tree.len() {
            return Err(ApiError::Tampered(format!(
                "audit entry {} is missing: refusing to go on with tampered state",
                self.tree.len()
            )));
        }
        self.tree.push(stored.entry.hash());
        self.rows.wrote(stored);
        Ok(())
    }
}

/// What happened, for [`AuditLog::record`].
#[derive(Debug)]
pub struct AuditEvent<'a> {
    /// Who did it (`None`: the enclave itself).
    pub actor: Option<PartyId>,
    /// What.
    pub action: cleanroom_proto::Action,
    /// To what, e.g. a run or dataset id.
    pub subject: &'a str,
    /// Details.
    pub detail: Value,
}

/// The service's audit log.
pub struct AuditLog {
    books: Mutex<Books>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Rebuild the tree from storage (every row's MAC checked on the way), noting which
    /// version of each row the log wrote last ([`Self::rows`]).
    pub fn load(storage: &dyn Storage) -> ApiResult<Self> {
        let log = Self {
            books: Mutex::new(Books {
                tree: MerkleLog::new(),
                rows: Arc::new(RowBook::default()),
            }),
        };
        log.catch_up(storage)?;
        Ok(log)
    }

    /// Which version of each row the log wrote last, as far as this worker has read it
    /// (what the storage's reads are checked against: [`crate::store::Checked`]).
    pub fn rows(&self) -> Arc<RowBook> {
        self.books().rows.clone()
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().expect("audit lock is never poisoned")
    }

    /// Fold in the entries other workers appended to a shared log since this one last
    /// looked, and return them.
    pub fn catch_up(&self, storage: &dyn Storage) -> ApiResult<Vec<StoredEntry>> {
        let mut books = self.books();
        let mut missed = Vec::new();
        let from = books.tree.len();
        crate::store::each_entry(storage, from, |stored| {
            books.push_next(&stored)?;
            missed.push(stored);
            Ok(())
        })?;
        Ok(missed)
    }

    /// Append and persist an entry (with `write` in the same transaction), then tell the
    /// parties it concerns. Returns the entries other workers appended before it (already
    /// in the tree; the caller brings its books up to them).
    pub fn record(
        &self,
        storage: &dyn Storage,
        events: &EventBus,
        audience: Audience,
        event: AuditEvent<'_>,
        write: Option<RowWrite<'_>>,
    ) -> ApiResult<Vec<StoredEntry>> {
        let AuditEvent {
            actor,
            action,
            subject,
            detail,
        } = event;
        let mut salt = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
        let parties = match &audience {
            Audience::Everyone => None,
            Audience::Parties(p) => {
                let mut p = p.clone();
                p.sort();
                p.dedup();
                Some(p)
            }
        };
        let mut books = self.books();
        let entry = AuditEntry {
            // Numbered by the storage (after entries other workers appended).
            seq: books.tree.len(),
            time: crate::now(),
            actor,
            action: action.as_string(),
            subject: subject.to_string(),
            detail,
            parties,
            salt: hex::encode(salt),
        };
        let fences = crate::store::held_fences();
        let appended = storage.append_audit(books.tree.len(), entry, write, &fences)?;
        for stored in &appended.missed {
            books.push_next(stored)?;
        }
        if appended.entry.entry.seq != books.tree.len() {
            return Err(ApiError::Internal(format!(
                "the storage numbered the entry {} after {} entries",
                appended.entry.entry.seq,
                books.tree.len()
            )));
        }
        books.push_next(&appended.entry)?;
        drop(books);
        let entry = appended.entry.entry;
        tracing::info!(seq = entry.seq, action = %action, subject, "audit");
        let value = serde_json::to_value(&entry).map_err(|e| ApiError::Internal(e.to_string()))?;
        events.publish(
            audience,
            serde_json::json!({ "kind": "audit", "entry": value }),
        );
        Ok(appended.missed)
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.books().tree.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current tree head, signed by the enclave.
    pub fn head(&self, key: &ed25519_dalek::SigningKey) -> SignedHead {
        self.books().tree.sign_head(crate::now(), key)
    }

    /// The current head and a proof that it extends the tree of `old` entries.
    pub fn consistency(
        &self,
        old: u64,
        key: &ed25519_dalek::SigningKey,
    ) -> ApiResult<ConsistencyAnswer> {
        let books = self.books();
        let tree = &books.tree;
        let proof = tree.prove_consistency(old).ok_or_else(|| {
            ApiError::NotFound(format!(
                "the log has {} entries, fewer than {old}: if you saw a head of size {old}, \
                 this log was truncated or is not the one you saw",
                tree.len()
            ))
        })?;
        Ok(ConsistencyAnswer {
            old,
            head: tree.sign_head(crate::now(), key),
            proof,
        })
    }

    /// `entry` (at its seq) with the current head and its inclusion proof.
    pub fn logged(
        &self,
        entry: AuditEntry,
        key: &ed25519_dalek::SigningKey,
    ) -> ApiResult<LoggedEntry> {
        let books = self.books();
        let tree = &books.tree;
        let inclusion = tree.prove_inclusion(entry.seq).ok_or_else(|| {
            ApiError::Internal(format!("audit entry {} is past the log", entry.seq))
        })?;
        Ok(LoggedEntry {
            entry,
            head: tree.sign_head(crate::now(), key),
            inclusion,
        })
    }
}
