//! X.509 certificates of the AMD SEV-SNP PKI: strict decoding, RSA-PSS chain signatures
//! and the AMD extensions (TCB, hwID, product name) of VCEK/VLEK certificates.

use der::asn1::Ia5StringRef;
use der::referenced::OwnedToRef as _;
use der::{Decode as _, Encode as _};
use rsa::signature::Verifier as _;
use spki::ObjectIdentifier;
use x509_cert::Certificate;

use crate::error::{Check, Error, Result};
use crate::tcb::Tcb;

/// RSASSA-PSS, the algorithm AMD signs ASK, ASVK, VCEK and VLEK certificates with.
const RSA_SSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
/// AMD's arc for SEV-SNP certificate extensions.
pub(crate) const OID_PRODUCT_NAME: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2");
pub(crate) const OID_BOOTLOADER: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
pub(crate) const OID_TEE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
pub(crate) const OID_SNP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
pub(crate) const OID_MICROCODE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
pub(crate) const OID_FMC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
pub(crate) const OID_HWID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");

/// A decoded certificate whose DER encoding is canonical (re-encoding gives the input back).
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    der: Vec<u8>,
    cert: Certificate,
}

impl Cert {
    /// Decodes `der`; `role` ("VCEK", "ASK", ...) names the certificate in errors.
    pub(crate) fn from_der(der: &[u8], role: &str) -> Result<Self> {
        let cert = Certificate::from_der(der).map_err(|e| {
            Error::check(
                Check::CertChain,
                format!("cannot decode the {role} certificate: {e}"),
            )
        })?;
        let reencoded = cert.to_der().map_err(|e| {
            Error::check(
                Check::CertChain,
                format!("cannot re-encode the {role} certificate: {e}"),
            )
        })?;
        if reencoded != der {
            return Err(Error::check(
                Check::CertChain,
                format!("the {role} certificate is not canonical DER"),
            ));
        }
        Ok(Self {
            der: der.to_vec(),
            cert,
        })
    }

    /// Decodes a PEM certificate (used for the embedded roots).
    pub(crate) fn from_pem(pem: &[u8], role: &str) -> Result<Self> {
        use der::DecodePem as _;
        let cert = Certificate::from_pem(pem)
            .map_err(|e| Error::malformed("embedded certificate", format!("{role}: {e}")))?;
        let der = cert
            .to_der()
            .map_err(|e| Error::malformed("embedded certificate", format!("{role}: {e}")))?;
        Ok(Self { der, cert })
    }

    /// The DER encoding.
    pub(crate) fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject as an RFC 4514 string.
    pub(crate) fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// Checks that `issuer` signed this certificate (RSASSA-PSS, SHA-384) and names it as issuer.
    pub(crate) fn verify_signed_by(&self, issuer: &Self, role: &str) -> Result<()> {
        let fail = |detail: String| Error::check(Check::CertChain, format!("{role}: {detail}"));
        let tbs = &self.cert.tbs_certificate;
        if tbs.issuer != issuer.cert.tbs_certificate.subject {
            return Err(fail(format!(
                "issued by `{}`, not by `{}`",
                tbs.issuer,
                issuer.subject()
            )));
        }
        if self.cert.signature_algorithm.oid != RSA_SSA_PSS {
            return Err(fail(format!(
                "signature algorithm {} is not RSASSA-PSS",
                self.cert.signature_algorithm.oid
            )));
        }
        let spki = issuer
            .cert
            .tbs_certificate
            .subject_public_key_info
            .owned_to_ref();
        let key = rsa::RsaPublicKey::try_from(spki)
            .map_err(|e| fail(format!("issuer key is not RSA: {e}")))?;
        let key = rsa::pss::VerifyingKey::<sha2::Sha384>::new(key);
        let signature = self
            .cert
            .signature
            .as_bytes()
            .ok_or_else(|| fail("signature has unused bits".to_owned()))?;
        let signature = rsa::pss::Signature::try_from(signature)
            .map_err(|e| fail(format!("malformed signature: {e}")))?;
        let message = tbs
            .to_der()
            .map_err(|e| fail(format!("cannot encode the signed part: {e}")))?;
        key.verify(&message, &signature).map_err(|_| {
            fail(format!(
                "signature by `{}` does not verify",
                issuer.subject()
            ))
        })
    }

    /// The certificate's P-384 ECDSA public key (VCEK/VLEK) as an uncompressed SEC1 point,
    /// checked to lie on the curve.
    pub(crate) fn ecdsa_key(&self) -> Result<Vec<u8>> {
        let spki = self
            .cert
            .tbs_certificate
            .subject_public_key_info
            .owned_to_ref();
        let key = p384::PublicKey::try_from(spki).map_err(|e| {
            Error::check(
                Check::CertChain,
                format!("endorsement key is not P-384: {e}"),
            )
        })?;
        Ok(p384::EncodedPoint::from(key).as_bytes().to_vec())
    }

    /// The value of extension `oid`, if present.
    pub(crate) fn extension(&self, oid: ObjectIdentifier) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .extensions
            .as_deref()?
            .iter()
            .find(|ext| ext.extn_id == oid)
            .map(|ext| ext.extn_value.as_bytes())
    }

    /// The product name extension ("Milan-B0", "Genoa", ...).
    pub(crate) fn product_name(&self) -> Option<String> {
        let value = self.extension(OID_PRODUCT_NAME)?;
        Ia5StringRef::from_der(value)
            .ok()
            .map(|name| name.as_str().to_owned())
    }

    /// The TCB the VCEK/VLEK was issued for, from AMD's SPL extensions.
    pub(crate) fn tcb(&self) -> Result<Tcb> {
        let spl = |oid: ObjectIdentifier, name: &str| -> Result<Option<u8>> {
            self.extension(oid)
                .map(|value| {
                    u8::from_der(value).map_err(|e| {
                        Error::check(
                            Check::VcekTcb,
                            format!("malformed {name} SPL extension: {e}"),
                        )
                    })
                })
                .transpose()
        };
        let required = |oid, name: &str| {
            spl(oid, name)?.ok_or_else(|| {
                Error::check(
                    Check::VcekTcb,
                    format!("the {name} SPL extension is missing"),
                )
            })
        };
        Ok(Tcb {
            bootloader: required(OID_BOOTLOADER, "bootloader")?,
            tee: required(OID_TEE, "tee")?,
            snp: required(OID_SNP, "snp")?,
            microcode: required(OID_MICROCODE, "microcode")?,
            fmc: spl(OID_FMC, "fmc")?,
        })
    }

    /// The hwID extension (the chip id the VCEK is for).
    pub(crate) fn hwid(&self) -> Option<&[u8]> {
        self.extension(OID_HWID)
    }
}
