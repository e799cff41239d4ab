//! The audit log: an append-only Merkle log in the style of Certificate Transparency
//! (RFC 6962 tree hashing, via the `ct-merkle` crate), with enclave-signed tree heads.
//!
//! Each entry is a leaf (the SHA-256 of its canonical JSON); the enclave signs the tree's size
//! and root. Any party holding an earlier head checks a *consistency proof* that the current
//! log extends it (a truncated, rewritten or forked log cannot produce one), and an *inclusion
//! proof* shows one entry (a run's release) is in the log a head describes, offline.
//! Entries that do not concern a party are served to it as their leaf hash only, so every
//! party can still recompute the whole tree.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canonical::canonical_bytes;
use crate::error::{AuditError, Error, Result};
use crate::keys::{PartyId, decode_hex32, verify_signature};
use crate::policy::decode_signature;

/// The tree hash: SHA-256 as RFC 6962 uses it (through digest 0.11, which ct-merkle needs).
type TreeHash = sha2_ct::Sha256;

/// Domain-separation prefix of an entry's hashed bytes.
pub const AUDIT_DOMAIN: &[u8] = b"cleanroom/audit/v2\n";
/// Domain-separation prefix of a signed tree head's signed bytes.
pub const HEAD_DOMAIN: &[u8] = b"cleanroom/audit-tree-head/v2\n";

/// What an audit entry records: every action the enclave writes to the log, by the exact
/// string the entry carries (and its signed bytes hold), so the writer and every reader agree
/// on one list instead of comparing strings by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// An owner uploaded a sealed dataset.
    DatasetUploaded,
    /// An owner published a policy version that grants something.
    PolicyGranted,
    /// An owner published a policy version that grants nothing.
    PolicyRevoked,
    /// A researcher uploaded a module.
    ModuleUploaded,
    /// A module's source was attached.
    ModuleSource,
    /// A researcher stored a pipeline.
    PipelineStored,
    /// A researcher asked owners for access.
    AccessRequested,
    /// An owner published a dataset preview.
    PreviewPublished,
    /// A pipeline step's table was kept inside the enclave.
    DerivedKept,
    /// A run was admitted and queued.
    RunQueued,
    /// A run started (admitted again, its DP charge written).
    RunStarted,
    /// The researcher asked to cancel a run (where workers share the log, the worker running
    /// it stops it when it reads this entry).
    RunCancelRequested,
    /// A run's outputs wait for the owners' review.
    RunHeldForReview,
    /// A run reached a final state.
    RunFinished(crate::run::RunState),
    /// A reviewer released a held run's outputs.
    ReviewReleased,
    /// A reviewer withheld a held run's outputs.
    ReviewWithheld,
    /// Requests refused for authentication (the first of a kind each minute).
    RequestRefused,
    /// The enclave's state was handed to an upgraded image.
    EnclaveHandover,
    /// A new worker joined the cluster.
    ClusterJoin,
}

impl Action {
    /// Every action that names no run state.
    const NAMED: [Self; 18] = [
        Self::DatasetUploaded,
        Self::PolicyGranted,
        Self::PolicyRevoked,
        Self::ModuleUploaded,
        Self::ModuleSource,
        Self::PipelineStored,
        Self::AccessRequested,
        Self::PreviewPublished,
        Self::DerivedKept,
        Self::RunQueued,
        Self::RunStarted,
        Self::RunCancelRequested,
        Self::RunHeldForReview,
        Self::ReviewReleased,
        Self::ReviewWithheld,
        Self::RequestRefused,
        Self::EnclaveHandover,
        Self::ClusterJoin,
    ];

    /// The string of an action that names no run state (exhaustive: a new action cannot be
    /// added without its string).
    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::DatasetUploaded => "dataset.uploaded",
            Self::PolicyGranted => "policy.granted",
            Self::PolicyRevoked => "policy.revoked",
            Self::ModuleUploaded => "module.uploaded",
            Self::ModuleSource => "module.source",
            Self::PipelineStored => "pipeline.stored",
            Self::AccessRequested => "access.requested",
            Self::PreviewPublished => "preview.published",
            Self::DerivedKept => "derived.kept",
            Self::RunQueued => "run.queued",
            Self::RunStarted => "run.started",
            Self::RunCancelRequested => "run.cancel_requested",
            Self::RunHeldForReview => "run.held_for_review",
            Self::ReviewReleased => "review.released",
            Self::ReviewWithheld => "review.withheld",
            Self::RequestRefused => "request.refused",
            Self::EnclaveHandover => "enclave.handover",
            Self::ClusterJoin => "cluster.join",
            Self::RunFinished(_) => return None,
        })
    }

    /// The string an entry carries.
    pub fn as_string(self) -> String {
        match self {
            Self::RunFinished(state) => format!("run.{state}"),
            named => named.name().map(str::to_string).unwrap_or_default(),
        }
    }

    /// The action an entry's string names (`None`: not one this version writes).
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(action) = Self::NAMED.into_iter().find(|a| a.name() == Some(text)) {
            return Some(action);
        }
        let state = text.strip_prefix("run.")?;
        crate::run::RunState::ALL
            .into_iter()
            .find(|s| s.is_final() && s.as_str() == state)
            .map(Self::RunFinished)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_string())
    }
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log (its leaf index), from 0, without gaps.
    pub seq: u64,
    /// When it happened (Unix seconds).
    pub time: u64,
    /// Who caused it, if a party did.
    pub actor: Option<PartyId>,
    /// What happened, e.g. `policy.publish`, `run.released`.
    pub action: String,
    /// What it happened to, e.g. a dataset or run id.
    pub subject: String,
    /// Details (decision reason, policy version, digests).
    #[serde(default)]
    pub detail: serde_json::Value,
    /// Who the entry concerns; `None`: every party (uploads, grants). Others see only its
    /// leaf hash.
    #[serde(default)]
    pub parties: Option<Vec<PartyId>>,
    /// Random hex: an entry hidden from a party is served as its hash alone, and the salt
    /// keeps that hash from confirming a guessed entry.
    #[serde(default)]
    pub salt: String,
}

impl AuditEntry {
    /// The action this entry records, if it is one this version writes.
    pub fn action(&self) -> Option<Action> {
        Action::parse(&self.action)
    }

    /// Whether `party` may read this entry in full.
    pub fn concerns(&self, party: &PartyId) -> bool {
        self.parties.as_ref().is_none_or(|p| p.contains(party))
    }

    /// The entry's leaf value: SHA-256 over [`AUDIT_DOMAIN`] followed by its canonical JSON.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(canonical_bytes(AUDIT_DOMAIN, self)).into()
    }
}

/// The log as the enclave keeps it in memory: every leaf and inner node (64 bytes per entry
/// and level amortised), rebuilt from the stored entries at start.
#[derive(Debug, Clone, Default)]
pub struct MerkleLog {
    tree: MemoryBackedTree<TreeHash, [u8; 32]>,
}

impl MerkleLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf (an entry's [`AuditEntry::hash`]).
    pub fn push(&mut self, leaf: [u8; 32]) {
        self.tree.push(leaf);
    }

    /// The number of entries (the tree size).
    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// The RFC 6962 root of the whole log.
    pub fn root(&self) -> [u8; 32] {
        self.tree
            .root()
            .as_bytes()
            .as_slice()
            .try_into()
            .expect("SHA-256 is 32 bytes")
    }

    /// Signs the current tree head.
    pub fn sign_head(&self, time: u64, enclave: &SigningKey) -> SignedHead {
        SignedHead::sign(self.len(), self.root(), time, enclave)
    }

    /// A proof that the entry at `seq` is in the current tree.
    pub fn prove_inclusion(&self, seq: u64) -> Option<String> {
        let index = usize::try_from(seq).ok().filter(|_| seq < self.len())?;
        Some(hex::encode(self.tree.prove_inclusion(index).as_bytes()))
    }

    /// A proof that the tree of size `old_size` is a prefix of the current tree (empty when
    /// the sizes are equal or the old tree is empty).
    pub fn prove_consistency(&self, old_size: u64) -> Option<String> {
        if old_size > self.len() {
            return None;
        }
        if old_size == 0 || old_size == self.len() {
            return Some(String::new());
        }
        let additions = usize::try_from(self.len() - old_size).ok()?;
        Some(hex::encode(
            self.tree.prove_consistency(additions).as_bytes(),
        ))
    }
}

/// The enclave's signature on the log's size and root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    /// How many entries the tree has.
    pub size: u64,
    /// Hex RFC 6962 root of those entries.
    pub root: String,
    /// When the head was signed (Unix seconds).
    pub time: u64,
    /// The enclave's signing key.
    pub enclave_key: PartyId,
    /// Hex Ed25519 signature over [`HEAD_DOMAIN`] and the other fields.
    pub signature: String,
}

#[derive(Serialize)]
struct HeadBody<'a> {
    size: u64,
    root: &'a str,
    time: u64,
    enclave_key: &'a PartyId,
}

impl SignedHead {
    /// Signs the head of a tree of `size` entries with root `root`.
    pub fn sign(size: u64, root: [u8; 32], time: u64, enclave: &SigningKey) -> Self {
        let mut head = Self {
            size,
            root: hex::encode(root),
            time,
            enclave_key: PartyId::from(enclave.verifying_key()),
            signature: String::new(),
        };
        head.signature = hex::encode(enclave.sign(&head.signed_bytes()).to_bytes());
        head
    }

    /// Checks the signature against `enclave_key` (whether that is the right enclave is the
    /// caller's check, or use [`SignedHead::verify_by`]).
    pub fn verify(&self) -> Result<()> {
        decode_hex32("audit tree root", &self.root)?;
        let sig = decode_signature(&self.signature)?;
        verify_signature(&self.enclave_key, &self.signed_bytes(), &sig)
            .map_err(|_| Error::BadSignature { what: "audit head" })
    }

    /// The signature, and that the signer is `expected_enclave` when given.
    pub fn verify_by(&self, expected_enclave: Option<&PartyId>) -> Result<(), AuditError> {
        if let Some(expected) = expected_enclave
            && *expected != self.enclave_key
        {
            return Err(AuditError::Head(format!(
                "signed by {}, not by the expected enclave {expected}",
                self.enclave_key
            )));
        }
        self.verify().map_err(|e| AuditError::Head(e.to_string()))
    }

    fn root_hash(&self) -> Result<RootHash<TreeHash>, AuditError> {
        let bytes = decode_hex32("audit tree root", &self.root)
            .map_err(|e| AuditError::Head(e.to_string()))?;
        Ok(RootHash::new(bytes.into(), self.size))
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let body = HeadBody {
            size: self.size,
            root: &self.root,
            time: self.time,
            enclave_key: &self.enclave_key,
        };
        canonical_bytes(HEAD_DOMAIN, &body)
    }
}

/// Checks that `new` extends `old`: both signed by the same enclave (and by
/// `expected_enclave` if given), `new` no smaller, and `proof` (hex, from
/// [`MerkleLog::prove_consistency`]) shows the older tree is a prefix of the newer.
pub fn verify_consistency(
    old: &SignedHead,
    new: &SignedHead,
    proof: &str,
    expected_enclave: Option<&PartyId>,
) -> Result<(), AuditError> {
    new.verify_by(expected_enclave)?;
    old.verify_by(Some(&new.enclave_key))?;
    let inconsistent = AuditError::Inconsistent {
        old_size: old.size,
        new_size: new.size,
    };
    if old.size > new.size {
        return Err(inconsistent);
    }
    if old.size == 0 {
        return Ok(());
    }
    if old.size == new.size {
        return if old.root == new.root {
            Ok(())
        } else {
            Err(inconsistent)
        };
    }
    let bytes = hex::decode(proof).map_err(|_| inconsistent.clone())?;
    let proof =
        ConsistencyProof::<TreeHash>::try_from_bytes(bytes).map_err(|_| inconsistent.clone())?;
    new.root_hash()?
        .verify_consistency(&old.root_hash()?, &proof)
        .map_err(|_| inconsistent)
}

/// Checks that `entry` is in the log `head` describes, at `entry.seq`, given `proof` (hex,
/// from [`MerkleLog::prove_inclusion`]).
pub fn verify_inclusion(
    entry: &AuditEntry,
    head: &SignedHead,
    proof: &str,
    expected_enclave: Option<&PartyId>,
) -> Result<(), AuditError> {
    head.verify_by(expected_enclave)?;
    let not_included = AuditError::NotIncluded {
        seq: entry.seq,
        size: head.size,
    };
    let bytes = hex::decode(proof).map_err(|_| not_included.clone())?;
    let proof =
        InclusionProof::<TreeHash>::try_from_bytes(bytes).map_err(|_| not_included.clone())?;
    head.root_hash()?
        .verify_inclusion(&entry.hash(), entry.seq, &proof)
        .map_err(|_| not_included)
}

/// One position of the log as a party sees it: the leaf hash always, the entry itself only if
/// it concerns that party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditItem {
    /// Position in the log.
    pub seq: u64,
    /// Hex leaf value ([`AuditEntry::hash`]).
    pub hash: String,
    /// The entry, when it concerns the reader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<AuditEntry>,
}

impl AuditItem {
    /// The item for `entry` as `reader` may see it.
    pub fn view(entry: &AuditEntry, reader: &PartyId) -> Self {
        Self {
            seq: entry.seq,
            hash: hex::encode(entry.hash()),
            entry: entry.concerns(reader).then(|| entry.clone()),
        }
    }
}

/// A page of `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    /// Items from the requested seq on.
    pub items: Vec<AuditItem>,
    /// The enclave-signed head of the whole log.
    pub head: SignedHead,
    /// The seq to ask for next, if there are more.
    pub next: Option<u64>,
}

/// `GET /v1/audit/consistency?old=SIZE`: the current head and a proof that it extends the
/// tree of `old` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConsistencyAnswer {
    /// The older size asked about.
    pub old: u64,
    /// The current signed head.
    pub head: SignedHead,
    /// Hex consistency proof (empty when nothing was appended or `old` is 0).
    pub proof: String,
}

/// Where a run's final entry sits in the log: the entry, a head, and an inclusion proof. A
/// receipt carries it so anyone can check, offline, that the release was logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoggedEntry {
    /// The entry.
    pub entry: AuditEntry,
    /// A head that includes it.
    pub head: SignedHead,
    /// Hex inclusion proof of the entry in `head`.
    pub inclusion: String,
}

impl LoggedEntry {
    /// The head's signature (by `expected_enclave` if given) and the inclusion proof.
    pub fn verify(&self, expected_enclave: Option<&PartyId>) -> Result<(), AuditError> {
        verify_inclusion(&self.entry, &self.head, &self.inclusion, expected_enclave)
    }
}

/// Verifies a party's view of the whole log (from seq 0) against a signed head: every shown
/// entry hashes to its item's leaf, seqs are contiguous from 0, and the leaves hash to the
/// head's root at the head's size. Returns the log rebuilt, for proofs against it.
pub fn verify_items(
    items: &[AuditItem],
    head: &SignedHead,
    expected_enclave: Option<&PartyId>,
) -> Result<MerkleLog, AuditError> {
    head.verify_by(expected_enclave)?;
    if items.is_empty() && head.size > 0 {
        return Err(AuditError::Empty);
    }
    let mut log = MerkleLog::new();
    for (index, item) in items.iter().enumerate() {
        if item.seq != index as u64 {
            return Err(AuditError::Sequence {
                index,
                expected: index as u64,
                found: item.seq,
            });
        }
        let leaf = decode_hex32("audit leaf", &item.hash)
            .map_err(|_| AuditError::EntryHash { seq: item.seq })?;
        if let Some(entry) = &item.entry
            && (entry.seq != item.seq || entry.hash() != leaf)
        {
            return Err(AuditError::EntryHash { seq: item.seq });
        }
        log.push(leaf);
    }
    if log.len() != head.size || hex::encode(log.root()) != head.root {
        return Err(AuditError::Root {
            entries: log.len(),
            size: head.size,
        });
    }
    Ok(log)
}
