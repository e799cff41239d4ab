//! The audit log: every upload, grant, revocation, run, release, withhold and refused
//! request, persisted before it is acknowledged, as leaves of an RFC 6962 Merkle tree whose
//! heads the enclave signs. Every stored row the enclave acts on (datasets, policies, runs) is
//! written in the same transaction as the entry that records it, with its digest, so at start
//! the log says which version of each row is the current one.

use std::sync::Mutex;

use cleanroom_proto::PartyId;
use cleanroom_proto::audit::{AuditEntry, ConsistencyAnswer, LoggedEntry, MerkleLog, SignedHead};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::events::{Audience, EventBus};
use crate::store::{LoggedRows, RowWrite, Storage, StoredEntry};

/// Add the next stored entry to the tree, refusing a gap.
fn push_next(tree: &mut MerkleLog, stored: &StoredEntry) -> ApiResult<()> {
    if stored.entry.seq != tree.len() {
        return Err(ApiError::Tampered(format!(
            "audit entry {} is missing: refusing to go on with tampered state",
            tree.len()
        )));
    }
    tree.push(stored.entry.hash());
    Ok(())
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
    tree: Mutex<MerkleLog>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Rebuild the tree from storage (every row's MAC checked on the way), and say which
    /// version of each row the log wrote last.
    pub fn load(storage: &dyn Storage) -> ApiResult<(Self, LoggedRows)> {
        let mut tree = MerkleLog::new();
        let mut rows = LoggedRows::new();
        loop {
            let page = storage.audit(tree.len(), 4096)?;
            if page.is_empty() {
                break;
            }
            for stored in page {
                push_next(&mut tree, &stored)?;
                if let Some((row, digest)) = stored.row {
                    rows.insert(row, digest);
                }
            }
        }
        Ok((
            Self {
                tree: Mutex::new(tree),
            },
            rows,
        ))
    }

    fn tree(&self) -> std::sync::MutexGuard<'_, MerkleLog> {
        self.tree.lock().expect("audit lock is never poisoned")
    }

    /// Fold in the entries other workers appended to a shared log since this one last
    /// looked, and return them.
    pub fn catch_up(&self, storage: &dyn Storage) -> ApiResult<Vec<StoredEntry>> {
        let mut tree = self.tree();
        let mut missed = Vec::new();
        loop {
            let page = storage.audit(tree.len(), 4096)?;
            if page.is_empty() {
                return Ok(missed);
            }
            for stored in page {
                push_next(&mut tree, &stored)?;
                missed.push(stored);
            }
        }
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
        let mut tree = self.tree();
        let entry = AuditEntry {
            // Numbered by the storage (after entries other workers appended).
            seq: tree.len(),
            time: crate::now(),
            actor,
            action: action.as_string(),
            subject: subject.to_string(),
            detail,
            parties,
            salt: hex::encode(salt),
        };
        let appended = storage.append_audit(tree.len(), entry, write)?;
        for stored in &appended.missed {
            push_next(&mut tree, stored)?;
        }
        let entry = appended.entry;
        if entry.seq != tree.len() {
            return Err(ApiError::Internal(format!(
                "the storage numbered the entry {} after {} entries",
                entry.seq,
                tree.len()
            )));
        }
        tree.push(entry.hash());
        drop(tree);
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
        self.tree().len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current tree head, signed by the enclave.
    pub fn head(&self, key: &ed25519_dalek::SigningKey) -> SignedHead {
        self.tree().sign_head(crate::now(), key)
    }

    /// The current head and a proof that it extends the tree of `old` entries.
    pub fn consistency(
        &self,
        old: u64,
        key: &ed25519_dalek::SigningKey,
    ) -> ApiResult<ConsistencyAnswer> {
        let tree = self.tree();
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
        let tree = self.tree();
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
