//! Guest memory, read and written only through checked helpers, and the constants of the ABI.

use super::*;

pub(super) type Cx<'a> = Caller<'a, Host>;

pub(super) fn mem_of<'a>(c: &'a mut Cx<'_>) -> (&'a mut [u8], &'a mut Host) {
    let m = c.data().mem.expect("memory");
    m.data_and_store_mut(c)
}

// Guest memory is read and written only through these checked helpers: a pointer R passes that
// lies outside its memory reads as nothing and writes nowhere (the call answers EFAULT where it
// can), and never panics the host.

/// The guest bytes `[p, p + len)`, if they are inside memory.
pub(super) fn span(mem: &mut [u8], p: u32, len: usize) -> Option<&mut [u8]> {
    let start = p as usize;
    mem.get_mut(start..start.checked_add(len)?)
}

/// Write `bytes` at `p`; false if that is outside memory.
pub(super) fn put_bytes(mem: &mut [u8], p: u32, bytes: &[u8]) -> bool {
    span(mem, p, bytes.len())
        .map(|d| d.copy_from_slice(bytes))
        .is_some()
}

pub(super) fn cstr(mem: &[u8], ptr: u32) -> String {
    let rest = mem.get(ptr as usize..).unwrap_or_default();
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

pub(super) fn put_u32(mem: &mut [u8], at: u32, v: u32) {
    put_bytes(mem, at, &v.to_le_bytes());
}
pub(super) fn put_u64(mem: &mut [u8], at: u32, v: u64) {
    put_bytes(mem, at, &v.to_le_bytes());
}
pub(super) fn get_u32(mem: &[u8], at: u32) -> u32 {
    mem.get(at as usize..(at as usize).saturating_add(4))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Emscripten's EFAULT.
pub(super) const EFAULT: i32 = 21;
/// The most buffers one `readv`/`writev` takes (POSIX's IOV_MAX).
pub(super) const IOV_MAX: u32 = 1024;

/// Buffer `i` of an iovec array at `iov`: its address and length.
pub(super) fn iovec(mem: &[u8], iov: u32, i: u32) -> (u32, u32) {
    let at = iov.wrapping_add(8 * i);
    (get_u32(mem, at), get_u32(mem, at.wrapping_add(4)))
}

pub(super) const AT_FDCWD: i32 = -100;
/// How much of R's stderr is kept for the error of a failed run.
pub(super) const STDERR_TAIL: usize = 4096;
/// webR 0.6.0's EM_ASM hooks in R.wasm, by address (`ASM_CONSTS` in its R.js).
pub(super) const WEBR_SET_PROMPT: i32 = 12617548;
pub(super) const WEBR_READ_CONSOLE: i32 = 12617599;
pub(super) const WEBR_HANDLE_EVENTS: i32 = 12617643;
pub(super) const BLAS: [&str; 14] = [
    "zgemm_", "dsyrk_", "dgemv_", "dgemm_", "dtrsm_", "ddot_", "daxpy_", "dasum_", "dscal_",
    "dswap_", "dnrm2_", "dcopy_", "drotg_", "drot_",
];

/// A syscall's answer: its value, or `-errno`.
pub(super) fn sys(f: impl FnOnce() -> Result<i32, i32>) -> i32 {
    f().unwrap_or_else(|e| -e)
}

/// `stat` of the path a `*at` syscall names, into `buf`.
pub(super) fn stat_at(
    h: &Host,
    mem: &mut [u8],
    dirfd: i32,
    path: u32,
    buf: u32,
) -> Result<i32, i32> {
    let ino = h.vfs.lookup(&at_path(mem, dirfd, path)?)?;
    write_stat(h, mem, buf, ino);
    Ok(0)
}

/// The path a `*at` syscall names.
pub(super) fn at_path(mem: &[u8], dirfd: i32, ptr: u32) -> Result<String, i32> {
    let p = cstr(mem, ptr);
    if p.starts_with('/') || dirfd == AT_FDCWD {
        return Ok(p);
    }
    Err(EBADF)
}

pub(super) fn write_stat(h: &Host, mem: &mut [u8], buf: u32, ino: Ino) {
    let s = h.vfs.stat(ino);
    let mode: u32 = if s.dir {
        0o040000 | 0o755
    } else {
        0o100000 | if s.writable { 0o644 } else { 0o444 }
    };
    put_bytes(mem, buf, &[0; 96]);
    put_u32(mem, buf + 4, mode);
    put_u32(mem, buf + 8, 1);
    put_u64(mem, buf + 24, s.size);
    put_u32(mem, buf + 32, 4096);
    put_u32(mem, buf + 36, s.size.div_ceil(512) as u32);
    put_u64(mem, buf + 88, ino as u64);
}
