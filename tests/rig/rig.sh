#!/usr/bin/env bash
# The vgpu kernel rig: boot a real Debian kernel under QEMU (TCG) with vgpu_shim
# and the guest test binaries in an initramfs, run one scenario, judge it.
#
#   tests/rig/rig.sh [options] -- <guest command> [args...]
#
# Options:
#   --kernel 6.1|6.12|debug
#                       kernel flavour (default 6.1); debug = the KASAN/lockdep/
#                       kmemleak kernel of tests/rig/debug-kernel/ (built and cached
#                       by scripts/setup; see docs/reliability.md)
#   --mem MB            guest RAM (default 1024; 2048 for debug)
#   --smp N             guest vCPUs (default 1)
#   --timeout S         wall-clock limit for the whole boot, a last resort (default
#                       2400): a hang is caught by --stall long before it
#   --stall S           hang watchdog: once the scenario runs (RIG-BEGIN), a console
#                       silent for S s is a hang: the guest gets an NMI (its task
#                       stacks end the log) and the scenario fails (default 600).
#                       Slowness is not a hang: every suite prints a line per test.
#                       From 60 s of silence (S/2 if less) QEMU is asked every 10 s
#                       whether a vCPU sits halted on a pending interrupt; three
#                       such answers in a row end the run as the emulator's lost
#                       interrupt, which is run again, up to twice
#                       (tests/rig/lost-timer.sh).
#   --boot-timeout S    boot watchdog: if the guest has not reached the scenario
#                       (RIG-BEGIN) after S s, or its console was silent for 60 s
#                       (S/2 if less) before that, kill it and boot again, up
#                       to 2 boots in all, 3 for debug (default 120; 300 for debug)
#   --name NAME         log name: target/rig/logs/NAME-<kver>.log (default: rig)
#   --no-build          reuse the module and guest binaries already built
#   --module-only       build only the module; reuse the guest binaries already built
#   --append ARGS       extra kernel command line
#   --icount OPTS       QEMU -icount OPTS (e.g. shift=2,sleep=off): the guest clock
#                       counts executed instructions (deterministic; needs --smp 1)
#   --hostfs            share the host's / read-only over 9p; the guest mounts it on
#                       /host with /dev, /sys, /proc bound inside (to chroot into it)
#                       and a tmpfs on /host/run for scratch files; /lib/rig/hostfs
#                       holds the host's path of this tree
#   --kvm               load kvm_amd in the guest (QEMU's TCG emulates AMD SVM with
#                       nested paging under -cpu max): /dev/kvm for nested guests
#
# The guest runs busybox as /init. vfio, vfio_iommu_type1 and mdev are loaded
# (or built in); vgpu_shim is NOT (tests load it with their own parameters) and
# sits at /lib/vgpu/vgpu_shim.ko, next to any other module its build made (a
# KUnit test module on the debug kernel). The guest binaries (vgpu-rig-tests, vgpuctl, vgpu-vmm,
# vgpu-engine-client) are
# in /bin; debugfs is mounted on /sys/kernel/debug. The guest boots with
# init_on_alloc=0 so a module that forgets to zero pages shows it. On a kernel
# with kmemleak (debug), /init scans for leaks after the command and prints the
# report. The scenario fails when the command exits non-zero, when the guest
# never reports an exit status (panic, hang, timeout), or when the guest's console
# or dmesg has a WARNING/BUG/Oops/general protection/Call Trace line, a KASAN,
# lockdep, DEBUG_OBJECTS (ODEBUG) or kmemleak report, or a KUnit "not ok" line.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/scripts/lib.sh"
. "$top/tests/rig/lost-timer.sh"

flavour=6.1 mem= smp=1 timeout_s=2400 run_stall_s=600 boot_s= name=rig build=1 append= hostfs=0 icount= kvm=0
while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) flavour=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--smp) smp=$2; shift 2 ;;
	--timeout) timeout_s=$2; shift 2 ;;
	--boot-timeout) boot_s=$2; shift 2 ;;
	--stall) run_stall_s=$2; shift 2 ;;
	--name) name=$2; shift 2 ;;
	--no-build) build=0; shift ;;
	--module-only) build=module; shift ;;
	--append) append=$2; shift 2 ;;
	--hostfs) hostfs=1; shift ;;
	--kvm) kvm=1; shift ;;
	--icount) icount=$2; shift 2 ;;
	--) shift; break ;;
	*) die "unknown option '$1' (see the header of $0)" ;;
	esac
done
for v in "$timeout_s" "$run_stall_s"; do
	[[ $v =~ ^[1-9][0-9]*$ ]] || die "--timeout and --stall want a number of seconds, not '$v'"
done
[ $# -gt 0 ] || die "no guest command given (rig.sh [options] -- <command> [args...])"

rig_kernel "$flavour"
kver=$RK_KVER
[ -f "$RK_IMAGE" ] || die "no rig kernel for $kver ($RK_IMAGE): run scripts/setup"
musl=$top/target/x86_64-unknown-linux-musl/release
modbuild=$RK_BUILD
# unknown_nmi_panic + panic_print=0xd: the boot watchdog's NMI (see boot_once) makes a
# hung guest panic and print every task's stack, its timers and (debug) the locks held.
nmi_dump="unknown_nmi_panic panic_print=0xd"
kappend="console=ttyS0 panic=-1 quiet loglevel=4 init_on_alloc=0 $nmi_dump"
if [ "$flavour" = debug ]; then
	# TCG + KASAN + lockdep is ~3x slower and KASAN's shadow takes 1/8 of RAM.
	: "${mem:=2048}" "${boot_s:=300}"
	# No "quiet": the boot watchdog needs a console that shows progress.
	kappend="console=ttyS0 panic=-1 loglevel=5 init_on_alloc=0 $nmi_dump"
fi
: "${mem:=1024}" "${boot_s:=120}"
boots=2
[ "$flavour" != debug ] || boots=3
stall_s=$((boot_s / 2 < 60 ? boot_s / 2 : 60))
# After RIG-BEGIN, a console silent this long starts the lost-interrupt probes (boot_once).
probe_s=$((run_stall_s / 2 < 60 ? run_stall_s / 2 : 60))

case "$build" in
1) "$top/tests/rig/build.sh" "$flavour" ;;
module) "$top/tests/rig/build.sh" "$flavour" --module-only ;;
esac
ko=$modbuild/vgpu_shim.ko
[ -f "$ko" ] || die "$ko missing (build failed, or --no-build before any build)"

# ---- initramfs ----------------------------------------------------------
stage=$(mktemp -d "${TMPDIR:-/tmp}/vgpu-rig.XXXXXX")
trap 'rm -rf "$stage"' EXIT
# The guest's / (mktemp made it 0700): unprivileged guest processes (tests that
# drop to nobody) must be able to reach /sys.
chmod 755 "$stage"
mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,run,root,etc,lib/vgpu,lib/rig}
cp /bin/busybox "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"
cp "$modbuild"/*.ko "$stage/lib/vgpu/"
for b in vgpu-rig-tests vgpuctl vgpu-vmm vgpu-engine-client; do
	[ -x "$musl/$b" ] && cp "$musl/$b" "$stage/bin/$b"
done
for f in "$top"/tests/rig/guest/*; do
	[ -f "$f" ] && install -m 0755 "$f" "$stage/bin/$(basename "$f")"
done

# Host modules the guest needs, dependencies first (resolved with modinfo).
mods=(vfio vfio_iommu_type1 mdev)
# /lib/rig/hostfs holds the host's path of this tree (guest scripts find host builds
# under /host$(cat /lib/rig/hostfs), e.g. vgpu-executor-chroot).
[ "$hostfs" = 1 ] && mods+=(virtio_pci 9pnet_virtio 9p) && echo "$top" >"$stage/lib/rig/hostfs"
[ "$kvm" = 1 ] && mods+=(kvm_amd)
pack_modules "$RK_DIR/lib/modules/$kver" "$stage/lib/rig" "${mods[@]}"

# The command, quoted for the guest's sh.
{
	printf '#!/bin/sh\nexec'
	for a in "$@"; do
		printf " '%s'" "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")"
	done
	printf '\n'
} >"$stage/lib/rig/cmd"
chmod +x "$stage/lib/rig/cmd"

cat >"$stage/init" <<'INIT'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
export PATH=/bin:/sbin HOME=/root TERM=dumb RUST_BACKTRACE=1
for m in $(cat /lib/rig/modules.order); do
	insmod /lib/rig/$m.ko || echo "RIG: insmod $m failed"
done
if [ -e /lib/rig/hostfs ]; then
	mkdir -p /host
	mount -t 9p -o trans=virtio,version=9p2000.L,ro host /host
	for d in dev sys proc; do mount --bind /$d /host/$d; done
	mount -t tmpfs tmpfs /host/run	# writable scratch; /host/tmp stays the host's
fi
printf "\nRIG-BEGIN\n"
/lib/rig/cmd
rc=$?
printf "\nRIG-EXIT: %s\n" "$rc"	# on a line of its own even after output without a newline
kml=/sys/kernel/debug/kmemleak
if [ -e $kml ]; then
	# kmemleak reports an object only once it is 5 s old and unchanged between
	# two scans: let the last allocations age, then scan twice.
	sleep 6
	echo scan >$kml
	echo scan >$kml
	echo "RIG-KMEMLEAK-BEGIN"
	cat $kml
	echo "RIG-KMEMLEAK-END"
fi
echo "RIG-DMESG-BEGIN"
dmesg
echo "RIG-DMESG-END"
sync
echo o >/proc/sysrq-trigger
sleep 10
INIT
chmod +x "$stage/init"
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$stage.cpio.gz"
qpid=
trap 'rm -rf "$stage" "$stage.cpio.gz" "$stage.mon".*; [ -z "$qpid" ] || kill "$qpid" 2>/dev/null' EXIT
trap 'exit 130' INT TERM

# ---- boot ----------------------------------------------------------------
qemu_extra=()
[ -n "$icount" ] && qemu_extra+=(-icount "$icount")
[ "$hostfs" = 1 ] && qemu_extra+=(-virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap)
mkdir -p "$RIG_DIR/logs"
logf=$RIG_DIR/logs/$name-$kver.log

# boot_once LOG: boot the guest, console to LOG. Returns QEMU's status (124: the
# --timeout limit), or 125 when the boot watchdog gave up on it: no RIG-BEGIN
# after boot_s seconds, or a console silent for stall_s seconds before it (a
# debug boot on a loaded host once in a while hangs early, right after the
# lockdep banner; a normal one prints a line every few seconds at loglevel=5).
boot_once() {
	local lf=$1 t0 now size last_size=-1 last_change rc monpid begun=0 hits=0 next_probe=0 seen
	# The QEMU monitor on a pair of FIFOs (commands in .in, replies in .out, drained):
	# the watchdog sends "nmi" through it before it kills a hung boot.
	rm -f "$stage.mon.in" "$stage.mon.out"
	mkfifo "$stage.mon.in" "$stage.mon.out"
	timeout -k 5 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -m "$mem" -smp "$smp" \
		-nographic -no-reboot -nodefaults -serial stdio -net none \
		-chardev pipe,id=mon,path="$stage.mon" -mon chardev=mon,mode=readline \
		-kernel "$RK_IMAGE" -initrd "$stage.cpio.gz" "${qemu_extra[@]}" \
		-append "$kappend $append" \
		</dev/null >"$lf" 2>&1 &
	qpid=$!
	cat "$stage.mon.out" >"$stage.mon.log" 2>&1 &
	monpid=$!
	t0=$(date +%s)
	last_change=$t0
	# One watch, once a second: before RIG-BEGIN it is the boot watchdog (125: booted
	# again); after, the scenario runs, and a console silent for run_stall_s is a hang
	# (126, not booted again). The wall-clock --timeout stays only as a last resort, so
	# a slow host (a CPU hog, several rigs) makes a scenario slower but does not fail it.
	while kill -0 "$qpid" 2>/dev/null; do
		sleep 1
		now=$(date +%s)
		size=$(stat -c %s "$lf")
		if [ "$size" != "$last_size" ]; then
			last_size=$size last_change=$now hits=0
		fi
		if [ "$begun" = 0 ] && grep -aq 'RIG-BEGIN' "$lf"; then
			begun=1 last_change=$now
		fi
		if [ "$begun" = 1 ]; then
			if [ $((now - last_change)) -ge "$run_stall_s" ]; then
				hang_why="console silent for $((now - last_change)) s after RIG-BEGIN; last console line: $(last_line "$lf")"
				kill_hung "$lf"
				return 126
			fi
			# A console silent for probe_s: ask QEMU every 10 s whether a vCPU sits
			# halted on an interrupt it was given (lost_irq); three times in a row is
			# the emulator's lost interrupt, not a slow test: end it now and let the
			# caller run it again, rather than wait out run_stall_s.
			if [ $((now - last_change)) -ge "$probe_s" ] && [ "$now" -ge "$next_probe" ]; then
				next_probe=$((now + 10))
				if seen=$(probe_lost_irq); then
					hits=$((hits + 1))
				else
					hits=0
				fi
				# Before giving up on the run, poke the vCPU once per hang: a key press
				# is an interrupt through the I/O APIC, and its delivery makes QEMU look
				# at the vCPU's APIC again. If that wakes it, the emulator had lost only
				# the wake-up: say so (RIG-UNSTUCK) and go on.
				if [ "$hits" -ge 3 ] && poke_lost_irq; then
					unstuck="${unstuck:+$unstuck; }$seen, the console silent for $((now - last_change)) s: a key press woke it"
					hits=0
				fi
				if [ "$hits" -ge 3 ]; then
					lost_why="$seen in 3 probes 10 s apart, the console silent for $((now - last_change)) s"
					hang_why="the emulator lost an interrupt: $lost_why; last console line: $(last_line "$lf")"
					kill_hung "$lf"
					return 126
				fi
			fi
		elif [ $((now - t0)) -ge "$boot_s" ]; then
			wd_why="no RIG-BEGIN after $((now - t0)) s"
		elif [ $((now - last_change)) -ge "$stall_s" ]; then
			wd_why="console silent for $((now - last_change)) s before RIG-BEGIN"
		fi
		if [ -n "$wd_why" ]; then
			wd_why="$wd_why; last console line: $(last_line "$lf")"
			kill_hung "$lf"
			return 125
		fi
	done
	rc=0
	wait "$qpid" || rc=$?
	qpid=
	kill "$monpid" 2>/dev/null
	return $rc
}

# last_line LOG: the console's last non-empty line, for a watchdog's message.
last_line() {
	tr -d '\r' <"$1" | grep -av '^$' | tail -n1 | cut -c1-120
}

# kill_hung LOG: ask QEMU for every vCPU's local APIC and registers, dump the guest's
# tasks (send_nmi), then stop QEMU and the drain of its monitor (boot_once's qpid and
# monpid), and append QEMU's replies to LOG as "# monitor: " lines. The APIC shows what
# the guest's own dump cannot: a timer armed and past due, or a vector stuck in IRR or
# ISR (a 6.12 L1 running KVM once idled with every timer 560 s overdue:
# docs/reliability.md).
kill_hung() {
	local off
	# only these replies go to LOG, not those of earlier lost-interrupt probes
	off=$(ask_state) || off=$(stat -c %s "$stage.mon.log")
	sleep 2
	send_nmi
	kill "$qpid" 2>/dev/null
	wait "$qpid" 2>/dev/null
	qpid=
	kill "$monpid" 2>/dev/null
	tail -c +$((off + 1)) "$stage.mon.log" | tr -d '\r' | grep -av '^(qemu)\|^QEMU .* monitor' |
		sed 's/^/# monitor: /' >>"$1"
}

# probe_lost_irq: ask QEMU for every vCPU's local APIC and registers and judge its replies
# with lost_irq (prints what it saw; test hook: VGPU_RIG_TEST_LOST_IRQ_MON names a file
# of replies to judge instead).
probe_lost_irq() {
	local off
	off=$(ask_state) || return 1
	sleep 2
	if [ -n "${VGPU_RIG_TEST_LOST_IRQ_MON:-}" ]; then
		lost_irq <"$VGPU_RIG_TEST_LOST_IRQ_MON"
	else
		tail -c +$((off + 1)) "$stage.mon.log" | tr -d '\r' | lost_irq
	fi
}

# ask_state: ask QEMU for every vCPU's local APIC (`info lapic N`) and registers (`info
# registers -a`); prints where in $stage.mon.log the replies start. Fails if the
# monitor could not be written.
ask_state() {
	local i off cmds=()
	for i in $(seq 0 $((smp - 1))); do
		cmds+=("info lapic $i")
	done
	off=$(stat -c %s "$stage.mon.log")
	monitor "${cmds[@]}" "info registers -a" || return 1
	echo "$off"
}

# poke_lost_irq: press a key (the i8042's IRQ 1, through the I/O APIC) and tell whether
# the vCPUs' state then no longer shows a lost interrupt (probe_lost_irq).
poke_lost_irq() {
	monitor "sendkey shift" || return 1
	sleep 3
	! probe_lost_irq >/dev/null
}

# monitor CMD...: commands to the QEMU monitor (its replies go to $stage.mon.log); fails
# if they could not be written.
monitor() {
	# QEMU holds the FIFO open while it runs; if it has just died, the open would
	# wait forever for a reader: bound it.
	timeout 5 sh -c 'f=$1; shift; printf "%s\n" "$@" >"$f"' sh "$stage.mon.in" "$@"
}

# send_nmi: before a hung boot (or scenario) is killed, send it an NMI: the guest
# panics (unknown_nmi_panic) and prints every task's stack, the timers and the held
# locks (panic_print) to the console (a hung boot's is kept as LOG.hung), so a hang
# shows what it waits for. The panic ends in a reboot (panic=-1), on which QEMU exits
# (-no-reboot): wait for that, at most 120 s.
send_nmi() {
	monitor nmi || return 0
	for _ in $(seq 120); do
		kill -0 "$qpid" 2>/dev/null || return 0
		sleep 1
	done
}

log "booting $kver (TCG, ${mem} MiB, $smp vCPU): $*"
start=$(date +%s%N)
retried= wd_why= hang_why= lost_why= unstuck=
qrc=0
boot_once "$logf" || qrc=$?
# A hung boot is booted again, up to $boots times in all (see boot_once; the debug
# kernel hangs more often on a loaded host, see docs/reliability.md). A hung scenario is
# run again, up to twice, if the emulator lost the guest's interrupt: seen by boot_once's
# probes (lost_why), or in the hung guest's log (lost_interrupt; test hook:
# VGPU_RIG_TEST_LOST_TIMER_LOG names a log to judge instead of the scenario's). Twice:
# the vmm scenarios (a KVM host in the rig) met it in 2 of 2 runs of one CI-like run.
boot=1 lost= lost_retries=0
while { [ "$qrc" = 125 ] && [ "$boot" -lt "$boots" ]; } ||
	{ [ "$qrc" = 126 ] && [ "$lost_retries" -lt 2 ] &&
		lost=${lost_why:-$(lost_interrupt "${VGPU_RIG_TEST_LOST_TIMER_LOG:-$logf}")}; }; do
	tr -d '\r' <"$logf" >"$logf.hung"
	if [ "$qrc" = 126 ]; then
		lost_retries=$((lost_retries + 1))
		retried="${retried:+$retried; }lost interrupt: $lost"
		log "hung: the emulator lost the guest's interrupt ($lost); running the scenario again, $lost_retries of 2 (console kept in $logf.hung)"
		hang_why= lost_why=
	else
		retried="${retried:+$retried; }boot watchdog: $wd_why"
		wd_why=
		log "boot watchdog: ${retried##*boot watchdog: }; booting once more (console kept in $logf.hung)"
		boot=$((boot + 1))
	fi
	start=$(date +%s%N)
	qrc=0
	boot_once "$logf" || qrc=$?
done
ms=$((($(date +%s%N) - start) / 1000000))
{
	[ -z "$retried" ] || echo "RIG-RETRY: $retried"
	[ -z "$unstuck" ] || echo "RIG-UNSTUCK: $unstuck"
	tr -d '\r' <"$logf"
} >"$logf.tmp" && mv "$logf.tmp" "$logf"

# ---- verdict ----------------------------------------------------------------
sed -n '/RIG-BEGIN$/,/^RIG-EXIT: /p' "$logf" | sed '1d;$d' | sed '${/^$/d}' | grep -v '^\[ *[0-9.]*\] ' || true
fail=
exit_line=$(grep -a '^RIG-EXIT: ' "$logf" | tail -n1 || true)
if [ -z "$exit_line" ]; then
	if [ "$qrc" = 124 ]; then
		fail="timed out after ${timeout_s} s without an exit status"
	elif [ "$qrc" = 126 ]; then
		fail="hung: $hang_why (in the log: QEMU's view of the APICs and registers as # monitor: lines, then the tasks an NMI dumped)"
	elif [ "$qrc" = 125 ]; then
		fail="the guest did not boot $boots times in a row (boot watchdog, ${boot_s} s)"
	else
		fail="guest never reported an exit status (panic or crash; qemu rc $qrc)"
	fi
elif [ "${exit_line#RIG-EXIT: }" != 0 ]; then
	fail="guest command exited ${exit_line#RIG-EXIT: }"
fi
# The report is what `cat kmemleak` printed; kernel console lines (a timestamp first)
# may interleave with it and are not part of it.
kmemleak=$(sed -n '/^RIG-KMEMLEAK-BEGIN$/,/^RIG-KMEMLEAK-END$/p' "$logf" | sed '1d;$d' |
	grep -av '^\[ *[0-9]*\.[0-9]*\] ' || true)
if [ -n "$kmemleak" ]; then
	printf '%s\n' "$kmemleak" | head -n 40 >&2
	fail="${fail:+$fail; }kmemleak found unreferenced objects"
fi
# KUnit suites (built in, or in a module the scenario loads) report KTAP in dmesg,
# where a kernel timestamp precedes each line; the guest's own TAP lines have none.
kunit=$(grep -aE '^\[ *[0-9.]+\] +not ok [0-9]+ ' "$logf" || true)
if [ -n "$kunit" ]; then
	printf '%s\n' "$kunit" | head -n 20 >&2
	fail="${fail:+$fail; }KUnit tests failed"
fi
# The kernel's own checkers: oopses and warnings; KASAN; lockdep (its reports are
# WARNING: lines, named here too); sleeping in atomic context; DEBUG_OBJECTS;
# kmemleak (its dmesg summary, in case the report above was cut short); list
# debugging; refcount; hangs and stalls.
# After a lost interrupt that a key press ended (RIG-UNSTUCK), the guests report their
# idle CPUs' soft lockups: the lost interrupt's echo, dropped (drop_idle_lockups).
bad=$(if [ -n "$unstuck" ]; then drop_idle_lockups <"$logf"; else cat "$logf"; fi | grep -aE 'WARNING:|BUG:|Oops|general protection|Call Trace|kernel BUG|UBSAN:|KASAN:|possible (circular|recursive) locking|inconsistent lock state|suspicious RCU usage|lock held when returning|sleeping function called from invalid context|ODEBUG:|unreferenced object 0x|new suspected memory leaks|list_(add|del) corruption|refcount_t:|hung_task|soft lockup|rcu_sched self-detected|INFO: task .* blocked' || true)
if [ -n "$bad" ]; then
	printf '%s\n' "$bad" | head -n 20 >&2
	fail="${fail:+$fail; }kernel reported problems (see $logf)"
fi
verdict=PASS
[ -z "$fail" ] || verdict=FAIL
printf '[vgpu] rig %s on %s: %s in %d.%03d s (log %s)\n' "$name" "$kver" "$verdict" $((ms / 1000)) $((ms % 1000)) "$logf" >&2
if [ -n "$fail" ]; then
	log "FAIL: $fail"
	exit 1
fi
