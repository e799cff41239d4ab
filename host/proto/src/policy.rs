//! Owner-signed, versioned dataset policies. The decisions made from them live in
//! `cleanroom-policy`.
//!
//! A policy is signed over [`Policy::canonical_bytes`]: the prefix `cleanroom/policy/v1\n`
//! followed by the policy as compact JSON with sorted keys (see the crate docs); the CLI and
//! the server both use this crate, so they agree on the bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::canonical::{canonical_bytes, sha256_hex};
use crate::error::{Error, Result};
use crate::keys::{Identity, PartyId, decode_hex32, is_hex64, verify_signature};
pub use crate::rules::{
    DEFAULT_COUNT_COLUMNS, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_OUTPUTS, DEFAULT_MIN_GROUP_COUNT,
    DEFAULT_MIN_RESIDUAL_DF, OutputRules, Rounding, SmallGroups, Unchecked,
};

/// Domain-separation prefix of a policy's signed bytes.
pub const POLICY_DOMAIN: &[u8] = b"cleanroom/policy/v1\n";

/// An owner's rules for one dataset. Revocation is a new version with fewer (or no) grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The dataset id (lowercase hex).
    #[serde(deserialize_with = "lower_hex")]
    pub dataset: String,
    /// Strictly increasing per dataset; the server refuses a version not above the current one.
    pub version: u64,
    /// Which modules may run, for whom. Empty means nothing may run (revoked).
    pub grants: Vec<Grant>,
    /// Columns that never reach a guest.
    #[serde(default)]
    pub hidden_columns: Vec<String>,
    /// Columns a guest may join on but that are never released.
    #[serde(default)]
    pub identifier_columns: Vec<String>,
    /// Limits on released outputs.
    #[serde(default)]
    pub output: OutputRules,
    /// If set, everything released from the dataset must be differentially private, within
    /// this budget (see [`crate::dp`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<crate::dp::DpRequirement>,
    /// When the owner issued this version (Unix seconds).
    pub issued_at: u64,
}

/// Permission for one module to run on the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The module id: SHA-256 of the component bytes, 64 lowercase hex.
    #[serde(deserialize_with = "hex64")]
    pub module: String,
    /// Who may run it: `"any"` or a list of party ids. Required, so that opening a grant to
    /// everyone is always written out.
    pub researchers: Researchers,
    /// If set, only runs whose [`crate::run::params_digest`] equals this are allowed.
    #[serde(default, deserialize_with = "opt_hex64")]
    pub params_digest: Option<String>,
    /// If set, the grant stops allowing runs at this time (Unix seconds).
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// If set, how many runs the grant allows in total, across all researchers.
    #[serde(default)]
    pub max_runs: Option<u64>,
    /// Free text for humans, e.g. the SQL being approved.
    #[serde(default)]
    pub note: Option<String>,
    /// If set, a run must have exactly these inputs (table name the guest sees -> dataset id):
    /// no researcher-chosen table can ride along as an unpinned parameter channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<BTreeMap<String, String>>,
    /// An `any`-researcher grant without `max_runs` must set this, so that unlimited runs by
    /// anyone are always a written-out choice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unlimited: bool,
}

/// Who a grant allows. JSON: the string `"any"` or an array of party ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Researchers {
    /// Any registered researcher.
    Any,
    /// Only these researchers (an empty list allows no one).
    Only(Vec<PartyId>),
}

impl Researchers {
    /// Whether `party` is allowed.
    pub fn allows(&self, party: &PartyId) -> bool {
        match self {
            Self::Any => true,
            Self::Only(parties) => parties.contains(party),
        }
    }
}

/// `"any"` or a list of party ids, as in the JSON.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Researchers {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["any"])),
            )
            .item(ArrayBuilder::new().items(<PartyId as utoipa::PartialSchema>::schema()))
            .description(Some("Who a grant allows: \"any\" or a list of party ids"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Researchers {}

impl Serialize for Researchers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Any => serializer.serialize_str("any"),
            Self::Only(parties) => parties.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Researchers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Word(String),
            List(Vec<PartyId>),
        }
        match Wire::deserialize(deserializer) {
            Ok(Wire::Word(word)) if word == "any" => Ok(Self::Any),
            Ok(Wire::List(parties)) => Ok(Self::Only(parties)),
            _ => Err(serde::de::Error::custom(
                "researchers must be \"any\" or a list of party ids (64 lowercase hex)",
            )),
        }
    }
}

impl Policy {
    /// The bytes an owner signs: [`POLICY_DOMAIN`] followed by canonical JSON.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical_bytes(POLICY_DOMAIN, self)
    }

    /// Checks what the types cannot: every grant open to `any` researcher either caps its runs
    /// or says `unlimited` out loud, pinned input sets name this dataset, and output rules are
    /// in range. The server refuses a policy that fails this.
    pub fn validate(&self) -> std::result::Result<(), String> {
        crate::canonical::check_exact(self)?;
        for (i, g) in self.grants.iter().enumerate() {
            if g.researchers == Researchers::Any && g.max_runs.is_none() && !g.unlimited {
                return Err(format!(
                    "grant {i}: a grant to any researcher needs max_runs, or unlimited = true to \
                     allow unlimited runs by anyone (which enables differencing attacks)"
                ));
            }
            if let Some(inputs) = &g.inputs
                && !inputs.values().any(|d| d == &self.dataset)
            {
                return Err(format!(
                    "grant {i}: the pinned input set does not include this dataset ({})",
                    self.dataset
                ));
            }
        }
        if let Some(dp) = &self.dp {
            dp.validate()?;
            if self.hidden_columns.contains(&dp.unit_column) {
                return Err("dp.unit_column cannot be a hidden column".into());
            }
        }
        self.output.validate()
    }
}

impl Grant {
    /// SHA-256 hex of the grant's canonical JSON: names the grant across policy versions, so
    /// that `max_runs` counts every run of this grant whichever version admitted it.
    pub fn digest(&self) -> String {
        sha256_hex(&canonical_bytes(b"cleanroom/grant/v1\n", self))
    }
}

/// A policy with its owner's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedPolicy {
    /// The policy.
    pub policy: Policy,
    /// The dataset owner who signed.
    pub owner: PartyId,
    /// Hex Ed25519 signature over [`Policy::canonical_bytes`].
    pub signature: String,
}

impl SignedPolicy {
    /// Signs `policy` as `owner`.
    pub fn sign(policy: Policy, owner: &Identity) -> Self {
        let signature = hex::encode(owner.sign(&policy.canonical_bytes()));
        Self {
            policy,
            owner: owner.party(),
            signature,
        }
    }

    /// Checks the signature against `owner`. Whether `owner` owns the dataset is the caller's
    /// check.
    pub fn verify(&self) -> Result<()> {
        let sig = decode_signature(&self.signature)?;
        let message = self.policy.canonical_bytes();
        // Admission checks the stored policy of every input on every run (the store is the
        // operator's), so the same few signatures are checked over and over. A signature's
        // validity is a fact about (key, message, signature) alone: remember the triples that
        // verified, by their digest, and skip the curve arithmetic when one comes back.
        let key = {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(self.owner.0);
            h.update(sig);
            h.update(&message);
            <[u8; 32]>::from(h.finalize())
        };
        let verified = || {
            VERIFIED_POLICIES
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if verified().contains(&key) {
            return Ok(());
        }
        verify_signature(&self.owner, &message, &sig)
            .map_err(|_| Error::BadSignature { what: "policy" })?;
        let mut set = verified();
        if set.len() >= VERIFIED_POLICIES_CAPACITY {
            set.clear();
        }
        set.insert(key);
        Ok(())
    }

    /// SHA-256 (hex) of the signed bytes: names this exact policy version in receipts and logs.
    pub fn digest(&self) -> String {
        sha256_hex(&self.policy.canonical_bytes())
    }
}

/// Policy signatures that verified, by SHA-256 of (owner, signature, signed bytes).
static VERIFIED_POLICIES: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
> = std::sync::LazyLock::new(Default::default);
/// A few policy versions per dataset; starting over when full only costs re-verification.
const VERIFIED_POLICIES_CAPACITY: usize = 4096;

/// Decodes a 128-hex-character Ed25519 signature.
pub(crate) fn decode_signature(hex_sig: &str) -> Result<[u8; 64]> {
    let mut sig = [0u8; 64];
    if hex_sig.len() != 128 || hex_sig.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(Error::malformed(
            "signature",
            "expected 128 lowercase hex characters",
        ));
    }
    hex::decode_to_slice(hex_sig, &mut sig).map_err(|e| Error::malformed("signature", e))?;
    Ok(sig)
}

fn hex64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    decode_hex32("sha-256 digest", &text).map_err(serde::de::Error::custom)?;
    Ok(text)
}

fn opt_hex64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    match text {
        Some(text) if !is_hex64(&text) => Err(serde::de::Error::custom(
            "params_digest must be 64 lowercase hex characters (a sha-256 digest)",
        )),
        other => Ok(other),
    }
}

fn lower_hex<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(serde::de::Error::custom(
            "dataset must be a lowercase hex id",
        ));
    }
    Ok(text)
}
