#!/usr/bin/env bash
# Build numpy (from its PyPI sdist) as wasm32-wasip2 extension modules that componentize-py
# (which embeds CPython 3.14 built with wasi-sdk 30) links into a Python analysis component.
#
#   scripts/build-numpy.sh        # prints the site-packages directory to pass to componentize-py
#
# scripts/build-python.sh calls it when an analysis imports numpy. The result is cached under
# ~/.cache/numpy-wasi by the hash of this script (which pins every input by version and SHA-256):
# about 3.5 minutes on 2 cores the first time, nothing after.
#
# Toolchain: Debian bookworm's clang-19/lld-19 (apt), wasi-libc headers + crt from Debian sid,
# CPython 3.14 headers from Debian sid's libpython3.14-dev with a wasm32-wasi pyconfig.h regenerated
# from the _sysconfigdata embedded in componentize-py, and componentize-py's own libc.so,
# libpython3.14.so, libc++.so, libc++abi.so to link against (so a missing symbol fails at link time).
# No GitHub, python.org or wasi-sdk download is needed.
set -euo pipefail
source "$(dirname "$0")/env.sh"

NUMPY_VERSION=2.4.6
NUMPY_SHA256=f3a3570c4a2a16746ac2c31a7c7c7b0c186b95ce902e33db6f28094ed7387dda
NUMPY_URL=https://files.pythonhosted.org/packages/d0/ad/fed0499ce6a338d2a03ebae59cd15093910c8875328855781952abf6c2fe/numpy-2.4.6.tar.gz
# Debian pool files (sid: they leave the pool once superseded, hence the cache; trixie's
# wasi-libc_0.0~git20241209.574b88d-2 sha256 b7716260051d289248b7667f81fa2792c125d888ff51da3fa09c6272cc0bd11d
# also has wasm32-wasip2 headers and is a stable fallback).
WASI_LIBC_DEB=wasi-libc_0.0~git20260423.161b319-2_all.deb
WASI_LIBC_SHA256=1051dbb0a5e6d3f709de83b6afb423e07a8ab19a9e9f12ef20ff902131e7b8bc
WASI_LIBC_URL=http://deb.debian.org/debian/pool/main/w/wasi-libc/$WASI_LIBC_DEB
PYDEV_DEB=libpython3.14-dev_3.14.10-1_amd64.deb
PYDEV_SHA256=ce226a5a09bd3739123b95c5a41688ee3110651e6b4f9b22973a27c7be2f64fa
PYDEV_URL=http://deb.debian.org/debian/pool/main/p/python3.14/$PYDEV_DEB
# COMPONENTIZE_PY_VERSION comes from scripts/env.sh: the resources below are its.
# sha256 of the zstd-decompressed resources embedded in componentize-py 0.25.1
CPY_LIBC=f1b113e24a8c7774f361d7318ababd98124f3b75889f8b5fc0ab10f97c17e42d
CPY_LIBPYTHON=0ab4ec14447dc6a983de96b294d904a9a2b77126a1b96ff1a6ae340c72405549
CPY_LIBCXX=65a44e3f7ad79ff246b82b61782789a35d0683f56f823cca22496fd6d597b9f3
CPY_LIBCXXABI=f93f92bc4fa31c3ccf86a140e1ba68254b5a937434b41fa0ba8b7feefa7d0e0e
CPY_STDLIB_TAR=2198e963c7c29aa626347c1c2418e69ac5836250be00bebd240232968a353535
TOOLS_PIP="Cython==3.3.1 ninja==1.13.2 zstandard==0.25.0"
APT_PKGS="clang-19 lld-19 libclang-rt-19-dev-wasm32 libc++-19-dev-wasm32 libc++abi-19-dev-wasm32"

CACHE=${NUMPY_WASI_CACHE:-$HOME/.cache/numpy-wasi}
VENV=$CLEANROOM_VENV
key=$(cat "$0" "$(dirname "$0")/env.sh" | sha256sum | cut -c1-16)
OUT=$CACHE/numpy-$NUMPY_VERSION-cp314-wasm32-wasi-$key
if [ -f "$OUT/.complete" ]; then
  printf '%s\n' "$OUT/site-packages"
  exit 0
fi
W=$CACHE/work            # sysroot, wrappers, build tree (paths are baked into the wrappers)
JOBS=${JOBS:-2}
ensure_componentize_py

fetch() { # URL SHA256 -> $CACHE/dl/NAME
  local f=$CACHE/dl/$(basename "$1")
  mkdir -p "$CACHE/dl"
  if [ ! -f "$f" ] || ! echo "$2  $f" | sha256sum -c --quiet 2>/dev/null; then
    say "downloading $(basename "$1")"
    curl -fsSL -o "$f.tmp" "$1"
    echo "$2  $f.tmp" | sha256sum -c --quiet || { echo "sha256 mismatch: $1" >&2; exit 1; }
    mv "$f.tmp" "$f"
  fi
  printf '%s\n' "$f"
}

# 1. host toolchain
missing=$(for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  say "installing $missing"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  # shellcheck disable=SC2086 # a list of package names
  $sudo apt-get install -y -q $missing >&2 || { $sudo apt-get update -qq && $sudo apt-get install -y -q $missing >&2; }
fi
[ -d "$W/tools" ] || python3 -m venv "$W/tools"
"$W/tools/bin/pip" install -q --disable-pip-version-check --only-binary :all: $TOOLS_PIP >&2
TPY=$W/tools/bin/python

# 2. inputs
numpy_tgz=$(fetch "$NUMPY_URL" "$NUMPY_SHA256")
wasi_deb=$(fetch "$WASI_LIBC_URL" "$WASI_LIBC_SHA256")
pydev_deb=$(fetch "$PYDEV_URL" "$PYDEV_SHA256")
[ "$("$VENV/bin/pip" show componentize-py 2>/dev/null | sed -n 's/^Version: //p')" = "$COMPONENTIZE_PY_VERSION" ] \
  || { echo "componentize-py $COMPONENTIZE_PY_VERSION is not installed in $VENV" >&2; exit 1; }
cpy_so=$("$VENV/bin/python" -c 'import componentize_py, glob, os; print(glob.glob(os.path.dirname(componentize_py.__file__) + "/componentize_py*.so")[0])')

# 3. sysroot
S=$W/sysroot
rm -rf "$S" && mkdir -p "$S/dylibs" "$S/python/include" "$S/lib" "$S/include" "$W/x"
say "extracting componentize-py's embedded libraries"
"$TPY" - "$cpy_so" "$S/dylibs" "$W/x" <<PY
import hashlib, sys, tarfile, io, zstandard
data = open(sys.argv[1], 'rb').read()
want = {"$CPY_LIBC": "libc.so", "$CPY_LIBPYTHON": "libpython3.14.so", "$CPY_LIBCXX": "libc++.so",
        "$CPY_LIBCXXABI": "libc++abi.so", "$CPY_STDLIB_TAR": "stdlib.tar"}
i = 0
while (i := data.find(b'\x28\xb5\x2f\xfd', i)) >= 0:
    try:
        out = zstandard.ZstdDecompressor().decompressobj().decompress(data[i:i + 200_000_000])
        name = want.pop(hashlib.sha256(out).hexdigest(), None)
        if name == "stdlib.tar":
            with tarfile.open(fileobj=io.BytesIO(out)) as t:
                t.extract(t.getmember('_sysconfigdata__wasi_wasm32-wasi.py'), sys.argv[3])
        elif name:
            open(f'{sys.argv[2]}/{name}', 'wb').write(out)
    except zstandard.ZstdError:
        pass
    i += 4
if want: sys.exit(f"not found in componentize-py: {sorted(want.values())}")
PY
dpkg-deb -x "$wasi_deb" "$W/x/wasi-libc"
cp -r "$W/x/wasi-libc/usr/include/wasm32-wasip2" "$S/include/"
cp -r "$W/x/wasi-libc/usr/lib/wasm32-wasip2" "$S/lib/"
dpkg-deb -x "$pydev_deb" "$W/x/pydev"
cp -r "$W/x/pydev/usr/include/python3.14" "$S/python/include/"
say "generating a wasm32-wasi pyconfig.h from componentize-py's _sysconfigdata"
"$TPY" - "$W/x/pydev/usr/include/x86_64-linux-gnu/python3.14/pyconfig.h" \
  "$W/x/_sysconfigdata__wasi_wasm32-wasi.py" "$S/python/include/python3.14/pyconfig.h" <<'PY'
import re, runpy, sys
tmpl, sysconf, out = sys.argv[1:4]
d = runpy.run_path(sysconf)['build_time_vars']
# sysconfig only records names starting with an upper-case letter: these are decided here
force_def = {'_WASI_EMULATED_GETPID', '_WASI_EMULATED_PROCESS_CLOCKS', '_WASI_EMULATED_SIGNAL', '_Py_STACK_GROWS_DOWN'}
force_undef = {'HAVE_CURSES_ESCDELAY', 'HAVE_CURSES_GETMOUSE', 'HAVE_CURSES_SET_ESCDELAY', 'HAVE_CURSES_SET_TABSIZE',
               'HAVE_CURSES_TABSIZE', 'HAVE_DL_ITERATE_PHDR', 'HAVE_SYSCTLBYNAME', 'HAVE_SYS_SYSCTL_H',
               '_Py_LINKER_THREAD_STACK_SIZE', '_Py_HACL_CAN_COMPILE_VEC128', '_Py_HACL_CAN_COMPILE_VEC256',
               '_Py_FFI_SUPPORT_C_COMPLEX'}
lines = []
for line in open(tmpl):
    m = re.match(r'#define ([A-Za-z0-9_]+)(?: (.*))?$', line.rstrip('\n'))
    u = re.match(r'/\* #undef ([A-Za-z0-9_]+) \*/', line)
    name = m.group(1) if m else (u.group(1) if u else None)
    if name is None or name == 'Py_PYCONFIG_H':
        lines.append(line)
    elif name in force_def:
        lines.append(f'#define {name} 1\n')
    elif name in force_undef:
        lines.append(f'/* #undef {name} */\n')
    elif name not in d:
        lines.append(line)
    elif d[name] in (0, '0'):
        lines.append(f'/* #undef {name} */\n')
    else:
        lines.append(f'#define {name} {d[name]}\n')
open(out, 'w').write(''.join(lines))
PY
grep -q '^#define SIZEOF_VOID_P 4$' "$S/python/include/python3.14/pyconfig.h"
# clang looks for its builtins under <resource-dir>/lib/<triple>/
R=$S/clang-resource
mkdir -p "$R/lib/wasm32-unknown-wasip2" "$R/lib/wasi"
ln -sfn /usr/lib/llvm-19/lib/clang/19/include "$R/include"
cp /usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a "$R/lib/wasm32-unknown-wasip2/libclang_rt.builtins.a"
cp /usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a "$R/lib/wasi/"
cat > "$W/x/npshim.c" <<'C'
/* componentize-py's libc++abi is built without exceptions and exports no __cxa_throw: a throw aborts. */
#include <stdlib.h>
#include <stdio.h>
#define HID __attribute__((visibility("hidden")))
HID void *__cxa_allocate_exception(size_t n) { return malloc(n); }
HID void __cxa_free_exception(void *p) { free(p); }
HID void __cxa_throw(void *obj, void *tinfo, void (*dest)(void *)) {
  fputs("numpy-wasi: C++ exception thrown (unsupported), aborting\n", stderr); abort(); }
C
clang-19 --target=wasm32-wasip2 --sysroot="$S" -resource-dir="$R" -fPIC -O2 -c "$W/x/npshim.c" -o "$S/lib/npshim.o"

# 4. compiler wrappers, python introspection, cross file
B=$W/bin; mkdir -p "$B"
cat > "$B/wasi-cc" <<SH
#!/usr/bin/env bash
# Compile PIC wasm32-wasip2 objects; link -shared libraries against componentize-py's own libraries.
S=$S
case "\$(basename "\$0")" in
  *++) CL=(clang++-19 -nostdinc++ -isystem /usr/lib/llvm-19/include/wasm32-wasi/c++/v1 -fexceptions)
       CXXLIBS=("\$S/dylibs/libc++.so" "\$S/dylibs/libc++abi.so");;
  *)   CL=(clang-19); CXXLIBS=();;
esac
COMMON=(--target=wasm32-wasip2 --sysroot="\$S" -resource-dir="\$S/clang-resource" -fPIC -msimd128)
link=1 shared=0 args=()
for a in "\$@"; do
  case "\$a" in
    -c|-E|-S|-M|-MM) link=0;;
    -shared) shared=1;;
  esac
done
[ \$link = 1 ] && COMMON+=(-fuse-ld=lld)
if [ \$shared = 1 ]; then
  for a in "\$@"; do
    case "\$a" in -Wl,--start-group|-Wl,--end-group|-Wl,--as-needed|-Wl,--no-undefined|-Wl,--allow-shlib-undefined|-Wl,-soname,*) ;; *) args+=("\$a");; esac
  done
  # the shared libraries come before the builtins archive, so what they export is imported, not copied
  exec "\${CL[@]}" "\${COMMON[@]}" -nostdlib -Wl,--no-entry "\${args[@]}" "\$S/lib/npshim.o" \\
    "\${CXXLIBS[@]}" "\$S/dylibs/libpython3.14.so" "\$S/dylibs/libc.so" \\
    "\$S/clang-resource/lib/wasi/libclang_rt.builtins-wasm32.a"
fi
exec "\${CL[@]}" "\${COMMON[@]}" "\$@"
SH
chmod +x "$B/wasi-cc"; ln -sfn wasi-cc "$B/wasi-c++"
cat > "$B/python_info.py" <<PY
# Answers meson's python introspection as componentize-py's wasm32-wasi CPython 3.14.
import json, runpy
v = dict(runpy.run_path("$W/x/_sysconfigdata__wasi_wasm32-wasi.py")['build_time_vars'])
v.update(base_prefix='/usr/local', LIBPYTHON='')
inc, site = "$S/python/include/python3.14", 'lib/python3.14/site-packages'
paths = {'include': inc, 'platinclude': inc, 'purelib': '/usr/local/' + site, 'platlib': '/usr/local/' + site,
         'data': '/usr/local', 'scripts': '/usr/local/bin', 'stdlib': '/usr/local/lib/python3.14',
         'platstdlib': '/usr/local/lib/python3.14'}
print(json.dumps({'variables': v, 'paths': paths, 'sysconfig_paths': paths,
  'install_paths': {k: p.replace('/usr/local', '', 1) for k, p in paths.items() if k not in ('include', 'platinclude')},
  'version': '3.14', 'platform': 'wasi-wasm32', 'is_pypy': False, 'is_venv': False, 'link_libpython': False,
  'suffix': v['EXT_SUFFIX'], 'limited_api_suffix': '.abi3.so', 'is_freethreaded': False}))
PY
cat > "$B/wasi-python" <<SH
#!/bin/sh
case "\$1" in *python_info.py) exec $TPY $B/python_info.py ;; esac
exec $TPY "\$@"
SH
chmod +x "$B/wasi-python"
cat > "$W/cross-wasi.ini" <<INI
[binaries]
c = '$B/wasi-cc'
cpp = '$B/wasi-c++'
ar = 'llvm-ar-19'
strip = 'llvm-strip-19'
python = '$B/wasi-python'
python3 = '$B/wasi-python'
cython = '$W/tools/bin/cython'

[host_machine]
system = 'wasi'
cpu_family = 'wasm32'
cpu = 'wasm32'
endian = 'little'

[properties]
longdouble_format = 'IEEE_QUAD_LE'
skip_sanity_check = true
INI

# 5. numpy
say "building numpy $NUMPY_VERSION"
rm -rf "$W/src" "$W/build" "$W/stage" && mkdir -p "$W/src"
tar -xzf "$numpy_tgz" -C "$W/src"
cd "$W/src/numpy-$NUMPY_VERSION"
export PATH=$W/tools/bin:$PATH
nice -n 19 "$TPY" vendored-meson/meson/meson.py setup "$W/build" --cross-file "$W/cross-wasi.ini" \
  --prefix=/usr/local --buildtype=release -Db_ndebug=if-release -Dpython.bytecompile=-1 \
  -Dblas=none -Dlapack=none -Dallow-noblas=true -Ddisable-threading=true \
  -Ddisable-optimization=true -Dcpu-baseline=none -Dcpu-dispatch=none \
  -Ddisable-highway=true -Ddisable-intel-sort=true -Ddisable-svml=true > "$W/meson-setup.log" 2>&1 \
  || { tail -30 "$W/meson-setup.log"; exit 1; }
nice -n 19 ninja -C "$W/build" -j"$JOBS" > "$W/ninja.log" 2>&1 || { grep -m3 -A10 '^FAILED' "$W/ninja.log" >&2; exit 1; }
"$TPY" vendored-meson/meson/meson.py install -C "$W/build" --destdir "$W/stage" --tags runtime,python-runtime > "$W/install.log" 2>&1
site=$(dirname "$(find "$W/stage" -type d -name numpy -path '*site-packages*' -print -quit)")
rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp" && cp -r "$site" "$OUT.tmp/site-packages"
# not usable or not needed in a component
rm -rf "$OUT.tmp/site-packages/numpy/"{distutils,f2py,_pyinstaller}
find "$OUT.tmp/site-packages" \( -name tests -o -name __pycache__ \) -type d -prune -exec rm -rf {} +
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
touch "$OUT/.complete"
say "numpy $NUMPY_VERSION for componentize-py $COMPONENTIZE_PY_VERSION: $OUT/site-packages ($(du -sh "$OUT/site-packages" | cut -f1), $(find "$OUT" -name '*.so' | wc -l) extension modules)"
printf '%s\n' "$OUT/site-packages"
