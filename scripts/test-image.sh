#!/usr/bin/env bash
# Boot the host image in QEMU (TCG: no SEV-SNP here) and run the study against it:
#
#   1. the development variant boots, cleanroomd starts inside it with the simulation
#      backend and its state on a virtio data disk, and scripts/demo.sh runs the whole study
#      (upload, grant, run, review, release, fetch, receipt and audit checks) through a
#      forwarded port; then the VM loses power and boots again: the same enclave identity
#      (unsealed from the disk), and the audit log St Mary's verified is still there and
#      extended consistently;
#   2. the production variant boots and refuses to start without SEV-SNP: it says why on the
#      console and powers off.
#
# Uses the debug cleanroomd the test suite builds (with the simulation feature); prints the
# boot time (QEMU start to cleanroomd listening).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"
ensure_rust

if ! command -v qemu-system-x86_64 >/dev/null; then
  say "installing qemu-system-x86 (to boot the image)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
fi

cargo build --locked -q -p cleanroomd --features cleanroomd/simulation
work="$CARGO_TARGET_DIR/image-test"
rm -rf "$work"
mkdir -p "$work"

# boot DIR LOG [PORT [DISK]]: QEMU on the image in DIR, console to LOG, the API forwarded to
# PORT, DISK as the virtio data disk.
boot() {
  local net=(-nic none)
  [ -n "${3:-}" ] && net=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$3-:7878" -device virtio-net-pci,netdev=n0)
  [ -n "${4:-}" ] && net+=(-drive "file=$4,if=virtio,format=raw")
  qemu-system-x86_64 -machine q35 -accel tcg -cpu max -m 2048 -smp 2 -no-reboot \
    -display none -monitor none -serial "file:$2" \
    -kernel "$1/vmlinuz" -initrd "$1/initrd.img" -append "$(cat "$1/cmdline")" \
    "${net[@]}" &
}

say "development image: booting it and running the study against it"
scripts/build-image.sh --variant development --data /dev/vda --out "$work/dev" --cleanroomd "$CARGO_TARGET_DIR/debug/cleanroomd"
# Two builds from the same inputs: the same initramfs, the same measurement.
scripts/build-image.sh --variant development --data /dev/vda --out "$work/dev-again" --cleanroomd "$CARGO_TARGET_DIR/debug/cleanroomd" >/dev/null 2>&1
cmp "$work/dev/initrd.img" "$work/dev-again/initrd.img"
cmp "$work/dev/manifest.json" "$work/dev-again/manifest.json" >/dev/null ||
  [ "$(grep '"measurement"' "$work/dev/manifest.json")" = "$(grep '"measurement"' "$work/dev-again/manifest.json")" ] ||
  { echo "two builds of the image measure differently" >&2; exit 1; }
echo "rebuilt: the same initramfs ($(sha256sum "$work/dev/initrd.img" | cut -c1-16)…) and measurement"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
disk="$work/data.img"
truncate -s 256M "$disk"
mkfs.ext4 -q -F "$disk"
started=$(date +%s%N)
boot "$work/dev" "$work/dev-console.log" "$port" "$disk"
qemu=$!
trap 'kill $qemu 2>/dev/null || true' EXIT
until grep -aEq 'listening on .*enclave key [0-9a-f]{64}\)' "$work/dev-console.log" 2>/dev/null; do
  kill -0 $qemu 2>/dev/null || { cat "$work/dev-console.log"; echo "the image stopped before cleanroomd listened" >&2; exit 1; }
  sleep 0.2
done
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
echo "booted to cleanroomd listening in $((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100)) s (TCG)"
CLEANROOM_DEMO_CONSOLE="$work/dev-console.log" CLEANROOM_DEMO_PID=$qemu \
  CLEANROOM_DEMO_SERVER="https://127.0.0.1:$port" CLEANROOM_DEMO_PROFILE=dev \
  CLEANROOM_DEMO_DIR="$work/study" scripts/demo.sh >"$work/study.log" 2>&1 ||
  { tail -40 "$work/study.log"; tail -20 "$work/dev-console.log"; echo "the study failed against the booted image" >&2; exit 1; }
tail -5 "$work/study.log"
listening() { grep -m1 -aoE 'listening on .*enclave key [0-9a-f]{64}\)' "$1"; }
before=$(listening "$work/dev-console.log")

say "the VM loses power and boots again on the same data disk"
kill -KILL $qemu
wait $qemu 2>/dev/null || true
boot "$work/dev" "$work/dev-console-2.log" "$port" "$disk"
qemu=$!
until grep -aEq 'listening on .*enclave key [0-9a-f]{64}\)' "$work/dev-console-2.log" 2>/dev/null; do
  kill -0 $qemu 2>/dev/null || { cat "$work/dev-console-2.log"; echo "the image did not come back" >&2; exit 1; }
  sleep 0.2
done
after=$(listening "$work/dev-console-2.log")
[ "${before#*enclave key }" = "${after#*enclave key }" ] ||
  { echo "the enclave identity changed across the reboot: $before / $after" >&2; exit 1; }
measurement=${after#*measurement }
CLEANROOM_SERVER="https://127.0.0.1:$port" CLEANROOM_MEASUREMENT=${measurement%%,*} \
  CLEANROOM_ACCEPT_INSECURE_SIMULATION=true \
  "$CARGO_TARGET_DIR/debug/cleanroom" audit verify --key "$work/study/keys/st_marys.json" >"$work/after-reboot.log" 2>&1 ||
  { cat "$work/after-reboot.log"; echo "the audit log did not survive the reboot" >&2; exit 1; }
grep -a "audit log verified" "$work/after-reboot.log"
echo "after the power loss: the same enclave identity, and the audit log extends the head St Mary's kept"
kill $qemu
wait $qemu 2>/dev/null || true

say "production image: without SEV-SNP it must refuse to start and power off"
scripts/build-image.sh --variant production --out "$work/prod" --cleanroomd "$CARGO_TARGET_DIR/debug/cleanroomd"
boot "$work/prod" "$work/prod-console.log"
qemu=$!
# -no-reboot: the power-off ends QEMU; give a slow machine minutes, not a guess of seconds.
for _ in $(seq 600); do kill -0 $qemu 2>/dev/null || break; sleep 0.5; done
if kill -0 $qemu 2>/dev/null; then
  tail -20 "$work/prod-console.log"
  echo "the production image did not power off without SEV-SNP" >&2
  exit 1
fi
grep -a "there is no /dev/sev-guest" "$work/prod-console.log"
grep -aq "powering off" "$work/prod-console.log"
if grep -aq "listening on" "$work/prod-console.log"; then
  echo "cleanroomd started in the production image without SEV-SNP" >&2
  exit 1
fi
echo "the production image refused to start without SEV-SNP and powered off"
