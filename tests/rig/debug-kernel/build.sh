#!/usr/bin/env bash
# Build the rig's debug kernel (KASAN, lockdep, kmemleak, DEBUG_OBJECTS, fault
# injection, KUnit, gcov) once, from Debian's linux-source-6.1, and cache it
# outside the clone:
#
#   tests/rig/debug-kernel/build.sh          build unless cached; print the cache dir
#   tests/rig/debug-kernel/build.sh --dir    print the cache dir, or fail if not built
#   tests/rig/debug-kernel/build.sh --force  rebuild even if cached
#
# The patches in patches/ (fixes from upstream that Debian's 6.1 lacks and that the
# rig needs, each saying why) are applied in name order after unpacking.
#
# Cache: ${VGPU_CACHE:-/var/cache/vgpu}/debug-kernel/<hash>/, where <hash> covers
# debug.config, the patches, this script and the linux-source-6.1 package version, holding
#   bzImage  System.map  config  kernelrelease  build-info  build.log
#   build/                      headers + generated files for out-of-tree modules
#                               (what Debian's linux-headers package holds):
#                               make -C <dir>/build M=$PWD modules
#   lib/modules/<kernelrelease>/  the few =m modules, modules.builtin, modules.dep
# The build runs in a temporary directory next to the cache and is renamed into
# place only when complete, so an interrupted build never leaves a half cache;
# a lock serialises concurrent callers. Uses ccache when installed. A cold build
# takes minutes on 2 cores (see docs/reliability.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)
. "$top/scripts/lib.sh"

mode=build
case "${1:-}" in
"") ;;
--dir) mode=dir ;;
--force) mode=force ;;
*) die "usage: $0 [--dir|--force]" ;;
esac

frag=$here/debug.config
tarball=/usr/src/linux-source-6.1.tar.xz
srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null) ||
	die "linux-source-6.1 is not installed (run scripts/setup)"
[ -f "$tarball" ] || die "$tarball missing (reinstall linux-source-6.1)"
patches=("$here"/patches/*.patch)
[ -e "${patches[0]}" ] || patches=()
hash=$({
	cat "$frag" "$here/build.sh" ${patches[@]+"${patches[@]}"}
	echo "linux-source-6.1 $srcver"
} | sha256sum | cut -c1-16)
cache=${VGPU_CACHE:-/var/cache/vgpu}/debug-kernel
dest=$cache/$hash

if [ "$mode" != force ] && [ -f "$dest/bzImage" ]; then
	echo "$dest"
	exit 0
fi
[ "$mode" = dir ] && die "debug kernel $hash not built yet: run tests/rig/debug-kernel/build.sh (or scripts/setup)"

mkdir -p "$cache"
exec 9>"$cache/.lock"
if ! flock -n 9; then
	log "debug kernel: waiting for another build to finish"
	flock 9
fi
if [ "$mode" != force ] && [ -f "$dest/bzImage" ]; then
	echo "$dest"
	exit 0
fi
# We hold the lock: any other temporary directory is an interrupted build.
rm -rf "$cache"/.build-*
tmp=$(mktemp -d "$cache/.build-$hash.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

jobs=${VGPU_JOBS:-$(nproc)}
export KBUILD_BUILD_USER=vgpu KBUILD_BUILD_HOST=rig
export KBUILD_BUILD_TIMESTAMP="linux-source-6.1 $srcver"
if [ -d /usr/lib/ccache ]; then
	export PATH=/usr/lib/ccache:$PATH
	export CCACHE_DIR=${VGPU_CACHE:-/var/cache/vgpu}/ccache CCACHE_BASEDIR=$tmp CCACHE_NOHASHDIR=1
	export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-4G}
	ccache -z >/dev/null 2>&1 || true
fi

t0=$(date +%s)
log "debug kernel $hash: unpacking linux-source-6.1 $srcver"
src=$tmp/src obj=$tmp/obj out=$tmp/out
mkdir -p "$src" "$obj" "$out"
tar -xJf "$tarball" -C "$src" --strip-components=1
for p in ${patches[@]+"${patches[@]}"}; do
	log "debug kernel $hash: applying ${p##*/}"
	patch -p1 -s -d "$src" <"$p" || die "debug kernel: ${p##*/} does not apply to linux-source-6.1 $srcver"
done
blog=$out/build.log
kmake() { make -C "$src" O="$obj" "$@" >>"$blog" 2>&1 || {
	tail -n 60 "$blog" >&2
	cp "$blog" "$cache/failed-build.log"
	die "debug kernel: make $* failed (log: $cache/failed-build.log)"
}; }

kmake x86_64_defconfig
"$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$frag" >>"$blog" 2>&1
kmake olddefconfig
# Every line of the fragment must survive olddefconfig: a symbol that a missing
# dependency silently dropped would leave a checker (or a rig need) out.
lost=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=*)
		grep -qxF "$line" "$obj/.config" && continue
		sym=${line%%=*}
		;;
	"# CONFIG_"*" is not set")
		sym=${line#\# }
		sym=${sym%% *}
		grep -q "^$sym=" "$obj/.config" || continue
		;;
	*) continue ;;
	esac
	printf '[vgpu]   %s  ->  %s\n' "$line" "$(grep -E "^$sym=|^# $sym is not set" "$obj/.config" || echo 'absent')" >&2
	lost=$((lost + 1))
done <"$frag"
[ "$lost" = 0 ] || die "debug kernel: $lost line(s) of $frag did not survive olddefconfig"

log "debug kernel $hash: building (-j$jobs; about 11 min on 2 idle cores)"
kmake -j"$jobs" bzImage modules
krel=$(cat "$obj/include/config/kernel.release")
kmake INSTALL_MOD_PATH="$out" INSTALL_MOD_STRIP=1 modules_install
rm -f "$out/lib/modules/$krel/build" "$out/lib/modules/$krel/source"
ln -s ../../../build "$out/lib/modules/$krel/build"

# The out-of-tree module build tree, as scripts/package/builddeb assembles the
# linux-headers package: sources' Makefiles, include/ and scripts/, plus the
# generated headers, Module.symvers, host tools and objtool from the object tree.
(
	cd "$src"
	find . arch/x86 -maxdepth 1 -name 'Makefile*'
	find include scripts -type f -o -type l
	find arch/x86 -name Kbuild.platforms -o -name Platform
	find $(find arch/x86 -name include -o -name scripts -type d) -type f
) >"$tmp/hdrsrc"
(
	cd "$obj"
	[ -x tools/objtool/objtool ] && echo tools/objtool/objtool
	find arch/x86/include Module.symvers include scripts -type f
) >"$tmp/hdrobj"
mkdir -p "$out/build"
tar -c -f - -C "$src" -T "$tmp/hdrsrc" | tar -xf - -C "$out/build"
tar -c -f - -C "$obj" -T "$tmp/hdrobj" | tar -xf - -C "$out/build"
cp "$obj/.config" "$out/build/.config"

cp "$obj/arch/x86/boot/bzImage" "$obj/System.map" "$out/"
cp "$obj/.config" "$out/config"
echo "$krel" >"$out/kernelrelease"

# Smoke test: a trivial module builds against the new tree.
mkdir -p "$tmp/smoke"
printf '#include <linux/module.h>\nMODULE_LICENSE("GPL");\n' >"$tmp/smoke/smoke.c"
echo 'obj-m := smoke.o' >"$tmp/smoke/Kbuild"
make -C "$out/build" M="$tmp/smoke" modules >>"$blog" 2>&1 ||
	die "debug kernel: an out-of-tree module does not build against $out/build (see $blog)"

secs=$(($(date +%s) - t0))
{
	echo "hash=$hash"
	echo "source=linux-source-6.1 $srcver"
	echo "kernelrelease=$krel"
	echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "build_seconds=$secs"
	echo "jobs=$jobs nproc=$(nproc) load_at_end=$(cut -d' ' -f1-3 /proc/loadavg)"
	[ -n "${CCACHE_DIR:-}" ] && echo "ccache=$(ccache -s 2>/dev/null | tr -s ' ' | grep -iE 'hits|misses' | tr '\n' ';')"
} >"$out/build-info"
[ -d "$dest" ] && mv -T "$dest" "$tmp/old"	# --force
mv -T "$out" "$dest"
log "debug kernel $hash built in $((secs / 60)) min $((secs % 60)) s: $dest"
echo "$dest"
