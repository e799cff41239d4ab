#!/usr/bin/env bash
# Build the host image: the firmware, a pinned Debian kernel, an initramfs holding only
# cleanroom-init, cleanroomd, the C libraries they link and the drivers they need, the kernel
# command line, and the manifest with the launch measurement.
#
#   scripts/build-image.sh [--variant production|development] [--vcpus N] [--vcpu-type T]
#                          [--ip A.B.C.D/N --gateway A.B.C.D] [--data /dev/vda]
#                          [--key operator.json] [--out DIR]
#
# The development variant runs the INSECURE simulation backend (for the QEMU boot test):
# it has a different command line, hence a different, clearly labelled measurement.
# Everything is cached by content; two builds from the same inputs give the same initramfs
# and the same measurement.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CLEANROOM_ROOT"

variant=production vcpus=2 vcpu_type=epyc-v4 key="" out="$CARGO_TARGET_DIR/image"
ip=10.0.2.15/24 gateway=10.0.2.2 cleanroomd="" data=""
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) variant=$2; shift 2 ;;
    --vcpus) vcpus=$2; shift 2 ;;
    --vcpu-type) vcpu_type=$2; shift 2 ;;
    --ip) ip=$2; shift 2 ;;
    --gateway) gateway=$2; shift 2 ;;
    # The ext4 disk for sealed state (without it, state is in RAM and lost at power-off).
    --data) data=$2; shift 2 ;;
    --key) key=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    # A cleanroomd binary to use instead of building one (tests pass their debug build).
    --cleanroomd) cleanroomd=$2; shift 2 ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
case "$variant" in production | development) ;; *) echo "--variant production|development" >&2; exit 2 ;; esac

# The kernel: Debian bookworm's, pinned by version and SHA-256 (it has CONFIG_SEV_GUEST).
KERNEL_ABI=6.1.0-56-amd64
KERNEL_VERSION=6.1.192-2
KERNEL_SHA256=a86e2049672f52354c4536a089203b6c82639420424d31c91cf31a181fd4d8f1
# Drivers, dependencies first: virtio PCI, network, block, ext4 for the data disk, the SNP
# guest device.
MODULES="drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko
drivers/virtio/virtio_pci_legacy_dev.ko drivers/virtio/virtio_pci_modern_dev.ko
drivers/virtio/virtio_pci.ko net/core/failover.ko drivers/net/net_failover.ko
drivers/net/virtio_net.ko drivers/block/virtio_blk.ko lib/crc16.ko fs/mbcache.ko
fs/jbd2/jbd2.ko crypto/crc32c_generic.ko fs/ext4/ext4.ko
drivers/virt/coco/sev-guest/sev-guest.ko"

cache=${CLEANROOM_IMAGE_CACHE:-$HOME/.cache/cleanroom/image}
mkdir -p "$cache" "$out"
deb="$cache/linux-image-${KERNEL_ABI}_${KERNEL_VERSION}_amd64.deb"
if [ ! -f "$deb" ] || ! echo "$KERNEL_SHA256  $deb" | sha256sum -c --quiet - 2>/dev/null; then
  say "downloading the kernel (linux-image-$KERNEL_ABI $KERNEL_VERSION)"
  if ! (cd "$cache" && apt-get download "linux-image-$KERNEL_ABI=$KERNEL_VERSION" >/dev/null 2>&1); then
    # A fresh machine may have no package lists yet.
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    (cd "$cache" && apt-get download "linux-image-$KERNEL_ABI=$KERNEL_VERSION" >/dev/null 2>&1) || true
  fi
  [ -f "$deb" ] || { echo "cannot download linux-image-$KERNEL_ABI=$KERNEL_VERSION" >&2; exit 1; }
  echo "$KERNEL_SHA256  $deb" | sha256sum -c --quiet - ||
    { echo "kernel package checksum mismatch: refusing it" >&2; rm -f "$deb"; exit 1; }
fi

firmware=$(scripts/build-firmware.sh)
ensure_rust
cargo build --locked -q -p cleanroom-cli
cleanroom="$CARGO_TARGET_DIR/debug/cleanroom"
# The image's own binaries are built reproducibly, in a target directory of their own (as
# scripts/build-sql.sh builds the SQL engine), so every clone builds the same bytes.
build="$CARGO_TARGET_DIR/image-build"
mkdir -p "$build"
reproducible_flags "$build/src" "$build/target"
image_cargo() {
  CARGO_ENCODED_RUSTFLAGS="$REMAP_RUSTFLAGS" \
    cargo build --locked -q --release --manifest-path "$build/src/Cargo.toml" \
    --target-dir "$build/target" "$@"
}
say "building cleanroom-init"
image_cargo -p cleanroom-init
init="$build/target/release/cleanroom-init"
if [ -z "$cleanroomd" ]; then
  say "building cleanroomd (release; the simulation backend only in the development variant)"
  if [ "$variant" = development ]; then
    image_cargo -p cleanroomd --features cleanroomd/simulation
  else
    image_cargo -p cleanroomd
  fi
  cleanroomd="$build/target/release/cleanroomd"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/kernel"
cp "$work/kernel/boot/vmlinuz-$KERNEL_ABI" "$out/vmlinuz"

root="$work/root"
mkdir -p "$root/bin" "$root/etc/cleanroom" "$root/lib/modules/cleanroom" "$root/proc" \
  "$root/sys" "$root/tmp" "$root/data"
install -m 755 "$init" "$root/init"
install -m 755 "$cleanroomd" "$root/bin/cleanroomd"
# The C libraries both link, at the paths the loader looks for them.
for lib in $( (ldd "$cleanroomd"; ldd "$init") | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
: >"$root/etc/cleanroom/modules"
for m in $MODULES; do
  cp "$work/kernel/lib/modules/$KERNEL_ABI/kernel/$m" "$root/lib/modules/cleanroom/"
  basename "$m" >>"$root/etc/cleanroom/modules"
done
"$cleanroom" image initramfs "$root" -o "$out/initrd.img" >/dev/null

cmdline="console=ttyS0 panic=-1 cleanroom.variant=$variant cleanroom.ip=$ip cleanroom.gateway=$gateway"
[ -n "$data" ] && cmdline="$cmdline cleanroom.data=$data"
echo "$cmdline" >"$out/cmdline"
cp "$firmware" "$out/OVMF.fd"
sign=()
[ -n "$key" ] && sign=(--key "$key" -o "$out/image-manifest.json")
"$cleanroom" image measure --json --firmware "$out/OVMF.fd" --kernel "$out/vmlinuz" \
  --initrd "$out/initrd.img" --cmdline "$cmdline" --vcpus "$vcpus" --vcpu-type "$vcpu_type" \
  --variant "$variant" --built-with "rustc=$(rustc --version | cut -d' ' -f2)" \
  --built-with "linux-image-$KERNEL_ABI=$KERNEL_VERSION" --built-with "edk2=2025.02-8+deb13u1" \
  "${sign[@]}" >"$out/manifest.json"
measurement=$(grep -m1 '"measurement"' "$out/manifest.json")
say "image in $out ($variant): vmlinuz $(du -h "$out/vmlinuz" | cut -f1), initrd.img $(du -h "$out/initrd.img" | cut -f1), OVMF.fd"
echo "measurement: ${measurement#*: }"
