#!/usr/bin/env bash
# Kernel coding style for kmod-shim/ and guest-driver/ with the kernel's own checkpatch.pl
# (unpacked from linux-source-6.1 by scripts/setup). Errors and warnings fail;
# the ignores below are deliberate:
#   LINUX_VERSION_CODE - an out-of-tree module that supports 6.1 and 6.12 must switch on it
#   FILE_PATH_CHANGES  - no MAINTAINERS file in an out-of-tree module
#   SPDX_LICENSE_TAG   - checked by hand: every file carries one
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/lib.sh"
cp=$RIG_DIR/ksrc/scripts/checkpatch.pl
[ -f "$cp" ] || die "checkpatch.pl missing: run scripts/setup"
files=$(find "$top/kmod-shim" "$top/guest-driver" -maxdepth 1 -name '*.[ch]' | sort)
[ -n "$files" ] || die "no sources in kmod-shim/ or guest-driver/"
# shellcheck disable=SC2086
perl "$cp" --no-tree --terse --show-types -f $files \
	--ignore LINUX_VERSION_CODE,FILE_PATH_CHANGES,SPDX_LICENSE_TAG >"$RIG_DIR/checkpatch.log" 2>&1 || true
if grep -qE ': (ERROR|WARNING):' "$RIG_DIR/checkpatch.log"; then
	grep -E ': (ERROR|WARNING):' "$RIG_DIR/checkpatch.log" >&2
	die "checkpatch found problems"
fi
log "checkpatch clean ($(echo "$files" | wc -l) files)"
