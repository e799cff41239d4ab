# Shared settings for the scripts: source it, don't run it.
# Everything is installed into caches outside the clone, so fresh clones
# reuse builds and a fresh machine sets itself up.
CLEANROOM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/cleanroom-target}
export CLEANROOM_VENV=${CLEANROOM_VENV:-$HOME/.cache/cleanroom-venv}
COMPONENTIZE_PY_VERSION=0.25.1
# The reference SNP measurement tool the image measurement is tested against.
SEV_SNP_MEASURE_VERSION=0.0.13

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# The Rust toolchain pinned by rust-toolchain.toml (with its wasm32-wasip2 target).
ensure_rust() {
  if ! command -v rustup >/dev/null 2>&1; then
    echo "rustup is required: see https://rustup.rs" >&2
    exit 1
  fi
  (cd "$CLEANROOM_ROOT" && rustup toolchain install >/dev/null)
}

# A project-local virtualenv with componentize-py.
ensure_componentize_py() {
  if [ ! -x "$CLEANROOM_VENV/bin/componentize-py" ] \
    || [ "$("$CLEANROOM_VENV/bin/pip" show componentize-py 2>/dev/null | sed -n 's/^Version: //p')" != "$COMPONENTIZE_PY_VERSION" ]; then
    say "installing componentize-py $COMPONENTIZE_PY_VERSION into $CLEANROOM_VENV"
    python3 -m venv "$CLEANROOM_VENV"
    "$CLEANROOM_VENV/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
  fi
}

# sev-snp-measure (the reference launch-measurement calculator) in the same virtualenv.
ensure_sev_snp_measure() {
  if [ "$("$CLEANROOM_VENV/bin/pip" show sev-snp-measure 2>/dev/null | sed -n 's/^Version: //p')" != "$SEV_SNP_MEASURE_VERSION" ]; then
    say "installing sev-snp-measure $SEV_SNP_MEASURE_VERSION into $CLEANROOM_VENV"
    [ -x "$CLEANROOM_VENV/bin/pip" ] || python3 -m venv "$CLEANROOM_VENV"
    "$CLEANROOM_VENV/bin/pip" install --quiet --disable-pip-version-check "sev-snp-measure==$SEV_SNP_MEASURE_VERSION"
  fi
}

# reproducible_flags LINK TARGET: build this clone through LINK, a fixed symlink to it, into
# the target directory TARGET, with every absolute path that could reach a binary (the
# sources, Cargo's registry, the target directory) remapped to a fixed name, so every clone on
# every machine with the pinned toolchain builds the same bytes, and the flags (which Cargo's
# cache is keyed on) do not change from one clone to the next. Sets REMAP_RUSTFLAGS (for
# CARGO_ENCODED_RUSTFLAGS) and REMAP_CFLAGS (for C compilers).
reproducible_flags() {
  ln -sfn "$CLEANROOM_ROOT" "$1"
  local cargo_home=${CARGO_HOME:-$HOME/.cargo} m rust=() c=()
  # Longer prefixes last: the last matching mapping wins.
  while IFS= read -r m; do
    rust+=("--remap-path-prefix=$m")
    c+=("-ffile-prefix-map=$m")
  done < <(printf '%s\n' "$1=/cleanroom" "$cargo_home=/cargo" "$2=/target" |
    awk -F= '{ print length($1) "\t" $0 }' | sort -n | cut -f2-)
  REMAP_RUSTFLAGS=$(IFS=$'\x1f'; echo "${rust[*]}")
  REMAP_CFLAGS="${c[*]}"
}

# json_get FILE KEY... prints a value from a JSON file.
json_get() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))
for k in sys.argv[2:]: v=v[k]
print(v)' "$@"; }

# Native GNU R (Debian's r-base-core), the reference the sandboxed R is compared with.
ensure_native_r() {
  command -v Rscript >/dev/null 2>&1 && return
  say "installing Debian's r-base-core (native R, to compare the sandbox's R against)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends r-base-core >/dev/null
}

# build_demo_tools PROFILE: cleanroomd (with the simulation feature: it is a cargo feature *and*
# a runtime flag, so a release build without it cannot be switched into simulation) and the
# CLI. Sets bin (their directory) and cleanroom (the CLI).
build_demo_tools() {
  cargo build --profile "$1" --locked -p cleanroomd -p cleanroom-cli --features cleanroomd/simulation
  bin="$CARGO_TARGET_DIR/$([ "$1" = dev ] && echo debug || echo "$1")"
  cleanroom="$bin/cleanroom"
}

# build_guest PACKAGE: a guest crate as a wasm32-wasip2 component (release, its own target
# directory so host builds do not rebuild it). Sets guest (its path).
build_guest() {
  cargo build --release --locked --target wasm32-wasip2 -p "$1" --target-dir "$CARGO_TARGET_DIR/wasm-guests"
  guest="$CARGO_TARGET_DIR/wasm-guests/wasm32-wasip2/release/${1//-/_}.wasm"
}

# start_demo_server BIN WORK: start cleanroomd from BIN with its data in WORK/server (simulation
# attestation), or wait for the one already starting whose console is CLEANROOM_DEMO_CONSOLE
# (scripts/test-image.sh boots the image in QEMU; it is reached at CLEANROOM_DEMO_SERVER).
# Exports CLEANROOM_SERVER and CLEANROOM_MEASUREMENT from cleanroomd's "listening" line, and
# stops the server it started when the script exits.
start_demo_server() {
  local bin=$1 work=$2 log listening address measurement
  # Port 0: the kernel picks a free one (nothing else on a busy machine can collide with it).
  local port=${CLEANROOM_DEMO_PORT:-0}
  if [ -n "${CLEANROOM_DEMO_CONSOLE:-}" ]; then
    log=$CLEANROOM_DEMO_CONSOLE
    demo_server_alive() { [ -z "${CLEANROOM_DEMO_PID:-}" ] || kill -0 "$CLEANROOM_DEMO_PID" 2>/dev/null; }
    say "waiting for cleanroomd in the image (console: $log)"
  else
    say "starting cleanroomd (INSECURE simulation attestation, data in $work/server)"
    log="$work/cleanroomd.log"
    # CLEANROOM_DEMO_SERVER_ARGS: more cleanroomd flags (e.g. --r-engine DIR).
    # shellcheck disable=SC2086
    "$bin/cleanroomd" --data-dir "$work/server" --listen "127.0.0.1:$port" --insecure-simulation \
      ${CLEANROOM_DEMO_SERVER_ARGS:-} 2>"$log" &
    DEMO_SERVER_PID=$!
    trap 'kill $DEMO_SERVER_PID 2>/dev/null || true; wait $DEMO_SERVER_PID 2>/dev/null || true' EXIT
    demo_server_alive() { kill -0 "$DEMO_SERVER_PID" 2>/dev/null; }
  fi
  # cleanroomd prints its "listening" line once the socket is bound: wait for that whole line
  # (it ends with the 64-digit enclave key), or for the process to die; no timing guess.
  until grep -aEq 'listening on .*enclave key [0-9a-f]{64}\)' "$log" 2>/dev/null; do
    demo_server_alive || { cat "$log"; exit 1; }
    sleep 0.1
  done
  # No pipes: each value is read from the whole line with parameter expansion.
  listening=$(grep -m1 -aE 'listening on .*enclave key [0-9a-f]{64}\)' "$log")
  echo "$listening"
  address=${listening#*listening on }
  export CLEANROOM_SERVER=${CLEANROOM_DEMO_SERVER:-${address%% *}}
  # The operator publishes the launch measurement; in simulation it is fixed.
  measurement=${listening#*measurement }
  export CLEANROOM_MEASUREMENT=${measurement%%,*}
}
