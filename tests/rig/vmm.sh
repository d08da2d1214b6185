#!/usr/bin/env bash
# vgpu-vmm under KVM, nested in the rig:
#   L1 = the rig guest (Debian kernel, kvm_amd loaded: QEMU's TCG emulates AMD SVM
#        with nested paging), which runs vgpu-vmm from its initramfs;
#   L2 = Debian's vmlinux (the same kernel, read over the 9p host share; also once as
#        the bzImage) with a small
#        busybox initramfs whose /init reports the CPUs and memory it sees, then powers
#        off, reboots, or waits for SIGTERM, as its command line says; with
#        l2mode=engine it loads the guest driver (guest-driver/vgpu_guest.ko, built
#        for the same kernel) and runs vgpu-engine-client on its vGPU.
# tests/rig/guest/vgpu-vmm-boot (L1) runs the boots and judges them.
#   tests/rig/vmm.sh [6.1|6.12] [share|lifecycle|reset|qemu|bochs|engine|bench] [rig options...]
# With "share", L1 runs tests/rig/guest/vgpu-vmm-share instead: three vgpu-vmm L2s at
# once, each saturating its vGPU from inside (l2mode=saturate), shares by weight and a cap.
# With "lifecycle", vgpu-vmm-boot runs only its vGPU lifecycle checks (kill -9 of a
# vgpu-vmm, then `remove` of an instance in use: VFIO REQ), which the full run has too;
# "reset" only the guest-reset and BAR-move VM, "qemu" only the engine guest under QEMU,
# "bochs" only the guest where bochs-drm draws, "engine" only the engine guests (L1
# client, vgpu-vmm with ioeventfd and trapped, QEMU) and their BENCH line, "bench" only the round-trip benchmark
# with L1's KVM exits counted per round trip (l2mode=bench, docs/benchmarks.md).
# The full run also boots the same vmlinux and initramfs with the host's QEMU under the
# same nested KVM (start to /init, and the engine guest through QEMU's vfio-pci) for
# the BENCH line.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/scripts/lib.sh"
flavour=${1:-6.1}
shift || true
scenario=boot
case "${1:-}" in
share | lifecycle | reset | qemu | bochs | bench | engine)
	scenario=$1
	shift
	;;
esac
# rig_kernel also knows the debug kernel; L2 must be a Debian one (kver_of refuses the rest).
[ "$flavour" != debug ] || die "vmm.sh boots Debian's kernels as L2: use 6.1 or 6.12, not 'debug'"
rig_kernel "$flavour"
kver=$RK_KVER
# Resolved: L1 sees the host's / under /host, where a symlink to an absolute path
# (a worktree's target/rig/kernels) would point into L1's own tree.
vmlinux=$(readlink -f "$RK_IMAGE")
[ -f "$vmlinux" ] || die "no vmlinux for $kver ($vmlinux): run scripts/setup"
bzimage=$(readlink -f "$RK_DIR/boot/vmlinuz-$kver")
[ -f "$bzimage" ] || die "no bzImage for $kver ($bzimage): run scripts/setup"
# The guest driver and the engine client go into L2's initramfs: build them (and
# what L1 boots) now, and tell rig.sh not to build again.
case " $* " in
*" --no-build "*) ;;
*) "$top/tests/rig/build.sh" "$flavour" ;;
esac
gko=$RK_BUILD/guest/vgpu_guest.ko
client=$top/target/x86_64-unknown-linux-musl/release/vgpu-engine-client
[ -f "$gko" ] || die "$gko missing (tests/rig/build.sh $flavour)"
[ -x "$client" ] || die "$client missing (tests/rig/build.sh $flavour)"
l2=$RIG_DIR/l2vmm/$kver
mkdir -p "$RIG_DIR/l2vmm"
l2=$(readlink -f "$RIG_DIR/l2vmm")/$kver

rm -rf "$l2"
mkdir -p "$l2/root"/{bin,dev,proc,sys,lib}
cp /bin/busybox "$l2/root/bin/busybox"
cp "$gko" "$l2/root/lib/vgpu_guest.ko"
cp "$client" "$l2/root/bin/vgpu-engine-client"
# bochs-drm and its DRM helpers, from the same kernel (l2mode=bochs).
pack_modules "$RK_DIR/lib/modules/$kver" "$l2/root/lib/mods" bochs
ln -s busybox "$l2/root/bin/sh"
cat >"$l2/root/init" <<'INIT'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
read up _ </proc/uptime
echo "L2-INIT uptime $up"
mount -t sysfs sysfs /sys
echo "L2-NPROC $(nproc)"
echo "L2-CLOCKEVENT $(cat /sys/devices/system/clockevents/clockevent0/current_device 2>/dev/null)"
echo "L2-MEMTOTAL-KB $(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)"
pci=
for d in /sys/bus/pci/devices/*; do
	[ -e "$d/vendor" ] && pci="$pci $(basename $d)=$(cat $d/vendor):$(cat $d/device)"
done
echo "L2-PCI$pci"
# The vGPU, wherever the VMM put it (vgpu-vmm: 00:01.0; QEMU: the next free slot).
dev=
for d in /sys/bus/pci/devices/*; do
	[ "$(cat $d/vendor 2>/dev/null):$(cat $d/device 2>/dev/null)" = 0x1234:0x1111 ] && dev=$d
done
r=$dev/resource
# bars: BAR0 (VRAM) and BAR2 (MMIO) start and size from sysfs, into b0 s0 b2 s2;
# the list of all three in $sizes.
bars() {
	sizes=
	i=0
	while read -r start end flags && [ $i -lt 3 ]; do
		[ $((end)) -eq 0 ] && sz=0 || sz=$((end - start + 1))
		sizes="$sizes $(printf '%#x@%#x' $sz $((start)))"
		[ $i = 0 ] && b0=$((start)) s0=$sz
		[ $i = 2 ] && b2=$((start)) s2=$sz
		i=$((i + 1))
	done <$r
}
# cfgw OFFSET LEN BYTES: one config-space write of LEN bytes (BYTES in octal escapes)
# at OFFSET, through sysfs (an aligned dword is one dword write).
cfgw() {
	printf "$3" | dd of=$dev/config bs=$2 seek=$(($1 / $2)) count=1 conv=notrunc 2>/dev/null
}
boot=1
if [ -n "$dev" ]; then
	bars
	echo "L2-BARS$sizes"
	# Through the BARs where the VMM put them (/dev/mem: the boot has iomem=relaxed):
	# the info block's ID over the trapped MMIO BAR, and VRAM written and read back
	# through the memory slot (an unmapped address would read all ones).
	mount -t devtmpfs devtmpfs /dev
	echo 1 >$dev/enable
	# What VRAM held before this guest wrote it (L1 checks it is zero for a VM that
	# follows a killed one: the module scrubs on the last close; a VM restarted by
	# vgpu-vmm --on-reboot restart finds the previous boot's words: VRAM survives a reset).
	vb="$(devmem $b0 32) $(devmem $((b0 + s0 - 4)) 32)"
	echo "L2-VRAM-BEFORE $vb"
	# (The last word: the first is where the engine client's ring goes.)
	[ "${vb#* }" = 0x0BADCAFE ] && boot=2
	echo "L2-BOOT $boot"
	# DISPI's ENABLE (BAR2 0x508) as this boot found it: 0 after a device reset.
	echo "L2-DISPI-ENABLE-BEFORE $(devmem $((b2 + 0x508)) 16)"
	case "$boot $(cat /proc/cmdline)" in
	1\ *barmove*)
		# The guest moves both BARs: memory decode off (VRAM and MMIO must stop
		# answering at the old addresses), BAR0 to 0xe0000000 and BAR2 to 0xd8000000,
		# decode on; VRAM, the ID register and 16 doorbells at the new addresses. Then
		# Linux re-reads and re-places them (remove + rescan: its own BAR writes), and
		# the rest of this boot (driver, client) uses wherever it put them.
		devmem $b0 32 0x13572468
		cfgw 4 2 '\000\000'
		echo "L2-DECODE-OFF $(devmem $b0 32) $(devmem $((b2 + 0x800)) 32)"
		cfgw 16 4 '\000\000\000\340'
		cfgw 24 4 '\000\000\000\330'
		cfgw 4 2 '\002\000'
		echo "L2-MOVED $(devmem 0xe0000000 32) $(devmem 0xd8000800 32) $(devmem $b0 32)"
		for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do devmem 0xd8000914 32 1; done
		echo "L2-MOVED-DOORBELLS 16"
		echo 1 >$dev/remove
		echo 1 >/sys/bus/pci/rescan
		bars
		echo "L2-RESCAN-BARS$sizes"
		echo 1 >$dev/enable
		;;
	esac
	echo "L2-VGPU-ID $(devmem $((b2 + 0x800)) 32)"
	# 16 doorbells (DOORBELL is BAR2 + 0x914): vgpu-vmm counts those that exit to it,
	# none with its default ioeventfd, each with --no-ioeventfd.
	for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do devmem $((b2 + 0x914)) 32 1; done
	echo "L2-DOORBELLS 16"
	# A 16x8 XRGB8888 mode through the bochs DISPI registers (BAR2 0x500 + 2 * index:
	# XRES 1, YRES 2, BPP 3, ENABLE 4 = ENABLED | LFB_ENABLED); pixel (0,0) is VRAM's
	# first word written below (0x5a5aa5a5), pixel (1,0) an orange. vgpu-vmm
	# --display-png writes the frame when the VM ends.
	devmem $((b2 + 0x502)) 16 16
	devmem $((b2 + 0x504)) 16 8
	devmem $((b2 + 0x506)) 16 32
	devmem $((b2 + 0x508)) 16 0x41
	devmem $((b0 + 4)) 32 0x00ff8000
	echo "L2-DREW 16x8"
	devmem $b0 32 0x5a5aa5a5
	devmem $((b0 + s0 - 4)) 32 0x0badcafe
	echo "L2-VRAM $(devmem $b0 32) $(devmem $((b0 + s0 - 4)) 32)"
fi
case "$(cat /proc/cmdline)" in
*l2mode=engine*)
	# The guest driver binds the vGPU (bochs-drm is not loaded in this mode) and the
	# engine client drives it: results against the reference, each FENCE by MSI.
	insmod /lib/vgpu_guest.ko && echo "L2-GUEST-DRIVER loaded"
	dmesg | grep 'vgpu_guest' | sed 's/^/L2-KLOG /'
	vgpu-engine-client --guest /dev/vgpu0 --timeout-s 20 | sed 's/^/L2-/'
	echo "L2-MSI-PROC $(awk '/vgpu_guest/ { s = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i; print s }' /proc/interrupts)"
	# 100 more bare IRQ fences between two L2-MARK lines, their output to a file (console
	# lines are exits too): L1 counts the MMIO exits to the VMM in between (the sleeps
	# let it take its snapshot before the window starts).
	echo "L2-MARK w.0"
	sleep 2
	vgpu-engine-client --guest /dev/vgpu0 --rounds 0 --pings 100 >/w.log 2>&1
	echo "L2-MARK w.1"
	sleep 1
	echo "L2-W $(grep -E 'SUBMIT|RTT|RESULT' /w.log | tr '\n' ' ')"
	# The device goes while a file is open: reads say ENODEV, the module stays
	# pinned until the file is closed, then unloads (the kernel log is checked below).
	exec 3</dev/vgpu0
	echo ${dev##*/} >/sys/bus/pci/drivers/vgpu_guest/unbind
	echo "L2-READ-AFTER-UNBIND $(dd bs=8 count=1 <&3 2>&1 >/dev/null | head -n1)"
	rmmod vgpu_guest 2>/dev/null && echo "L2-RMMOD-WHILE-OPEN succeeded"
	exec 3<&-
	rmmod vgpu_guest && echo "L2-GUEST-DRIVER unloaded"
	;;
*l2mode=bench*)
	# The round trip and where it goes (vgpu-vmm-boot bench): exit costs and the
	# client's figures, then two windows of 20 and 220 bare IRQ fences (their
	# difference is 200 round trips, the client's start-up cancels out) and an idle
	# one, each between L2-MARK lines at which L1 snapshots its KVM exit counts (the
	# sleeps let L1 take them before the window starts). The windows' own output goes
	# to a file: console lines are exits too.
	insmod /lib/vgpu_guest.ko && echo "L2-GUEST-DRIVER loaded"
	x=
	case "$(cat /proc/cmdline)" in *noshadow*) x=--no-shadow ;; esac
	vgpu-engine-client --guest /dev/vgpu0 --rounds 1 --pings 32 --exit-cost 1000 $x | sed 's/^/L2-/'
	for w in 20 220; do
		echo "L2-MARK p$w.0"
		sleep 1
		vgpu-engine-client --guest /dev/vgpu0 --rounds 0 --pings $w $x >/p$w.log 2>&1
		echo "L2-MARK p$w.1"
		sleep 1
	done
	echo "L2-MARK idle.0"
	sleep 3
	echo "L2-MARK idle.1"
	sleep 1
	echo "L2-P220 $(grep -E 'RTT|RESULT' /p220.log | tr '\n' ' ')"
	;;
*l2mode=resetboot*)
	# vgpu-vmm --on-reboot restart: the first boot programs the engine and leaves it
	# so (ring enabled, registers set), then reboots; the second boot (VRAM still holds
	# the first's words) shows the registers it finds: all at their reset values if the
	# VMM reset the device between the boots.
	insmod /lib/vgpu_guest.ko && echo "L2-GUEST-DRIVER loaded"
	if [ $boot = 1 ]; then
		vgpu-engine-client --guest /dev/vgpu0 --timeout-s 20 --rounds 1 --pings 4 --leave-programmed | sed 's/^/L2-B1-/'
		vgpu-engine-client --guest /dev/vgpu0 --regs | sed 's/^/L2-B1-/'
		echo "L2-REBOOT"
		# reboot -f does not wait for the console: what is still in the tty buffer is
		# lost (seen: the client's last 25 lines, once its output grew).
		sleep 2
		reboot -f
	fi
	vgpu-engine-client --guest /dev/vgpu0 --regs | sed 's/^/L2-B2-/'
	;;
*l2mode=bochs*)
	# Debian's bochs-drm binds the vGPU and sets its own mode (fbdev emulation: /dev/fb0);
	# the fb console is unbound, the screen cleared through /dev/fb0, and three pixels
	# written there (B, G, R, X bytes): vgpu-vmm --display-png shows the frame.
	for m in $(cat /lib/mods/modules.order); do insmod /lib/mods/$m.ko || echo "L2-INSMOD-FAILED $m"; done
	for v in /sys/class/vtconsole/vtcon*; do
		grep -q 'frame buffer' $v/name 2>/dev/null && echo 0 >$v/bind
	done
	fb=/sys/class/graphics/fb0
	sz=$(cat $fb/virtual_size) st=$(cat $fb/stride)
	echo "L2-FB $sz $(cat $fb/bits_per_pixel) $(basename "$(readlink /sys/class/drm/card0/device/driver)")"
	dd if=/dev/zero of=/dev/fb0 bs=$st count=${sz#*,} 2>/dev/null
	px() { printf "$3" | dd of=/dev/fb0 bs=4 seek=$(($2 * st / 4 + $1)) count=1 conv=notrunc 2>/dev/null; }
	px 10 10 '\000\200\377\000'
	px 512 384 '\000\377\000\000'
	# Not the last pixel of a line: 6.1's fbdev damage clip comes out empty for a write
	# that ends at a line's end (x2 = 0), so it would never reach VRAM.
	px $((${sz%,*} - 2)) $((${sz#*,} - 1)) '\377\000\000\000'
	# fbdev emulation copies to VRAM from a worker (deferred I/O, 50 ms).
	sleep 1
	echo "L2-FB-DREW"
	;;
*l2mode=saturate*)
	insmod /lib/vgpu_guest.ko && echo "L2-GUEST-DRIVER loaded"
	# Until the VMM is stopped (SIGTERM from L1).
	vgpu-engine-client --guest /dev/vgpu0 --saturate 3600 | sed 's/^/L2-/'
	;;
esac
# The guest kernel's own complaints (e.g. about the VMM's ACPI tables). A soft lockup of
# an idle task (the CPU halted while its clock jumped) is L2-DMESG-STALL, without its
# registers and stack: vgpu-vmm-boot judges it against L1's own log.
dmesg | awk '
	/soft lockup - CPU#[0-9]+ stuck for [0-9]+s! \[swapper\/[0-9]+:0\]/ {
		print "L2-DMESG-STALL " $0; skip = 60; next
	}
	skip > 0 { skip--; if ($0 ~ /<\/TASK>/) skip = 0; next }
	/WARNING:|BUG:|Oops|Call Trace|ACPI Error|ACPI BIOS Error|FW_BUG|PCI: Fatal/ {
		print "L2-DMESG-BAD " $0
	}'
case "$(cat /proc/cmdline)" in
*l2mode=hang*) echo "L2-READY"; while :; do sleep 3600; done ;;
*l2mode=reboot*) echo "L2-REBOOT"; reboot -f ;;
*) echo "L2-POWEROFF"; poweroff -f ;;
esac
sleep 5
echo "L2-STILL-RUNNING"
INIT
chmod +x "$l2/root/init"
(cd "$l2/root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$l2/l2.cpio.gz"
rm -rf "$l2/root"

# L1 runs on one vCPU: with two, L1 once locked up mid-scenario (soft lockups on both
# CPUs, the same family as the debug kernel's boot hangs under QEMU's multi-threaded TCG,
# docs/reliability.md); L2's two vCPUs are threads of vgpu-vmm on it.
if [ "$scenario" = share ]; then
	# Three L2s of 128 MiB each, and the vmlinux copy in L1's tmpfs: more than 1 GiB.
	exec "$top/tests/rig/rig.sh" --kernel "$flavour" --hostfs --kvm --smp 1 --mem 2048 --no-build \
		--name vmm-share "$@" -- vgpu-vmm-share "/host$vmlinux" "/host$l2/l2.cpio.gz"
fi
exec "$top/tests/rig/rig.sh" --kernel "$flavour" --hostfs --kvm --smp 1 --no-build \
	--name vmm "$@" -- vgpu-vmm-boot "/host$vmlinux" "/host$l2/l2.cpio.gz" "/host$bzimage" \
	$([ "$scenario" != boot ] && echo "$scenario")
