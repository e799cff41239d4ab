//! `wasi_snapshot_preview1`: files of the in-memory tree, the run's log as stdout and stderr,
//! an empty environment, the host's clock and randomness, exit.

use super::*;

/// File descriptors: the in-memory tree, and stdout and stderr as the run's log.
pub(super) fn files(s: &mut StoreContextMut<'_, Host>, module: &str, name: &str) -> Option<Func> {
    Some(match (module, name) {
        ("wasi_snapshot_preview1", "fd_write") => Func::wrap(
            s,
            |mut c: Cx, fd: i32, iov: i32, n: i32, out: i32| -> Result<i32> {
                let (mem, h) = mem_of(&mut c);
                let mut total = 0u32;
                for i in 0..(n as u32).min(IOV_MAX) {
                    let (p, len) = iovec(mem, iov as u32, i);
                    let Some(bytes) = span(mem, p, len as usize).map(|b| b.to_vec()) else {
                        return Ok(EFAULT);
                    };
                    match fd {
                        1 | 2 => {
                            let source = if fd == 1 {
                                LogSource::Stdout
                            } else {
                                LogSource::Stderr
                            };
                            if fd == 2 {
                                h.stderr_tail.extend_from_slice(&bytes);
                                let excess = h.stderr_tail.len().saturating_sub(STDERR_TAIL);
                                h.stderr_tail.drain(..excess);
                            }
                            h.log.stdio(source, &bytes).map_err(wasmtime::Error::new)?;
                        }
                        _ => {
                            let Some(o) = h.fds.get_mut(&fd) else {
                                return Ok(EBADF);
                            };
                            match h.vfs.write(o.ino, o.pos, &bytes) {
                                Ok(k) => o.pos += k as u64,
                                Err(e) => return Ok(e),
                            }
                        }
                    }
                    total += len;
                }
                put_u32(mem, out as u32, total);
                Ok(0)
            },
        ),
        ("wasi_snapshot_preview1", "fd_read") => {
            Func::wrap(s, |mut c: Cx, fd: i32, iov: i32, n: i32, out: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                let Some(o) = h.fds.get_mut(&fd) else {
                    if fd == 0 {
                        put_u32(mem, out as u32, 0);
                        return 0;
                    }
                    return EBADF;
                };
                let mut total = 0u32;
                for i in 0..(n as u32).min(IOV_MAX) {
                    let (p, len) = iovec(mem, iov as u32, i);
                    let Some(dst) = span(mem, p, len as usize) else {
                        return EFAULT;
                    };
                    match h.vfs.read(o.ino, o.pos, dst) {
                        Ok(k) => {
                            o.pos += k as u64;
                            total += k as u32;
                            if (k as u32) < len {
                                break;
                            }
                        }
                        Err(e) => return e,
                    }
                }
                put_u32(mem, out as u32, total);
                0
            })
        }
        ("wasi_snapshot_preview1", "fd_pread") => Func::wrap(
            s,
            |mut c: Cx, fd: i32, iov: i32, n: i32, off: i64, out: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                let Some(o) = h.fds.get(&fd) else {
                    return EBADF;
                };
                let mut pos = off as u64;
                let mut total = 0u32;
                for i in 0..(n as u32).min(IOV_MAX) {
                    let (p, len) = iovec(mem, iov as u32, i);
                    let Some(dst) = span(mem, p, len as usize) else {
                        return EFAULT;
                    };
                    match h.vfs.read(o.ino, pos, dst) {
                        Ok(k) => {
                            pos += k as u64;
                            total += k as u32;
                        }
                        Err(e) => return e,
                    }
                }
                put_u32(mem, out as u32, total);
                0
            },
        ),
        ("wasi_snapshot_preview1", "fd_seek") => Func::wrap(
            s,
            |mut c: Cx, fd: i32, off: i64, whence: i32, out: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                let Some(o) = h.fds.get_mut(&fd) else {
                    return EBADF;
                };
                let size = h.vfs.stat(o.ino).size as i64;
                let base = match whence {
                    0 => 0,
                    1 => o.pos as i64,
                    2 => size,
                    _ => return EINVAL,
                };
                let pos = base + off;
                if pos < 0 {
                    return EINVAL;
                }
                o.pos = pos as u64;
                put_u64(mem, out as u32, pos as u64);
                0
            },
        ),
        ("wasi_snapshot_preview1", "fd_close") => Func::wrap(s, |mut c: Cx, fd: i32| -> i32 {
            if c.data_mut().fds.remove(&fd).is_some() || (0..3).contains(&fd) {
                0
            } else {
                EBADF
            }
        }),
        ("wasi_snapshot_preview1", "fd_fdstat_get") => {
            Func::wrap(s, |mut c: Cx, fd: i32, buf: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                let kind: u8 = if (0..3).contains(&fd) {
                    2 // character device
                } else if let Some(o) = h.fds.get(&fd) {
                    if h.vfs.stat(o.ino).dir { 3 } else { 4 }
                } else {
                    return EBADF;
                };
                let mut stat = [0u8; 24];
                stat[0] = kind;
                put_bytes(mem, buf as u32, &stat);
                0
            })
        }
        ("wasi_snapshot_preview1", "fd_sync") => Func::wrap(s, |_c: Cx, _fd: i32| -> i32 { 0 }),
        _ => return None,
    })
}

/// The process: an empty environment, the host's clock and randomness, exit.
pub(super) fn process(s: &mut StoreContextMut<'_, Host>, module: &str, name: &str) -> Option<Func> {
    Some(match (module, name) {
        ("wasi_snapshot_preview1", "environ_sizes_get") => {
            Func::wrap(s, |mut c: Cx, count: i32, size: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                let n = h.env.len() as u32;
                let bytes: usize = h.env.iter().map(|e| e.len() + 1).sum();
                put_u32(mem, count as u32, n);
                put_u32(mem, size as u32, bytes as u32);
                0
            })
        }
        ("wasi_snapshot_preview1", "environ_get") => {
            Func::wrap(s, |mut c: Cx, ptrs: i32, buf: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                let mut at = buf as u32;
                for (i, e) in h.env.iter().enumerate() {
                    put_u32(mem, ptrs as u32 + 4 * i as u32, at);
                    put_bytes(mem, at, e.as_bytes());
                    put_bytes(mem, at + e.len() as u32, &[0]);
                    at += e.len() as u32 + 1;
                }
                0
            })
        }
        ("wasi_snapshot_preview1", "clock_time_get") => {
            Func::wrap(s, |mut c: Cx, id: i32, _prec: i64, out: i32| -> i32 {
                let (mem, _) = mem_of(&mut c);
                let ns = match id {
                    0 => std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_nanos() as u64,
                    _ => monotonic_ns(),
                };
                put_u64(mem, out as u32, ns);
                0
            })
        }
        ("wasi_snapshot_preview1", "clock_res_get") => {
            Func::wrap(s, |mut c: Cx, _id: i32, out: i32| -> i32 {
                let (mem, _) = mem_of(&mut c);
                put_u64(mem, out as u32, 1000);
                0
            })
        }
        ("wasi_snapshot_preview1", "random_get") => {
            Func::wrap(s, |mut c: Cx, buf: i32, len: i32| -> i32 {
                let (mem, _) = mem_of(&mut c);
                let mut state = monotonic_ns() | 1;
                let Some(dst) = span(mem, buf as u32, len as usize) else {
                    return EFAULT;
                };
                for b in dst {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *b = state as u8;
                }
                0
            })
        }
        ("wasi_snapshot_preview1", "proc_exit") | ("env", "exit") => {
            Func::wrap(s, |_c: Cx, code: i32| -> Result<()> {
                Err(anyhow!("R exited with status {code}"))
            })
        }
        _ => return None,
    })
}
