//! Blobs: sealed dataset envelopes, modules, compiled artefacts, derived tables, held and
//! released results. The embedded default keeps them in files beside the database; a cluster
//! keeps them in S3-compatible object storage through `object_store`, read in ranges so a
//! worker streams only the chunks a run reads.
//!
//! Nothing here is trusted: every blob is sealed by the enclave, signed by its owner or named
//! by its hash, and checked by whoever reads it.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{ApiError, ApiResult};

/// A blob opened for reading in place.
pub trait BlobReader: Read + Seek + Send {}
impl<T: Read + Seek + Send> BlobReader for T {}

/// Where blobs live.
pub trait Blobs: Send + Sync + std::fmt::Debug {
    /// Store a finished temporary file (from [`Blobs::tmp_path`]) as `kind/id`, durably.
    fn put_file(&self, kind: &str, id: &str, tmp: &Path) -> ApiResult<()>;
    /// Store `bytes` as `kind/id`, durably.
    fn put(&self, kind: &str, id: &str, bytes: &[u8]) -> ApiResult<()>;
    /// The whole blob, or `None` if there is none.
    fn get(&self, kind: &str, id: &str) -> ApiResult<Option<Vec<u8>>>;
    /// The blob opened for ranged reads.
    fn open(&self, kind: &str, id: &str) -> ApiResult<Box<dyn BlobReader>>;
    /// Remove a blob (absent is fine).
    fn delete(&self, kind: &str, id: &str) -> ApiResult<()>;
    /// A fresh path for spooling an upload, on this worker's own scratch space.
    fn tmp_path(&self) -> PathBuf;
}

fn safe_id(id: &str) -> ApiResult<&str> {
    if id.is_empty()
        || id.len() > 128
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ApiError::BadRequest(format!("invalid id {id:?}")));
    }
    Ok(id)
}

fn random_name() -> String {
    let mut bytes = [0u8; 12];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    hex::encode(bytes)
}

/// Blobs in a directory: `blobs/<kind>/<id>`, written through a temporary file, fsync and
/// rename.
#[derive(Debug)]
pub struct FileBlobs {
    dir: PathBuf,
}

impl FileBlobs {
    /// Blobs under `dir` (`blobs/` and `tmp/` are created).
    pub fn open(dir: &Path) -> ApiResult<Self> {
        std::fs::create_dir_all(dir.join("blobs"))?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, kind: &str, id: &str) -> ApiResult<PathBuf> {
        Ok(self.dir.join("blobs").join(kind).join(safe_id(id)?))
    }
}

impl Blobs for FileBlobs {
    fn put_file(&self, kind: &str, id: &str, tmp: &Path) -> ApiResult<()> {
        let dest = self.path(kind, id)?;
        let parent = dest.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(parent)?;
        std::fs::File::open(tmp)?.sync_all()?;
        std::fs::rename(tmp, &dest)?;
        std::fs::File::open(parent)?.sync_all()?;
        Ok(())
    }

    fn put(&self, kind: &str, id: &str, bytes: &[u8]) -> ApiResult<()> {
        let tmp = self.tmp_path();
        std::fs::write(&tmp, bytes)?;
        self.put_file(kind, id, &tmp)
    }

    fn get(&self, kind: &str, id: &str) -> ApiResult<Option<Vec<u8>>> {
        match std::fs::read(self.path(kind, id)?) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn open(&self, kind: &str, id: &str) -> ApiResult<Box<dyn BlobReader>> {
        Ok(Box::new(std::fs::File::open(self.path(kind, id)?)?))
    }

    fn delete(&self, kind: &str, id: &str) -> ApiResult<()> {
        match std::fs::remove_file(self.path(kind, id)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn tmp_path(&self) -> PathBuf {
        self.dir.join("tmp").join(random_name())
    }
}

/// Object storage settings (`[s3]` in `cleanroomd.toml`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The endpoint, e.g. `http://127.0.0.1:9000` (unset: AWS for the region).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// The region (any name for a server that ignores it).
    #[serde(default = "default_region")]
    pub region: String,
    /// Access key id (or `CLEANROOM_S3_ACCESS_KEY`).
    #[serde(default)]
    pub access_key: Option<String>,
    /// Secret key (or `CLEANROOM_S3_SECRET_KEY`): kept out of the config file in production.
    #[serde(default)]
    pub secret_key: Option<String>,
    /// Key prefix, so several deployments can share a bucket.
    #[serde(default)]
    pub prefix: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// How much one ranged read fetches.
const RANGE_BYTES: u64 = 8 << 20;
/// Ranges fetched ahead of the reader: object stores answer each request slowly but many at
/// once (S3's latency is tens of milliseconds; a small server's per-request throughput is
/// far below its total).
const READ_AHEAD: usize = 6;
/// Uploads larger than this go up in parts of this size.
const PART_BYTES: usize = 16 << 20;

/// Blobs in S3-compatible object storage.
///
/// The trait is synchronous (the service calls it from blocking run threads and handlers
/// alike), and `object_store` is async: requests run on a small runtime of this store's own,
/// and the caller waits for the answer on a channel, which is allowed on any thread.
pub struct ObjectBlobs {
    /// Small sealed datasets already fetched (datasets never change under their id), so a hot
    /// table costs no round trip; every open still verifies the bytes, so the cache adds no
    /// trust.
    small: std::sync::Mutex<SmallCache>,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    rt: tokio::runtime::Handle,
    scratch: PathBuf,
}

impl std::fmt::Debug for ObjectBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBlobs")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Objects no larger than one range, kept whole, first in first out.
#[derive(Default)]
struct SmallCache {
    bytes: usize,
    order: std::collections::VecDeque<String>,
    objects: std::collections::HashMap<String, Bytes>,
}

/// What the small-object cache may hold in all.
const SMALL_CACHE_BYTES: usize = 256 << 20;

impl SmallCache {
    fn insert(&mut self, key: String, object: Bytes) {
        if self.objects.contains_key(&key) {
            return;
        }
        while self.bytes + object.len() > SMALL_CACHE_BYTES
            && let Some(old) = self.order.pop_front()
        {
            self.bytes -= self.objects.remove(&old).map_or(0, |b| b.len());
        }
        self.bytes += object.len();
        self.order.push_back(key.clone());
        self.objects.insert(key, object);
    }
}

fn store_error(e: object_store::Error) -> ApiError {
    ApiError::Busy(format!("object storage: {e}"))
}

impl ObjectBlobs {
    /// Connect to the bucket in `config`; `scratch` is this worker's spool directory.
    pub fn open(config: &S3Config, scratch: &Path) -> anyhow::Result<Self> {
        let env = |v: &Option<String>, name: &str| {
            v.clone()
                .or_else(|| std::env::var(name).ok())
                .ok_or_else(|| anyhow::anyhow!("[s3] needs {name} or its setting in the config"))
        };
        let mut builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(env(&config.access_key, "CLEANROOM_S3_ACCESS_KEY")?)
            .with_secret_access_key(env(&config.secret_key, "CLEANROOM_S3_SECRET_KEY")?);
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build()?;
        std::fs::create_dir_all(scratch)?;
        Ok(Self {
            small: Default::default(),
            store: Arc::new(store),
            prefix: config.prefix.trim_matches('/').to_string(),
            rt: background_runtime()?,
            scratch: scratch.to_path_buf(),
        })
    }

    fn location(&self, kind: &str, id: &str) -> ApiResult<object_store::path::Path> {
        let id = safe_id(id)?;
        Ok(if self.prefix.is_empty() {
            object_store::path::Path::from(format!("{kind}/{id}"))
        } else {
            object_store::path::Path::from(format!("{}/{kind}/{id}", self.prefix))
        })
    }

    /// Run `fut` on the store's runtime and wait for it.
    fn wait<T: Send + 'static>(
        &self,
        fut: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> object_store::Result<T> {
        wait_on(&self.rt, fut)
    }
}

fn wait_on<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .expect("the object storage runtime lives as long as the process")
}

/// A runtime for object storage requests, on a thread of its own that lives as long as the
/// process (a runtime may not be dropped from async code, and this one never needs to be).
fn background_runtime() -> anyhow::Result<tokio::runtime::Handle> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("object-storage".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("object-storage")
                .enable_all()
                .build();
            match rt {
                Ok(rt) => {
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    Ok(rx.recv()??)
}

impl Blobs for ObjectBlobs {
    fn put_file(&self, kind: &str, id: &str, tmp: &Path) -> ApiResult<()> {
        let location = self.location(kind, id)?;
        let len = std::fs::metadata(tmp)?.len();
        if len <= PART_BYTES as u64 {
            let bytes = std::fs::read(tmp)?;
            self.put(kind, id, &bytes)?;
        } else {
            let store = self.store.clone();
            let upload = self
                .wait(async move { store.put_multipart(&location).await })
                .map_err(store_error)?;
            let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut file = std::fs::File::open(tmp)?;
            let mut buf = vec![0u8; PART_BYTES];
            loop {
                let n = read_full(&mut file, &mut buf)?;
                if n == 0 {
                    break;
                }
                // At most a few parts in flight: wait for capacity, then hand over the part.
                let (w, res) = wait_on(&self.rt, async move {
                    let res = writer.wait_for_capacity(4).await;
                    (writer, res)
                });
                writer = w;
                res.map_err(store_error)?;
                // Handing over a part spawns its upload: on the store's runtime.
                let _runtime = self.rt.enter();
                writer.write(&buf[..n]);
            }
            wait_on(&self.rt, writer.finish()).map_err(store_error)?;
        }
        std::fs::remove_file(tmp)?;
        Ok(())
    }

    fn put(&self, kind: &str, id: &str, bytes: &[u8]) -> ApiResult<()> {
        let location = self.location(kind, id)?;
        let store = self.store.clone();
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        self.wait(async move { store.put(&location, payload).await })
            .map_err(store_error)?;
        Ok(())
    }

    fn get(&self, kind: &str, id: &str) -> ApiResult<Option<Vec<u8>>> {
        let location = self.location(kind, id)?;
        let store = self.store.clone();
        match self.wait(async move { store.get(&location).await?.bytes().await }) {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    fn open(&self, kind: &str, id: &str) -> ApiResult<Box<dyn BlobReader>> {
        let location = self.location(kind, id)?;
        let cacheable = kind == "datasets";
        if cacheable
            && let Some(object) = self
                .small
                .lock()
                .expect("cache lock")
                .objects
                .get(location.as_ref())
        {
            return Ok(Box::new(std::io::Cursor::new(object.clone())));
        }
        let store = self.store.clone();
        let at = location.clone();
        let meta = self
            .wait(async move { store.head(&at).await })
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    ApiError::NotFound(format!("no {kind} blob {id} in object storage"))
                }
                e => store_error(e),
            })?;
        if cacheable && meta.size <= RANGE_BYTES {
            let store = self.store.clone();
            let at = location.clone();
            let object = self
                .wait(async move { store.get_range(&at, 0..meta.size).await })
                .map_err(store_error)?;
            self.small
                .lock()
                .expect("cache lock")
                .insert(location.to_string(), object.clone());
            return Ok(Box::new(std::io::Cursor::new(object)));
        }
        Ok(Box::new(RangedReader {
            store: self.store.clone(),
            rt: self.rt.clone(),
            location,
            len: meta.size,
            pos: 0,
            buf: Bytes::new(),
            buf_start: 0,
            ahead: std::collections::VecDeque::new(),
        }))
    }

    fn delete(&self, kind: &str, id: &str) -> ApiResult<()> {
        let location = self.location(kind, id)?;
        let store = self.store.clone();
        match self.wait(async move { store.delete(&location).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    fn tmp_path(&self) -> PathBuf {
        self.scratch.join(random_name())
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

type Pending = std::sync::mpsc::Receiver<object_store::Result<Bytes>>;

/// An object read in ranges of [`RANGE_BYTES`], up to [`READ_AHEAD`] of the next ranges
/// fetched while the current one is consumed.
struct RangedReader {
    store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Handle,
    location: object_store::path::Path,
    len: u64,
    pos: u64,
    buf: Bytes,
    buf_start: u64,
    /// The ranges being fetched ahead, in order: each one's start and the answer to come.
    ahead: std::collections::VecDeque<(u64, Pending)>,
}

impl RangedReader {
    fn fetch(&self, start: u64) -> Pending {
        let end = (start + RANGE_BYTES).min(self.len);
        let (store, location) = (self.store.clone(), self.location.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(store.get_range(&location, start..end).await);
        });
        rx
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let start = self.pos;
        // A range fetched ahead, if the reader went where it was expected; else start over.
        while self.ahead.front().is_some_and(|(at, _)| *at < start) {
            self.ahead.pop_front();
        }
        let pending = match self.ahead.front() {
            Some((at, _)) if *at == start => self.ahead.pop_front().expect("front").1,
            _ => {
                self.ahead.clear();
                self.fetch(start)
            }
        };
        let bytes = pending
            .recv()
            .map_err(|_| std::io::Error::other("object storage runtime stopped"))?
            .map_err(std::io::Error::other)?;
        let expected = (start + RANGE_BYTES).min(self.len) - start;
        if bytes.len() as u64 != expected {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "object storage answered {} bytes for a range of {expected}",
                    bytes.len()
                ),
            ));
        }
        self.buf = bytes;
        self.buf_start = start;
        let mut next = self.ahead.back().map_or(start, |(at, _)| *at) + RANGE_BYTES;
        while self.ahead.len() < READ_AHEAD && next < self.len {
            self.ahead.push_back((next, self.fetch(next)));
            next += RANGE_BYTES;
        }
        Ok(())
    }
}

impl Read for RangedReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        let in_buf =
            self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
        if !in_buf {
            self.fill()?;
        }
        let offset = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - offset);
        out[..n].copy_from_slice(&self.buf[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangedReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}
