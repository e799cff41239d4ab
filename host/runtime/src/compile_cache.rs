//! Cranelift's incremental compilation cache, kept in files: compiled functions by the digest
//! of their Cranelift IR. Python components are all CPython plus a little user code, so after
//! the first build a new analysis compiles only the functions that differ.
//!
//! Only for a disk the user owns (the CLI's `run-local` and `pipeline run-local`): what is read
//! back is native code. The enclave never enables it; it seals whole compiled artefacts instead.

use std::borrow::Cow;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};
use wasmtime::CacheStore;

/// A directory of compiled functions, one file per cache key.
#[derive(Debug)]
pub(crate) struct FileCacheStore {
    dir: PathBuf,
}

impl FileCacheStore {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        // Keys are Cranelift's own (a hash and some framing); a fixed-length name keeps
        // them filesystem-safe whatever they contain.
        let name = hex::encode(Sha256::digest(key));
        self.dir.join(&name[..2]).join(&name[2..])
    }
}

/// Each file is SHA-256(key || value) || value: an entry damaged on disk (or written for
/// another key) is a miss and the function is compiled again, never deserialised into code.
fn checksum(key: &[u8], value: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(value);
    h.finalize().into()
}

impl CacheStore for FileCacheStore {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let mut bytes = std::fs::read(self.path(key)).ok()?;
        if bytes.len() < 32 {
            return None;
        }
        let value = bytes.split_off(32);
        (bytes == checksum(key, &value)).then_some(Cow::Owned(value))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let path = self.path(key);
        let Some(parent) = path.parent() else {
            return false;
        };
        if std::fs::create_dir_all(parent).is_err() {
            return false;
        }
        let mut file = checksum(key, &value).to_vec();
        file.extend_from_slice(&value);
        // Written whole under a name no other writer uses (Cranelift compiles functions in
        // parallel, and identical functions share a key), then renamed: a reader sees the old
        // entry or the new one.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tmp = path.clone().into_os_string();
        tmp.push(format!(".{}-{n}.tmp", std::process::id()));
        std::fs::write(&tmp, file).is_ok() && std::fs::rename(&tmp, &path).is_ok()
    }
}
