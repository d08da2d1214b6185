# Shared helpers for vgpu's scripts (sourced, not run).
# shellcheck shell=bash
top=${top:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
RIG_DIR=${VGPU_RIG_DIR:-$top/target/rig}
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

log() { printf '[vgpu] %s\n' "$*" >&2; }
die() { printf '[vgpu] error: %s\n' "$*" >&2; exit 1; }

# kver_of 6.1|6.12 -> the Debian kernel release the rig uses for that flavour:
# whatever Debian's meta-package currently points at (the one whose headers
# scripts/setup installed).
kver_of() {
	local meta
	case "$1" in
	6.1) meta=linux-headers-amd64 ;;
	6.12) meta=linux-headers-6.12-amd64 ;;
	*) die "unknown kernel flavour '$1' (use 6.1 or 6.12)" ;;
	esac
	local dep
	dep=$(dpkg-query -W -f='${Depends}' "$meta" 2>/dev/null | tr ',' '\n' |
		sed -n 's/^ *linux-headers-\([^ ]*\).*/\1/p' | head -n1)
	[ -n "$dep" ] || dep=$(apt-cache depends "$meta" 2>/dev/null | sed -n 's/.*Depends: linux-headers-//p' | head -n1)
	[ -n "$dep" ] || die "cannot resolve the kernel behind $meta"
	printf '%s\n' "$dep"
}

# rig_kernel 6.1|6.12|debug — describe a rig kernel in RK_* variables:
#   RK_KVER   its release (uname -r)
#   RK_DIR    where it is: the image and lib/modules/<RK_KVER>/
#   RK_IMAGE  what QEMU boots: Debian's vmlinux via PVH; the debug kernel's bzImage
#             (a KASAN vmlinux crashes when entered via PVH, before KASAN is set up)
#   RK_KDIR   the tree out-of-tree modules build against
#   RK_TAG    a name for per-kernel build directories
#   RK_BUILD  that directory, $RIG_DIR/build/<RK_TAG>: tests/rig/build.sh leaves the
#             modules there (vgpu_shim.ko, ...), tests/rig/rig.sh packs them from there
# The debug kernel is tests/rig/debug-kernel/build.sh's cached build; it must exist.
rig_kernel() {
	case "$1" in
	debug)
		RK_DIR=$("$top/tests/rig/debug-kernel/build.sh" --dir) || exit 1
		RK_KVER=$(cat "$RK_DIR/kernelrelease")
		RK_IMAGE=$RK_DIR/bzImage
		RK_KDIR=$RK_DIR/build
		RK_TAG=$RK_KVER-$(basename "$RK_DIR")
		;;
	*)
		RK_KVER=$(kver_of "$1")
		RK_DIR=$RIG_DIR/kernels/$RK_KVER
		RK_IMAGE=$RK_DIR/vmlinux
		RK_KDIR=/lib/modules/$RK_KVER/build
		RK_TAG=$RK_KVER
		;;
	esac
	RK_BUILD=$RIG_DIR/build/$RK_TAG
}

# pack_modules <moddir> <destdir> <module>... — copy the named modules of a kernel
# tree (lib/modules/<kver>) and their dependencies (resolved with modinfo) into
# destdir as plain .ko files, and write destdir/modules.order, dependencies first.
# Modules built into that kernel (listed in <moddir>/modules.builtin, e.g. virtio_pci
# on 6.12, vfio on the debug kernel) are skipped: there is nothing to load.
pack_modules() {
	local moddir=$1 dest=$2
	shift 2
	mkdir -p "$dest"
	: >"$dest/modules.order"
	local -A _seen=()
	local -A _builtin=()
	local b
	if [ -f "$moddir/modules.builtin" ]; then
		while IFS= read -r b; do
			b=${b##*/}
			b=${b%%.ko*}
			_builtin[${b//-/_}]=1
		done <"$moddir/modules.builtin"
	fi
	_pack_one() {
		local m=$1 f dep
		[ -n "${_seen[$m]:-}" ] && return 0
		_seen[$m]=1
		[ -n "${_builtin[${m//-/_}]:-}" ] && return 0
		local alt=${m//_/-}	# kvm_amd is kvm-amd.ko
		f=$(find "$moddir/kernel" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" \
			-o -name "$alt.ko" -o -name "$alt.ko.xz" -o -name "$alt.ko.zst" \) | head -n1)
		[ -n "$f" ] || die "module $m not found in $moddir"
		for dep in $(modinfo -F depends "$f" | tr ',' ' '); do _pack_one "$dep"; done
		case "$f" in
		*.xz) xz -dc "$f" >"$dest/$m.ko" ;;
		*.zst) zstd -qdc "$f" >"$dest/$m.ko" ;;
		*) cp "$f" "$dest/$m.ko" ;;
		esac
		echo "$m" >>"$dest/modules.order"
	}
	local m
	for m in "$@"; do _pack_one "$m"; done
}
