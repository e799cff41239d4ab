//! Boot: the attester, the sealed state (local, handed over, or joined from a cluster), the
//! audit log checked against every row it names, and the service built from them.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use cleanroom_runtime::{Runtime, RuntimeConfig};
use cleanroom_trust::EnclaveIdentity;
use cleanroom_trust::Sealer;
use cleanroom_trust::attester::Attester;
use tokio::sync::mpsc;

use crate::app::{Metrics, RUN_CHANGES_BACKLOG, Service};
use crate::audit::AuditLog;
use crate::config::{Config, StorageKind};
use crate::events::EventBus;
use crate::store::{RowKey, SqliteStorage, Storage};

impl Service {
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
        // From here on every typed read is checked against the log as well.
        let storage: Arc<dyn Storage> = Arc::new(crate::store::Checked::new(storage, audit.rows()));
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
                let engine = cleanroom_r::REngine::load(dir)?;
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
        let service = Self {
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
                let (key, keys) = crate::cluster::join(member, attester, config)?;
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
        let audit = AuditLog::load(storage)?;
        match storage.check_logged_rows(&audit.rows().snapshot()) {
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
                None => crate::app::simulation_measurement(),
            },
            host_data: cleanroom_trust::binding::host_data(&config.deployment_bytes()),
            local_secret,
            tcb: config
                .simulation_tcb
                .unwrap_or(cleanroom_trust::attester::simulation::SIMULATED_TCB),
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
