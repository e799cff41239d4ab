//! The service: state shared by the HTTP handlers and the run workers.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use cleanroom_proto::PartyId;
use cleanroom_runtime::{CancelToken, Runtime};
use cleanroom_trust::EnclaveIdentity;
use cleanroom_trust::Sealer;
use cleanroom_trust::attester::Attester;
use sha2::{Digest, Sha384};
use tokio::sync::mpsc;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::events::EventBus;
use crate::store::Storage;

/// Counters exported at `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    /// Requests handled.
    pub requests: Counter,
    /// Requests refused for authentication.
    pub refused: Counter,
    /// Runs submitted.
    pub runs_submitted: Counter,
    /// Runs whose outputs were released.
    pub runs_released: Counter,
    /// Runs failed.
    pub runs_failed: Counter,
    /// Runs withheld or rejected.
    pub runs_withheld: Counter,
    /// Bytes of datasets uploaded.
    pub upload_bytes: Counter,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
            requests: Counter::default(),
            refused: Counter::default(),
            runs_submitted: Counter::default(),
            runs_released: Counter::default(),
            runs_failed: Counter::default(),
            runs_withheld: Counter::default(),
            upload_bytes: Counter::default(),
            registry: Registry::with_prefix("cleanroom"),
        };
        for (name, help, counter) in [
            ("requests", "HTTP requests handled", &m.requests),
            (
                "requests_refused",
                "requests refused for authentication",
                &m.refused,
            ),
            ("runs_submitted", "runs submitted", &m.runs_submitted),
            (
                "runs_released",
                "runs whose outputs were released",
                &m.runs_released,
            ),
            ("runs_failed", "runs that failed", &m.runs_failed),
            (
                "runs_withheld",
                "runs rejected or withheld",
                &m.runs_withheld,
            ),
            ("upload_bytes", "dataset bytes uploaded", &m.upload_bytes),
        ] {
            // Counters share their value with the clones registered here.
            let counter = counter.clone();
            m.registry.register(name, help, counter);
        }
        m
    }
}

impl Metrics {
    /// Add one.
    pub fn inc(counter: &Counter) {
        counter.inc();
    }

    /// The OpenMetrics text of every counter.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The running service.
pub struct Service {
    /// Configuration in force.
    pub config: Config,
    /// Durable state.
    pub storage: Arc<dyn Storage>,
    /// Sealed envelopes, modules, artefacts and results.
    pub blobs: Arc<dyn crate::blobs::Blobs>,
    /// The sandbox.
    pub runtime: Runtime,
    /// GNU R, when configured: runs whose module is its id are R scripts (the params).
    pub r_engine: Option<cleanroom_r::REngine>,
    /// The enclave's keys.
    pub identity: EnclaveIdentity,
    /// Seals state at rest under keys only this enclave derives.
    pub sealer: Sealer,
    /// Produces attestation evidence.
    pub attester: Box<dyn Attester>,
    /// The author's statement for this image, if the operator configured one.
    pub upgrade_statement: Option<cleanroom_proto::upgrade::SignedUpgradeStatement>,
    /// The key everything at rest is keyed by (handed to an upgraded image only).
    pub(crate) state_key: zeroize::Zeroizing<[u8; 32]>,
    /// Set once the state was handed to an upgraded image: this one then refuses changes.
    pub handed_over: Mutex<Option<String>>,
    /// The attested TLS key (`None`: plain HTTP on loopback in simulation).
    pub tls: Option<crate::tls::TlsIdentity>,
    /// The launch measurement (hex) this service reports.
    pub measurement: String,
    /// The audit log.
    pub audit: AuditLog,
    /// Live events.
    pub events: EventBus,
    /// The id of every run whose row just changed (after the change is durable): what a
    /// status request that waits for a change listens to.
    pub run_changes: tokio::sync::broadcast::Sender<String>,
    /// Counters.
    pub metrics: Metrics,
    /// Queue of run ids to execute.
    pub queue: mpsc::Sender<String>,
    /// Cancellation tokens of queued and running runs.
    pub cancels: Mutex<HashMap<String, CancelToken>>,
    /// Time the operator cannot turn back (grant expiry).
    pub clock: crate::clock::TrustedClock,
    /// Serialises admission-and-insert of new runs (a grant's last run is taken once).
    pub admissions: Mutex<()>,
    /// Serialises the transitions of held runs (review, revocation, release).
    pub transitions: Mutex<()>,
    /// Runs being stopped because a policy they ran under was revoked.
    pub revoked: Mutex<HashSet<String>>,
    /// Compact auditing of refused requests.
    pub refusals: crate::refusals::RefusalMeter,
    /// Upload slots, in total and per party.
    pub uploads: UploadSlots,
    /// Grant run counts and DP charges, in enclave memory.
    pub ledger: crate::ledger::Ledger,
}

/// Run changes a waiting status request may fall behind by before it re-reads its run anyway.
pub(crate) const RUN_CHANGES_BACKLOG: usize = 1024;

/// Concurrent uploads allowed in total.
pub const MAX_UPLOADS: usize = 8;
/// Concurrent uploads allowed per party.
pub const MAX_UPLOADS_PER_PARTY: usize = 2;

/// Bounds on concurrent uploads, so no party (and no crowd) can fill the disk's spool.
#[derive(Debug, Default)]
pub struct UploadSlots {
    by_party: Mutex<HashMap<PartyId, usize>>,
}

/// A held upload slot; released on drop.
#[derive(Debug)]
pub struct UploadSlot<'a> {
    slots: &'a UploadSlots,
    party: PartyId,
}

impl UploadSlots {
    /// Take a slot for `party`, or say why not.
    pub fn take(&self, party: PartyId) -> Result<UploadSlot<'_>, String> {
        let mut map = self.by_party.lock().expect("upload slots lock");
        let total: usize = map.values().sum();
        if total >= MAX_UPLOADS {
            return Err(format!(
                "{MAX_UPLOADS} uploads are in progress; retry later"
            ));
        }
        let mine = map.entry(party).or_insert(0);
        if *mine >= MAX_UPLOADS_PER_PARTY {
            return Err(format!(
                "you already have {MAX_UPLOADS_PER_PARTY} uploads in progress; wait for one to finish"
            ));
        }
        *mine += 1;
        Ok(UploadSlot { slots: self, party })
    }
}

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        let mut map = self.slots.by_party.lock().expect("upload slots lock");
        if let Some(n) = map.get_mut(&self.party) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.party);
            }
        }
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The measurement simulation mode reports: a fixed, recognisable value.
pub fn simulation_measurement() -> [u8; 48] {
    Sha384::digest(b"cleanroom/simulation-measurement/v1").into()
}

impl Service {
    /// Whether `module` is the R engine's id (a run of it is an R script).
    pub fn is_r_engine(&self, module: &str) -> bool {
        self.r_engine.as_ref().is_some_and(|r| r.id() == module)
    }

    /// Record an audit entry (persisted before this returns) and notify `audience`.
    pub fn record(
        &self,
        audience: crate::events::Audience,
        actor: Option<PartyId>,
        action: cleanroom_proto::Action,
        subject: &str,
        detail: serde_json::Value,
    ) -> crate::error::ApiResult<()> {
        self.record_with(audience, actor, action, subject, detail, None)
    }

    /// Record an audit entry and write `write` in the same durable transaction.
    pub fn record_write(
        &self,
        audience: crate::events::Audience,
        actor: Option<PartyId>,
        action: cleanroom_proto::Action,
        subject: &str,
        detail: serde_json::Value,
        write: crate::store::RowWrite<'_>,
    ) -> crate::error::ApiResult<()> {
        self.record_with(audience, actor, action, subject, detail, Some(write))
    }

    /// Store `run` and record its audit entry in one durable transaction.
    pub fn record_run(
        &self,
        run: &mut crate::store::RunRow,
        audience: crate::events::Audience,
        actor: Option<PartyId>,
        action: cleanroom_proto::Action,
        detail: serde_json::Value,
    ) -> crate::error::ApiResult<()> {
        run.version += 1;
        let write = crate::store::RowWrite::Run(run);
        if let Err(e) = self.record_with(audience, actor, action, &run.id, detail, Some(write)) {
            run.version -= 1;
            return Err(e);
        }
        // Durable first, then counted in the enclave's own books.
        self.ledger.record_run(run);
        // No one waiting is fine.
        let _ = self.run_changes.send(run.id.clone());
        Ok(())
    }

    fn record_with(
        &self,
        audience: crate::events::Audience,
        actor: Option<PartyId>,
        action: cleanroom_proto::Action,
        subject: &str,
        detail: serde_json::Value,
        write: Option<crate::store::RowWrite<'_>>,
    ) -> crate::error::ApiResult<()> {
        let event = crate::audit::AuditEvent {
            actor,
            action,
            subject,
            detail,
        };
        let missed =
            self.audit
                .record(self.storage.as_ref(), &self.events, audience, event, write)?;
        self.apply_missed(&missed)
    }

    /// Bring this worker's books and live events up to entries another worker appended.
    pub fn apply_missed(
        &self,
        missed: &[crate::store::StoredEntry],
    ) -> crate::error::ApiResult<()> {
        let mut policies_changed = Vec::new();
        for stored in missed {
            if stored.entry.action() == Some(cleanroom_proto::Action::RunCancelRequested) {
                crate::runs::cancel_here(self, &stored.entry.subject)?;
            }
            if let Some((row, _)) = &stored.row {
                // A row the log wrote and the database no longer has is tampering, never a
                // run or a charge to skip (the checked read says which).
                let gone = || {
                    crate::error::ApiError::Tampered(format!(
                        "{row} was deleted outside the enclave (the audit log wrote it)"
                    ))
                };
                if let Some(id) = row.strip_prefix("runs/") {
                    let run = self.storage.run(id)?.ok_or_else(gone)?;
                    self.ledger.record_run(&run);
                    let _ = self.run_changes.send(id.to_string());
                } else if let Some(dataset) = row.strip_prefix("previews/") {
                    let preview = self.storage.preview(dataset)?.ok_or_else(gone)?;
                    self.ledger.record_preview(&preview);
                } else if let Some(dataset) = row.strip_prefix("policies/") {
                    policies_changed.push(dataset.to_string());
                }
            }
            let audience = match &stored.entry.parties {
                Some(p) => crate::events::Audience::Parties(p.clone()),
                None => crate::events::Audience::Everyone,
            };
            let value = serde_json::to_value(&stored.entry)
                .map_err(|e| crate::error::ApiError::Internal(e.to_string()))?;
            self.events.publish(
                audience,
                serde_json::json!({ "kind": "audit", "entry": value }),
            );
        }
        if !policies_changed.is_empty() {
            crate::runs::stop_revoked_here(self, &policies_changed)?;
        }
        Ok(())
    }

    /// The enclave's signing key as a party id (receipts and heads are signed by it).
    pub fn enclave_party(&self) -> PartyId {
        PartyId(self.identity.public_keys().signing_public_key)
    }
}
