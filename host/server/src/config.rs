//! `cleanroomd.toml`: unknown fields are refused; defaults are the secure ones.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Listen address by default: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Runs waiting in the queue before submissions are refused.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
/// Runs executing at once.
pub const DEFAULT_WORKERS: usize = 2;
/// Largest request body (dataset envelopes are streamed to disk, not held).
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 64 << 30;
/// Largest analysis module.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 256 << 20;
/// Per-run wall-clock limit, seconds.
pub const DEFAULT_RUN_TIMEOUT_SECS: u64 = 300;

/// The service configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Binding beyond loopback is an explicit choice.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory for sealed state, blobs and the database.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Use the INSECURE simulated attester (also needs `--insecure-simulation`).
    #[serde(default)]
    pub insecure_simulation: bool,
    /// Serve plain HTTP instead of attested TLS: only with the simulation backend and a
    /// loopback listen address (development and tests on one machine).
    #[serde(default)]
    pub plain_http: bool,
    /// This image's security version number: a hand-over of the state goes only to an image
    /// the author signed with a higher one. (In production it comes from the measured ID
    /// block; here it is part of the attested deployment configuration.)
    #[serde(default)]
    pub svn: u32,
    /// The project author's Ed25519 key (hex) whose upgrade statements this deployment
    /// accepts; without it, no hand-over is possible (part of the attested configuration).
    #[serde(default)]
    pub author_key: Option<cleanroom_proto::PartyId>,
    /// Simulation only: the launch measurement to report (hex, 48 bytes), standing for the
    /// image; default: the fixed simulation measurement.
    #[serde(default)]
    pub simulation_measurement: Option<String>,
    /// Simulation only: the TCB to report (standing for an older platform); default: the
    /// fixed simulated TCB.
    #[serde(default)]
    pub simulation_tcb: Option<cleanroom_trust::Tcb>,
    /// The lowest TCB (platform firmware and microcode SVNs) a cluster joiner, a cluster
    /// member and an upgraded image handed this state must report (part of the attested
    /// configuration, so owners see the floor they rely on). Required outside simulation
    /// for joining and hand-over.
    #[serde(default)]
    pub minimum_tcb: Option<cleanroom_trust::Tcb>,
    /// The author's signed upgrade statement for this image (JSON), served with attestation
    /// so clients can pin (author key, minimum SVN) instead of exact measurements.
    #[serde(default)]
    pub upgrade_statement: Option<PathBuf>,
    /// A hand-over answer (from the previous image's `POST /v1/upgrade/handover`) to take the
    /// state key from at start.
    #[serde(default)]
    pub handover: Option<PathBuf>,
    /// Runs waiting before new submissions are refused.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// Runs executing at once.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Largest dataset upload, bytes.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Largest module upload, bytes.
    #[serde(default = "default_max_module")]
    pub max_module_bytes: u64,
    /// Per-run wall-clock limit, seconds.
    #[serde(default = "default_timeout")]
    pub run_timeout_secs: u64,
    /// The R engine's directory (`scripts/build-r.sh`): R analyses run as this engine's module
    /// id (the digest of its files, computed by the enclave when it loads them; owners grant
    /// that id and pin the script by the params digest). None: no R.
    #[serde(default)]
    pub r_engine: Option<PathBuf>,
    /// Where state lives: `embedded` (SQLite and files in `data_dir`, the default) or
    /// `postgres+s3` (shared by every worker of a cluster; `[postgres]` and `[s3]` say where).
    #[serde(default)]
    pub storage: StorageKind,
    /// The metadata database, for `storage = "postgres+s3"`.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
    /// The object store, for `storage = "postgres+s3"`.
    #[serde(default)]
    pub s3: Option<crate::blobs::S3Config>,
    /// How this worker takes part in a cluster.
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// Where state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum StorageKind {
    /// SQLite (WAL) and blob files in `data_dir`: one server, zero setup.
    #[default]
    #[serde(rename = "embedded")]
    Embedded,
    /// PostgreSQL for metadata and S3-compatible object storage for blobs, shared by workers.
    #[serde(rename = "postgres+s3")]
    PostgresS3,
}

/// `[postgres]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq-style connection string or URL (or `CLEANROOM_POSTGRES_URL`), e.g.
    /// `host=db user=cleanroom dbname=cleanroom`.
    #[serde(default)]
    pub url: Option<String>,
    /// Connections this worker keeps.
    #[serde(default = "default_pool")]
    pub pool: usize,
}

fn default_pool() -> usize {
    8
}

impl PostgresConfig {
    /// The connection string, from the config or the environment.
    pub fn url(&self) -> anyhow::Result<String> {
        self.url
            .clone()
            .or_else(|| std::env::var("CLEANROOM_POSTGRES_URL").ok())
            .ok_or_else(|| anyhow::anyhow!("[postgres] needs url or CLEANROOM_POSTGRES_URL"))
    }
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This worker's name in the run queue (or `CLEANROOM_WORKER`, e.g. the pod's name).
    #[serde(default)]
    pub worker: Option<String>,
    /// A running member to take the cluster's keys from, by attested key release, when this
    /// worker has none yet (e.g. `http://cleanroomd-0.cleanroomd:7878`).
    #[serde(default)]
    pub join: Option<String>,
    /// Seconds a claimed run stays with its worker without renewal; after that another
    /// worker takes it over.
    #[serde(default = "default_lease")]
    pub lease_secs: u64,
}

fn default_lease() -> u64 {
    30
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            worker: None,
            join: None,
            lease_secs: default_lease(),
        }
    }
}

impl ClusterConfig {
    /// This worker's name in the queue: the configured name (or `worker`) and a part random
    /// for the life of the process, so a restarted worker never renews the claims of the
    /// process it replaces (those run out and are taken over).
    pub fn worker_id(&self) -> String {
        static RANDOM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let random = RANDOM.get_or_init(|| {
            let mut b = [0u8; 6];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
            hex::encode(b)
        });
        let name = self
            .worker
            .clone()
            .or_else(|| std::env::var("CLEANROOM_WORKER").ok())
            .unwrap_or_else(|| "worker".into());
        format!("{name}-{random}")
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .expect("DEFAULT_LISTEN is a valid address")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("cleanroom-data")
}
fn default_queue() -> usize {
    DEFAULT_QUEUE_CAPACITY
}
fn default_workers() -> usize {
    DEFAULT_WORKERS
}
fn default_max_upload() -> u64 {
    DEFAULT_MAX_UPLOAD_BYTES
}
fn default_max_module() -> u64 {
    DEFAULT_MAX_MODULE_BYTES
}
fn default_timeout() -> u64 {
    DEFAULT_RUN_TIMEOUT_SECS
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("the empty config takes every default")
    }
}

impl Config {
    /// Parse a TOML file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        Self::from_toml(&text)
    }

    /// Parse TOML text.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let config: Self =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
        if config.storage == StorageKind::PostgresS3
            && (config.postgres.is_none() || config.s3.is_none())
        {
            anyhow::bail!("invalid config: storage = \"postgres+s3\" needs [postgres] and [s3]");
        }
        if config.workers == 0 || config.queue_capacity == 0 {
            anyhow::bail!("invalid config: workers and queue_capacity must be at least 1");
        }
        Ok(config)
    }

    /// The deployment configuration that attestation binds (`host_data`):
    /// every setting that changes what the enclave does with data.
    pub fn deployment_bytes(&self) -> Vec<u8> {
        format!(
            "cleanroomd/{}\nsvn={}\nauthor_key={}\nsimulation={}\nplain_http={}\nqueue={}\nworkers={}\nmax_upload={}\nmax_module={}\ntimeout={}\n",
            env!("CARGO_PKG_VERSION"),
            self.svn,
            self.author_key.map(|k| k.to_string()).unwrap_or_default(),
            self.insecure_simulation,
            self.plain_http,
            self.queue_capacity,
            self.workers,
            self.max_upload_bytes,
            self.max_module_bytes,
            self.run_timeout_secs
        )
        .into_bytes()
        .into_iter()
        // A cluster's workers must agree on where state lives; the embedded default keeps the
        // bytes (and so every measured deployment digest) it always had.
        .chain(match self.storage {
            StorageKind::Embedded => Vec::new(),
            StorageKind::PostgresS3 => b"storage=postgres+s3\n".to_vec(),
        })
        // Likewise only where a floor is set.
        .chain(
            self.minimum_tcb
                .map(|t| format!("minimum_tcb={}\n", tcb_text(&t)).into_bytes())
                .unwrap_or_default(),
        )
        .collect()
    }
}

impl Config {
    /// The TCB floor joiners, members and upgraded images are held to: `minimum_tcb`; under
    /// simulation, none if unset. Outside simulation a deployment without one has no floor
    /// to hold anyone to, and so joins and hands over to nobody.
    pub fn tcb_floor(&self) -> Result<cleanroom_trust::Tcb, String> {
        match (self.minimum_tcb, self.insecure_simulation) {
            (Some(floor), _) => Ok(floor),
            (None, true) => Ok(cleanroom_trust::Tcb::ZERO),
            (None, false) => Err(
                "the deployment sets no minimum_tcb: set the lowest platform \
                                  TCB (bootloader, tee, snp, microcode SVNs) a worker or an \
                                  upgraded image may run on"
                    .into(),
            ),
        }
    }
}

/// A TCB as the deployment configuration writes it: `bootloader.tee.snp.microcode[.fmc]`
/// (read back by [`deployment_minimum_tcb`]).
fn tcb_text(t: &cleanroom_trust::Tcb) -> String {
    let mut text = format!("{}.{}.{}.{}", t.bootloader, t.tee, t.snp, t.microcode);
    if let Some(fmc) = t.fmc {
        text.push_str(&format!(".{fmc}"));
    }
    text
}

/// The TCB floor a deployment configuration's text names (`None`: none, or not in the form
/// [`tcb_text`] writes).
pub fn deployment_minimum_tcb(deployment: &str) -> Option<cleanroom_trust::Tcb> {
    let text = deployment
        .lines()
        .find_map(|l| l.strip_prefix("minimum_tcb="))?;
    let parts: Vec<u8> = text
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let fmc = match parts.len() {
        4 => None,
        5 => Some(parts[4]),
        _ => return None,
    };
    Some(cleanroom_trust::Tcb {
        bootloader: parts[0],
        tee: parts[1],
        snp: parts[2],
        microcode: parts[3],
        fmc,
    })
}

#[cfg(test)]
mod tests {
    /// The Kubernetes manifests' configuration is one cleanroomd accepts, for a cluster.
    #[test]
    fn the_kubernetes_config_map_is_a_valid_cluster_config() {
        let manifest = include_str!("../../deploy/kubernetes/config.yaml");
        let (_, toml) = manifest
            .split_once("cleanroomd.toml: |\n")
            .expect("the config map holds cleanroomd.toml");
        let toml: String = toml
            .lines()
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let config = Config::from_toml(&toml).unwrap();
        // Joining outside simulation needs a TCB floor.
        assert!(config.minimum_tcb.is_some());
        assert_eq!(config.storage, StorageKind::PostgresS3);
        assert!(config.cluster.join.is_some());
        assert!(!config.insecure_simulation && !config.plain_http);
    }

    use super::*;

    #[test]
    fn defaults_are_loopback_and_no_simulation() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(!c.insecure_simulation);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = Config::from_toml("listen = \"127.0.0.1:1\"\nsimulation = true\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `simulation`"),
            "{err}"
        );
    }
}
