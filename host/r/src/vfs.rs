//! The file system R sees: an in-memory tree holding R's library (read-only) and small writable
//! scratch directories (`/tmp`, the home and working directory), bounded in total size. There
//! is nothing else: no host paths, no devices.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Emscripten's errno values (musl, wasm32).
pub(super) mod errno {
    pub(crate) const EACCES: i32 = 2;
    pub(crate) const EBADF: i32 = 8;
    pub(crate) const EEXIST: i32 = 20;
    pub(crate) const EINVAL: i32 = 28;
    pub(crate) const EISDIR: i32 = 31;
    pub(crate) const ENOENT: i32 = 44;
    pub(crate) const ENOSPC: i32 = 51;
    pub(crate) const ENOSYS: i32 = 52;
    pub(crate) const ENOTDIR: i32 = 54;
    pub(crate) const ENOTEMPTY: i32 = 55;
    pub(crate) const ENOTTY: i32 = 59;
    pub(crate) const EPERM: i32 = 63;
    pub(crate) const EROFS: i32 = 69;
}
use errno::*;

pub(super) type Ino = usize;

pub(super) enum Node {
    File {
        data: Arc<Vec<u8>>,
        writable: bool,
    },
    Dir {
        entries: BTreeMap<String, Ino>,
        writable: bool,
    },
}

pub(super) struct Vfs {
    nodes: Vec<Node>,
    /// Bytes in writable files, and the most there may be.
    written: usize,
    max_written: usize,
    pub(super) cwd: String,
}

pub(super) struct Stat {
    pub(super) dir: bool,
    pub(super) size: u64,
    pub(super) writable: bool,
}

impl Vfs {
    pub(super) fn new(max_written: usize) -> Self {
        Self {
            nodes: vec![Node::Dir {
                entries: BTreeMap::new(),
                writable: false,
            }],
            written: 0,
            max_written,
            cwd: "/".into(),
        }
    }

    /// `path` made absolute against the working directory, with `.`, `..` and repeated
    /// slashes resolved.
    pub(super) fn normalise(&self, path: &str) -> Vec<String> {
        let full = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", self.cwd)
        };
        let mut parts: Vec<String> = Vec::new();
        for p in full.split('/') {
            match p {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p.to_string()),
            }
        }
        parts
    }

    pub(super) fn lookup(&self, path: &str) -> Result<Ino, i32> {
        let mut ino = 0;
        for part in self.normalise(path) {
            match &self.nodes[ino] {
                Node::Dir { entries, .. } => ino = *entries.get(&part).ok_or(ENOENT)?,
                Node::File { .. } => return Err(ENOTDIR),
            }
        }
        Ok(ino)
    }

    /// The directory holding `path` and the last component's name.
    fn parent(&self, path: &str) -> Result<(Ino, String), i32> {
        let mut parts = self.normalise(path);
        let name = parts.pop().ok_or(EEXIST)?;
        let dir = self.lookup(&format!("/{}", parts.join("/")))?;
        match self.nodes[dir] {
            Node::Dir { .. } => Ok((dir, name)),
            Node::File { .. } => Err(ENOTDIR),
        }
    }

    fn add(&mut self, dir: Ino, name: String, node: Node) -> Ino {
        let ino = self.nodes.len();
        self.nodes.push(node);
        if let Node::Dir { entries, .. } = &mut self.nodes[dir] {
            entries.insert(name, ino);
        }
        ino
    }

    /// Create every directory on `path` (setting up the tree, not for the guest).
    pub(super) fn mkdir_all(&mut self, path: &str, writable: bool) -> Ino {
        let mut ino = 0;
        for part in self.normalise(path) {
            let next = match &self.nodes[ino] {
                Node::Dir { entries, .. } => entries.get(&part).copied(),
                Node::File { .. } => panic!("{path}: a file is in the way"),
            };
            ino = match next {
                Some(i) => i,
                None => self.add(
                    ino,
                    part,
                    Node::Dir {
                        entries: BTreeMap::new(),
                        writable,
                    },
                ),
            };
        }
        ino
    }

    /// Add a read-only file (setting up the tree).
    pub(super) fn add_file(&mut self, path: &str, data: Arc<Vec<u8>>) {
        let mut parts = self.normalise(path);
        let name = parts.pop().expect("a file name");
        let dir = self.mkdir_all(&format!("/{}", parts.join("/")), false);
        self.add(
            dir,
            name,
            Node::File {
                data,
                writable: false,
            },
        );
    }

    pub(super) fn stat(&self, ino: Ino) -> Stat {
        match &self.nodes[ino] {
            Node::File { data, writable } => Stat {
                dir: false,
                size: data.len() as u64,
                writable: *writable,
            },
            Node::Dir { writable, .. } => Stat {
                dir: true,
                size: 4096,
                writable: *writable,
            },
        }
    }

    pub(super) fn node(&self, ino: Ino) -> &Node {
        &self.nodes[ino]
    }

    /// Open (and with `create`, make) a file for writing in a writable directory.
    pub(super) fn create(&mut self, path: &str, exclusive: bool) -> Result<Ino, i32> {
        match self.lookup(path) {
            Ok(_) if exclusive => Err(EEXIST),
            Ok(ino) => Ok(ino),
            Err(ENOENT) => {
                let (dir, name) = self.parent(path)?;
                match self.nodes[dir] {
                    Node::Dir { writable: true, .. } => Ok(self.add(
                        dir,
                        name,
                        Node::File {
                            data: Arc::new(Vec::new()),
                            writable: true,
                        },
                    )),
                    _ => Err(EROFS),
                }
            }
            Err(e) => Err(e),
        }
    }

    pub(super) fn mkdir(&mut self, path: &str) -> Result<(), i32> {
        if self.lookup(path).is_ok() {
            return Err(EEXIST);
        }
        let (dir, name) = self.parent(path)?;
        match self.nodes[dir] {
            Node::Dir { writable: true, .. } => {
                self.add(
                    dir,
                    name,
                    Node::Dir {
                        entries: BTreeMap::new(),
                        writable: true,
                    },
                );
                Ok(())
            }
            _ => Err(EROFS),
        }
    }

    pub(super) fn unlink(&mut self, path: &str, dir_expected: bool) -> Result<(), i32> {
        let (parent, name) = self.parent(path)?;
        let ino = self.lookup(path)?;
        match (&self.nodes[ino], dir_expected) {
            (Node::Dir { entries, .. }, true) if !entries.is_empty() => return Err(ENOTEMPTY),
            (Node::Dir { .. }, false) => return Err(EISDIR),
            (Node::File { .. }, true) => return Err(ENOTDIR),
            _ => {}
        }
        match &mut self.nodes[parent] {
            Node::Dir {
                entries,
                writable: true,
            } => {
                entries.remove(&name);
            }
            _ => return Err(EROFS),
        }
        if let Node::File { data, .. } = &self.nodes[ino] {
            self.written = self.written.saturating_sub(data.len());
        }
        Ok(())
    }

    pub(super) fn entries(&self, ino: Ino) -> Result<Vec<(String, Ino)>, i32> {
        match &self.nodes[ino] {
            Node::Dir { entries, .. } => Ok(entries.iter().map(|(k, v)| (k.clone(), *v)).collect()),
            Node::File { .. } => Err(ENOTDIR),
        }
    }

    pub(super) fn read(&self, ino: Ino, pos: u64, buf: &mut [u8]) -> Result<usize, i32> {
        match &self.nodes[ino] {
            Node::File { data, .. } => {
                let start = (pos as usize).min(data.len());
                let n = buf.len().min(data.len() - start);
                buf[..n].copy_from_slice(&data[start..start + n]);
                Ok(n)
            }
            Node::Dir { .. } => Err(EISDIR),
        }
    }

    pub(super) fn write(&mut self, ino: Ino, pos: u64, bytes: &[u8]) -> Result<usize, i32> {
        let (written, max) = (self.written, self.max_written);
        match &mut self.nodes[ino] {
            Node::File {
                data,
                writable: true,
            } => {
                let end = pos as usize + bytes.len();
                let grow = end.saturating_sub(data.len());
                if written + grow > max {
                    return Err(ENOSPC);
                }
                let data = Arc::make_mut(data);
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[pos as usize..end].copy_from_slice(bytes);
                self.written += grow;
                Ok(bytes.len())
            }
            Node::File { .. } => Err(EACCES),
            Node::Dir { .. } => Err(EISDIR),
        }
    }

    pub(super) fn truncate(&mut self, ino: Ino, len: u64) -> Result<(), i32> {
        match &mut self.nodes[ino] {
            Node::File {
                data,
                writable: true,
            } => {
                let old = data.len();
                let len = len as usize;
                if len > old && self.written + (len - old) > self.max_written {
                    return Err(ENOSPC);
                }
                Arc::make_mut(data).resize(len, 0);
                self.written = self.written + len.saturating_sub(old) - old.saturating_sub(len);
                Ok(())
            }
            _ => Err(EPERM),
        }
    }
}
