//! The fixed parts of the byte layout: header and footer.

/// First 8 bytes of every envelope.
pub const MAGIC: [u8; 8] = *b"CLEANENV";

/// Last 8 bytes of every envelope.
pub const FOOTER_MAGIC: [u8; 8] = *b"CLEANEND";

/// The envelope format version this code writes.
pub const FORMAT_VERSION: u16 = 2;

/// The versions this code reads: 1 (SHA-256 chunk digests) and 2 (BLAKE3 chunk digests).
pub const READABLE_VERSIONS: [u16; 2] = [1, 2];

/// Header: magic (8) || version u16 BE || reserved u16 (zero).
pub const HEADER_LEN: u64 = 12;

/// Footer: manifest length u64 BE || footer magic (8).
pub const FOOTER_LEN: u64 = 16;

/// Upper bound on the manifest (about 1.8 million chunk entries).
pub const MAX_MANIFEST_LEN: u64 = 64 << 20;

pub(crate) fn header(version: u16) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&version.to_be_bytes());
    h
}

pub(crate) fn footer(manifest_len: u64) -> [u8; FOOTER_LEN as usize] {
    let mut f = [0u8; FOOTER_LEN as usize];
    f[..8].copy_from_slice(&manifest_len.to_be_bytes());
    f[8..].copy_from_slice(&FOOTER_MAGIC);
    f
}
