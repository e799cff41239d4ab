//! Emscripten's dynamic linker: side modules (BLAS, LAPACK, the packages' shared objects) loaded
//! into R's memory and table, their `GOT` entries resolved, `dlopen` and `dlsym`.

use super::*;

/// `dylink.0`: memory size and alignment, table size, needed libraries.
struct Dylink {
    mem_size: u32,
    mem_align: u32,
    table_size: u32,
    needed: Vec<String>,
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

pub(super) fn got_entry(store: &mut impl AsContextMut<Data = Host>, name: &str) -> Global {
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
pub(super) fn load_library(
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

/// `dlopen` and `dlsym`.
pub(super) fn func(s: &mut StoreContextMut<'_, Host>, module: &str, name: &str) -> Option<Func> {
    Some(match (module, name) {
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
        _ => return None,
    })
}

/// A BLAS routine R.wasm imports: resolved lazily, since libRblas.so is loaded after R.wasm,
/// whose memory it needs.
pub(super) fn lazy_blas(s: &mut StoreContextMut<'_, Host>, name: &str, ty: FuncType) -> Func {
    let n = name.to_string();
    Func::new(s, ty, move |mut c, params, results| {
        let f = c.data().symbols.get(&n).cloned();
        match f {
            Some(Extern::Func(f)) => f.call(&mut c, params, results),
            _ => Err(anyhow!("{n} called before libRblas.so was loaded")),
        }
    })
}
