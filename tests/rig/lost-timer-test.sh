#!/usr/bin/env bash
# Self-test of tests/rig/lost-timer.sh (rig.sh's judgement that a hung guest lost its timer
# interrupt, the one hang after RIG-BEGIN that is run again) on the NMI dump of the real
# hang (fixtures/lost-timer-6.12.log, trimmed) and on variants of it that must not match.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lost-timer.sh"
fix=$here/fixtures/lost-timer-6.12.log
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bad=0
# expect NAME WANT(0 match, 1 no match) FILE
expect() {
	local rc=0 out
	out=$(lost_timer "$3") || rc=$?
	if [ "$rc" = "$2" ]; then
		echo "ok - $1${out:+: $out}"
	else
		echo "not ok - $1: lost_timer returned $rc, want $2${out:+ ($out)}"
		bad=1
	fi
}
expect "the real hang (6.12 L1, every hrtimer 559 s overdue, idle in HLT)" 0 "$fix"
sed 's/RIP: 0010:pv_native_safe_halt/RIP: 0010:vgpu_worker_fn/' "$fix" >"$tmp/busy"
expect "the NMI hit a CPU running (not idle): a deadlock, not a lost interrupt" 1 "$tmp/busy"
sed -E 's/\[in -[0-9]+ to -[0-9]+/[in -30000000000 to -29000000000/' "$fix" >"$tmp/30s"
expect "hrtimers only 30 s overdue" 1 "$tmp/30s"
sed -E 's/\[in -[0-9]+ to -[0-9]+/[in -61000000000 to -60000000000/' "$fix" >"$tmp/61s"
expect "hrtimers 61 s overdue" 0 "$tmp/61s"
sed 's/\] cpu: 0$/] cpu: 1/' "$fix" >"$tmp/cpu1"
expect "the overdue timers are another CPU's" 1 "$tmp/cpu1"
sed '/Kernel panic - not syncing: NMI/d' "$fix" >"$tmp/nopanic"
expect "no NMI panic in the log" 1 "$tmp/nopanic"
exit $bad
