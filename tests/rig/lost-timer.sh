# Sourced by tests/rig/rig.sh; tested by tests/rig/lost-timer-test.sh. How the rig tells
# that QEMU (TCG) lost a guest's interrupt, the one kind of hang it runs again.
# lost_timer LOG: whether a hung guest's NMI dump in LOG shows the CPU it hit idle in HLT
# (interrupts on) with one of that CPU's hrtimers more than 60 s overdue; if so, print
# what it saw. The guest cannot do that (a timer interrupt runs every expired hrtimer):
# the emulator lost the interrupt (docs/reliability.md, "A 6.12 L1 that stopped taking
# timer interrupts"). A CPU spinning with interrupts off (a deadlock) is not idle in HLT.
lost_timer() {
	tr -d '\r' <"$1" | awk '
		/Kernel panic - not syncing: NMI/ { p = 1 }
		p && cpu == "" && match($0, /CPU: [0-9]+ /) { cpu = substr($0, RSTART + 5, RLENGTH - 6) }
		p && rip == "" && match($0, /RIP: 0010:[a-z_]+/) { rip = substr($0, RSTART + 10, RLENGTH - 10) }
		p && match($0, /\] cpu: [0-9]+$/) { cur = substr($0, RSTART + 7) }
		p && cur != "" && cur == cpu && match($0, /# expires at [0-9]+-[0-9]+ nsecs \[in -[0-9]+ /) {
			split(substr($0, RSTART, RLENGTH), f, "-"); late = f[3] + 0
			if (late > worst) worst = late
		}
		END {
			if (rip !~ /^(pv_)?native_safe_halt$|^default_idle$|^acpi_safe_halt$/) exit 1
			if (worst <= 60e9) exit 1
			printf "CPU %s idle in %s, an hrtimer %d s overdue\n", cpu, rip, worst / 1e9
		}'
}

# lost_irq: whether QEMU's own view of a guest (the replies to `info lapic N` and
# `info registers -a`, on stdin, without the "# monitor: " prefix) shows a vCPU halted
# (HLT=1) with interrupts on (RFLAGS.IF, no STI/MOV SS shadow: II=0) while its local
# APIC holds a deliverable vector in IRR (its priority class above PPR's); if so, print
# what it saw. A CPU cannot stay like that: the pending vector ends the HLT (Intel SDM
# vol. 3, 10.8.3.1; AMD APM vol. 2, 16.6). Seen in CI on a 6.12 L1 running KVM: CPU 0
# halted with vector 236 (the LAPIC timer) in IRR, PPR 0x10, for 600 s
# (docs/reliability.md). With several replies on stdin the last one of each CPU counts.
lost_irq() {
	awk '
		function hex(s,   i, n, d) {
			n = 0; s = tolower(s); sub(/^0x/, "", s)
			for (i = 1; i <= length(s); i++) {
				d = index("0123456789abcdef", substr(s, i, 1)) - 1
				if (d < 0) return -1
				n = n * 16 + d
			}
			return n
		}
		/^dumping local APIC state for CPU [0-9]+/ { a = $NF; irr[a] = -1; ppr[a] = 256 }
		a != "" && /^IRR[ \t]/ {
			irr[a] = -1
			for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/ && $i + 0 > irr[a]) irr[a] = $i + 0
		}
		a != "" && match($0, /PPR 0x[0-9a-fA-F]+/) { ppr[a] = hex(substr($0, RSTART + 4, RLENGTH - 4)) }
		/^CPU#[0-9]+$/ { c = substr($1, 5) }
		c != "" && / HLT=[01]/ {
			rfl[c] = -1; hlt[c] = ""; ii[c] = ""
			for (i = 1; i <= NF; i++) {
				if ($i ~ /^RFL=/) rfl[c] = hex(substr($i, 5))
				if ($i ~ /^HLT=/) hlt[c] = substr($i, 5)
				if ($i ~ /^II=/) ii[c] = substr($i, 4)
			}
		}
		END {
			for (c in hlt) {
				if (hlt[c] != "1" || ii[c] != "0" || rfl[c] < 0 || int(rfl[c] / 512) % 2 != 1) continue
				if (!(c in irr) || irr[c] < 0 || int(irr[c] / 16) <= int(ppr[c] / 16)) continue
				printf "CPU %s halted with interrupts on and vector %d pending in IRR (PPR 0x%02x)\n", c, irr[c], ppr[c]
				exit 0
			}
			exit 1
		}'
}

# lost_interrupt LOG: whether the hung guest in LOG lost an interrupt to the emulator,
# judged on QEMU's view (lost_irq on the log's "# monitor: " lines) or, failing that,
# on the guest's own NMI dump (lost_timer); prints what it saw.
lost_interrupt() {
	tr -d '\r' <"$1" | sed -n 's/^# monitor: //p' | lost_irq || lost_timer "$1"
}

# drop_idle_lockups: the log on stdin without the soft-lockup reports of idle tasks
# (`soft lockup - CPU#N stuck for Ns! [swapper/N:0]`, and the registers and stack the
# kernel prints after it, up to its `</TASK>`, at most 60 lines), which is what a guest
# prints once a lost interrupt is ended by a key press (rig.sh's RIG-UNSTUCK): its CPU was
# idle in HLT while its timers stopped. A soft lockup in any other task stays.
drop_idle_lockups() {
	awk '
		/soft lockup - CPU#[0-9]+ stuck for [0-9]+s! \[swapper\/[0-9]+:0\]/ {
			if ($0 ~ /^\[ *[0-9.]+\] /) skip = 60
			next
		}
		skip > 0 { skip--; if ($0 ~ /<\/TASK>/) skip = 0; next }
		{ print }'
}
