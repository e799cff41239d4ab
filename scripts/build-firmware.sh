#!/usr/bin/env bash
# Build the guest firmware: OVMF for SEV-SNP direct boot with measured kernel hashes
# (edk2's OvmfPkg/AmdSev/AmdSevX64.dsc), from Debian's edk2 source tarball pinned by SHA-256,
# with Debian's gcc, nasm and iasl. Prints the firmware's path; cached by content under
# ~/.cache/cleanroom/image.
#
#   scripts/build-firmware.sh
#
# Why build it: no Debian package ships the AmdSev variant (the `ovmf` package has OvmfPkgX64
# only, which has no kernel-hashes table, so a directly booted kernel, initramfs and command
# line would not be measured). One change to upstream: the AmdSev variant embeds a GRUB for
# booting encrypted disks with a secret injected at launch; we boot the kernel directly and
# never use it (and Debian's GRUB lacks the `sevsecret` module it needs), so it is left out.
set -euo pipefail
source "$(dirname "$0")/env.sh"

EDK2_VERSION=2025.02
EDK2_SHA256=b63b6053d6d89c74d9291f9e96fde1584be99e6fb9c169ba9511505129d6b049
# Debian's packaging of it (trixie): its patch series, which builds BaseTools without the
# brotli submodule Debian strips, and carries Debian's security fixes.
EDK2_DEBIAN=2025.02-8+deb13u1
EDK2_DEBIAN_SHA256=e2a7f6fc58640818416a028d6d5e9dfc255697a7cdc60c14566c236df6bd9b08
pool=https://deb.debian.org/debian/pool/main/e/edk2

cache=${CLEANROOM_IMAGE_CACHE:-$HOME/.cache/cleanroom/image}
# The output is named by everything that decides it: the source, this script and the tools.
# The compiler's version line, read without a pipe that could close early.
gcc_version=$(gcc --version 2>/dev/null || true)
gcc_version=${gcc_version%%$'\n'*}
key=$(printf '%s\n' "$EDK2_SHA256 $EDK2_DEBIAN_SHA256" "$(cat "$0")" "$gcc_version" | sha256sum)
key=${key:0:16}
out="$cache/OVMF.amdsev-$EDK2_VERSION-$key.fd"
if [ -f "$out" ]; then
  echo "$out"
  exit 0
fi

need=()
command -v nasm >/dev/null || need+=(nasm)
command -v iasl >/dev/null || need+=(acpica-tools)
command -v gcc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
command -v python3 >/dev/null || need+=(python3)
[ -f /usr/include/uuid/uuid.h ] || need+=(uuid-dev)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]} (to build the firmware)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

mkdir -p "$cache"
# fetch NAME SHA256: a pinned file from Debian's pool, into the cache.
fetch() {
  local file="$cache/$1"
  if [ ! -f "$file" ] || ! echo "$2  $file" | sha256sum -c --quiet - 2>/dev/null; then
    say "downloading $1"
    curl -fsSL -o "$file.tmp" "$pool/$1"
    echo "$2  $file.tmp" | sha256sum -c --quiet - ||
      { echo "$1: checksum mismatch, refusing to build from it" >&2; exit 1; }
    mv "$file.tmp" "$file"
  fi
  echo "$file"
}
tarball=$(fetch "edk2_${EDK2_VERSION}.orig.tar.xz" "$EDK2_SHA256")
debian=$(fetch "edk2_${EDK2_DEBIAN}.debian.tar.xz" "$EDK2_DEBIAN_SHA256")

# A fixed build directory: edk2 records paths in what it builds.
work="$cache/edk2-build"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
say "building OVMF (AmdSevX64, RELEASE) from edk2 $EDK2_VERSION"
tar xJf "$tarball" -C "$work"
src="$work/edk2-$EDK2_VERSION"
tar xJf "$debian" -C "$src"
while read -r patch; do
  patch -s -p1 -d "$src" <"$src/debian/patches/$patch"
done <"$src/debian/patches/series"
# Direct boot only: no GRUB in the firmware volume, no GRUB pre-build step.
sed -i '/OvmfPkg\/AmdSev\/Grub\/Grub.inf/d' "$src/OvmfPkg/AmdSev/AmdSevX64.fdf" "$src/OvmfPkg/AmdSev/AmdSevX64.dsc"
sed -i '/PREBUILD.*grub.sh/d' "$src/OvmfPkg/AmdSev/AmdSevX64.dsc"
(
  cd "$src"
  export PYTHON_COMMAND=python3 WORKSPACE="$src"
  make -s -C BaseTools -j "$(nproc)" >"$work/basetools.log" 2>&1 ||
    { tail -40 "$work/basetools.log" >&2; exit 1; }
  set +u
  # shellcheck disable=SC1091
  source edksetup.sh >/dev/null
  set -u
  build -q -a X64 -t GCC5 -b RELEASE -n "$(nproc)" -p OvmfPkg/AmdSev/AmdSevX64.dsc \
    >"$work/build.log" 2>&1 || { tail -60 "$work/build.log" >&2; exit 1; }
)
cp "$src/Build/AmdSev/RELEASE_GCC5/FV/OVMF.fd" "$out.tmp"
mv "$out.tmp" "$out"
say "built $out ($(du -h "$out" | cut -f1))"
echo "$out"
