//! Upgrades: the project author's signed statement that an image (its launch measurement)
//! is a release with a security version number (SVN). A running enclave hands its state key
//! only to an image whose statement, signed by the author key its own deployment names,
//! carries a higher SVN (see `docs/security.md`, "Upgrades").

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::canonical::canonical_bytes;
use crate::error::{Error, Result};
use crate::keys::{PartyId, verify_signature};
use crate::policy::decode_signature;

/// Domain-separation prefix of an upgrade statement's signed bytes.
pub const UPGRADE_DOMAIN: &[u8] = b"cleanroom/upgrade-statement/v1\n";

/// "The image with this launch measurement is release `svn` of cleanroomd."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpgradeStatement {
    /// Hex launch measurement (48 bytes).
    pub measurement: String,
    /// Security version number: a hand-over goes only to a higher one.
    pub svn: u32,
    /// When the author signed it (Unix seconds).
    pub issued_at: u64,
}

/// An [`UpgradeStatement`] with the author's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedUpgradeStatement {
    /// The statement.
    pub statement: UpgradeStatement,
    /// The author's Ed25519 key.
    pub author: PartyId,
    /// Hex Ed25519 signature over [`UPGRADE_DOMAIN`] and the statement.
    pub signature: String,
}

impl SignedUpgradeStatement {
    /// The author signs `statement`.
    pub fn sign(statement: UpgradeStatement, author: &SigningKey) -> Self {
        let signature = hex::encode(
            author
                .sign(&canonical_bytes(UPGRADE_DOMAIN, &statement))
                .to_bytes(),
        );
        Self {
            statement,
            author: PartyId::from(author.verifying_key()),
            signature,
        }
    }

    /// Checks the signature and that the signer is `expected_author`.
    pub fn verify(&self, expected_author: &PartyId) -> Result<&UpgradeStatement> {
        if self.author != *expected_author {
            return Err(Error::WrongSigner {
                what: "upgrade statement",
                expected: expected_author.to_string(),
                found: self.author.to_string(),
            });
        }
        let sig = decode_signature(&self.signature)?;
        verify_signature(
            &self.author,
            &canonical_bytes(UPGRADE_DOMAIN, &self.statement),
            &sig,
        )
        .map_err(|_| Error::BadSignature {
            what: "upgrade statement",
        })?;
        Ok(&self.statement)
    }
}
