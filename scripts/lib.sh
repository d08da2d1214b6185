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

# pack_modules <moddir> <destdir> <module>... — copy the named modules of a kernel
# tree (lib/modules/<kver>) and their dependencies (resolved with modinfo) into
# destdir as plain .ko files, and write destdir/modules.order, dependencies first.
pack_modules() {
	local moddir=$1 dest=$2
	shift 2
	mkdir -p "$dest"
	: >"$dest/modules.order"
	local -A _seen=()
	_pack_one() {
		local m=$1 f dep
		[ -n "${_seen[$m]:-}" ] && return 0
		_seen[$m]=1
		f=$(find "$moddir/kernel" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" \) | head -n1)
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
