#!/usr/bin/env bash
# Line coverage of vgpu_shim by one rig scenario, on the debug kernel (CONFIG_GCOV_KERNEL):
#
#   tests/rig/coverage.sh [rig.sh options] -- <guest command> [args...]
#   e.g. tests/rig/coverage.sh --smp 2 -- vgpu-rig-tests sysfuzz --ops 20000
#
# Builds the module with GCOV_PROFILE=y (this build only) in
# target/rig/build/<debug tag>-gcov/, boots the debug rig with it, has the guest print
# the module's .gcda files after the command (base64 and md5, with the console quiet),
# checks and decodes them next to the build's .gcno files, and runs gcov: a line
# coverage table per file and in all, and the annotated sources in
# target/rig/coverage/*.c.gcov. The gcov data of a module outlives its unload
# (gcov_persist=1), so the scenario may unload it as the suites do.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/scripts/lib.sh"

opts=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
	opts+=("$1")
	shift
done
[ "${1:-}" = -- ] || die "usage: coverage.sh [rig.sh options] -- <guest command> [args...]"
shift
[ $# -gt 0 ] || die "no guest command given"

rig_kernel debug
gdir=$RIG_DIR/build/$RK_TAG-gcov
cov=$RIG_DIR/coverage
command -v gcov >/dev/null || die "gcov missing (apt-get install gcc)"

# The normal debug build first (guest binaries, and the path rig.sh boots from).
"$top/tests/rig/build.sh" debug
rm -rf "$gdir"
mkdir -p "$gdir/src"
find "$top/kmod-shim" -maxdepth 1 -type f \( -name '*.[ch]' -o -name Kbuild -o -name Makefile \) \
	-exec cp {} "$gdir/src/" \;
if ! make -C "$gdir/src" KVER="$RK_KVER" KDIR="$RK_KDIR" GCOV_PROFILE=y >"$gdir/build.log" 2>&1; then
	cat "$gdir/build.log" >&2
	die "instrumented module build failed"
fi
ls "$gdir"/src/*.gcno >/dev/null 2>&1 || die "no .gcno files: is GCOV_PROFILE honoured by $RK_KDIR?"

# rig.sh boots build/<tag>/vgpu_shim.ko: the instrumented one for this boot only.
ko=$RK_BUILD/vgpu_shim.ko
cp "$ko" "$gdir/vgpu_shim.ko.normal"
cp "$gdir/src/vgpu_shim.ko" "$ko"
trap 'cp "$gdir/vgpu_shim.ko.normal" "$ko"' EXIT

# shellcheck disable=SC2016 # expanded by the guest's shell
dump='"$@"; rc=$?
echo 1 >/proc/sys/kernel/printk
for f in $(find /sys/kernel/debug/gcov -name "vgpu_*.gcda"); do
	echo "GCDA-BEGIN $(basename "$f") $(md5sum <"$f" | cut -d" " -f1)"
	base64 "$f"
	echo "GCDA-END"
done
exit $rc'
rc=0
"$top/tests/rig/rig.sh" --kernel debug --no-build --name coverage "${opts[@]}" -- \
	sh -c "$dump" sh "$@" >"$gdir/rig.out" 2>&1 || rc=$?
grep -avE '^(GCDA-BEGIN .*|GCDA-END|[A-Za-z0-9+/=]{1,80})$' "$gdir/rig.out" || true
logf=$RIG_DIR/logs/coverage-$RK_KVER.log
cp "$gdir/vgpu_shim.ko.normal" "$ko"
trap - EXIT

# Decode: each file's lines between its markers, checked against its md5.
n=0
while read -r _ name sum; do
	out=$gdir/src/$name
	sed -n "/^GCDA-BEGIN $name /,/^GCDA-END$/p" "$logf" | sed '1d;$d' | base64 -d >"$out" ||
		die "cannot decode $name from $logf"
	[ "$(md5sum <"$out" | cut -d' ' -f1)" = "$sum" ] || die "$name: md5 mismatch (console garbled?)"
	n=$((n + 1))
done < <(grep -a '^GCDA-BEGIN ' "$logf")
[ "$n" -gt 0 ] || die "no .gcda files in $logf (did the scenario load the module?)"

rm -rf "$cov"
mkdir -p "$cov"
# The sources of the module that ran (a .gcda each): not, e.g., the KUnit module's.
srcs=$(cd "$gdir/src" && for f in *.gcda; do echo "${f%.gcda}.c"; done)
# shellcheck disable=SC2086 # one word per source file
(cd "$gdir/src" && gcov -o . $srcs) >"$cov/gcov.txt" 2>&1 || true
mv "$gdir"/src/*.gcov "$cov/" 2>/dev/null || true
awk '
	/^File .*\.c'"'"'$/ { f = $2; gsub("'"'"'", "", f); sub(".*/", "", f); next }
	/^Lines executed:/ && f != "" {
		split($2, a, ":"); pct = a[2]; sub("%", "", pct); lines = $4
		hit = int(pct * lines / 100 + 0.5)
		printf "%-16s %6.2f%% of %5d lines\n", f, pct, lines
		th += hit; tl += lines; f = ""
	}
	END { if (tl) printf "%-16s %6.2f%% of %5d lines\n", "total", 100 * th / tl, tl }
' "$cov/gcov.txt" | tee "$cov/summary.txt"
log "coverage of vgpu_shim: $cov/summary.txt, annotated sources in $cov/ (scenario exit status $rc)"
exit "$rc"
