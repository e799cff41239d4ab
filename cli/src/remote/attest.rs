//! Attestation: verify a server before trusting it with data, and check raw
//! SNP reports offline.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use cleanroom_proto::upgrade::SignedUpgradeStatement;
use cleanroom_trust::tls::TlsEndorsement;
use cleanroom_trust::{EnclaveKeys, Evidence, Measurement, Policy, Tcb, VerifiedClaims, Verifier};

use super::Conn;
use super::client::Client;
use crate::failure::Failure;

/// What a client requires of the enclave.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Trust {
    /// Acceptable launch measurement(s), hex (48 bytes). Repeatable.
    #[arg(
        long = "measurement",
        env = "CLEANROOM_MEASUREMENT",
        value_delimiter = ',',
        global = true
    )]
    pub(crate) measurements: Vec<String>,
    /// Image manifest(s) an operator published (`cleanroom image measure --key`): accept
    /// the measurement each names, after checking its signature. Repeatable.
    #[arg(
        long = "manifest",
        env = "CLEANROOM_MANIFEST",
        value_delimiter = ',',
        global = true
    )]
    pub(crate) manifests: Vec<PathBuf>,
    /// Accept evidence from the INSECURE simulation backend (development only).
    #[arg(long, env = "CLEANROOM_ACCEPT_INSECURE_SIMULATION", global = true)]
    pub(crate) accept_insecure_simulation: bool,
    /// Expected SHA-256 of the deployment configuration (hex); by default the
    /// configuration the server shows is accepted after it is checked
    /// against the report and printed.
    #[arg(long, global = true)]
    pub(crate) deployment_digest: Option<String>,
    /// Trust any image the project author signed an upgrade statement for (its key, hex),
    /// at or above --min-svn, instead of (or beside) exact --measurement values.
    #[arg(long, env = "CLEANROOM_AUTHOR_KEY", global = true)]
    pub(crate) author_key: Option<cleanroom_proto::PartyId>,
    /// The lowest security version number accepted with --author-key.
    #[arg(long, env = "CLEANROOM_MIN_SVN", default_value_t = 0, global = true)]
    pub(crate) min_svn: u32,
}

/// Verified enclave facts.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub(crate) claims: VerifiedClaims,
    pub(crate) keys: EnclaveKeys,
    pub(crate) deployment: String,
    /// The author's statement for this image, when the server shows one and `--author-key`
    /// verified it.
    pub(crate) statement: Option<cleanroom_proto::upgrade::UpgradeStatement>,
}

/// The verified enclave behind `client`: the session's attestation (attested TLS verifies it
/// when the connection is made), or, over plain HTTP on loopback, fresh evidence now.
pub(crate) fn verify_server(client: &Client, trust: &Trust) -> Result<Verified> {
    match client.verified() {
        Some(v) => Ok(v.clone()),
        None => attest(client, trust).map(|(v, _)| v),
    }
}

/// The answer of `GET /v1/attestation`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationAnswer {
    evidence: serde_json::Value,
    deployment: String,
    #[serde(default)]
    tls: Option<TlsEndorsement>,
    #[serde(default)]
    upgrade_statement: Option<SignedUpgradeStatement>,
}

/// The measurements `trust` accepts for a server that shows `statement`.
fn allowed_measurements(
    trust: &Trust,
    statement: Option<&SignedUpgradeStatement>,
) -> Result<Vec<Measurement>> {
    let mut allowed = trust
        .measurements
        .iter()
        .map(|m| parse_measurement(m))
        .collect::<Result<Vec<_>>>()?;
    if let Some(author) = &trust.author_key {
        let statement = statement
            .ok_or_else(|| {
                anyhow!(
                    "you pin the author key {author}, but the server shows no upgrade statement"
                )
            })?
            .verify(author)
            .context(Failure::verification(
                "the server's upgrade statement is not the author's",
            ))?;
        if statement.svn < trust.min_svn {
            bail!(
                "the server runs SVN {}, below the minimum {} you accept (an old image)",
                statement.svn,
                trust.min_svn
            );
        }
        allowed.push(parse_measurement(&statement.measurement)?);
    }
    for path in &trust.manifests {
        allowed.push(manifest_measurement(
            path,
            trust.accept_insecure_simulation,
        )?);
    }
    if allowed.is_empty() {
        bail!(
            "say which enclave you trust: --measurement HEX (the operator publishes it), or \
             --author-key HEX with --min-svn N"
        );
    }
    Ok(allowed)
}

/// The measurement an image manifest names, once its signature checks. A development image
/// (it boots the simulation backend) is accepted only with --accept-insecure-simulation.
fn manifest_measurement(path: &std::path::Path, accept_simulation: bool) -> Result<Measurement> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read manifest {}", path.display()))?;
    let signed: cleanroom_proto::image::SignedImageManifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not an image manifest", path.display()))?;
    signed.verify().context(Failure::verification(format!(
        "the image manifest {} does not verify",
        path.display()
    )))?;
    if signed.manifest.variant != "production" && !accept_simulation {
        return Err(Failure::verification(format!(
            "{} describes a {} image, which runs the INSECURE simulation backend: pass \
             --accept-insecure-simulation to trust it for development",
            path.display(),
            signed.manifest.variant
        ))
        .into());
    }
    Ok(Measurement(signed.manifest.measurement_bytes()?))
}

fn parse_measurement(m: &str) -> Result<Measurement> {
    let bytes = hex::decode(m.trim()).map_err(|_| anyhow!("a measurement must be hex"))?;
    let arr: [u8; 48] = bytes
        .try_into()
        .map_err(|_| anyhow!("a measurement must be 48 bytes (96 hex digits)"))?;
    Ok(Measurement(arr))
}

/// Fetch fresh evidence for a random nonce and verify every check; returns the enclave's
/// endorsement of its TLS key too (checked by the caller against the connection's key).
pub(crate) fn attest(client: &Client, trust: &Trust) -> Result<(Verified, Option<TlsEndorsement>)> {
    if trust.measurements.is_empty() && trust.author_key.is_none() && trust.manifests.is_empty() {
        bail!(
            "say which enclave you trust: --measurement HEX (the operator publishes it), or \
             --author-key HEX with --min-svn N"
        );
    }
    let mut nonce = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let answer: AttestationAnswer = client
        .get_public(&format!("/v1/attestation?nonce={}", hex::encode(nonce)))
        .context("the server's attestation answer is malformed")?;
    let evidence = Evidence::from_json(&serde_json::to_vec(&answer.evidence)?)
        .context("the server's evidence is malformed")?;
    let deployment = answer.deployment;
    let host_data = cleanroom_trust::binding::host_data(deployment.as_bytes());
    if let Some(expected) = &trust.deployment_digest
        && hex::encode(host_data) != expected.to_lowercase()
    {
        bail!(
            "the server runs deployment {} but you expect {expected}",
            hex::encode(host_data)
        );
    }
    let policy = Policy {
        allowed_measurements: allowed_measurements(trust, answer.upgrade_statement.as_ref())?,
        minimum_tcb: Tcb::ZERO,
        host_data,
        accept_simulation: trust.accept_insecure_simulation,
    };
    let claims = Verifier::new(policy)
        .verify(&evidence, Some(&nonce))
        .context(Failure::verification(
            "attestation verification failed: do not send this server data",
        ))?;
    let keys = claims
        .enclave_keys
        .ok_or_else(|| anyhow!("verified evidence carries no enclave keys"))?;
    if claims.simulated {
        eprintln!(
            "WARNING: the server attests with the INSECURE simulation backend; it protects nothing"
        );
    }
    Ok((
        Verified {
            claims,
            keys,
            deployment,
            statement: trust
                .author_key
                .and(answer.upgrade_statement.as_ref())
                .map(|s| s.statement.clone()),
        },
        answer.tls,
    ))
}

/// `cleanroom attest verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {}

pub(crate) fn verify(conn: &Conn, _args: VerifyArgs) -> Result<()> {
    let client = conn.client()?;
    let v = verify_server(&client, &conn.trust)?;
    let channel = if client.verified().is_some() {
        "attested TLS: the connection's key is the one this enclave endorsed"
    } else {
        "plain HTTP on loopback (simulation only)"
    };
    let value = serde_json::json!({
        "claims": v.claims, "enclave_keys": v.keys, "deployment": v.deployment,
        "channel": channel, "upgrade_statement": v.statement,
    });
    conn.print(&value, || {
        format!(
            "attestation verified ({}{})\n  measurement  {}{}\n  TCB          {:?}\n  chip id      {}…\n  HPKE key     {}\n  signing key  {}\n  channel      {channel}\n  deployment   {}",
            if v.claims.simulated { "SIMULATED, INSECURE" } else { "AMD SEV-SNP" },
            format_args!(", {:?}", v.claims.generation),
            hex::encode(v.claims.measurement.0),
            v.statement
                .as_ref()
                .map(|s| format!(" (author-signed release, SVN {})", s.svn))
                .unwrap_or_default(),
            v.claims.reported_tcb,
            &hex::encode(v.claims.chip_id)[..16],
            hex::encode(v.keys.hpke_public_key),
            hex::encode(v.keys.signing_public_key),
            v.deployment.trim().replace('\n', "; "),
        )
    });
    Ok(())
}

/// `cleanroom attest report`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// A raw SNP attestation report (1184 bytes).
    report: PathBuf,
    /// The VCEK or VLEK certificate (DER) that signed it.
    #[arg(long)]
    cert: PathBuf,
    /// The ASK/ASVK (DER), if not one of AMD's embedded ones.
    #[arg(long)]
    ask: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn report(args: ReportArgs) -> Result<()> {
    let report = std::fs::read(&args.report)
        .with_context(|| format!("cannot read {}", args.report.display()))?;
    let cert = std::fs::read(&args.cert)
        .with_context(|| format!("cannot read {}", args.cert.display()))?;
    let ask = args.ask.as_ref().map(std::fs::read).transpose()?;
    let claims = cleanroom_trust::verify_report(&report, &cert, ask.as_deref(), false).context(
        Failure::verification("the report does not verify against AMD's pinned roots"),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&claims)?);
    } else {
        println!(
            "report verified against AMD's pinned {:?} root ({:?})",
            claims.generation, claims.signing_key
        );
        println!("  version      {}", claims.report_version);
        println!("  measurement  {}", hex::encode(claims.measurement.0));
        println!("  policy       {:#x}", claims.guest_policy);
        println!("  vmpl         {}", claims.vmpl);
        println!("  TCB          {:?}", claims.reported_tcb);
        println!("  chip id      {}", hex::encode(claims.chip_id));
        println!("  report data  {}", hex::encode(claims.report_data));
        println!("  host data    {}", hex::encode(claims.host_data));
    }
    Ok(())
}
