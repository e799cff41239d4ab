//! The rest of Emscripten's JavaScript runtime R needs: the embedded files, the EM_ASM hooks
//! webR compiled into R.wasm, the heap, aborts and assertions.

use super::*;

/// An Emscripten runtime function.
pub(super) fn func(s: &mut StoreContextMut<'_, Host>, module: &str, name: &str) -> Option<Func> {
    Some(match (module, name) {
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
        ("env", "_emscripten_get_progname") => Func::wrap(s, |mut c: Cx, buf: i32, len: i32| {
            let (mem, _) = mem_of(&mut c);
            if len > 2 {
                put_bytes(mem, buf as u32, b"R\0");
            }
        }),
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
        _ => return None,
    })
}
