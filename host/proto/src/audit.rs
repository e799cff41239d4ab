//! The hash-chained audit log and its enclave-signed head.
//!
//! Each entry names the hash of the entry before it; the enclave signs the hash of the last
//! entry. Given the entries and a signed head, [`verify_log`] detects any edit, deletion,
//! insertion or reordering up to the head.

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canonical::canonical_bytes;
use crate::error::{AuditError, Error, Result};
use crate::keys::{PartyId, decode_hex32, verify_signature};
use crate::policy::decode_signature;

/// Domain-separation prefix of an entry's hashed bytes.
pub const AUDIT_DOMAIN: &[u8] = b"cleanroom/audit/v1\n";
/// Domain-separation prefix of a signed head's signed bytes.
pub const HEAD_DOMAIN: &[u8] = b"cleanroom/audit-head/v1\n";
/// The `prev` of the first entry.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, from 0, without gaps.
    pub seq: u64,
    /// When it happened (Unix seconds).
    pub time: u64,
    /// Who caused it, if a party did.
    pub actor: Option<PartyId>,
    /// What happened, e.g. `policy.publish`, `run.release`.
    pub action: String,
    /// What it happened to, e.g. a dataset or run id.
    pub subject: String,
    /// Details (decision reason, policy version, digests).
    #[serde(default)]
    pub detail: serde_json::Value,
    /// Hex hash of the previous entry, [`GENESIS_PREV`] for the first.
    pub prev: String,
    /// Who the entry concerns; `None`: every party (uploads, grants). Others see only its
    /// hash and link.
    #[serde(default)]
    pub parties: Option<Vec<PartyId>>,
    /// Random hex: an entry hidden from a party is served as its hash alone, and the salt
    /// keeps that hash from confirming a guessed entry.
    #[serde(default)]
    pub salt: String,
}

impl AuditEntry {
    /// Whether `party` may read this entry in full.
    pub fn concerns(&self, party: &PartyId) -> bool {
        self.parties.as_ref().is_none_or(|p| p.contains(party))
    }

    /// SHA-256 over [`AUDIT_DOMAIN`] followed by the entry's canonical JSON (sorted keys).
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(canonical_bytes(AUDIT_DOMAIN, self)).into()
    }
}

/// An append-only, in-memory audit chain.
#[derive(Debug, Clone, Default)]
pub struct AuditChain {
    entries: Vec<AuditEntry>,
    head: Option<[u8; 32]>,
}

impl AuditChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes a chain from stored entries, checking that they are contiguous and linked.
    pub fn from_entries(entries: Vec<AuditEntry>) -> Result<Self, AuditError> {
        let head = check_links(&entries)?;
        Ok(Self { entries, head })
    }

    /// Appends an event and returns the new entry.
    pub fn append(
        &mut self,
        time: u64,
        actor: Option<PartyId>,
        action: impl Into<String>,
        subject: impl Into<String>,
        detail: serde_json::Value,
    ) -> &AuditEntry {
        let entry = AuditEntry {
            seq: self.entries.len() as u64,
            time,
            actor,
            action: action.into(),
            subject: subject.into(),
            detail,
            prev: hex::encode(self.head_hash()),
            parties: None,
            salt: String::new(),
        };
        self.head = Some(entry.hash());
        self.entries.push(entry);
        self.entries
            .last()
            .expect("invariant: an entry was just pushed")
    }

    /// The hash of the last entry, or all zeros when empty.
    pub fn head_hash(&self) -> [u8; 32] {
        self.head.unwrap_or([0; 32])
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> &[AuditEntry] {
        &self.entries
    }

    /// Signs the current head, or `None` when the chain is empty.
    pub fn sign_head(&self, time: u64, enclave: &SigningKey) -> Option<SignedHead> {
        let last = self.entries.last()?;
        Some(SignedHead::sign(last.seq, self.head_hash(), time, enclave))
    }
}

/// The enclave's signature on the hash of the entry at `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    /// The seq of the last entry covered.
    pub seq: u64,
    /// Hex hash of that entry.
    pub hash: String,
    /// When the head was signed (Unix seconds).
    pub time: u64,
    /// The enclave's signing key.
    pub enclave_key: PartyId,
    /// Hex Ed25519 signature over [`HEAD_DOMAIN`] and the other fields.
    pub signature: String,
}

#[derive(Serialize)]
struct HeadBody<'a> {
    seq: u64,
    hash: &'a str,
    time: u64,
    enclave_key: &'a PartyId,
}

impl SignedHead {
    /// Signs the head at `seq` whose entry hashes to `hash`.
    pub fn sign(seq: u64, hash: [u8; 32], time: u64, enclave: &SigningKey) -> Self {
        let mut head = Self {
            seq,
            hash: hex::encode(hash),
            time,
            enclave_key: PartyId::from(enclave.verifying_key()),
            signature: String::new(),
        };
        head.signature = hex::encode(enclave.sign(&head.signed_bytes()).to_bytes());
        head
    }

    /// Checks the signature against `enclave_key` (whether that is the right enclave is the
    /// caller's check, or pass it to [`verify_log`]).
    pub fn verify(&self) -> Result<()> {
        decode_hex32("audit head hash", &self.hash)?;
        let sig = decode_signature(&self.signature)?;
        verify_signature(&self.enclave_key, &self.signed_bytes(), &sig)
            .map_err(|_| Error::BadSignature { what: "audit head" })
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let body = HeadBody {
            seq: self.seq,
            hash: &self.hash,
            time: self.time,
            enclave_key: &self.enclave_key,
        };
        canonical_bytes(HEAD_DOMAIN, &body)
    }
}

/// Verifies a whole log against a signed head: the head's signature (and signer, if
/// `expected_enclave` is given), seq contiguous from 0, every `prev` the hash of the entry
/// before, and the last entry at the head's seq with the head's hash. To check a log longer
/// than an older head, pass `&entries[..=head.seq]`.
pub fn verify_log(
    entries: &[AuditEntry],
    head: &SignedHead,
    expected_enclave: Option<&PartyId>,
) -> Result<(), AuditError> {
    check_head(head, expected_enclave)?;
    let last_hash = check_links(entries)?.ok_or(AuditError::Empty)?;
    let last_seq = entries.len() as u64 - 1;
    if last_seq != head.seq {
        return Err(AuditError::HeadSequence {
            head_seq: head.seq,
            last_seq,
        });
    }
    if hex::encode(last_hash) != head.hash {
        return Err(AuditError::HeadHash { seq: last_seq });
    }
    Ok(())
}

/// The head's signature, and its signer if an expected enclave key is given.
fn check_head(head: &SignedHead, expected_enclave: Option<&PartyId>) -> Result<(), AuditError> {
    if let Some(expected) = expected_enclave
        && *expected != head.enclave_key
    {
        return Err(AuditError::Head(format!(
            "signed by {}, not by the expected enclave {expected}",
            head.enclave_key
        )));
    }
    head.verify().map_err(|e| AuditError::Head(e.to_string()))
}

/// Checks seq and `prev` links; returns the hash of the last entry (`None` when empty).
fn check_links(entries: &[AuditEntry]) -> Result<Option<[u8; 32]>, AuditError> {
    let mut prev: Option<[u8; 32]> = None;
    for (index, entry) in entries.iter().enumerate() {
        if entry.seq != index as u64 {
            return Err(AuditError::Sequence {
                index,
                expected: index as u64,
                found: entry.seq,
            });
        }
        if entry.prev != hex::encode(prev.unwrap_or([0; 32])) {
            return Err(AuditError::BrokenLink { seq: entry.seq });
        }
        prev = Some(entry.hash());
    }
    Ok(prev)
}

/// One position of the log as a party sees it: the link (`seq`, `prev`, `hash`) always, the
/// entry itself only if it concerns that party. Every party can check every link up to the
/// signed head, so truncation and rewriting are caught by anyone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditItem {
    /// Position in the log.
    pub seq: u64,
    /// Hex hash of the entry before.
    pub prev: String,
    /// Hex hash of this entry.
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
            prev: entry.prev.clone(),
            hash: hex::encode(entry.hash()),
            entry: entry.concerns(reader).then(|| entry.clone()),
        }
    }
}

/// A page of `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    /// Items from the requested seq on.
    pub items: Vec<AuditItem>,
    /// The enclave-signed head of the whole log.
    pub head: SignedHead,
    /// The seq to ask for next, if there are more.
    pub next: Option<u64>,
}

/// Verifies a party's view of the whole log (from seq 0) against a signed head: every shown
/// entry hashes to its item's hash, every `prev` is the hash of the item before, seqs are
/// contiguous, and the last item is the head.
pub fn verify_items(
    items: &[AuditItem],
    head: &SignedHead,
    expected_enclave: Option<&PartyId>,
) -> Result<(), AuditError> {
    check_head(head, expected_enclave)?;
    let mut prev = GENESIS_PREV.to_string();
    for (index, item) in items.iter().enumerate() {
        if item.seq != index as u64 {
            return Err(AuditError::Sequence {
                index,
                expected: index as u64,
                found: item.seq,
            });
        }
        if item.prev != prev {
            return Err(AuditError::BrokenLink { seq: item.seq });
        }
        if let Some(entry) = &item.entry
            && (entry.seq != item.seq
                || entry.prev != item.prev
                || hex::encode(entry.hash()) != item.hash)
        {
            return Err(AuditError::BrokenLink { seq: item.seq });
        }
        prev = item.hash.clone();
    }
    let last = items.last().ok_or(AuditError::Empty)?;
    if last.seq != head.seq {
        return Err(AuditError::HeadSequence {
            head_seq: head.seq,
            last_seq: last.seq,
        });
    }
    if last.hash != head.hash {
        return Err(AuditError::HeadHash { seq: last.seq });
    }
    Ok(())
}
