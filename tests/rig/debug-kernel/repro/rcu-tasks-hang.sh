#!/usr/bin/env bash
# Show the debug kernel's RCU-tasks boot deadlock and its fix both ways
# (docs/reliability.md, "The debug boot hang, and its fix"):
#
#   tests/rig/debug-kernel/repro/rcu-tasks-hang.sh [BOOTS]    (default 2 boots of each)
#
# Builds two debug kernels in a scratch cache (sharing the ccache: minutes, not the cold
# build), both with rcu-tasks-widen-race.patch, a test-only patch that makes init sleep
# 100 ms between its look at the RCU-tasks kthread and the mutex, so the kthread always
# wins the race: "nofix" without patches/, "fix" with them. Each is booted BOOTS times
# without an initramfs: a boot that gets through ends in the "Unable to mount root fs"
# panic; one that does not within 120 s is sent an NMI (unknown_nmi_panic,
# panic_print=9: tasks and held locks) and counts as hung. Passes when every nofix
# boot hangs with init and the kthread both at tasks_gp_mutex, and every fix boot
# gets through. Consoles: target/rig/repro/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../../.." && pwd)
. "$top/scripts/lib.sh"
boots=${1:-2}
[[ $boots =~ ^[1-9][0-9]*$ ]] || die "usage: $0 [BOOTS]"
out=$top/target/rig/repro
scratch=$(mktemp -d "${TMPDIR:-/tmp}/vgpu-repro.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$out" "$scratch/cache"
real_cache=${VGPU_CACHE:-/var/cache/vgpu}
mkdir -p "$real_cache/ccache"
ln -s "$real_cache/ccache" "$scratch/cache/ccache"

# A copy of the build script's tree, with the chosen patches: build.sh finds
# scripts/lib.sh three levels up and hashes what patches/ holds.
tree() { # tree NAME WITH_FIXES
	local t=$scratch/$1
	mkdir -p "$t/scripts" "$t/tests/rig"
	ln -s "$top/scripts/lib.sh" "$t/scripts/lib.sh"
	cp -r "$here/.." "$t/tests/rig/debug-kernel"
	rm -rf "$t/tests/rig/debug-kernel/repro"
	[ "$2" = 1 ] || rm -f "$t/tests/rig/debug-kernel/patches/"*.patch
	cp "$here/rcu-tasks-widen-race.patch" "$t/tests/rig/debug-kernel/patches/9999-widen-race.patch"
	VGPU_CACHE=$scratch/cache "$t/tests/rig/debug-kernel/build.sh" | tail -n1
}

# boot KDIR LOG: 0 if the boot reached the root-fs panic, 1 if it hung (NMI dump in LOG)
boot() {
	local k=$1 lf=$2 m=$scratch/mon q i
	rm -f "$m.in" "$m.out"
	mkfifo "$m.in" "$m.out"
	qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 2 -nographic -no-reboot \
		-nodefaults -serial stdio -net none \
		-chardev pipe,id=mon,path="$m" -mon chardev=mon,mode=readline \
		-kernel "$k/bzImage" \
		-append "console=ttyS0 loglevel=7 panic=-1 unknown_nmi_panic panic_print=0x9" \
		</dev/null >"$lf" 2>&1 &
	q=$!
	cat "$m.out" >/dev/null &
	for i in $(seq 120); do
		sleep 1
		kill -0 "$q" 2>/dev/null || break
		grep -aq 'Unable to mount root' "$lf" && break
	done
	if ! grep -aq 'Unable to mount root' "$lf" && kill -0 "$q" 2>/dev/null; then
		echo nmi >"$m.in"
		for i in $(seq 90); do
			sleep 1
			kill -0 "$q" 2>/dev/null || break
		done
	fi
	kill "$q" 2>/dev/null || true
	wait "$q" 2>/dev/null || true
	grep -aq 'Unable to mount root' "$lf"
}

log "building the nofix kernel (widened race, without patches/)"
nofix=$(tree nofix 0)
log "building the fix kernel (widened race, with patches/)"
fix=$(tree fix 1)
bad=0
for n in $(seq "$boots"); do
	lf=$out/nofix-$n.log
	if boot "$nofix" "$lf"; then
		log "nofix boot $n: got through (the race did not deadlock): FAIL"
		bad=$((bad + 1))
	elif [ "$(grep -ac 'rcu_tasks.tasks_gp_mutex' "$lf")" -ge 2 ] &&
		grep -aq 'lock held by swapper/0/1' "$lf"; then
		log "nofix boot $n: hung; init and the RCU-tasks kthread both at tasks_gp_mutex (as expected)"
	else
		log "nofix boot $n: hung, but the NMI dump does not show the tasks_gp_mutex deadlock: FAIL"
		bad=$((bad + 1))
	fi
	lf=$out/fix-$n.log
	if boot "$fix" "$lf"; then
		log "fix boot $n: got through to the root-fs panic (as expected)"
	else
		log "fix boot $n: hung (console $lf): FAIL"
		bad=$((bad + 1))
	fi
done
[ "$bad" = 0 ] || die "$bad of $((2 * boots)) boots did not go as expected"
log "PASS: $boots nofix boots deadlocked, $boots fix boots got through"
