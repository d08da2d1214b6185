#!/usr/bin/env bash
# Self-test of tests/rig/lost-timer.sh (rig.sh's judgement that the emulator lost a hung
# guest's interrupt, the one hang after RIG-BEGIN that is run again) on the two real hangs
# and on variants of them that must not match: the guest's NMI dump of the first
# (fixtures/lost-timer-6.12.log, trimmed; judged by lost_timer) and QEMU's view of the
# second, a CI run's (fixtures/lost-irq-6.12.log: the monitor's `info lapic 0` and
# `info registers -a` at the hang; judged by lost_irq through lost_interrupt).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lost-timer.sh"
fix=$here/fixtures/lost-timer-6.12.log
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bad=0
# expect NAME WANT(0 match, 1 no match) FILE [JUDGE]: JUDGE (default lost_timer) on FILE
expect() {
	local rc=0 out judge=${4:-lost_timer}
	out=$($judge "$3") || rc=$?
	if [ "$rc" = "$2" ]; then
		echo "ok - $1${out:+: $out}"
	else
		echo "not ok - $1: $judge returned $rc, want $2${out:+ ($out)}"
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

irq=$here/fixtures/lost-irq-6.12.log
expect "the CI hang (6.12 L1 halted 600 s, IF=1, vector 236 in IRR, PPR 0x10)" 0 "$irq" lost_interrupt
expect "the first hang's NMI dump, through lost_interrupt" 0 "$fix" lost_interrupt
sed 's/RFL=00000216/RFL=00000016/' "$irq" >"$tmp/if0"
expect "interrupts off (IF=0): a CPU may halt with IRR pending" 1 "$tmp/if0" lost_interrupt
sed 's/ II=0 / II=1 /' "$irq" >"$tmp/shadow"
expect "in an interrupt shadow (II=1)" 1 "$tmp/shadow" lost_interrupt
sed 's/ HLT=1$/ HLT=0/' "$irq" >"$tmp/running"
expect "the CPU is running (HLT=0)" 1 "$tmp/running" lost_interrupt
sed 's/^\(# monitor: IRR.\).*/\1 (none)/' "$irq" >"$tmp/noirr"
expect "nothing in IRR" 1 "$tmp/noirr" lost_interrupt
sed 's/ PPR 0x10$/ PPR 0xe0/' "$irq" >"$tmp/ppr"
expect "PPR 0xe0 masks vector 236 (same priority class)" 1 "$tmp/ppr" lost_interrupt
sed 's/ PPR 0x10$/ PPR 0xd0/' "$irq" >"$tmp/pprd"
expect "PPR 0xd0 does not mask vector 236" 0 "$tmp/pprd" lost_interrupt
sed 's/^# monitor: //' "$irq" >"$tmp/console"
expect "the same lines on the guest's console, not from QEMU's monitor" 1 "$tmp/console" lost_interrupt
sed -e 's/for CPU 0 $/for CPU 1/' -e 's/^# monitor: CPU#0$/# monitor: CPU#1/' "$irq" >"$tmp/cpu1"
{ sed -n '/^# monitor: /p' "$irq" | sed -e 's/HLT=1$/HLT=0/' -e 's/IRR.*/IRR\t (none)/'; cat "$tmp/cpu1"; } >"$tmp/two"
expect "two vCPUs, the second halted with vector 236 pending" 0 "$tmp/two" lost_interrupt

# drop_idle_lockups, on the console of a vmm 6.12 run whose lost interrupt a key press
# ended (RIG-UNSTUCK): L1's and L2's soft-lockup reports of their idle tasks go, the rest
# stays; a soft lockup in another task stays.
bad_re='WARNING:|BUG:|Call Trace|soft lockup'
lock=$here/fixtures/unstuck-lockup-6.12.log
# expect_bad NAME WANT(number of lines the verdict's checks would still see) FILE
expect_bad() {
	local n
	n=$(drop_idle_lockups <"$3" | grep -acE "$bad_re" || true)
	if [ "$n" = "$2" ]; then
		echo "ok - $1: $n line(s) left for the verdict"
	else
		echo "not ok - $1: $n line(s) left for the verdict, want $2"
		bad=1
	fi
}
expect_bad "idle soft lockups after a key press (L1's report with its stack, L2's line)" 0 "$lock"
[ "$(drop_idle_lockups <"$lock" | grep -ac '^ok 57 \|^RIG-EXIT: 0$\|clocksource')" = 3 ] &&
	echo "ok - the lines around the reports stay" || { echo "not ok - lines around the reports were dropped"; bad=1; }
sed 's/\[swapper\/0:0\]/[vgpu-worker:412]/' "$lock" >"$tmp/busy-lockup"
expect_bad "a soft lockup in another task (vgpu-worker) stays, with its stack" 3 "$tmp/busy-lockup"
exit $bad
