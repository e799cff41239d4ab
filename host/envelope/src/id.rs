//! Dataset identifiers.

use std::fmt;
use std::str::FromStr;

use rand_core::{OsRng, RngCore as _};

use crate::error::{Error, Result};

/// A dataset's identity: 16 random bytes chosen by the owner at sealing time, shown as hex.
///
/// It is bound into every chunk's AAD, into the HPKE `info` of the wrapped data key and into
/// the signed manifest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetId(pub [u8; 16]);

impl DatasetId {
    /// A fresh random id from the operating system's generator.
    pub fn random() -> Result<Self> {
        let mut id = [0u8; 16];
        OsRng
            .try_fill_bytes(&mut id)
            .map_err(|e| Error::Random(e.to_string()))?;
        Ok(Self(id))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatasetId({self})")
    }
}

impl FromStr for DatasetId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id)
            .map_err(|e| Error::malformed("dataset id (expected 32 hex digits)", e))?;
        Ok(Self(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_id_hex_round_trip() {
        let id = DatasetId::random().unwrap();
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(id.to_string().parse::<DatasetId>().unwrap(), id);
        assert!("00".parse::<DatasetId>().is_err());
        assert!("zz".repeat(16).parse::<DatasetId>().is_err());
        assert_ne!(DatasetId::random().unwrap(), id);
    }
}
