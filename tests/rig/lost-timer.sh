# Sourced by tests/rig/rig.sh; tested by tests/rig/lost-timer-test.sh.
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
