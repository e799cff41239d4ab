//! Granted tables backed by sealed dataset envelopes: decrypted lazily,
//! batch by batch, with the owner's hidden columns projected away before a
//! guest can see them.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use cleanroom_envelope::EnvelopeReader;
use cleanroom_runtime::TableSource;

use crate::blobs::{BlobReader, Blobs};
use ed25519_dalek::VerifyingKey;

/// A dataset envelope on disk, opened for one run.
pub struct EnvelopeTable {
    /// The reader `open` verified, for the first pass over the batches (a run usually makes
    /// one): opening again costs a round trip to object storage.
    opened: std::sync::Mutex<Option<EnvelopeReader<Box<dyn BlobReader>>>>,
    blobs: Arc<dyn Blobs>,
    dataset: String,
    hpke_secret: [u8; 32],
    owner: VerifyingKey,
    projection: Vec<usize>,
    schema: SchemaRef,
    rows: u64,
}

impl std::fmt::Debug for EnvelopeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeTable")
            .field("dataset", &self.dataset)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl EnvelopeTable {
    /// Open and verify the envelope; `hidden` columns never reach the guest.
    pub fn open(
        blobs: Arc<dyn Blobs>,
        hpke_secret: [u8; 32],
        owner: VerifyingKey,
        hidden: &[String],
        dataset: &str,
        manifest_digest: &str,
    ) -> Result<Self, String> {
        let reader = Self::reader(blobs.as_ref(), dataset, &hpke_secret, &owner)?;
        // The file on disk is the operator's: it must be this dataset's envelope, exactly the
        // one uploaded (not another dataset of the same owner swapped in).
        let manifest = reader.manifest();
        if manifest.dataset_id().to_string() != dataset
            || hex::encode(manifest.digest()) != manifest_digest
        {
            return Err(format!(
                "the sealed file of dataset {dataset} is not the envelope that was uploaded"
            ));
        }
        let full = reader.schema();
        let projection: Vec<usize> = (0..full.fields().len())
            .filter(|i| {
                !hidden
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(full.field(*i).name()))
            })
            .collect();
        let schema = std::sync::Arc::new(full.project(&projection).map_err(|e| e.to_string())?);
        let rows = reader.num_rows();
        Ok(Self {
            opened: std::sync::Mutex::new(Some(reader)),
            blobs,
            dataset: dataset.to_string(),
            hpke_secret,
            owner,
            projection,
            schema,
            rows,
        })
    }

    fn reader(
        blobs: &dyn Blobs,
        dataset: &str,
        secret: &[u8; 32],
        owner: &VerifyingKey,
    ) -> Result<EnvelopeReader<Box<dyn BlobReader>>, String> {
        let file = blobs
            .open("datasets", dataset)
            .map_err(|e| format!("cannot open sealed dataset: {e}"))?;
        EnvelopeReader::open(file, secret, Some(owner)).map_err(|e| e.to_string())
    }
}

impl TableSource for EnvelopeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn num_rows(&self) -> u64 {
        self.rows
    }

    fn batches(&self) -> Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send> {
        let opened = self
            .opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let reader = match opened.map(Ok).unwrap_or_else(|| {
            Self::reader(
                self.blobs.as_ref(),
                &self.dataset,
                &self.hpke_secret,
                &self.owner,
            )
        }) {
            Ok(r) => r,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        // The envelope's batch iterator borrows its reader; a producer thread
        // owns both and hands batches over a channel of one, so decryption
        // stays lazy and at most two batches are in memory.
        let projection = self.projection.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut reader = reader;
            for batch in reader.batches() {
                let item = batch
                    .map_err(|e| e.to_string())
                    .and_then(|b| b.project(&projection).map_err(|e| e.to_string()));
                let stop = item.is_err();
                if tx.send(item).is_err() || stop {
                    break;
                }
            }
        });
        Box::new(rx.into_iter())
    }
}
