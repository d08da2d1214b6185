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
