#!/usr/bin/env bash
# The external services a cleanroomd cluster runs on, started for tests and benchmarks on
# loopback: PostgreSQL (Debian's package) and an S3-compatible object store (s3s-fs, built
# from crates.io: it installs on a fresh machine with the toolchain we already have, and is
# the S3 protocol layer RustFS itself is built on; Debian's Ceph gateway needs a whole
# cluster).
#
#   scripts/cluster-services.sh start DIR   # prints the environment the tests read
#   scripts/cluster-services.sh stop DIR
set -euo pipefail
source "$(dirname "$0")/env.sh"

S3S_VERSION=0.17.0
PG_PORT=${CLEANROOM_PG_PORT:-55432}
S3_PORT=${CLEANROOM_S3_PORT:-59000}
S3_ACCESS_KEY=cleanroom-test
S3_SECRET_KEY=cleanroom-test-secret

ensure_postgres() {
  pg_bin >/dev/null && return
  say "installing Debian's postgresql"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

# s3s-fs, built once per version into the cache (about 2.5 minutes on 2 cores).
ensure_s3s_fs() {
  local root="$HOME/.cache/cleanroom-s3s/$S3S_VERSION"
  if [ ! -x "$root/bin/s3s-fs" ]; then
    say "building s3s-fs $S3S_VERSION from crates.io (cached in $root)"
    CARGO_TARGET_DIR="$HOME/.cache/cleanroom-s3s/target" \
      cargo install s3s-fs@"$S3S_VERSION" --features binary --locked --root "$root" >&2
  fi
  echo "$root/bin/s3s-fs"
}

# The newest installed PostgreSQL's programs (no pipeline: a glob and a comparison).
pg_bin() {
  local best="" d v
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] || continue
    v=${d#/usr/lib/postgresql/}; v=${v%/bin}
    if [ -z "$best" ] || [ "${v%%.*}" -gt "${best%%.*}" ]; then best=$v; fi
  done
  [ -n "$best" ] || return 1
  echo "/usr/lib/postgresql/$best/bin"
}

# Wait until `check` succeeds (each try is bounded), or fail after ~60 s.
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 120); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "$what did not come up" >&2
  return 1
}

start() {
  local dir=$1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # The database runs as its own user, who must reach the directory (not under /root).
  chmod 755 "$dir"
  ensure_postgres
  local s3s; s3s=$(ensure_s3s_fs)
  local bin; bin=$(pg_bin)
  # PostgreSQL refuses to run as root: as its own user, where Debian's package made one.
  local as=()
  if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
  rm -rf "$dir/pg" "$dir/s3"
  mkdir -p "$dir/pg" "$dir/s3"
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir/pg"; chmod 700 "$dir/pg"; fi
  "${as[@]}" "$bin/initdb" -D "$dir/pg/data" -U postgres --auth=trust -E UTF8 >"$dir/pg/initdb.log" 2>&1
  "${as[@]}" "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w \
    -o "-p $PG_PORT -k $dir/pg -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=on" \
    start >/dev/null
  "$s3s" --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_ACCESS_KEY" \
    --secret-key "$S3_SECRET_KEY" "$dir/s3" >"$dir/s3.log" 2>&1 &
  echo $! >"$dir/s3.pid"
  wait_for "s3s-fs on port $S3_PORT" bash -c "exec 3<>/dev/tcp/127.0.0.1/$S3_PORT"
  cat <<ENV
export CLEANROOM_POSTGRES_ADMIN_URL='host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres'
export CLEANROOM_S3_ENDPOINT='http://127.0.0.1:$S3_PORT'
export CLEANROOM_S3_ROOT='$dir/s3'
export CLEANROOM_S3_ACCESS_KEY='$S3_ACCESS_KEY'
export CLEANROOM_S3_SECRET_KEY='$S3_SECRET_KEY'
ENV
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  if [ -f "$dir/s3.pid" ]; then kill "$(cat "$dir/s3.pid")" 2>/dev/null || true; rm -f "$dir/s3.pid"; fi
  local bin
  if [ -d "$dir/pg/data" ] && bin=$(pg_bin); then
    local as=()
    if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
    "${as[@]}" "$bin/pg_ctl" -D "$dir/pg/data" -m fast stop >/dev/null 2>&1 || true
  fi
}

case "${1:-}" in
  start) start "${2:?usage: $0 start DIR}" ;;
  stop) stop "${2:?usage: $0 stop DIR}" ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
