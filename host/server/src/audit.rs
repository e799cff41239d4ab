//! The audit log: every upload, grant, revocation, run, release, withhold
//! and refused request, hash-chained and persisted before it is
//! acknowledged; heads signed by the enclave on request.

use std::sync::Mutex;

use cleanroom_proto::PartyId;
use cleanroom_proto::audit::{AuditEntry, SignedHead};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::events::{Audience, EventBus};
use crate::store::{RunRow, Storage};

/// What happened, for [`AuditLog::record`].
#[derive(Debug)]
pub struct AuditEvent<'a> {
    /// Who did it (`None`: the enclave itself).
    pub actor: Option<PartyId>,
    /// What, e.g. `run.released`.
    pub action: &'a str,
    /// To what, e.g. a run or dataset id.
    pub subject: &'a str,
    /// Details.
    pub detail: Value,
}

struct Tail {
    next_seq: u64,
    prev: [u8; 32],
}

/// The service's audit log.
pub struct AuditLog {
    tail: Mutex<Tail>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Resume the chain from storage, checking it on the way.
    pub fn load(storage: &dyn Storage) -> ApiResult<Self> {
        let mut tail = Tail {
            next_seq: 0,
            prev: [0; 32],
        };
        loop {
            let page = storage.audit(tail.next_seq, 4096)?;
            if page.is_empty() {
                break;
            }
            for entry in page {
                if entry.seq != tail.next_seq || entry.prev != hex::encode(tail.prev) {
                    return Err(ApiError::Internal(format!(
                        "audit log is broken at entry {}: refusing to start on tampered state",
                        entry.seq
                    )));
                }
                tail.prev = entry.hash();
                tail.next_seq += 1;
            }
        }
        Ok(AuditLog {
            tail: Mutex::new(tail),
        })
    }

    /// Append and persist an entry, then tell the parties it concerns.
    pub fn record(
        &self,
        storage: &dyn Storage,
        events: &EventBus,
        audience: Audience,
        event: AuditEvent<'_>,
        run: Option<&RunRow>,
    ) -> ApiResult<()> {
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
        let mut tail = self.tail.lock().expect("audit lock is never poisoned");
        let entry = AuditEntry {
            seq: tail.next_seq,
            time: crate::now(),
            actor,
            action: action.to_string(),
            subject: subject.to_string(),
            detail,
            prev: hex::encode(tail.prev),
            parties,
            salt: hex::encode(salt),
        };
        let hash = entry.hash();
        storage.append_audit(&entry, &hex::encode(hash), run)?;
        tail.prev = hash;
        tail.next_seq += 1;
        tracing::info!(seq = entry.seq, action, subject, "audit");
        let value = serde_json::to_value(&entry).map_err(|e| ApiError::Internal(e.to_string()))?;
        events.publish(
            audience,
            serde_json::json!({ "kind": "audit", "entry": value }),
        );
        Ok(())
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.tail
            .lock()
            .expect("audit lock is never poisoned")
            .next_seq
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current head, signed by the enclave.
    pub fn head(&self, key: &ed25519_dalek::SigningKey) -> SignedHead {
        let tail = self.tail.lock().expect("audit lock is never poisoned");
        SignedHead::sign(
            tail.next_seq.saturating_sub(1),
            tail.prev,
            crate::now(),
            key,
        )
    }
}
