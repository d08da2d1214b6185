#!/usr/bin/env bash
# Build what the rig boots for one kernel flavour: vgpu_shim.ko against that
# kernel's headers (in target/rig/build/<kver>/) and the static guest binaries.
#   tests/rig/build.sh 6.1|6.12|debug [--module-only]
# debug builds against the debug kernel's cached tree (tests/rig/debug-kernel/), so
# the module is instrumented by KASAN, lockdep and kmemleak like the kernel.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/scripts/lib.sh"
flavour=${1:-6.1}
rig_kernel "$flavour"
kver=$RK_KVER
out=$RK_BUILD
mkdir -p "$out"
# Build from a private copy so two kernels never share object files.
rm -rf "$out/src"
mkdir -p "$out/src"
find "$top/kmod-shim" -maxdepth 1 -type f \( -name '*.[ch]' -o -name Kbuild -o -name Makefile \) \
	-exec cp {} "$out/src/" \;
blog=$out/build.log
# The rig's module has the test hooks (module parameters test_*, see
# docs/scheduler.md); builds for users (make, DKMS) do not.
if ! make -C "$out/src" KVER="$kver" KDIR="$RK_KDIR" VGPU_TEST_HOOKS=y >"$blog" 2>&1; then
	cat "$blog" >&2
	die "module build for $kver failed"
fi
if grep -qiE 'warning:' "$blog"; then
	grep -iE -A3 'warning:' "$blog" >&2
	die "module build for $kver has warnings"
fi
[ -f "$out/src/vgpu_shim.ko" ] || die "no vgpu_shim.ko after building for $kver"
# Every module the build makes (vgpu_shim, and e.g. a KUnit test module on a
# kernel with CONFIG_KUNIT) goes to the rig's /lib/vgpu/.
rm -f "$out"/*.ko
cp "$out"/src/*.ko "$out/"
log "built vgpu_shim.ko for $kver"
# The guest driver (guest-driver/, for L2 guests of vgpu-vmm: tests/rig/vmm.sh), same
# kernel, same rules: no warnings.
# (guest-driver/Makefile reuses kmod-shim/Makefile's rules: it copies the sources to
# BUILD_DIR and builds there.)
rm -rf "$out/guest-src" "$out/guest"
mkdir -p "$out/guest"
glog=$out/guest-build.log
if ! make -C "$top/guest-driver" KVER="$kver" KDIR="$RK_KDIR" BUILD_DIR="$out/guest-src" >"$glog" 2>&1; then
	cat "$glog" >&2
	die "guest driver build for $kver failed"
fi
if grep -qiE 'warning:' "$glog"; then
	grep -iE -A3 'warning:' "$glog" >&2
	die "guest driver build for $kver has warnings"
fi
cp "$out/guest-src/vgpu_guest.ko" "$out/guest/"
log "built vgpu_guest.ko for $kver"
[ "${2:-}" = --module-only ] && exit 0
(cd "$top" && cargo build -q --release --target x86_64-unknown-linux-musl \
	-p vgpu-rig-tests -p vgpu-mdev-manager -p vgpu-vmm -p vgpu-engine-client)
