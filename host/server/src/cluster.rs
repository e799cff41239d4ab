//! Many workers, one enclave identity.
//!
//! Workers share the metadata database, the object store and one audit log. What keeps them
//! one service:
//! - **One log.** Appends are serialised by the database; each returns what the others
//!   appended since, which the worker folds into its Merkle tree, its run ledger and its
//!   live events before it numbers its own entry ([`crate::audit::AuditLog::record`]).
//! - **One decision at a time.** Admission and run transitions hold a cluster lock and catch
//!   up with the log first ([`serial`]), so no two workers decide on stale books (a grant's
//!   last run, a DP budget, a review's last release).
//! - **Runs claimed once.** Queued runs sit in a shared queue and are claimed with
//!   `FOR UPDATE SKIP LOCKED` under a lease. A worker that dies mid-run loses its lease; the
//!   worker that claims the run next finds it started and fails it as interrupted (never
//!   re-runs it: the module gets no second go at its inputs, and a DP run no second noisy
//!   answer for one charge). Which worker may write a run's final state is decided by the
//!   log, never by the queue, which the operator can edit: a worker whose run was finalised
//!   elsewhere finds the row changed under the lock and writes nothing.
//! - **Keys only by attestation.** A new worker gets the cluster's state key from a running
//!   member, sealed to a one-time key bound in its own fresh evidence, after the member
//!   checked that evidence runs the same measurement and deployment; the joiner checks the
//!   member's evidence the same way, and that it binds the identity it then unseals.

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cleanroom_proto::Identity;
use cleanroom_trust::{EnclaveIdentity, Evidence, Measurement, Policy, Verifier};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::app::Service;
use crate::error::{ApiError, ApiResult};

pub use crate::store::{Cluster, ClusterLock, LockKey};

/// A serialised section: the local lock, the cluster lock, and the books caught up.
#[derive(Debug)]
pub struct Serial<'a> {
    _cluster: Option<ClusterLock>,
    _local: MutexGuard<'a, ()>,
}

/// Enter the section `key` guards: locally, across the cluster, and caught up with the log.
pub fn serial(service: &Service, key: LockKey) -> ApiResult<Serial<'_>> {
    let local = match key {
        LockKey::Admissions => &service.admissions,
        LockKey::Transitions => &service.transitions,
    }
    .lock()
    .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cluster = match service.storage.cluster() {
        Some(cluster) => {
            let lock = cluster.lock(key)?;
            catch_up(service)?;
            Some(lock)
        }
        None => None,
    };
    Ok(Serial {
        _cluster: cluster,
        _local: local,
    })
}

/// Fold in what other workers appended to the log.
pub fn catch_up(service: &Service) -> ApiResult<()> {
    let missed = service.audit.catch_up(service.storage.as_ref())?;
    service.apply_missed(&missed)
}

/// How long a claim lasts without renewal.
pub fn lease(service: &Service) -> Duration {
    Duration::from_secs(service.config.cluster.lease_secs.max(1))
}

/// How often a worker follows the log between its own writes (what wakes a party waiting on
/// this worker for a run another worker decides).
const FOLLOW: Duration = Duration::from_millis(100);

/// Follow the log and renew this worker's leases, until the process ends.
pub fn spawn_housekeeping(service: Arc<Service>) {
    let renew_every = (lease(&service) / 3).max(Duration::from_millis(200));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FOLLOW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed = std::time::Instant::now();
        loop {
            tick.tick().await;
            let renew = renewed.elapsed() >= renew_every;
            if renew {
                renewed = std::time::Instant::now();
            }
            let svc = service.clone();
            let done = tokio::task::spawn_blocking(move || -> ApiResult<()> {
                if renew && let Some(cluster) = svc.storage.cluster() {
                    cluster.renew(&svc.config.cluster.worker_id(), lease(&svc))?;
                }
                catch_up(&svc)
            })
            .await;
            if let Ok(Err(e)) = done {
                tracing::warn!("cluster housekeeping: {e}");
            }
        }
    });
}

// ---- Joining: the state key by attested key release ----------------------------------

const JOIN_CONTEXT: &str = "cleanroom/cluster-join/v1";

/// A new worker's request for the cluster's state key.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The new worker's evidence; its `report_data` binds a one-time key only it holds.
    pub evidence: Evidence,
    /// Its deployment configuration (its digest is the evidence's `host_data`).
    pub deployment: String,
}

/// A member's answer: the state key sealed to the joiner, and the member's own evidence.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinAnswer {
    /// The member's evidence, binding the cluster identity's public keys.
    pub member: Evidence,
    /// Base64 HPKE ciphertext of the 32-byte state key, to the joiner's one-time key.
    pub sealed_state_key: String,
}

/// What a member accepts and a joiner expects of the other side: this very measurement and
/// deployment, on a platform at or above the deployment's TCB floor (`minimum_tcb`, part of
/// that deployment). Outside simulation a deployment without a floor joins nobody: a worker
/// on a platform with known-broken firmware would otherwise get the state key.
pub(crate) fn peer_policy(
    service_measurement: &[u8; 48],
    config: &crate::config::Config,
) -> std::result::Result<Policy, String> {
    Ok(Policy {
        allowed_measurements: vec![Measurement(*service_measurement)],
        minimum_tcb: config.tcb_floor()?,
        host_data: cleanroom_trust::binding::host_data(&config.deployment_bytes()),
        accept_simulation: config.insecure_simulation,
    })
}

fn measurement_bytes(hex_m: &str) -> ApiResult<[u8; 48]> {
    hex::decode(hex_m)
        .ok()
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| ApiError::Internal("own measurement is not 48 bytes".into()))
}

/// The member's side: release the state key to a worker whose evidence shows it runs this
/// very image and deployment.
pub fn release_key(service: &Service, request: &JoinRequest) -> ApiResult<JoinAnswer> {
    let refuse = |why: String| ApiError::Forbidden(format!("not joining the cluster: {why}"));
    if service.storage.cluster().is_none() {
        return Err(refuse("this server is not part of a cluster".into()));
    }
    let own_deployment = service.config.deployment_bytes();
    if request.deployment.as_bytes() != own_deployment {
        return Err(refuse(
            "its deployment configuration differs from this member's".into(),
        ));
    }
    let policy =
        peer_policy(&measurement_bytes(&service.measurement)?, &service.config).map_err(refuse)?;
    let claims = Verifier::new(policy)
        .verify(&request.evidence, None)
        .map_err(|e| refuse(format!("its evidence: {e}")))?;
    let keys = claims
        .enclave_keys
        .ok_or_else(|| refuse("its evidence binds no key".into()))?;
    let sealed = cleanroom_proto::sealed::seal_to(
        &keys.hpke_public_key,
        JOIN_CONTEXT,
        &service.state_key[..],
    )
    .map_err(|e| ApiError::Internal(format!("sealing the state key: {e}")))?;
    let member = service
        .attester
        .evidence(&service.identity.public_keys(), None)
        .map_err(|e| ApiError::Internal(format!("own evidence: {e}")))?;
    Ok(JoinAnswer {
        member,
        sealed_state_key: B64.encode(sealed),
    })
}

/// The joiner's side, at start: ask `member` for the state key. Returns it with the identity
/// public keys the member's evidence binds (checked against the unsealed identity after).
pub fn join(
    member: &str,
    attester: &dyn cleanroom_trust::attester::Attester,
    config: &crate::config::Config,
) -> Result<(Zeroizing<[u8; 32]>, cleanroom_trust::EnclaveKeys)> {
    let deployment = &config.deployment_bytes()[..];
    let one_time = Identity::generate();
    let keys = cleanroom_trust::EnclaveKeys {
        hpke_public_key: one_time.hpke_public(),
        signing_public_key: one_time.party().0,
    };
    let request = JoinRequest {
        evidence: attester.evidence(&keys, None)?,
        deployment: String::from_utf8_lossy(deployment).into_owned(),
    };
    // The channel needs no TLS of its own: the key comes sealed to a key only this enclave
    // holds, and the member proves what it runs by its evidence. (So certificate checks are
    // off for an https member, whose attested certificate no CA signs.)
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        )
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}/v1/cluster/join", member.trim_end_matches('/'));
    let mut response = agent
        .post(&url)
        .send_json(&request)
        .with_context(|| format!("cannot reach the cluster member {member}"))?;
    let status = response.status();
    let body = response.body_mut().read_to_string()?;
    if !status.is_success() {
        bail!("the cluster member {member} refused to release the key ({status}): {body}");
    }
    let answer: JoinAnswer =
        serde_json::from_str(&body).context("the member's answer is malformed")?;
    let own = cleanroom_trust::Report::from_bytes(&request.evidence.report)?;
    let policy = peer_policy(&own.measurement(), config).map_err(|e| anyhow::anyhow!(e))?;
    let claims = Verifier::new(policy)
        .verify(&answer.member, None)
        .map_err(|e| anyhow::anyhow!("the member's evidence does not verify: {e}"))?;
    let member_keys = claims
        .enclave_keys
        .context("the member's evidence binds no identity")?;
    let sealed = B64
        .decode(&answer.sealed_state_key)
        .context("the member's sealed key is not base64")?;
    let key = Zeroizing::new(
        cleanroom_proto::sealed::open_sealed(&one_time, JOIN_CONTEXT, &sealed)
            .map_err(|_| anyhow::anyhow!("the member's key was not sealed to this request"))?,
    );
    let key: [u8; 32] = key[..]
        .try_into()
        .map_err(|_| anyhow::anyhow!("the released state key is not 32 bytes"))?;
    Ok((Zeroizing::new(key), member_keys))
}

/// Load the cluster identity kept in the database into `dir`, or keep this worker's new one
/// there; either way the identity is sealed under the cluster's state key.
pub fn shared_identity(
    cluster: &dyn Cluster,
    dir: &std::path::Path,
    state_key: &[u8; 32],
) -> Result<EnclaveIdentity> {
    let path = dir.join(cleanroom_trust::IDENTITY_FILE);
    let identity = EnclaveIdentity::load_or_create(dir, state_key)
        .context("cannot unseal the enclave identity")?;
    let local = std::fs::read(&path)?;
    let kept = cluster.keep_identity(&local)?;
    if kept == local {
        return Ok(identity);
    }
    crate::store::write_durably(&path, &kept)?;
    EnclaveIdentity::load_or_create(dir, state_key).context(
        "the cluster's identity does not open under this worker's state key: it was created \
         by another worker at the same time; start this worker again with `join` set to a \
         running member",
    )
}
