//! GNU R (webR's Emscripten build) in wasmtime: the Emscripten ABI R.wasm imports, implemented
//! in Rust, and Emscripten's dynamic linker for its side modules (BLAS, LAPACK, the base
//! packages' shared objects).
//!
//! Emscripten's own runtime is JavaScript; this is the part of it R needs, with every
//! capability withheld: the file system is an in-memory tree holding R's library and small
//! scratch directories ([`crate::vfs`]), stdout and stderr go to the run's bounded log,
//! sockets, fetch, processes, pipes and JavaScript are refused, the clock is the host's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use wasmtime::error::Context;
use wasmtime::{
    AsContext, AsContextMut, Caller, Config, Engine, Extern, ExternType, Func, FuncType, Global,
    GlobalType, Instance, Memory, Module, Mutability, Ref, Store, StoreContextMut, Table, Val,
    ValType,
};
use wasmtime::{Result, bail, format_err as anyhow};

use sha2::Digest as _;

use crate::vfs::{Ino, Node, Vfs, errno::*};
use cleanroom_runtime::log::{LogBuffer, LogSource};

mod dylink;
mod mem;
mod runtime;
mod syscalls;
mod time;
mod wasi;

use dylink::{got_entry, load_library};
use mem::*;
use time::{monotonic_ns, tzif_utc};

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
    log: LogBuffer,
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
        Ok(Self {
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
        log: LogBuffer,
        max_memory_bytes: u64,
        mut deadline: impl FnMut() -> std::result::Result<(), cleanroom_runtime::error::RunError>
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

/// R's message for a failed expression: the last `Error` R printed.
fn r_error(stderr: &str) -> String {
    match stderr.rfind("Error") {
        Some(at) => stderr[at..].trim_end().to_string(),
        None if stderr.trim().is_empty() => "the R script failed".into(),
        None => stderr.trim_end().to_string(),
    }
}

/// A host function for `module.name`: the Emscripten ABI R uses, by family, or a refusal.
fn host_func(
    store: &mut impl AsContextMut<Data = Host>,
    module: &str,
    name: &str,
    ty: FuncType,
) -> Func {
    let mut store = store.as_context_mut();
    let s = &mut store;
    if BLAS.contains(&name) {
        return dylink::lazy_blas(s, name, ty);
    }
    let families = [
        wasi::files,
        wasi::process,
        syscalls::files,
        syscalls::dirs,
        time::func,
        runtime::func,
        dylink::func,
    ];
    for family in families {
        if let Some(f) = family(s, module, name) {
            return f;
        }
    }
    refused(s, module, name, ty)
}

/// Everything else R.wasm links against (sockets, fetch, processes, mmap, pipes, signals,
/// graphics) is refused: a syscall answers ENOSYS, anything else traps.
fn refused(s: &mut StoreContextMut<'_, Host>, module: &str, name: &str, ty: FuncType) -> Func {
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
