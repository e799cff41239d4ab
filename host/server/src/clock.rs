//! Time the operator cannot turn back: the later of the host clock and the newest `created`
//! time of a signed request the enclave accepted, kept sealed on disk.
//!
//! The host clock is the operator's. Signed requests carry their signers' clocks (each within
//! the freshness window of the host clock when accepted), so their high-water mark only moves
//! forward with the parties' time. Grant expiry is decided on [`TrustedClock::now`]: setting the
//! host clock back does not revive an expired grant. SEV-SNP has no monotonic counter: deleting
//! the sealed file (with the whole state) is a rollback the parties detect from the audit log's
//! signed heads, not one the enclave can prevent.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use cleanroom_trust::{Purpose, Sealer};

use crate::error::{ApiError, ApiResult};

/// Seconds since the UNIX epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How far the high-water mark may run ahead of its sealed copy: persisting every request's
/// time would cost an fsync each.
const PERSIST_EVERY_SECS: u64 = 60;
const AAD: &[u8] = b"cleanroom/clock/v1";

/// The enclave's notion of now.
#[derive(Debug)]
pub struct TrustedClock {
    high: AtomicU64,
    persisted: AtomicU64,
    path: PathBuf,
    /// One writer of the sealed file at a time.
    writing: std::sync::Mutex<()>,
}

impl TrustedClock {
    /// Load the sealed high-water mark from `path` (none yet: zero). A file that does not
    /// unseal stops start-up: it was tampered with.
    pub fn load(path: PathBuf, sealer: &Sealer) -> ApiResult<Self> {
        let high = match std::fs::read(&path) {
            Ok(blob) => {
                let plain = sealer.open(Purpose::State, AAD, &blob).map_err(|e| {
                    ApiError::Internal(format!(
                        "the sealed clock {} does not unseal (tampered?): {e}",
                        path.display()
                    ))
                })?;
                let bytes: [u8; 8] = plain
                    .try_into()
                    .map_err(|_| ApiError::Internal("the sealed clock is malformed".into()))?;
                u64::from_be_bytes(bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            high: AtomicU64::new(high),
            persisted: AtomicU64::new(high),
            path,
            writing: std::sync::Mutex::new(()),
        })
    }

    /// Now: the later of the host clock and the newest accepted signed time.
    pub fn now(&self) -> u64 {
        crate::now().max(self.high.load(Ordering::SeqCst))
    }

    /// A signed request created at `created` was accepted; persist the mark now and then.
    pub fn observe(&self, created: u64, sealer: &Sealer) -> ApiResult<()> {
        let previous = self.high.fetch_max(created, Ordering::SeqCst);
        let high = previous.max(created);
        if high >= self.persisted.load(Ordering::SeqCst) + PERSIST_EVERY_SECS {
            let _writing = self
                .writing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Another request may have persisted a later mark while this one waited.
            let high = self.high.load(Ordering::SeqCst);
            if high < self.persisted.load(Ordering::SeqCst) + PERSIST_EVERY_SECS {
                return Ok(());
            }
            self.persisted.store(high, Ordering::SeqCst);
            let blob = sealer
                .seal(Purpose::State, AAD, &high.to_be_bytes())
                .map_err(|e| ApiError::Internal(format!("sealing the clock: {e}")))?;
            crate::store::write_durably(&self.path, &blob)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_only_moves_forward_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::new(&[7u8; 32]);
        let path = dir.path().join("clock.sealed");
        let clock = TrustedClock::load(path.clone(), &sealer).unwrap();
        let future = crate::now() + 10 * 86_400;
        clock.observe(future, &sealer).unwrap();
        clock.observe(future - 100, &sealer).unwrap();
        assert_eq!(
            clock.now(),
            future,
            "a later host clock is not needed to move on"
        );
        let again = TrustedClock::load(path.clone(), &sealer).unwrap();
        assert_eq!(again.now(), future, "the mark is sealed on disk");
        // A modified file stops start-up; another enclave's key cannot read it.
        let mut blob = std::fs::read(&path).unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        std::fs::write(&path, blob).unwrap();
        assert!(TrustedClock::load(path.clone(), &sealer).is_err());
        assert!(TrustedClock::load(path, &Sealer::new(&[8u8; 32])).is_err());
    }
}
