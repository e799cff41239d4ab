//! The service: state shared by the HTTP handlers and the run workers.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use cleanroom_proto::PartyId;
use cleanroom_runtime::{CancelToken, Runtime, RuntimeConfig};
use cleanroom_trust::EnclaveIdentity;
use cleanroom_trust::Sealer;
use cleanroom_trust::attester::Attester;
use sha2::{Digest, Sha384};
use tokio::sync::mpsc;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::config::StorageKind;
use crate::events::EventBus;
use crate::store::{RowKey, SqliteStorage, Storage};

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
    pub r_engine: Option<cleanroom_runtime::r::REngine>,
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
    pub refusals: crate::auth::RefusalMeter,
    /// Upload slots, in total and per party.
    pub uploads: UploadSlots,
    /// Grant run counts and DP charges, in enclave memory.
    pub ledger: crate::ledger::Ledger,
}

/// Run changes a waiting status request may fall behind by before it re-reads its run anyway.
const RUN_CHANGES_BACKLOG: usize = 1024;

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

    /// Open the data directory, unseal (or create) the enclave identity and
    /// resume the audit log. Returns the service and the queue's receiver.
    pub fn open(
        config: Config,
        allow_simulation: bool,
    ) -> Result<(Arc<Self>, mpsc::Receiver<String>)> {
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create data dir {}", dir.display()))?;
        let attester = attester(&config, allow_simulation, &dir)?;
        if config.plain_http && !(config.insecure_simulation && config.listen.ip().is_loopback()) {
            anyhow::bail!(
                "plain_http serves without attested TLS: allowed only with the simulation \
                 backend on a loopback address (listen is {})",
                config.listen
            );
        }
        let sealing_key = attester
            .sealing_key()
            .context("cannot derive the sealing key")?;
        let (state_key, identity, storage, blobs) =
            open_state(&config, attester.as_ref(), &sealing_key)?;
        let sealer = Sealer::new(&state_key);
        let tls = if config.plain_http {
            None
        } else {
            Some(crate::tls::TlsIdentity::generate(&identity)?)
        };
        let evidence = attester
            .evidence(&identity.public_keys(), None)
            .context("cannot produce attestation evidence")?;
        let measurement = cleanroom_trust::Report::from_bytes(&evidence.report)
            .map(|r| hex::encode(r.measurement()))
            .context("own attestation report does not parse")?;
        let audit = load_checked(storage.as_ref())?;
        let ledger = crate::ledger::Ledger::load(storage.as_ref())?;
        let clock = crate::clock::TrustedClock::load(dir.join("clock.sealed"), &sealer)?;
        let runtime = Runtime::new(RuntimeConfig {
            max_concurrent_runs: (config.workers as u32).max(1) * 2,
            // No compile cache: native code read from the operator's disk would be trusted.
            compile_cache: None,
            ..RuntimeConfig::default()
        })?;
        let r_engine = match &config.r_engine {
            Some(dir) => {
                let engine = cleanroom_runtime::r::REngine::load(dir)?;
                tracing::info!(module = engine.id(), "R analyses enabled");
                Some(engine)
            }
            None => None,
        };
        let upgrade_statement = match &config.upgrade_statement {
            Some(path) => Some(
                serde_json::from_slice(
                    &std::fs::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                )
                .with_context(|| format!("{} is not an upgrade statement", path.display()))?,
            ),
            None => None,
        };
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let service = Service {
            config,
            storage,
            blobs,
            runtime,
            r_engine,
            identity,
            sealer,
            attester,
            handed_over: Mutex::new(None),
            upgrade_statement,
            state_key,
            tls,
            measurement,
            audit,
            events: EventBus::default(),
            run_changes: tokio::sync::broadcast::channel(RUN_CHANGES_BACKLOG).0,
            metrics: Metrics::default(),
            queue: tx,
            cancels: Mutex::new(HashMap::new()),
            clock,
            admissions: Mutex::new(()),
            transitions: Mutex::new(()),
            revoked: Mutex::new(HashSet::new()),
            refusals: Default::default(),
            uploads: Default::default(),
            ledger,
        };
        Ok((Arc::new(service), rx))
    }

    /// Record an audit entry (persisted before this returns) and notify `audience`.
    pub fn record(
        &self,
        audience: crate::events::Audience,
        actor: Option<PartyId>,
        action: &str,
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
        action: &str,
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
        action: &str,
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
        action: &str,
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
        crate::cluster::apply_missed(self, &missed)
    }

    /// The enclave's signing key as a party id (receipts and heads are signed by it).
    pub fn enclave_party(&self) -> PartyId {
        PartyId(self.identity.public_keys().signing_public_key)
    }
}

/// What `open_state` opens: the state key, the identity, metadata and blobs.
type State = (
    zeroize::Zeroizing<[u8; 32]>,
    EnclaveIdentity,
    Arc<dyn Storage>,
    Arc<dyn crate::blobs::Blobs>,
);

/// Everything at rest is keyed by the state key, sealed to this image (and handed to an
/// upgraded image only under the author's signed statement, or to a new worker of the same
/// cluster only by attested key release).
fn open_state(config: &Config, attester: &dyn Attester, sealing_key: &[u8; 32]) -> Result<State> {
    let dir = &config.data_dir;
    match config.storage {
        StorageKind::Embedded => {
            let state_key =
                crate::upgrade::state_key(dir, sealing_key, config.handover.as_deref())?;
            let identity = EnclaveIdentity::load_or_create(dir, &state_key)
                .context("cannot unseal the enclave identity")?;
            let storage = SqliteStorage::open(dir, RowKey::derive(&state_key))?;
            let blobs = crate::blobs::FileBlobs::open(dir)?;
            Ok((state_key, identity, Arc::new(storage), Arc::new(blobs)))
        }
        StorageKind::PostgresS3 => {
            let (pg, s3) = config
                .postgres
                .as_ref()
                .zip(config.s3.as_ref())
                .context("storage = \"postgres+s3\" needs [postgres] and [s3]")?;
            let url = pg.url()?;
            let local = dir.join(crate::upgrade::STATE_KEY_FILE).exists();
            let mut member_keys = None;
            let state_key = if !local && crate::store_pg::cluster_identity(&url)?.is_some() {
                let member = config.cluster.join.as_deref().context(
                    "this cluster already has an identity and this worker has no key to it: \
                     set [cluster] join to a running member's URL, which releases the key to \
                     this worker after checking its attestation",
                )?;
                let (key, keys) = crate::cluster::join(
                    member,
                    attester,
                    &config.deployment_bytes(),
                    config.insecure_simulation,
                )?;
                crate::upgrade::keep_state_key(dir, sealing_key, &key)?;
                tracing::info!(member, "joined the cluster by attested key release");
                member_keys = Some(keys);
                key
            } else {
                crate::upgrade::state_key(dir, sealing_key, config.handover.as_deref())?
            };
            let storage =
                crate::store_pg::PgStorage::open(&url, pg.pool, RowKey::derive(&state_key))?;
            let identity = crate::cluster::shared_identity(&storage, dir, &state_key)?;
            if let Some(keys) = member_keys {
                let mine = identity.public_keys();
                if keys.signing_public_key != mine.signing_public_key
                    || keys.hpke_public_key != mine.hpke_public_key
                {
                    anyhow::bail!(
                        "the member's evidence binds another identity than the one its key opens"
                    );
                }
            }
            let blobs = crate::blobs::ObjectBlobs::open(s3, &dir.join("tmp"))?;
            Ok((state_key, identity, Arc::new(storage), Arc::new(blobs)))
        }
    }
}

/// The audit log, with every row the enclave acts on checked to be the version the log last
/// wrote. Where workers share the storage, one may write between the two reads: a mismatch
/// is read again a few times before it counts as tampering (tampering stays; a race passes).
fn load_checked(storage: &dyn Storage) -> Result<AuditLog> {
    let mut attempt = 0;
    loop {
        let (audit, logged) = AuditLog::load(storage)?;
        match storage.check_logged_rows(&logged) {
            Ok(()) => return Ok(audit),
            Err(crate::error::ApiError::Tampered(_))
                if storage.cluster().is_some() && attempt < 10 =>
            {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) fn attester(
    config: &Config,
    allow_simulation: bool,
    dir: &Path,
) -> Result<Box<dyn Attester>> {
    if config.insecure_simulation || allow_simulation {
        simulation(config, allow_simulation, dir)
    } else {
        snp()
    }
}

#[cfg(target_os = "linux")]
fn snp() -> Result<Box<dyn Attester>> {
    let attester = cleanroom_trust::attester::snp::SnpAttester::open().context(
        "cannot open the SEV-SNP guest device; run inside an SEV-SNP VM, or pass --insecure-simulation for development",
    )?;
    Ok(Box::new(attester))
}

#[cfg(not(target_os = "linux"))]
fn snp() -> Result<Box<dyn Attester>> {
    anyhow::bail!("SEV-SNP attestation needs Linux; pass --insecure-simulation for development")
}

#[cfg(feature = "simulation")]
fn simulation(config: &Config, allow: bool, dir: &Path) -> Result<Box<dyn Attester>> {
    use cleanroom_trust::attester::simulation::{SimulationAttester, SimulationConfig};
    if !(allow && config.insecure_simulation) {
        anyhow::bail!(
            "simulation needs both `insecure_simulation = true` in the config and the --insecure-simulation flag"
        );
    }
    let secret_path = dir.join("simulation-secret");
    let local_secret: [u8; 32] = match std::fs::read(&secret_path) {
        Ok(bytes) => bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} is corrupt", secret_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
            // Durably: a power loss right after start-up must not leave a torn secret (the
            // image boot test pulls the plug and found exactly that).
            crate::store::write_durably(&secret_path, &secret)?;
            secret
        }
        Err(e) => return Err(e.into()),
    };
    let attester = SimulationAttester::new(
        SimulationConfig {
            measurement: match &config.simulation_measurement {
                Some(hex_m) => hex::decode(hex_m)
                    .ok()
                    .and_then(|m| m.try_into().ok())
                    .ok_or_else(|| {
                        anyhow::anyhow!("simulation_measurement must be 48 bytes of hex")
                    })?,
                None => simulation_measurement(),
            },
            host_data: cleanroom_trust::binding::host_data(&config.deployment_bytes()),
            local_secret,
        },
        true,
    )?;
    Ok(Box::new(attester))
}

#[cfg(not(feature = "simulation"))]
fn simulation(_: &Config, _: bool, _: &Path) -> Result<Box<dyn Attester>> {
    anyhow::bail!("this cleanroomd was built without the `simulation` feature")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without SEV-SNP hardware and without the simulation feature, nothing starts: not even
    /// with the config and flag that would enable simulation in a development build.
    #[cfg(not(feature = "simulation"))]
    #[test]
    fn no_snp_and_no_simulation_feature_means_no_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("data"),
            insecure_simulation: true,
            ..Config::default()
        };
        let err = Service::open(config.clone(), true).unwrap_err();
        assert!(
            format!("{err:#}").contains("built without the `simulation` feature"),
            "{err:#}"
        );
        let config = Config {
            insecure_simulation: false,
            ..config
        };
        let err = Service::open(config, false).unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot open the SEV-SNP guest device"),
            "{err:#}"
        );
    }

    /// The flag alone is not enough in a development build either: the config must agree.
    #[cfg(feature = "simulation")]
    #[test]
    fn simulation_needs_the_config_and_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let err = Service::open(config, true).unwrap_err();
        assert!(format!("{err:#}").contains("needs both"), "{err:#}");
    }
}
