//! Upgrades that keep the data, and rollbacks that do not.
//!
//! Everything at rest (the sealed identity, row MACs, sealed files) is keyed by one random
//! *state key*, kept in `state-key.sealed` under the attester's sealing key, which SEV-SNP
//! binds to the launch measurement. A new image cannot unseal it. The running image hands it
//! over (`POST /v1/upgrade/handover`) only to an image whose fresh evidence verifies, whose
//! measurement the project author signed in an upgrade statement with a higher SVN than its
//! own, under the author key its own attested deployment names — sealed (HPKE) to a key that
//! only that new enclave holds. Then it refuses further changes. The new image takes the
//! state key from the answer at start and seals it to itself. (Why not an SNP derived key
//! that mixes in the ID-block identity: `docs/security.md`, "Upgrades".)

use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cleanroom_proto::Identity;
use cleanroom_proto::upgrade::SignedUpgradeStatement;
use cleanroom_trust::{Evidence, Measurement, Policy, Purpose, Sealer, Verifier};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::app::Service;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};

/// The sealed state key.
pub const STATE_KEY_FILE: &str = "state-key.sealed";
/// The new image's one-time hand-over key, sealed to it, between request and start.
pub const HANDOVER_KEY_FILE: &str = "handover-key.sealed";
const STATE_KEY_AAD: &[u8] = b"cleanroom/state-key/v1";
const HANDOVER_KEY_AAD: &[u8] = b"cleanroom/handover-key/v1";
const HANDOVER_CONTEXT: &str = "cleanroom/handover/v1";

/// What a new image asks the running one for.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoverRequest {
    /// The new image's evidence; its `report_data` binds a one-time key only it holds.
    pub evidence: Evidence,
    /// The new image's deployment configuration (its digest is the evidence's `host_data`).
    pub deployment: String,
    /// The author's statement for the new image's measurement.
    pub statement: SignedUpgradeStatement,
}

/// The running image's answer: the state key, sealed to the new image's one-time key.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoverAnswer {
    /// Hex measurement of the image that handed over.
    pub from_measurement: String,
    /// Hex measurement of the image it was handed to.
    pub to_measurement: String,
    /// The SVN the author signed for it.
    pub svn: u32,
    /// Base64 HPKE ciphertext of the 32-byte state key.
    pub sealed_state_key: String,
}

/// The state key: unsealed from `state-key.sealed`; or taken from the hand-over answer at
/// `handover` when that file was sealed by another image; or new, for a new data directory.
pub fn state_key(
    dir: &Path,
    sealing_key: &[u8; 32],
    handover: Option<&Path>,
) -> Result<Zeroizing<[u8; 32]>> {
    let sealer = Sealer::new(sealing_key);
    let path = dir.join(STATE_KEY_FILE);
    match std::fs::read(&path) {
        Ok(blob) => match sealer.open(Purpose::State, STATE_KEY_AAD, &blob) {
            Ok(key) => to_key(&key),
            Err(_) => {
                let Some(answer) = handover else {
                    bail!(
                        "{} was sealed by another image (or tampered with): this image cannot \
                         open the state. To upgrade, ask the running image for a hand-over \
                         (`cleanroomd handover-request`, then POST it to /v1/upgrade/handover) \
                         and start with `handover = <answer file>`",
                        path.display()
                    );
                };
                let key = take_handover(dir, &sealer, answer)?;
                write_sealed(&sealer, &path, STATE_KEY_AAD, &key[..])?;
                Ok(key)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = if dir.join(cleanroom_trust::IDENTITY_FILE).exists() {
                // A data directory from before the state key: its key was the sealing key.
                Zeroizing::new(*sealing_key)
            } else {
                let mut key = Zeroizing::new([0u8; 32]);
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key[..]);
                key
            };
            write_sealed(&sealer, &path, STATE_KEY_AAD, &key[..])?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Seal `key` as this image's state key in `dir` (a key a cluster member released to it).
pub fn keep_state_key(dir: &Path, sealing_key: &[u8; 32], key: &[u8; 32]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_sealed(
        &Sealer::new(sealing_key),
        &dir.join(STATE_KEY_FILE),
        STATE_KEY_AAD,
        key,
    )
}

fn to_key(bytes: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the sealed state key is not 32 bytes"))?;
    Ok(Zeroizing::new(key))
}

fn write_sealed(sealer: &Sealer, path: &Path, aad: &[u8], plain: &[u8]) -> Result<()> {
    let blob = sealer.seal(Purpose::State, aad, plain)?;
    crate::store::write_durably(path, &blob)?;
    Ok(())
}

/// Open the hand-over answer with the one-time key this image sealed to itself when it
/// made the request.
fn take_handover(dir: &Path, sealer: &Sealer, answer: &Path) -> Result<Zeroizing<[u8; 32]>> {
    let answer: HandoverAnswer = serde_json::from_slice(
        &std::fs::read(answer).with_context(|| format!("cannot read {}", answer.display()))?,
    )
    .context("the hand-over answer is malformed")?;
    let blob = std::fs::read(dir.join(HANDOVER_KEY_FILE)).with_context(|| {
        format!(
            "no {HANDOVER_KEY_FILE} in {}: make the hand-over request from this data directory",
            dir.display()
        )
    })?;
    let secrets = Zeroizing::new(
        sealer
            .open(Purpose::State, HANDOVER_KEY_AAD, &blob)
            .map_err(|_| anyhow::anyhow!("{HANDOVER_KEY_FILE} was not sealed by this image"))?,
    );
    let one_time = one_time_identity(&secrets)?;
    let sealed = B64
        .decode(&answer.sealed_state_key)
        .context("the hand-over answer's key is not base64")?;
    let key = Zeroizing::new(
        cleanroom_proto::sealed::open_sealed(&one_time, HANDOVER_CONTEXT, &sealed).map_err(
            |_| anyhow::anyhow!("the hand-over answer was not sealed to this image's request"),
        )?,
    );
    std::fs::remove_file(dir.join(HANDOVER_KEY_FILE)).ok();
    tracing::info!(
        from = %answer.from_measurement,
        svn = answer.svn,
        "took over the state from the previous image"
    );
    to_key(&key)
}

fn one_time_identity(secrets: &[u8]) -> Result<Identity> {
    let (signing, hpke) = secrets.split_at(32);
    Ok(Identity::from_secrets(
        signing.try_into().context("one-time key")?,
        hpke.try_into().context("one-time key")?,
    ))
}

/// The new image's side, before it can open the state: a one-time key sealed to this image
/// in `config.data_dir`, and evidence binding it, with the author's statement.
pub fn handover_request(
    config: &Config,
    allow_simulation: bool,
    statement: SignedUpgradeStatement,
) -> Result<HandoverRequest> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)?;
    let attester = crate::boot::attester(config, allow_simulation, dir)?;
    let sealer = Sealer::new(&attester.sealing_key()?);
    let one_time = Identity::generate();
    let mut secrets = Zeroizing::new([0u8; 64]);
    secrets[..32].copy_from_slice(one_time.signing_key().as_bytes());
    secrets[32..].copy_from_slice(&one_time.hpke_secret());
    write_sealed(
        &sealer,
        &dir.join(HANDOVER_KEY_FILE),
        HANDOVER_KEY_AAD,
        &secrets[..],
    )?;
    let keys = cleanroom_trust::EnclaveKeys {
        hpke_public_key: one_time.hpke_public(),
        signing_public_key: one_time.party().0,
    };
    Ok(HandoverRequest {
        evidence: attester.evidence(&keys, None)?,
        deployment: String::from_utf8_lossy(&config.deployment_bytes()).into_owned(),
        statement,
    })
}

/// The running image's side: check the request, seal the state key to the new image, and
/// stop accepting changes.
pub fn hand_over(
    service: &Service,
    state_key: &[u8; 32],
    request: &HandoverRequest,
) -> ApiResult<HandoverAnswer> {
    let refuse = |why: String| ApiError::Forbidden(format!("no hand-over: {why}"));
    let author = service.config.author_key.ok_or_else(|| {
        refuse("this deployment names no author key, so it accepts no upgrade".into())
    })?;
    let statement = request
        .statement
        .verify(&author)
        .map_err(|e| refuse(format!("the upgrade statement: {e}")))?;
    if statement.svn <= service.config.svn {
        return Err(refuse(format!(
            "the new image's SVN {} is not above this image's {} (a rollback)",
            statement.svn, service.config.svn
        )));
    }
    let measurement: [u8; 48] = hex::decode(&statement.measurement)
        .ok()
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| refuse("the statement's measurement is not 48 bytes of hex".into()))?;
    // The new image must keep naming the same author, or it could hand the state on to
    // anyone.
    let names_author = request
        .deployment
        .lines()
        .any(|l| l == format!("author_key={author}"));
    if !names_author {
        return Err(refuse(
            "the new image's deployment does not name the same author key".into(),
        ));
    }
    // The new deployment must run at the SVN the author signed for its measurement: a
    // deployment claiming a lower one could later be handed "up" to an image older than
    // itself, walking the state down.
    if !request
        .deployment
        .lines()
        .any(|l| l == format!("svn={}", statement.svn))
    {
        return Err(refuse(format!(
            "the new image's deployment does not run at the SVN the statement signs ({})",
            statement.svn
        )));
    }
    // And keep (at least) this deployment's TCB floor, on a platform that meets it.
    let minimum_tcb = service.config.tcb_floor().map_err(refuse)?;
    if service.config.minimum_tcb.is_some()
        && crate::config::deployment_minimum_tcb(&request.deployment)
            .is_none_or(|theirs| !theirs.meets(&minimum_tcb))
    {
        return Err(refuse(format!(
            "the new image's deployment lowers the TCB floor below {minimum_tcb}"
        )));
    }
    let policy = Policy {
        allowed_measurements: vec![Measurement(measurement)],
        minimum_tcb,
        host_data: cleanroom_trust::binding::host_data(request.deployment.as_bytes()),
        accept_simulation: service.config.insecure_simulation,
    };
    let claims = Verifier::new(policy)
        .verify(&request.evidence, None)
        .map_err(|e| refuse(format!("the new image's evidence: {e}")))?;
    let keys = claims
        .enclave_keys
        .ok_or_else(|| refuse("the evidence binds no key".into()))?;
    let sealed =
        cleanroom_proto::sealed::seal_to(&keys.hpke_public_key, HANDOVER_CONTEXT, state_key)
            .map_err(|e| ApiError::Internal(format!("sealing the state key: {e}")))?;
    let answer = HandoverAnswer {
        from_measurement: service.measurement.clone(),
        to_measurement: statement.measurement.clone(),
        svn: statement.svn,
        sealed_state_key: B64.encode(sealed),
    };
    Ok(answer)
}
