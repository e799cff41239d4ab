//! The hardware half of verification: is this report genuinely signed by an AMD-endorsed key
//! of a chip at the TCB it claims? Shared by the raw-report and the full-evidence paths, and by
//! real and simulated evidence alike (only the anchor that matches differs).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use sha2::Digest as _;

use crate::certs::Cert;
use crate::error::{Check, Error, Result};
use crate::policy::{Measurement, VerifiedClaims};
use crate::report::{Report, SigningKey};
use crate::roots::Anchor;
use crate::tcb::Generation;

/// Simulated reports start their `chip_id` with this marker.
pub const SIMULATION_CHIP_ID_PREFIX: &[u8] = b"SIMULATION-INSECURE";

/// The certificates travelling with a report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Certs<'a> {
    pub(crate) vek: &'a [u8],
    pub(crate) ask: Option<&'a [u8]>,
    pub(crate) ark: Option<&'a [u8]>,
}

/// Verifies chain, signature, TCB and hwID, version, debug and migration bits, and the
/// simulation marker. Returns the claims (without enclave keys).
pub(crate) fn verify(
    report: &Report,
    certs: Certs<'_>,
    anchors: &[Anchor],
    accept_simulation: bool,
) -> Result<VerifiedClaims> {
    let signing_key = report.signing_key()?;
    let role = match signing_key {
        SigningKey::Vcek => "VCEK",
        SigningKey::Vlek => "VLEK",
    };
    let endorsed = endorsed(signing_key, role, certs, anchors)?;
    if let Some(cpu) = report.cpuid_generation()
        && cpu != endorsed.generation
    {
        return Err(Error::check(
            Check::CertChain,
            format!(
                "the report's CPUID says {cpu} but the {role} is for {}",
                endorsed.generation
            ),
        ));
    }
    let simulated = endorsed.simulated || report.chip_id().starts_with(SIMULATION_CHIP_ID_PREFIX);
    if simulated && !accept_simulation {
        return Err(Error::check(
            Check::Simulation,
            "the evidence comes from the INSECURE simulation backend; \
             accept it only in development with the explicit accept-insecure flag",
        ));
    }

    verify_signature(report, &endorsed.key, role)?;
    check_tcb(report, &endorsed.vek, role)?;
    if signing_key == SigningKey::Vcek {
        check_hwid(&endorsed.vek, &report.chip_id())?;
    }
    if report.debug_allowed() {
        return Err(Error::check(
            Check::Debug,
            "the guest policy allows debugging",
        ));
    }
    if report.migration_agent_allowed() {
        return Err(Error::check(
            Check::MigrationAgent,
            "the guest policy allows a migration agent",
        ));
    }
    Ok(VerifiedClaims {
        generation: endorsed.generation,
        signing_key,
        simulated,
        report_version: report.version(),
        measurement: Measurement(report.measurement()),
        guest_policy: report.policy(),
        vmpl: report.vmpl(),
        reported_tcb: report.reported_tcb(),
        chip_id: report.chip_id(),
        report_data: report.report_data(),
        host_data: report.host_data(),
        enclave_keys: None,
    })
}

/// An endorsement key whose certificate chains to a pinned root: what checking a report
/// needs from its certificates, decoded and verified once.
#[derive(Debug)]
struct Endorsed {
    vek: Cert,
    generation: Generation,
    /// The anchor that vouched is the simulation PKI.
    simulated: bool,
    /// The P-384 key as an uncompressed SEC1 point.
    key: Vec<u8>,
}

/// Chains already verified, by a digest of the exact certificate bytes, the report's key kind
/// and the anchors they were checked against. Whether a chain verifies is a fact about those
/// bytes alone (no clock or revocation list is consulted), so a hit is as good as verifying
/// again; only successes are kept. A client sees one or two VCEKs, so the map stays tiny; a
/// peer sending fresh certificates every time only makes it start over.
static ENDORSED: LazyLock<Mutex<HashMap<[u8; 32], Arc<Endorsed>>>> =
    LazyLock::new(Default::default);
const ENDORSED_CAPACITY: usize = 64;

/// Empties the cache of verified chains, so the next verification checks the whole chain
/// again (benchmarks measure both paths with it).
pub fn forget_verified_chains() {
    ENDORSED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clear();
}

fn endorsed(
    signing_key: SigningKey,
    role: &str,
    certs: Certs<'_>,
    anchors: &[Anchor],
) -> Result<Arc<Endorsed>> {
    let mut h = sha2::Sha256::new();
    h.update([signing_key as u8]);
    for der in [Some(certs.vek), certs.ask, certs.ark] {
        match der {
            Some(der) => {
                h.update([1]);
                h.update((der.len() as u64).to_le_bytes());
                h.update(der);
            }
            None => h.update([0]),
        }
    }
    for anchor in anchors {
        h.update(anchor.digest);
    }
    let key: [u8; 32] = h.finalize().into();
    let cache = || {
        ENDORSED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    if let Some(hit) = cache().get(&key) {
        return Ok(Arc::clone(hit));
    }
    let verified = Arc::new(verify_endorsement(signing_key, role, certs, anchors)?);
    let mut map = cache();
    if map.len() >= ENDORSED_CAPACITY {
        map.clear();
    }
    map.insert(key, Arc::clone(&verified));
    Ok(verified)
}

fn verify_endorsement(
    signing_key: SigningKey,
    role: &str,
    certs: Certs<'_>,
    anchors: &[Anchor],
) -> Result<Endorsed> {
    let vek = Cert::from_der(certs.vek, role)?;
    if !vek.subject().contains(&format!("CN=SEV-{role}")) {
        return Err(Error::check(
            Check::CertChain,
            format!(
                "the report is signed by a {role} but the certificate is `{}`",
                vek.subject()
            ),
        ));
    }
    let generation = vek
        .product_name()
        .as_deref()
        .and_then(Generation::from_product_name)
        .ok_or_else(|| {
            Error::check(
                Check::CertChain,
                format!("the {role} names no known product (Milan, Genoa, Turin)"),
            )
        })?;
    let anchor = verify_chain(&vek, signing_key, generation, certs, anchors)?;
    let key = vek.ecdsa_key()?;
    Ok(Endorsed {
        vek,
        generation,
        simulated: anchor.simulated,
        key,
    })
}

/// ARK (pinned for `generation`) → ASK/ASVK → VCEK/VLEK. Returns the anchor that vouched.
fn verify_chain<'a>(
    vek: &Cert,
    signing_key: SigningKey,
    generation: Generation,
    certs: Certs<'_>,
    anchors: &'a [Anchor],
) -> Result<&'a Anchor> {
    let intermediate = certs
        .ask
        .map(|der| Cert::from_der(der, "ASK"))
        .transpose()?;
    let mut first_error = None;
    for anchor in anchors.iter().filter(|a| a.generation == generation) {
        match verify_chain_to(vek, signing_key, intermediate.as_ref(), certs.ark, anchor) {
            Ok(()) => return Ok(anchor),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| {
        Error::check(Check::CertChain, format!("no pinned root for {generation}"))
    }))
}

fn verify_chain_to(
    vek: &Cert,
    signing_key: SigningKey,
    intermediate: Option<&Cert>,
    ark: Option<&[u8]>,
    anchor: &Anchor,
) -> Result<()> {
    if let Some(ark) = ark
        && ark != anchor.ark.der()
    {
        return Err(Error::check(
            Check::CertChain,
            format!(
                "the evidence's ARK is not the pinned {} root",
                anchor.generation
            ),
        ));
    }
    let intermediate = match (signing_key, intermediate) {
        (_, Some(cert)) if cert.der() == anchor.ask.der() => &anchor.ask,
        (_, Some(cert)) => {
            cert.verify_signed_by(&anchor.ark, "ASK")?;
            cert
        }
        (SigningKey::Vcek, None) => &anchor.ask,
        (SigningKey::Vlek, None) => {
            return Err(Error::check(
                Check::CertChain,
                "VLEK evidence must carry the ASVK certificate (SEV-VLEK-<generation>) \
                 that signed the VLEK",
            ));
        }
    };
    let is_asvk = intermediate.subject().contains("CN=SEV-VLEK-");
    if is_asvk != (signing_key == SigningKey::Vlek) {
        return Err(Error::check(
            Check::CertChain,
            format!(
                "a {signing_key:?} cannot be issued by `{}`",
                intermediate.subject()
            ),
        ));
    }
    vek.verify_signed_by(intermediate, "VCEK/VLEK")
}

/// The report signature (ECDSA P-384, SHA-384) over the raw signed bytes; `key` is the
/// endorsement key as an uncompressed SEC1 point ([`Cert::ecdsa_key`]).
pub(crate) fn verify_signature(report: &Report, key: &[u8], role: &str) -> Result<()> {
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
    let (r, s) = report.signature_scalars();
    let mut signature = [0u8; 2 * crate::report::SCALAR_LEN];
    let (r_half, s_half) = signature.split_at_mut(crate::report::SCALAR_LEN);
    r_half.copy_from_slice(&r);
    s_half.copy_from_slice(&s);
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key)
        .verify(report.signed_bytes(), &signature)
        .map_err(|_| {
            Error::check(
                Check::Signature,
                format!("the report signature does not verify with the {role} key"),
            )
        })
}

/// The endorsement key's TCB extensions must equal the report's `reported_tcb`.
pub(crate) fn check_tcb(report: &Report, vek: &Cert, role: &str) -> Result<()> {
    let cert_tcb = vek.tcb()?;
    if cert_tcb != report.reported_tcb() {
        return Err(Error::check(
            Check::VcekTcb,
            format!(
                "the {role} is for TCB {cert_tcb} but the report says {}",
                report.reported_tcb()
            ),
        ));
    }
    Ok(())
}

/// The VCEK's hwID must be the report's chip id (Turin ids are 8 bytes, zero-padded).
fn check_hwid(vek: &Cert, chip_id: &[u8; 64]) -> Result<()> {
    let hwid = vek
        .hwid()
        .ok_or_else(|| Error::check(Check::VcekHwId, "the VCEK has no hwID extension"))?;
    let matches = !hwid.is_empty()
        && hwid.len() <= chip_id.len()
        && chip_id[..hwid.len()] == *hwid
        && chip_id[hwid.len()..].iter().all(|b| *b == 0);
    if !matches {
        return Err(Error::check(
            Check::VcekHwId,
            format!(
                "the VCEK is for chip {} but the report comes from chip {}",
                hex::encode(hwid),
                hex::encode(chip_id)
            ),
        ));
    }
    Ok(())
}
