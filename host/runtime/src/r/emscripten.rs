//! GNU R (webR's Emscripten build) in wasmtime: the Emscripten ABI R.wasm imports, implemented
//! in Rust, and Emscripten's dynamic linker for its side modules (BLAS, LAPACK, the base
//! packages' shared objects).
//!
//! Emscripten's own runtime is JavaScript; this is the part of it R needs, with every
//! capability withheld: the file system is an in-memory tree holding R's library and small
//! scratch directories ([`super::vfs`]), stdout and stderr go to the run's bounded log,
//! sockets, fetch, processes, pipes and JavaScript are refused, the clock is the host's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use wasmtime::error::Context;
use wasmtime::{
    AsContext, AsContextMut, Caller, Config, Engine, Extern, ExternType, Func, FuncType, Global,
    GlobalType, Instance, Memory, Module, Mutability, Ref, Store, Table, Val, ValType,
};
use wasmtime::{Result, bail, format_err as anyhow};

use sha2::Digest as _;

use super::vfs::{Ino, Node, Vfs, errno::*};
use crate::log::LogSource;

/// The R engine: compiled once, started per run.
pub(super) struct REngine {
    engine: Engine,
    main: Module,
    parts: Arc<EngineParts>,
}

/// A started R.
pub(super) struct R {
    store: Store<Host>,
    exports: HashMap<String, Extern>,
}

struct Open {
    ino: Ino,
    pos: u64,
    /// A directory's entries as `getdents` walks them.
    listing: Option<Vec<(String, Ino, bool)>>,
}

pub(super) struct Host {
    engine: Arc<EngineParts>,
    vfs: Vfs,
    fds: HashMap<i32, Open>,
    /// The run's log (R's stdout and stderr).
    log: crate::log::LogBuffer,
    /// The end of R's stderr, for the error of a failed run.
    stderr_tail: Vec<u8>,
    limiter: wasmtime::StoreLimits,
    env: Vec<String>,
    mem: Option<Memory>,
    table: Option<Table>,
    stack_pointer: Option<Global>,
    got: HashMap<String, Global>,
    resolved: HashSet<String>,
    /// The global symbol table (every library is loaded RTLD_GLOBAL, as R does).
    symbols: HashMap<String, Extern>,
    /// Each library's own exports, by path (what `dlsym` on its handle sees).
    lib_exports: HashMap<String, HashMap<String, Extern>>,
    /// Table slots given to functions so far, by symbol.
    slots: HashMap<String, u32>,
    main_malloc: Option<Func>,
}

struct EngineParts {
    libs: HashMap<String, Arc<Vec<u8>>>,
    /// Side modules compiled so far, by the SHA-256 of their bytes.
    compiled: Mutex<HashMap<[u8; 32], Module>>,
}

fn engine_config() -> Config {
    let mut c = Config::new();
    c.wasm_exceptions(true)
        .wasm_reference_types(true)
        .epoch_interruption(true)
        .parallel_compilation(true);
    c
}

impl REngine {
    /// Compile R.wasm (its side modules are compiled when first loaded).
    pub(super) fn new(main: &[u8], blas: &[u8], lapack: &[u8]) -> Result<Self> {
        let engine = Engine::new(&engine_config())?;
        let main = Module::new(&engine, main)?;
        let mut libs = HashMap::new();
        libs.insert("libRblas.so".to_string(), Arc::new(blas.to_vec()));
        libs.insert("libRlapack.so".to_string(), Arc::new(lapack.to_vec()));
        Ok(REngine {
            engine,
            main,
            parts: Arc::new(EngineParts {
                libs,
                compiled: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Boot R in a fresh store: `deadline` is asked at every epoch tick whether the run may go
    /// on.
    pub(super) fn start(
        &self,
        log: crate::log::LogBuffer,
        max_memory_bytes: u64,
        mut deadline: impl FnMut() -> std::result::Result<(), crate::error::RunError>
        + Send
        + Sync
        + 'static,
    ) -> Result<R> {
        let parts = self.parts.clone();
        let mut vfs = Vfs::new(256 << 20);
        for dir in ["/tmp", "/home/cleanroom", "/work"] {
            vfs.mkdir_all(dir, true);
        }
        vfs.cwd = "/work".into();
        let host = Host {
            engine: parts,
            vfs,
            fds: HashMap::new(),
            log,
            stderr_tail: Vec::new(),
            limiter: wasmtime::StoreLimitsBuilder::new()
                .memory_size(max_memory_bytes as usize)
                .table_elements(1 << 20)
                .instances(256)
                .tables(4)
                .memories(1)
                .trap_on_grow_failure(false)
                .build(),
            env: [
                "R_HOME=/usr/lib/R",
                "HOME=/home/cleanroom",
                "USER=cleanroom",
                "LOGNAME=cleanroom",
                "PWD=/work",
                "TMPDIR=/tmp",
                "LANG=C.UTF-8",
                "TZ=UTC",
                "TZDIR=/usr/lib/R/share/zoneinfo",
                "R_ENABLE_JIT=0",
                "PATH=/",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            mem: None,
            table: None,
            stack_pointer: None,
            got: HashMap::new(),
            resolved: HashSet::new(),
            symbols: HashMap::new(),
            lib_exports: HashMap::new(),
            slots: HashMap::new(),
            main_malloc: None,
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|h| &mut h.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            deadline().map_err(wasmtime::Error::new)?;
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });
        let mut imports = Vec::new();
        for imp in self.main.imports() {
            let ext = match (imp.module(), imp.ty()) {
                ("GOT.func" | "GOT.mem", _) => got_entry(&mut store, imp.name()).into(),
                (_, ExternType::Func(ft)) => {
                    host_func(&mut store, imp.module(), imp.name(), ft).into()
                }
                (m, t) => bail!(
                    "R.wasm imports {m}.{} ({t:?}), which the host does not provide",
                    imp.name()
                ),
            };
            imports.push(ext);
        }
        let instance = Instance::new(&mut store, &self.main, &imports)?;
        let mut exports = HashMap::new();
        for e in instance.exports(&mut store) {
            exports.insert(e.name().to_string(), e.into_extern());
        }
        {
            let h = store.data_mut();
            h.mem = exports.get("memory").and_then(|e| e.clone().into_memory());
            h.table = exports
                .get("__indirect_function_table")
                .and_then(|e| e.clone().into_table());
            h.stack_pointer = exports
                .get("__stack_pointer")
                .and_then(|e| e.clone().into_global());
            h.main_malloc = exports.get("malloc").and_then(|e| e.clone().into_func());
            h.symbols = exports.clone();
        }
        let mut r = R { store, exports };
        if let Ok(f) = r.func("emscripten_stack_init") {
            f.call(&mut r.store, &[], &mut [])?;
        }
        r.func("__wasm_call_ctors")?
            .call(&mut r.store, &[], &mut [])?;
        load_library(&mut r.store, "libRblas.so")?;
        // Rf_initialize_R(argc, argv); setup_Rmainloop(); not interactive.
        let args = ["R", "--no-save", "--no-restore", "--quiet", "--no-echo"];
        let mut ptrs = Vec::new();
        for a in args {
            ptrs.push(r.cstring(a)?);
        }
        let argv = r.malloc(4 * ptrs.len() as u32)?;
        for (i, p) in ptrs.iter().enumerate() {
            r.write(argv + 4 * i as u32, &p.to_le_bytes())?;
        }
        r.call_i32(
            "Rf_initialize_R",
            &[Val::I32(args.len() as i32), Val::I32(argv as i32)],
        )?;
        let interactive = r.global_addr("R_Interactive")?;
        r.write(interactive, &[0])?;
        r.call_i32("setup_Rmainloop", &[])?;
        r.write(interactive, &[0])?;
        Ok(r)
    }
}

impl R {
    pub(super) fn func(&mut self, name: &str) -> Result<Func> {
        self.exports
            .get(name)
            .and_then(|e| e.clone().into_func())
            .ok_or_else(|| anyhow!("R.wasm does not export {name}"))
    }

    pub(super) fn call_i32(&mut self, name: &str, args: &[Val]) -> Result<i32> {
        let f = self.func(name)?;
        let n = f.ty(&self.store).results().len();
        let mut out = vec![Val::I32(0); n];
        f.call(&mut self.store, args, &mut out)?;
        Ok(out.first().and_then(|v| v.i32()).unwrap_or(0))
    }

    pub(super) fn memory(&self) -> Memory {
        self.store.data().mem.expect("memory")
    }

    pub(super) fn write(&mut self, addr: u32, bytes: &[u8]) -> Result<()> {
        let m = self.memory();
        m.write(&mut self.store, addr as usize, bytes)?;
        Ok(())
    }

    pub(super) fn read_u32(&self, addr: u32) -> Result<u32> {
        let mut b = [0u8; 4];
        self.memory().read(&self.store, addr as usize, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub(super) fn malloc(&mut self, n: u32) -> Result<u32> {
        let p = self.call_i32("malloc", &[Val::I32(n.max(1) as i32)])? as u32;
        if p == 0 {
            bail!("R's heap is exhausted (malloc of {n} bytes failed)");
        }
        Ok(p)
    }

    pub(super) fn free(&mut self, p: u32) -> Result<()> {
        self.call_i32("free", &[Val::I32(p as i32)])?;
        Ok(())
    }

    /// Read `len` bytes at `addr`.
    pub(super) fn read(&self, addr: u32, len: usize) -> Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.memory().read(&self.store, addr as usize, &mut b)?;
        Ok(b)
    }

    pub(super) fn cstring(&mut self, s: &str) -> Result<u32> {
        let p = self.malloc(s.len() as u32 + 1)?;
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.write(p, &b)?;
        Ok(p)
    }

    /// The address an exported data symbol (an i32 global) names.
    pub(super) fn global_addr(&mut self, name: &str) -> Result<u32> {
        let g = self
            .exports
            .get(name)
            .and_then(|e| e.clone().into_global())
            .ok_or_else(|| anyhow!("R.wasm does not export {name}"))?;
        Ok(g.get(&mut self.store).i32().unwrap_or(0) as u32)
    }

    /// The SEXP stored at an exported global's address (R_GlobalEnv, R_NilValue, ...).
    pub(super) fn sexp(&mut self, name: &str) -> Result<i32> {
        let addr = self.global_addr(name)?;
        Ok(self.read_u32(addr)? as i32)
    }

    /// Parse `code` and evaluate each expression in the global environment. `Ok(Err(message))`
    /// is an R-level failure (a parse error, or R's message for the first expression that
    /// failed); `Err` is the sandbox stopping R (a limit, a trap).
    pub(super) fn eval(&mut self, code: &str) -> Result<std::result::Result<(), String>> {
        let text = self.cstring(code)?;
        let s = self.call_i32("Rf_mkString", &[Val::I32(text as i32)])?;
        self.free(text)?;
        let s = self.call_i32("Rf_protect", &[Val::I32(s)])?;
        let status = self.malloc(8)?;
        let nil = self.sexp("R_NilValue")?;
        let exprs = self.call_i32(
            "R_ParseVector",
            &[
                Val::I32(s),
                Val::I32(-1),
                Val::I32(status as i32),
                Val::I32(nil),
            ],
        )?;
        let exprs = self.call_i32("Rf_protect", &[Val::I32(exprs)])?;
        let st = self.read_u32(status)?;
        if st != 1 {
            self.call_i32("Rf_unprotect", &[Val::I32(2)])?;
            self.free(status)?;
            return Ok(Err(
                "the R script does not parse: check it with R first".into()
            ));
        }
        let n = self.call_i32("Rf_length", &[Val::I32(exprs)])?;
        let global = self.sexp("R_GlobalEnv")?;
        let mut outcome = Ok(());
        for i in 0..n {
            let e = self.call_i32("VECTOR_ELT", &[Val::I32(exprs), Val::I32(i)])?;
            self.write(status, &0u32.to_le_bytes())?;
            self.call_i32(
                "R_tryEval",
                &[Val::I32(e), Val::I32(global), Val::I32(status as i32)],
            )?;
            if self.read_u32(status)? != 0 {
                outcome = Err(r_error(&self.stderr_tail()));
                break;
            }
        }
        self.call_i32("Rf_unprotect", &[Val::I32(2)])?;
        self.free(status)?;
        Ok(outcome)
    }

    /// The end of what R wrote to stderr (its error message, when an expression failed).
    pub(super) fn stderr_tail(&self) -> String {
        String::from_utf8_lossy(&self.store.data().stderr_tail).into_owned()
    }
}

// ---- the dynamic linker ----------------------------------------------------------------

/// `dylink.0`: memory size and alignment, table size, needed libraries.
struct Dylink {
    mem_size: u32,
    mem_align: u32,
    table_size: u32,
    needed: Vec<String>,
}

/// R's message for a failed expression: the last `Error` R printed.
fn r_error(stderr: &str) -> String {
    match stderr.rfind("Error") {
        Some(at) => stderr[at..].trim_end().to_string(),
        None if stderr.trim().is_empty() => "the R script failed".into(),
        None => stderr.trim_end().to_string(),
    }
}

fn dylink(bytes: &[u8]) -> Result<Dylink> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let wasmparser::Payload::CustomSection(c) = payload? {
            if c.name() != "dylink.0" {
                continue;
            }
            let mut d = Dylink {
                mem_size: 0,
                mem_align: 0,
                table_size: 0,
                needed: vec![],
            };
            let reader = wasmparser::Dylink0SectionReader::new(wasmparser::BinaryReader::new(
                c.data(),
                c.data_offset(),
            ));
            for sub in reader {
                match sub? {
                    wasmparser::Dylink0Subsection::MemInfo(m) => {
                        d.mem_size = m.memory_size;
                        d.mem_align = m.memory_alignment;
                        d.table_size = m.table_size;
                    }
                    wasmparser::Dylink0Subsection::Needed(n) => {
                        d.needed = n.iter().map(|s| s.to_string()).collect()
                    }
                    _ => {}
                }
            }
            return Ok(d);
        }
    }
    bail!("not a shared library (no dylink.0 section)")
}

fn got_entry(store: &mut impl AsContextMut<Data = Host>, name: &str) -> Global {
    if let Some(g) = store.as_context().data().got.get(name) {
        return *g;
    }
    let g = Global::new(
        &mut *store,
        GlobalType::new(ValType::I32, Mutability::Var),
        Val::I32(0),
    )
    .expect("an i32 global");
    store
        .as_context_mut()
        .data_mut()
        .got
        .insert(name.to_string(), g);
    g
}

/// The table slot of function `name` (given one on first use).
fn slot(store: &mut impl AsContextMut<Data = Host>, name: &str, f: Func) -> Result<u32> {
    if let Some(i) = store.as_context().data().slots.get(name) {
        return Ok(*i);
    }
    let table = store.as_context().data().table.expect("table");
    let i = table.grow(&mut *store, 1, Ref::Func(Some(f)))? as u32;
    store
        .as_context_mut()
        .data_mut()
        .slots
        .insert(name.to_string(), i);
    Ok(i)
}

/// Point every GOT entry not yet resolved at its symbol, if one is defined now.
fn resolve_got(store: &mut impl AsContextMut<Data = Host>) -> Result<()> {
    let pending: Vec<(String, Global)> = {
        let h = store.as_context().data();
        h.got
            .iter()
            .filter(|(n, _)| !h.resolved.contains(*n))
            .map(|(n, g)| (n.clone(), *g))
            .collect()
    };
    for (name, g) in pending {
        let sym = store.as_context().data().symbols.get(&name).cloned();
        let value = match sym {
            Some(Extern::Func(f)) => slot(store, &name, f)? as i32,
            Some(Extern::Global(d)) => d.get(&mut *store).i32().unwrap_or(0),
            _ => continue,
        };
        g.set(&mut *store, Val::I32(value))?;
        store.as_context_mut().data_mut().resolved.insert(name);
    }
    Ok(())
}

fn call_malloc(store: &mut impl AsContextMut<Data = Host>, n: u32) -> Result<u32> {
    let f = store.as_context().data().main_malloc.expect("malloc");
    let mut out = [Val::I32(0)];
    f.call(&mut *store, &[Val::I32(n as i32)], &mut out)?;
    Ok(out[0].unwrap_i32() as u32)
}

/// Load a shared library (and what it needs) into the running R, as Emscripten's `dlopen`
/// does: place its data in R's heap and its functions in R's table, link its imports against
/// the symbols loaded so far, run its relocations and constructors. Returns its memory and
/// table bases and sizes.
fn load_library(
    store: &mut impl AsContextMut<Data = Host>,
    path: &str,
) -> Result<(u32, u32, u32, u32)> {
    let engine = store.as_context().engine().clone();
    let parts = store.as_context().data().engine.clone();
    load_with(store, path, &engine, &parts.compiled)
}

fn library_bytes(store: &impl AsContext<Data = Host>, path: &str) -> Result<Arc<Vec<u8>>> {
    let h = store.as_context().data();
    let base = path.rsplit('/').next().unwrap_or(path);
    if let Some(b) = h.engine.libs.get(base) {
        return Ok(b.clone());
    }
    let ino = h
        .vfs
        .lookup(path)
        .map_err(|e| anyhow!("{path}: errno {e}"))?;
    match h.vfs.node(ino) {
        // Only the engine's own libraries: native code a script wrote is never linked.
        Node::File { writable: true, .. } => {
            bail!("{path}: only the R engine's own libraries can be loaded")
        }
        Node::File { data, .. } => Ok(data.clone()),
        Node::Dir { .. } => bail!("{path} is a directory"),
    }
}

fn load_with(
    store: &mut impl AsContextMut<Data = Host>,
    path: &str,
    engine: &Engine,
    compiled: &Mutex<HashMap<[u8; 32], Module>>,
) -> Result<(u32, u32, u32, u32)> {
    let key = lib_key(path);
    if store.as_context().data().lib_exports.contains_key(&key) {
        return Ok((0, 0, 0, 0));
    }
    // Marked loaded first (a library that needs itself, directly or not, links once); unmarked
    // again if it fails.
    store
        .as_context_mut()
        .data_mut()
        .lib_exports
        .insert(key.clone(), HashMap::new());
    let loaded = link_library(store, path, &key, engine, compiled);
    if loaded.is_err() {
        store.as_context_mut().data_mut().lib_exports.remove(&key);
    }
    loaded
}

/// The name a library is known by: the bundled BLAS/LAPACK by file name, others by path.
fn lib_key(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    if base.starts_with("libR") {
        base.to_string()
    } else {
        path.to_string()
    }
}

fn link_library(
    store: &mut impl AsContextMut<Data = Host>,
    path: &str,
    key: &str,
    engine: &Engine,
    compiled: &Mutex<HashMap<[u8; 32], Module>>,
) -> Result<(u32, u32, u32, u32)> {
    let bytes = library_bytes(&*store, path)?;
    let d = dylink(&bytes)?;
    for needed in &d.needed {
        load_with(store, needed, engine, compiled)?;
    }
    let module = {
        // Compiled once per engine, by content.
        let digest: [u8; 32] = sha2::Sha256::digest(&bytes[..]).into();
        let mut cache = compiled.lock().expect("compile cache");
        match cache.get(&digest) {
            Some(m) => m.clone(),
            None => {
                let m =
                    Module::new(engine, &bytes[..]).with_context(|| format!("compiling {path}"))?;
                cache.insert(digest, m.clone());
                m
            }
        }
    };
    let align = 1u32 << d.mem_align;
    let mem_base = if d.mem_size > 0 {
        let raw = call_malloc(store, d.mem_size + align)?;
        let base = raw.div_ceil(align) * align;
        let mem = store.as_context().data().mem.expect("memory");
        span(mem.data_mut(&mut *store), base, d.mem_size as usize)
            .ok_or_else(|| anyhow!("{path}: its data does not fit in R's memory"))?
            .fill(0);
        base
    } else {
        0
    };
    let table = store.as_context().data().table.expect("table");
    let table_base = if d.table_size > 0 {
        table.grow(&mut *store, d.table_size as u64, Ref::Func(None))? as u32
    } else {
        0
    };
    let mut imports = Vec::new();
    for imp in module.imports() {
        let (m, n) = (imp.module(), imp.name());
        let ext: Extern = match (m, n, imp.ty()) {
            ("env", "memory", _) => store.as_context().data().mem.expect("memory").into(),
            ("env", "__indirect_function_table", _) => table.into(),
            ("env", "__stack_pointer", _) => {
                store.as_context().data().stack_pointer.expect("sp").into()
            }
            ("env", "__memory_base", _) => const_i32(store, mem_base as i32).into(),
            ("env", "__table_base", _) => const_i32(store, table_base as i32).into(),
            ("GOT.mem" | "GOT.func", _, _) => got_entry(store, n).into(),
            ("env", _, ExternType::Func(ft)) => {
                match store.as_context().data().symbols.get(n).cloned() {
                    Some(Extern::Func(f)) => f.into(),
                    _ => host_func(store, m, n, ft).into(),
                }
            }
            ("env", _, ExternType::Global(_)) => {
                match store.as_context().data().symbols.get(n).cloned() {
                    Some(Extern::Global(g)) => g.into(),
                    _ => const_i32(store, 0).into(),
                }
            }
            (m, n, t) => bail!("{path} imports {m}.{n} ({t:?}), which nothing provides"),
        };
        imports.push(ext);
    }
    let instance =
        Instance::new(&mut *store, &module, &imports).with_context(|| format!("linking {path}"))?;
    let mut own = HashMap::new();
    let exports: Vec<(String, Extern)> = instance
        .exports(&mut *store)
        .map(|e| (e.name().to_string(), e.into_extern()))
        .collect();
    for (name, ext) in exports {
        let ext = match ext {
            Extern::Global(g) if g.ty(&*store).mutability() == Mutability::Const => {
                let v = g.get(&mut *store).i32().unwrap_or(0);
                const_i32(store, v + mem_base as i32).into()
            }
            other => other,
        };
        own.insert(name.clone(), ext.clone());
        store
            .as_context_mut()
            .data_mut()
            .symbols
            .entry(name)
            .or_insert(ext);
    }
    store
        .as_context_mut()
        .data_mut()
        .lib_exports
        .insert(key.to_string(), own.clone());
    resolve_got(store)?;
    for init in ["__wasm_apply_data_relocs", "__wasm_call_ctors"] {
        if let Some(Extern::Func(f)) = own.get(init) {
            f.call(&mut *store, &[], &mut [])?;
        }
    }
    Ok((mem_base, d.mem_size, table_base, d.table_size))
}

fn const_i32(store: &mut impl AsContextMut, v: i32) -> Global {
    Global::new(
        store,
        GlobalType::new(ValType::I32, Mutability::Const),
        Val::I32(v),
    )
    .expect("i32")
}

// ---- host functions ---------------------------------------------------------------------

type Cx<'a> = Caller<'a, Host>;

fn mem_of<'a>(c: &'a mut Cx<'_>) -> (&'a mut [u8], &'a mut Host) {
    let m = c.data().mem.expect("memory");
    m.data_and_store_mut(c)
}

// Guest memory is read and written only through these checked helpers: a pointer R passes that
// lies outside its memory reads as nothing and writes nowhere (the call answers EFAULT where it
// can), and never panics the host.

/// The guest bytes `[p, p + len)`, if they are inside memory.
fn span(mem: &mut [u8], p: u32, len: usize) -> Option<&mut [u8]> {
    let start = p as usize;
    mem.get_mut(start..start.checked_add(len)?)
}

/// Write `bytes` at `p`; false if that is outside memory.
fn put_bytes(mem: &mut [u8], p: u32, bytes: &[u8]) -> bool {
    span(mem, p, bytes.len())
        .map(|d| d.copy_from_slice(bytes))
        .is_some()
}

fn cstr(mem: &[u8], ptr: u32) -> String {
    let rest = mem.get(ptr as usize..).unwrap_or_default();
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

fn put_u32(mem: &mut [u8], at: u32, v: u32) {
    put_bytes(mem, at, &v.to_le_bytes());
}
fn put_u64(mem: &mut [u8], at: u32, v: u64) {
    put_bytes(mem, at, &v.to_le_bytes());
}
fn get_u32(mem: &[u8], at: u32) -> u32 {
    mem.get(at as usize..(at as usize).saturating_add(4))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Emscripten's EFAULT.
const EFAULT: i32 = 21;
/// The most buffers one `readv`/`writev` takes (POSIX's IOV_MAX).
const IOV_MAX: u32 = 1024;

/// Buffer `i` of an iovec array at `iov`: its address and length.
fn iovec(mem: &[u8], iov: u32, i: u32) -> (u32, u32) {
    let at = iov.wrapping_add(8 * i);
    (get_u32(mem, at), get_u32(mem, at.wrapping_add(4)))
}

const AT_FDCWD: i32 = -100;
/// How much of R's stderr is kept for the error of a failed run.
const STDERR_TAIL: usize = 4096;
/// webR 0.6.0's EM_ASM hooks in R.wasm, by address (`ASM_CONSTS` in its R.js).
const WEBR_SET_PROMPT: i32 = 12617548;
const WEBR_READ_CONSOLE: i32 = 12617599;
const WEBR_HANDLE_EVENTS: i32 = 12617643;
const BLAS: [&str; 14] = [
    "zgemm_", "dsyrk_", "dgemv_", "dgemm_", "dtrsm_", "ddot_", "daxpy_", "dasum_", "dscal_",
    "dswap_", "dnrm2_", "dcopy_", "drotg_", "drot_",
];

/// A syscall's answer: its value, or `-errno`.
fn sys(f: impl FnOnce() -> Result<i32, i32>) -> i32 {
    f().unwrap_or_else(|e| -e)
}

/// `stat` of the path a `*at` syscall names, into `buf`.
fn stat_at(h: &Host, mem: &mut [u8], dirfd: i32, path: u32, buf: u32) -> Result<i32, i32> {
    let ino = h.vfs.lookup(&at_path(mem, dirfd, path)?)?;
    write_stat(h, mem, buf, ino);
    Ok(0)
}

/// The path a `*at` syscall names.
fn at_path(mem: &[u8], dirfd: i32, ptr: u32) -> Result<String, i32> {
    let p = cstr(mem, ptr);
    if p.starts_with('/') || dirfd == AT_FDCWD {
        return Ok(p);
    }
    Err(EBADF)
}

fn write_stat(h: &Host, mem: &mut [u8], buf: u32, ino: Ino) {
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

/// A host function for `module.name`: the Emscripten ABI R uses, or a refusal.
fn host_func(
    store: &mut impl AsContextMut<Data = Host>,
    module: &str,
    name: &str,
    ty: FuncType,
) -> Func {
    let mut store = store.as_context_mut();
    let s = &mut store;
    match (module, name) {
        (_, n) if BLAS.contains(&n) => {
            // Resolved lazily: libRblas.so is loaded after R.wasm, whose memory it needs.
            let n = n.to_string();
            Func::new(s, ty, move |mut c, params, results| {
                let f = c.data().symbols.get(&n).cloned();
                match f {
                    Some(Extern::Func(f)) => f.call(&mut c, params, results),
                    _ => Err(anyhow!("{n} called before libRblas.so was loaded")),
                }
            })
        }
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
        ("env", "_emscripten_fs_load_embedded_files") => {
            Func::wrap(s, |mut c: Cx, mut ptr: i32| {
                let (mem, h) = mem_of(&mut c);
                loop {
                    let name = get_u32(mem, ptr as u32);
                    if name == 0 {
                        break;
                    }
                    let len = get_u32(mem, ptr as u32 + 4);
                    let data = get_u32(mem, ptr as u32 + 8);
                    let path = cstr(mem, name);
                    h.vfs.add_file(
                        &path,
                        Arc::new(
                            span(mem, data, len as usize)
                                .map(|b| b.to_vec())
                                .unwrap_or_default(),
                        ),
                    );
                    ptr += 12;
                }
                // webR's lazily mounted trees R looks at (their contents are not needed).
                h.vfs.mkdir_all("/usr/lib/R/library/translations", false);
                h.vfs.add_file(
                    "/usr/lib/R/library/translations/DESCRIPTION",
                    Arc::new(Vec::new()),
                );
                h.vfs.mkdir_all("/usr/lib/R/doc", false);
                // R's time zone database lives in webR's lazily mounted `share` tree; inside, the
                // only zone is UTC.
                let utc = Arc::new(tzif_utc());
                for zone in ["UTC", "GMT", "Etc/UTC", "Etc/GMT"] {
                    h.vfs
                        .add_file(&format!("/usr/lib/R/share/zoneinfo/{zone}"), utc.clone());
                }
            })
        }
        ("env", "emscripten_asm_const_int") => Func::wrap(
            s,
            |_c: Cx, code: i32, _sig: i32, _args: i32| -> Result<i32> {
                // Emscripten moves EM_ASM sources out of the wasm into its JavaScript, so the hooks
                // are known by address in this (pinned) build of R.wasm: webR's console hooks get
                // no prompt, no console input (end of input) and no events; anything else is
                // refused.
                match code {
                    WEBR_SET_PROMPT | WEBR_READ_CONSOLE | WEBR_HANDLE_EVENTS => Ok(0),
                    _ => Err(anyhow!(
                        "R asked the host to run JavaScript (EM_ASM at {code}), which the sandbox does not"
                    )),
                }
            },
        ),
        ("env", "emscripten_resize_heap") => Func::wrap(s, |mut c: Cx, requested: i32| -> i32 {
            let m = c.data().mem.expect("memory");
            let have = m.data_size(&c) as u64;
            let want = requested as u32 as u64;
            if want <= have {
                return 1;
            }
            let pages = (want - have).div_ceil(65536);
            // Grow with headroom, as Emscripten does (at least 20% more).
            let pages = pages.max(have / 65536 / 5);
            i32::from(
                m.grow(&mut c, pages).is_ok()
                    || m.grow(&mut c, (want - have).div_ceil(65536)).is_ok(),
            )
        }),
        ("env", "emscripten_get_heap_max") => Func::wrap(s, |_c: Cx| -> i32 { i32::MIN }),
        ("env", "emscripten_date_now") => Func::wrap(s, |_c: Cx| -> f64 {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0
        }),
        ("env", "emscripten_get_now") => {
            Func::wrap(s, |_c: Cx| -> f64 { monotonic_ns() as f64 / 1e6 })
        }
        ("env", "_emscripten_get_progname") => Func::wrap(s, |mut c: Cx, buf: i32, len: i32| {
            let (mem, _) = mem_of(&mut c);
            if len > 2 {
                put_bytes(mem, buf as u32, b"R\0");
            }
        }),
        ("env", "_tzset_js") => Func::wrap(
            s,
            |mut c: Cx, tz: i32, daylight: i32, std: i32, dst: i32| {
                let (mem, _) = mem_of(&mut c);
                put_u32(mem, tz as u32, 0);
                put_u32(mem, daylight as u32, 0);
                for p in [std, dst] {
                    put_bytes(mem, p as u32, b"UTC\0");
                }
            },
        ),
        ("env", "_localtime_js") | ("env", "_gmtime_js") => {
            Func::wrap(s, |mut c: Cx, t: i64, tm: i32| {
                let (mem, _) = mem_of(&mut c);
                write_tm(mem, tm as u32, t);
            })
        }
        ("env", "_mktime_js") | ("env", "_timegm_js") => {
            Func::wrap(s, |mut c: Cx, tm: i32| -> i64 {
                let (mem, _) = mem_of(&mut c);
                let f = |i: u32| get_u32(mem, tm as u32 + 4 * i) as i32 as i64;
                let (sec, min, hour, mday, mon, year) = (f(0), f(1), f(2), f(3), f(4), f(5));
                let y = year + 1900 + mon.div_euclid(12);
                let m = mon.rem_euclid(12) + 1;
                let t = days_from_civil(y, m, 1) * 86400
                    + (mday - 1) * 86400
                    + hour * 3600
                    + min * 60
                    + sec;
                write_tm(mem, tm as u32, t);
                t
            })
        }
        ("env", "_dlopen_js") => Func::wrap(s, |mut c: Cx, handle: i32| -> Result<i32> {
            let path = {
                let (mem, _) = mem_of(&mut c);
                cstr(mem, handle as u32 + 36)
            };
            match load_library(&mut c, &path) {
                Ok((mb, ms, tb, ts)) => {
                    let (mem, _) = mem_of(&mut c);
                    put_bytes(mem, handle as u32 + 8, &[1]);
                    put_u32(mem, handle as u32 + 12, mb);
                    put_u32(mem, handle as u32 + 16, ms);
                    put_u32(mem, handle as u32 + 20, tb);
                    put_u32(mem, handle as u32 + 24, ts);
                    Ok(handle)
                }
                Err(e) => {
                    // R reports the failure (dlerror); the reason goes to the run's log.
                    let line = format!("dlopen {path}: {e:#}");
                    c.data()
                        .log
                        .line(LogSource::Stderr, line)
                        .map_err(wasmtime::Error::new)?;
                    Ok(0)
                }
            }
        }),
        ("env", "_dlsym_js") => Func::wrap(
            s,
            |mut c: Cx, handle: i32, symbol: i32, _index: i32| -> Result<i32> {
                let (path, name) = {
                    let (mem, _) = mem_of(&mut c);
                    (cstr(mem, handle as u32 + 36), cstr(mem, symbol as u32))
                };
                let key = lib_key(&path);
                let sym = c
                    .data()
                    .lib_exports
                    .get(&key)
                    .and_then(|l| l.get(&name))
                    .cloned();
                Ok(match sym {
                    Some(Extern::Func(f)) => slot(&mut c, &name, f)? as i32,
                    Some(Extern::Global(g)) => g.get(&mut c).i32().unwrap_or(0),
                    _ => 0,
                })
            },
        ),
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
        ("env", "_emscripten_system") => Func::wrap(s, |_c: Cx, _cmd: i32| -> i32 { -1 }),
        ("env", "_abort_js") => Func::wrap(s, |_c: Cx| -> Result<()> { Err(anyhow!("R aborted")) }),
        ("env", "__assert_fail") => Func::wrap(
            s,
            |mut c: Cx, cond: i32, file: i32, line: i32, _f: i32| -> Result<()> {
                let (mem, _) = mem_of(&mut c);
                Err(anyhow!(
                    "assertion failed in R: {} ({}:{line})",
                    cstr(mem, cond as u32),
                    cstr(mem, file as u32)
                ))
            },
        ),
        ("env", "_emscripten_runtime_keepalive_clear") => Func::wrap(s, |_c: Cx| {}),
        ("env", "emscripten_is_main_browser_thread") => Func::wrap(s, |_c: Cx| -> i32 { 0 }),
        _ => {
            // Everything else R.wasm links against (sockets, fetch, processes, mmap, pipes,
            // signals, graphics) is refused: a syscall answers ENOSYS, anything else traps.
            let name = format!("{module}.{name}");
            let syscall = name.contains("__syscall_") || name.contains("_js");
            Func::new(s, ty, move |_c, _params, results| {
                if syscall && results.len() == 1 {
                    results[0] = match results[0] {
                        Val::I64(_) => Val::I64(-(ENOSYS as i64)),
                        _ => Val::I32(-ENOSYS),
                    };
                    return Ok(());
                }
                Err(anyhow!(
                    "R called {name}, which the sandbox does not provide"
                ))
            })
        }
    }
}

/// The TZif (RFC 8536, version 2) description of UTC: no transitions, one zone type.
fn tzif_utc() -> Vec<u8> {
    let block = |out: &mut Vec<u8>| {
        out.extend_from_slice(b"TZif2");
        out.extend_from_slice(&[0; 15]);
        // isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
        for n in [0u32, 0, 0, 0, 1, 4] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(&0i32.to_be_bytes()); // utoff
        out.extend_from_slice(&[0, 0]); // isdst, desigidx
        out.extend_from_slice(b"UTC\0");
    };
    let mut out = Vec::new();
    block(&mut out);
    block(&mut out);
    out.extend_from_slice(b"\nUTC0\n");
    out
}

fn monotonic_ns() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
        + 1
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm; UTC is the
/// only time zone inside, so this is all the calendar the host needs).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `struct tm` for `t` (UTC): sec, min, hour, mday, mon, year, wday, yday, isdst, gmtoff, zone.
fn write_tm(mem: &mut [u8], tm: u32, t: i64) {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    let yday = days - days_from_civil(y, 1, 1);
    let wday = (days + 4).rem_euclid(7);
    let fields = [
        secs % 60,
        secs / 60 % 60,
        secs / 3600,
        d,
        m - 1,
        y - 1900,
        wday,
        yday,
        0,
        0,
    ];
    for (i, v) in fields.iter().enumerate() {
        put_u32(mem, tm + 4 * i as u32, *v as i32 as u32);
    }
    put_u32(mem, tm + 40, 0);
}
