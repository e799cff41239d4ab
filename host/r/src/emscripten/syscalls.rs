//! Emscripten's `__syscall_*` imports over the in-memory file tree ([`crate::vfs`]): what
//! R's start-up and `library()` need; the rest answer `ENOSYS` (see [`super::refused`]).

use super::*;

/// Files: open, stat, access, links, size.
pub(super) fn files(s: &mut StoreContextMut<'_, Host>, module: &str, name: &str) -> Option<Func> {
    Some(match (module, name) {
        ("env", "__syscall_openat") => Func::wrap(
            s,
            |mut c: Cx, dirfd: i32, path: i32, flags: i32, _mode: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                let p = match at_path(mem, dirfd, path as u32) {
                    Ok(p) => p,
                    Err(e) => return -e,
                };
                let create = flags & 0o100 != 0;
                let write = flags & 3 != 0;
                let ino = if create || write {
                    match h.vfs.create(&p, create && flags & 0o200 != 0) {
                        Ok(i) => i,
                        Err(e) => return -e,
                    }
                } else {
                    match h.vfs.lookup(&p) {
                        Ok(i) => i,
                        Err(e) => return -e,
                    }
                };
                if flags & 0o1000 != 0
                    && let Err(e) = h.vfs.truncate(ino, 0)
                {
                    return -e;
                }
                let fd = (3..).find(|f| !h.fds.contains_key(f)).unwrap_or(3);
                let pos = if flags & 0o2000 != 0 {
                    h.vfs.stat(ino).size
                } else {
                    0
                };
                h.fds.insert(
                    fd,
                    Open {
                        ino,
                        pos,
                        listing: None,
                    },
                );
                fd
            },
        ),
        ("env", "__syscall_stat64") | ("env", "__syscall_lstat64") => {
            Func::wrap(s, |mut c: Cx, path: i32, buf: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                sys(|| stat_at(h, mem, AT_FDCWD, path as u32, buf as u32))
            })
        }
        ("env", "__syscall_newfstatat") => Func::wrap(
            s,
            |mut c: Cx, dirfd: i32, path: i32, buf: i32, _flags: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                sys(|| stat_at(h, mem, dirfd, path as u32, buf as u32))
            },
        ),
        ("env", "__syscall_fstat64") => Func::wrap(s, |mut c: Cx, fd: i32, buf: i32| -> i32 {
            let (mem, h) = mem_of(&mut c);
            if (0..3).contains(&fd) {
                put_bytes(mem, buf as u32, &[0; 96]);
                put_u32(mem, buf as u32 + 4, 0o020000 | 0o620);
                return 0;
            }
            match h.fds.get(&fd) {
                Some(o) => {
                    let ino = o.ino;
                    write_stat(h, mem, buf as u32, ino);
                    0
                }
                None => -EBADF,
            }
        }),
        ("env", "__syscall_faccessat") => Func::wrap(
            s,
            |mut c: Cx, dirfd: i32, path: i32, amode: i32, _flags: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                sys(|| {
                    let ino = h.vfs.lookup(&at_path(mem, dirfd, path as u32)?)?;
                    if amode & 2 != 0 && !h.vfs.stat(ino).writable {
                        return Err(EACCES);
                    }
                    Ok(0)
                })
            },
        ),
        ("env", "__syscall_readlinkat") => Func::wrap(
            s,
            |mut c: Cx, dirfd: i32, path: i32, _buf: i32, _len: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                // Nothing here is a symbolic link.
                sys(|| {
                    h.vfs
                        .lookup(&at_path(mem, dirfd, path as u32)?)
                        .and(Err(EINVAL))
                })
            },
        ),
        ("env", "__syscall_fcntl64") => {
            Func::wrap(s, |c: Cx, fd: i32, _cmd: i32, _arg: i32| -> i32 {
                if (0..3).contains(&fd) || c.data().fds.contains_key(&fd) {
                    0
                } else {
                    -EBADF
                }
            })
        }
        ("env", "__syscall_ioctl") => {
            Func::wrap(s, |_c: Cx, _fd: i32, _op: i32, _arg: i32| -> i32 {
                -ENOTTY
            })
        }
        ("env", "__syscall_ftruncate64") => Func::wrap(s, |mut c: Cx, fd: i32, len: i64| -> i32 {
            let h = c.data_mut();
            let Some(o) = h.fds.get(&fd) else {
                return -EBADF;
            };
            let ino = o.ino;
            match h.vfs.truncate(ino, len as u64) {
                Ok(()) => 0,
                Err(e) => -e,
            }
        }),
        ("env", "__syscall_umask") => Func::wrap(s, |_c: Cx, _m: i32| -> i32 { 0o022 }),
        _ => return None,
    })
}

/// Directories: the working directory, creating, removing and listing.
pub(super) fn dirs(s: &mut StoreContextMut<'_, Host>, module: &str, name: &str) -> Option<Func> {
    Some(match (module, name) {
        ("env", "__syscall_getcwd") => Func::wrap(s, |mut c: Cx, buf: i32, size: i32| -> i32 {
            let (mem, h) = mem_of(&mut c);
            let cwd = h.vfs.cwd.clone();
            if cwd.len() + 1 > size as usize {
                return -68; // ERANGE
            }
            if !put_bytes(mem, buf as u32, format!("{cwd}\0").as_bytes()) {
                return -EFAULT;
            }
            cwd.len() as i32 + 1
        }),
        ("env", "__syscall_chdir") => Func::wrap(s, |mut c: Cx, path: i32| -> i32 {
            let (mem, h) = mem_of(&mut c);
            let p = cstr(mem, path as u32);
            match h.vfs.lookup(&p) {
                Ok(ino) if h.vfs.stat(ino).dir => {
                    h.vfs.cwd = format!("/{}", h.vfs.normalise(&p).join("/"));
                    0
                }
                Ok(_) => -ENOTDIR,
                Err(e) => -e,
            }
        }),
        ("env", "__syscall_mkdirat") => {
            Func::wrap(s, |mut c: Cx, dirfd: i32, path: i32, _mode: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                sys(|| h.vfs.mkdir(&at_path(mem, dirfd, path as u32)?).map(|()| 0))
            })
        }
        ("env", "__syscall_unlinkat") => {
            Func::wrap(s, |mut c: Cx, dirfd: i32, path: i32, flags: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                let dir = flags & 0x200 != 0; // AT_REMOVEDIR
                sys(|| {
                    h.vfs
                        .unlink(&at_path(mem, dirfd, path as u32)?, dir)
                        .map(|()| 0)
                })
            })
        }
        ("env", "__syscall_rmdir") => Func::wrap(s, |mut c: Cx, path: i32| -> i32 {
            let (mem, h) = mem_of(&mut c);
            sys(|| h.vfs.unlink(&cstr(mem, path as u32), true).map(|()| 0))
        }),
        ("env", "__syscall_getdents64") => {
            Func::wrap(s, |mut c: Cx, fd: i32, dirp: i32, count: i32| -> i32 {
                let (mem, h) = mem_of(&mut c);
                let Some(o) = h.fds.get_mut(&fd) else {
                    return -EBADF;
                };
                if o.listing.is_none() {
                    let Ok(entries) = h.vfs.entries(o.ino) else {
                        return -ENOTDIR;
                    };
                    let mut list = vec![
                        (".".to_string(), o.ino, true),
                        ("..".to_string(), o.ino, true),
                    ];
                    list.extend(entries.into_iter().map(|(n, i)| {
                        let dir = h.vfs.stat(i).dir;
                        (n, i, dir)
                    }));
                    o.listing = Some(list);
                }
                let list = o.listing.as_ref().expect("listing");
                const SIZE: u32 = 280;
                let mut pos = 0u32;
                let mut idx = o.pos as usize;
                while idx < list.len() && pos + SIZE <= count as u32 {
                    let (name, ino, dir) = &list[idx];
                    // struct dirent: d_ino, d_off, d_reclen, d_type, d_name[256].
                    let mut entry = [0u8; SIZE as usize];
                    entry[..8].copy_from_slice(&(*ino as u64 + 1).to_le_bytes());
                    entry[8..16].copy_from_slice(&((idx as u64 + 1) * SIZE as u64).to_le_bytes());
                    entry[16..18].copy_from_slice(&(SIZE as u16).to_le_bytes());
                    entry[18] = if *dir { 4 } else { 8 };
                    let n = name.len().min(255);
                    entry[19..19 + n].copy_from_slice(&name.as_bytes()[..n]);
                    if !put_bytes(mem, dirp as u32 + pos, &entry) {
                        return -EFAULT;
                    }
                    pos += SIZE;
                    idx += 1;
                }
                o.pos = idx as u64;
                pos as i32
            })
        }
        _ => return None,
    })
}
