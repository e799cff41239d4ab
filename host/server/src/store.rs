//! Durable state behind a trait: the embedded default is SQLite (WAL) for
//! metadata plus files for blobs; a server database and object storage can
//! implement the same trait later.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use cleanroom_proto::audit::AuditEntry;
use cleanroom_proto::policy::SignedPolicy;
use cleanroom_proto::receipt::{ReceiptInput, SignedReceipt};
use cleanroom_proto::run::{OutputReport, RunRequest, RunState, RunStatus};
use cleanroom_proto::{PartyId, Reason};

use crate::error::{ApiError, ApiResult};

mod checked;
mod shared;
mod sqlite;

pub use checked::{Checked, RowBook};
pub use shared::{Cluster, ClusterLock, Fence, LockKey, held_fences};
pub use sqlite::SqliteStorage;

/// A row written in the same transaction as the audit entry that records it.
#[derive(Debug, Clone, Copy)]
pub enum RowWrite<'a> {
    /// A dataset upload.
    Dataset(&'a DatasetRow),
    /// A new policy version.
    Policy(&'a SignedPolicy),
    /// A run's new state.
    Run(&'a RunRow),
    /// A module: uploaded, or given its source.
    Module(&'a ModuleRow),
    /// A pipeline, stored by its digest.
    Pipeline(&'a PipelineRow),
    /// A table a pipeline kept inside, with its provenance.
    Derived(&'a DerivedRow),
    /// A dataset's DP preview.
    Preview(&'a PreviewRow),
}

impl RowWrite<'_> {
    /// `table/key` of the row (a policy's row is its dataset's current policy).
    pub fn row(&self) -> String {
        match self {
            RowWrite::Dataset(d) => format!("datasets/{}", d.id),
            RowWrite::Policy(p) => format!("policies/{}", p.policy.dataset),
            RowWrite::Run(r) => format!("runs/{}", r.id),
            RowWrite::Module(m) => format!("modules/{}", m.module),
            RowWrite::Pipeline(p) => format!("pipelines/{}", p.id),
            RowWrite::Derived(d) => format!("derived/{}", d.id),
            RowWrite::Preview(p) => format!("previews/{}", p.preview.dataset),
        }
    }
}

/// What [`Storage::append_audit`] did.
#[derive(Debug)]
pub struct Appended {
    /// The entry as appended (numbered), with the row it wrote.
    pub entry: StoredEntry,
    /// Entries other workers appended since the caller's `known`, in order.
    pub missed: Vec<StoredEntry>,
}

/// An audit entry as stored, with the row written beside it (`table/key`, body digest).
#[derive(Debug, Clone)]
pub struct StoredEntry {
    /// The entry.
    pub entry: AuditEntry,
    /// The row written in the same transaction and the SHA-256 hex of its body.
    pub row: Option<(String, String)>,
}

/// Every entry of the log from `from` on, in order, each MAC'd (by the storage) and in
/// sequence: a gap is tampering.
pub(crate) fn each_entry(
    storage: &dyn Storage,
    from: u64,
    mut each: impl FnMut(StoredEntry) -> ApiResult<()>,
) -> ApiResult<()> {
    let mut next = from;
    loop {
        let page = storage.audit(next, 4096)?;
        if page.is_empty() {
            return Ok(());
        }
        for stored in page {
            if stored.entry.seq != next {
                return Err(ApiError::Tampered(format!(
                    "audit entry {next} is missing: refusing to go on with tampered state"
                )));
            }
            next += 1;
            each(stored)?;
        }
    }
}

pub(crate) fn body_digest(body: &str) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()))
}

/// A stored dataset (its envelope lives in the blob store).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetRow {
    /// Dataset id (hex).
    pub id: String,
    /// Owner (Ed25519 key, hex).
    pub owner: String,
    /// SHA-256 of the signed manifest.
    pub manifest_digest: String,
    /// Rows.
    pub rows: u64,
    /// Column names and types, for researchers writing analyses.
    pub columns: Vec<(String, String)>,
    /// Upload time (unix seconds).
    pub created: u64,
}

/// A stored module (its component lives in the blob store, named by its hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleRow {
    /// SHA-256 hex of the component.
    pub module: String,
    /// The party that uploaded it first.
    pub uploader: PartyId,
    /// The component's size.
    pub bytes: u64,
    /// Upload time (Unix seconds).
    pub uploaded: u64,
    /// The source it was built from, once its uploader attached it.
    pub source: Option<cleanroom_proto::api::SourceBundle>,
}

/// A stored pipeline (content-addressed: its id is [`Pipeline::digest`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineRow {
    /// Its digest.
    pub id: String,
    /// The pipeline.
    pub pipeline: cleanroom_proto::pipeline::Pipeline,
    /// Who stored it first.
    pub uploader: PartyId,
    /// When (Unix seconds).
    pub uploaded: u64,
}

/// A derived dataset: a table a pipeline step kept inside. Its content is a sealed blob
/// A dataset's current preview (`previews/<dataset>`), with every ε its previews ever spent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewRow {
    /// The preview.
    pub preview: cleanroom_proto::dp::Preview,
    /// ε spent by this and every earlier preview of the dataset (one ledger charge).
    pub spent: cleanroom_proto::dp::Epsilon,
}

/// (`derived/<id>`); the row says where it came from and which rules follow it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedRow {
    /// Its id ([`cleanroom_proto::pipeline::derived_id`]).
    pub id: String,
    /// Where it came from.
    pub provenance: cleanroom_proto::pipeline::Provenance,
    /// The sealed datasets upstream of it.
    pub roots: Vec<String>,
    /// Identifier columns of every ancestor: tapped by name when the table is read.
    pub identifier_columns: Vec<String>,
    /// Hidden columns of every ancestor: never handed to a guest under these names.
    pub hidden_columns: Vec<String>,
    /// When it was kept (Unix seconds).
    pub created: u64,
}

impl ModuleRow {
    /// What `GET /v1/modules/{id}` shows.
    pub fn info(&self) -> cleanroom_proto::api::ModuleInfo {
        cleanroom_proto::api::ModuleInfo {
            module: self.module.clone(),
            bytes: self.bytes,
            uploader: self.uploader.to_string(),
            uploaded: self.uploaded,
            source: self.source.as_ref().map(|s| s.summary()),
        }
    }
}

/// A run's charge to DP ledgers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpCharge {
    /// What the run spends.
    pub epsilon: cleanroom_proto::dp::Epsilon,
    /// The datasets whose ledgers it is charged to.
    pub datasets: Vec<String>,
}

/// A stored run: every field typed, nothing a module wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRow {
    /// Run id.
    pub id: String,
    /// Researcher.
    pub researcher: PartyId,
    /// The request as submitted.
    pub request: RunRequest,
    /// Each input with the policy applied (at admission, then at start).
    pub inputs: Vec<ReceiptInput>,
    /// Owners of the inputs.
    pub owners: Vec<PartyId>,
    /// Current state.
    pub state: RunState,
    /// Why it failed, was rejected or withheld (host-written).
    pub reason: Option<Reason>,
    /// Review groups (one per input whose owner reviews).
    pub review: Vec<ReviewGroupRow>,
    /// Reviewers who released so far.
    pub released_by: Vec<PartyId>,
    /// What the policy decided per output.
    pub outputs: Vec<OutputReport>,
    /// The signed receipt once final.
    pub receipt: Option<SignedReceipt>,
    /// A pipeline run's steps, once they ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<cleanroom_proto::ReceiptStep>,
    /// The ε charged to the ledgers of the inputs that require DP, written with the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<DpCharge>,
    /// Submission time.
    pub created: u64,
    /// Last change.
    pub updated: u64,
    /// How many times the row was written: where workers share the database, a write is
    /// refused unless the stored row is still the version the writer read.
    #[serde(default)]
    pub version: u64,
}

/// A stored review group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewGroupRow {
    /// The dataset whose owner requires review.
    pub dataset: String,
    /// Who may review.
    pub reviewers: Vec<PartyId>,
    /// How many distinct releases are needed.
    pub needed: u32,
}

impl RunRow {
    /// The review route in the policy crate's terms.
    pub fn route(&self) -> cleanroom_policy::ReviewRoute {
        cleanroom_policy::ReviewRoute {
            groups: self
                .review
                .iter()
                .map(|g| cleanroom_policy::ReviewGroup {
                    dataset: g.dataset.clone(),
                    reviewers: g.reviewers.clone(),
                    needed: g.needed,
                })
                .collect(),
        }
    }

    /// Reviewers still awaited (only while held).
    pub fn pending_reviews(&self) -> Vec<PartyId> {
        if self.state == RunState::HeldForReview {
            self.route().pending(&self.released_by)
        } else {
            vec![]
        }
    }

    /// Whether `party` submitted the run, owns one of its inputs or reviews it.
    pub fn visible_to(&self, party: &PartyId) -> bool {
        self.parties().contains(party)
    }

    /// Everyone the run concerns: its researcher, input owners and reviewers.
    pub fn parties(&self) -> Vec<PartyId> {
        let mut out = vec![self.researcher];
        out.extend(self.owners.iter().copied());
        out.extend(self.review.iter().flat_map(|g| g.reviewers.iter().copied()));
        out.sort();
        out.dedup();
        out
    }

    /// The status as `party` may see it. In a run an owner reviews, the researcher sees
    /// per-output decisions only once the reviewers released it: which rule fired on which
    /// output is module-steerable, and would otherwise reach the researcher whatever the
    /// reviewer decides (while held, after a withhold, when the run failed, when every
    /// output was refused).
    pub fn status_for(&self, party: &PartyId) -> RunStatus {
        let mut status = self.status();
        // (Also when the researcher owns an input too: that is how one would read around.)
        if *party == self.researcher
            && !self.review.is_empty()
            && (self.state == RunState::HeldForReview || !self.route().satisfied(&self.released_by))
        {
            status.outputs.clear();
        }
        status
    }

    /// The status every owner of the run's inputs sees.
    pub fn status(&self) -> RunStatus {
        RunStatus {
            run: self.id.clone(),
            state: self.state,
            reason: self.reason.clone(),
            researcher: self.researcher,
            module: self.request.module.clone(),
            inputs: self.inputs.clone(),
            params_digest: self.request.params_digest(),
            pending_reviews: self.pending_reviews(),
            outputs: self.outputs.clone(),
            receipt: self.receipt.clone(),
            created: self.created,
            updated: self.updated,
        }
    }
}

/// The digest of the last version of each row the log recorded writing (`table/key` →
/// SHA-256 hex of the row's body).
pub type LoggedRows = std::collections::HashMap<String, String>;

/// Everything the service persists.
///
/// A backend stores rows (each authenticated with [`RowKey`]) and the audit log; the typed
/// reads are the same for every backend, on top of its two authenticated reads.
pub trait Storage: Send + Sync {
    /// The key the rows are authenticated with.
    fn row_key(&self) -> &RowKey;
    /// Row `key` of `table` as stored: its body and MAC, unchecked.
    fn raw_row(&self, table: &'static str, key: &str) -> ApiResult<Option<(String, String)>>;
    /// Every row of `table` in `order` (an SQL `ORDER BY`) as stored: key, body, MAC.
    fn raw_rows(
        &self,
        table: &'static str,
        order: &'static str,
    ) -> ApiResult<Vec<(String, String, String)>>;

    /// The body of row `key` of `table`, its MAC checked.
    fn authenticated(&self, table: &'static str, key: &str) -> ApiResult<Option<String>> {
        self.raw_row(table, key)?
            .map(|(body, mac)| {
                self.row_key().check(table, key, &body, &mac)?;
                Ok(body)
            })
            .transpose()
    }
    /// Every body of `table` in `order`, each MAC checked.
    fn authenticated_all(
        &self,
        table: &'static str,
        order: &'static str,
    ) -> ApiResult<Vec<String>> {
        Ok(self
            .authenticated_all_keyed(table, order)?
            .into_iter()
            .map(|(_, body)| body)
            .collect())
    }
    /// Every row of `table` in `order` (key, body), each MAC checked.
    fn authenticated_all_keyed(
        &self,
        table: &'static str,
        order: &'static str,
    ) -> ApiResult<Vec<(String, String)>> {
        self.raw_rows(table, order)?
            .into_iter()
            .map(|(id, body, mac)| {
                self.row_key().check(table, &id, &body, &mac)?;
                Ok((id, body))
            })
            .collect()
    }
    /// The newest policy row of `dataset` as stored: its body and MAC, unchecked.
    fn raw_policy(&self, dataset: &str) -> ApiResult<Option<(String, String)>>;
    /// The body of the newest policy row of `dataset`, its MAC checked.
    fn authenticated_policy(&self, dataset: &str) -> ApiResult<Option<String>> {
        self.raw_policy(dataset)?
            .map(|(body, mac)| {
                self.row_key()
                    .check_parts("policies", &[dataset, &body], &mac)?;
                Ok(body)
            })
            .transpose()
    }

    /// A dataset by id.
    fn dataset(&self, id: &str) -> ApiResult<Option<DatasetRow>> {
        decode(self.authenticated("datasets", id)?)
    }
    /// All datasets.
    fn datasets(&self) -> ApiResult<Vec<DatasetRow>> {
        decode_all(self.authenticated_all("datasets", "id")?)
    }
    /// A module by hash (written with its audit entry, as [`RowWrite::Module`]).
    fn module(&self, hash: &str) -> ApiResult<Option<ModuleRow>> {
        decode(self.authenticated("module_rows", hash)?)
    }
    /// Whether a module exists.
    fn has_module_or_pipeline(&self, id: &str) -> ApiResult<bool> {
        Ok(self.has_module(id)? || self.pipeline(id)?.is_some())
    }
    /// A pipeline by digest.
    fn pipeline(&self, id: &str) -> ApiResult<Option<PipelineRow>> {
        let row: Option<PipelineRow> = decode(self.authenticated("pipelines", id)?)?;
        // Content-addressed: a row whose pipeline is not its id is refused, MAC or not.
        match row {
            Some(row) if row.pipeline.digest() != row.id => Err(ApiError::Tampered(format!(
                "pipelines/{id} does not hold the pipeline with that digest"
            ))),
            row => Ok(row),
        }
    }
    /// A derived dataset by id.
    fn derived(&self, id: &str) -> ApiResult<Option<DerivedRow>> {
        decode(self.authenticated("derived", id)?)
    }
    /// A dataset's current preview.
    fn preview(&self, dataset: &str) -> ApiResult<Option<PreviewRow>> {
        decode(self.authenticated("previews", dataset)?)
    }
    /// Every dataset's current preview.
    fn previews(&self) -> ApiResult<Vec<PreviewRow>> {
        decode_all(self.authenticated_all("previews", "id")?)
    }
    /// Every derived dataset.
    fn derived_all(&self) -> ApiResult<Vec<DerivedRow>> {
        decode_all(self.authenticated_all("derived", "id")?)
    }
    /// Whether the module was uploaded.
    fn has_module(&self, hash: &str) -> ApiResult<bool> {
        Ok(self.module(hash)?.is_some())
    }
    /// The latest policy of a dataset, its row authenticated (verify the owner's signature
    /// before trusting it).
    fn policy(&self, dataset: &str) -> ApiResult<Option<SignedPolicy>> {
        decode(self.authenticated_policy(dataset)?)
    }
    /// A run by id.
    fn run(&self, id: &str) -> ApiResult<Option<RunRow>> {
        decode(self.authenticated("runs", id)?)
    }
    /// All runs, newest first.
    fn runs(&self) -> ApiResult<Vec<RunRow>> {
        decode_all(self.authenticated_all("runs", "created DESC, id")?)
    }

    /// Append `entry` as the log's next entry and store `write` (if given) in the same
    /// transaction with its digest: one durable write per state change, and the log says
    /// which version of the row is current.
    ///
    /// `known` is how many entries the caller has. Where several workers share the log, the
    /// entries others appended since then come back in [`Appended::missed`] and the entry is
    /// numbered after them; alone, `entry` is numbered `known`.
    ///
    /// `fences` are the cluster locks the caller holds ([`held_fences`]): a shared store
    /// refuses the append with [`ApiError::Conflict`] if any of them was taken again since.
    fn append_audit(
        &self,
        known: u64,
        entry: AuditEntry,
        write: Option<RowWrite<'_>>,
        fences: &[Fence],
    ) -> ApiResult<Appended>;
    /// Audit entries from `from` on, at most `limit`, in order, each with the row it wrote.
    fn audit(&self, from: u64, limit: u64) -> ApiResult<Vec<StoredEntry>>;
    /// The last audit entry that wrote `row` (`table/key`).
    fn last_write(&self, row: &str) -> ApiResult<Option<AuditEntry>>;
    /// Check every stored dataset, current policy and run against the version the audit log
    /// wrote last (`logged`).
    /// A row edited, restored from an older copy, inserted or deleted outside the enclave
    /// fails with `Tampered` naming it.
    fn check_logged_rows(&self, logged: &crate::store::LoggedRows) -> ApiResult<()>;
    /// The coordination of several workers sharing this storage, if it is shared.
    fn cluster(&self) -> Option<&dyn Cluster> {
        None
    }
    /// Remember a request nonce; false if it was seen before (a replay).
    fn remember_nonce(&self, party: &str, nonce: &str, created: u64) -> ApiResult<bool>;
}

/// The key that authenticates rows at rest.
pub struct RowKey([u8; 32]);

impl std::fmt::Debug for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowKey(..)")
    }
}

impl RowKey {
    /// Derive the row key from the enclave's sealing key.
    pub fn derive(sealing_key: &[u8; 32]) -> Self {
        let mut key = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(Some(b"cleanroom/rows"), sealing_key)
            .expand(b"cleanroom/rows/v1", &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self(key)
    }

    pub(crate) fn mac(&self, table: &str, id: &str, body: &str) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        for part in [table, id, body] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// The MAC of a row made of several fields (each length-prefixed).
    pub(crate) fn mac_parts(&self, table: &str, parts: &[&str]) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        for part in std::iter::once(&table).chain(parts) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }

    pub(crate) fn check_parts(&self, table: &str, parts: &[&str], mac: &str) -> ApiResult<()> {
        use subtle::ConstantTimeEq;
        let expected = self.mac_parts(table, parts);
        if expected.as_bytes().ct_eq(mac.as_bytes()).into() {
            Ok(())
        } else {
            Err(ApiError::Tampered(format!(
                "{table} row {} was modified outside the enclave",
                parts.first().copied().unwrap_or_default()
            )))
        }
    }

    /// A stored audit row, its MAC and its place checked.
    pub(crate) fn audit_entry(
        &self,
        seq: i64,
        body: String,
        row: String,
        row_digest: String,
        mac: &str,
    ) -> ApiResult<StoredEntry> {
        self.check_parts("audit", &[&seq.to_string(), &body, &row, &row_digest], mac)?;
        let entry: AuditEntry = from_json(&body)?;
        if entry.seq != seq as u64 {
            return Err(ApiError::Tampered(format!(
                "audit row {seq} holds entry {}: moved outside the enclave",
                entry.seq
            )));
        }
        Ok(StoredEntry {
            entry,
            row: (!row.is_empty()).then_some((row, row_digest)),
        })
    }

    pub(crate) fn check(&self, table: &str, id: &str, body: &str, mac: &str) -> ApiResult<()> {
        use subtle::ConstantTimeEq;
        let expected = self.mac(table, id, body);
        if expected.as_bytes().ct_eq(mac.as_bytes()).into() {
            Ok(())
        } else {
            Err(ApiError::Tampered(format!(
                "{table} row {id} was modified outside the enclave"
            )))
        }
    }
}

fn decode<T: for<'de> Deserialize<'de>>(body: Option<String>) -> ApiResult<Option<T>> {
    body.map(|b| from_json(&b)).transpose()
}

fn decode_all<T: for<'de> Deserialize<'de>>(bodies: Vec<String>) -> ApiResult<Vec<T>> {
    bodies.iter().map(|b| from_json(b)).collect()
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> ApiResult<String> {
    serde_json::to_string(v).map_err(|e| ApiError::Internal(format!("encode: {e}")))
}

pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(s: &str) -> ApiResult<T> {
    serde_json::from_str(s).map_err(|e| ApiError::Internal(format!("corrupt state: {e}")))
}

/// Each table whose rows the audit log writes, and the query of its current rows (key, body).
pub(crate) const LOGGED_TABLES: [(&str, &str); 7] = [
    ("datasets", "SELECT id, body FROM datasets"),
    ("runs", "SELECT id, body FROM runs"),
    ("modules", "SELECT id, body FROM module_rows"),
    ("pipelines", "SELECT id, body FROM pipelines"),
    ("derived", "SELECT id, body FROM derived"),
    ("previews", "SELECT id, body FROM previews"),
    (
        "policies",
        "SELECT p.dataset, p.body FROM policies p WHERE p.version = \
                     (SELECT MAX(version) FROM policies q WHERE q.dataset = p.dataset)",
    ),
];

/// Every stored row (`table/key`, body digest) against the version the audit log wrote last.
pub(crate) fn compare_logged(
    stored: &[(String, String)],
    logged: &crate::store::LoggedRows,
) -> ApiResult<()> {
    let mut seen = std::collections::HashSet::new();
    for (row, digest) in stored {
        match logged.get(row) {
            Some(expected) if expected == digest => {}
            Some(_) => {
                return Err(ApiError::Tampered(format!(
                    "{row} is not the version the audit log last wrote: it was edited or \
                         restored from an older copy outside the enclave"
                )));
            }
            None => {
                return Err(ApiError::Tampered(format!(
                    "{row} was never written by the enclave: it was inserted outside it"
                )));
            }
        }
        seen.insert(row.as_str());
    }
    if let Some(row) = logged.keys().find(|r| !seen.contains(r.as_str())) {
        return Err(ApiError::Tampered(format!(
            "{row} was deleted outside the enclave (the audit log wrote it)"
        )));
    }
    // What runs used (grant counts, DP charges) is counted in enclave memory from the now
    // verified rows (`crate::ledger`), never kept in a table of its own.
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Write `path` so that a crash or a power loss leaves either the old file or the whole new
/// one: a temporary file beside it, fsync, rename, fsync the directory.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut file = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}
