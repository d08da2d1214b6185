#!/usr/bin/env bash
# The vgpu kernel rig: boot a real Debian kernel under QEMU (TCG) with vgpu_shim
# and the guest test binaries in an initramfs, run one scenario, judge it.
#
#   tests/rig/rig.sh [options] -- <guest command> [args...]
#
# Options:
#   --kernel 6.1|6.12   kernel flavour (default 6.1)
#   --mem MB            guest RAM (default 1024)
#   --smp N             guest vCPUs (default 1)
#   --timeout S         wall-clock limit for the boot (default 900)
#   --name NAME         log name: target/rig/logs/NAME-<kver>.log (default: rig)
#   --no-build          reuse the module and guest binaries already built
#   --module-only       build only the module; reuse the guest binaries already built
#   --append ARGS       extra kernel command line
#   --icount OPTS       QEMU -icount OPTS (e.g. shift=2,sleep=off): the guest clock
#                       counts executed instructions (deterministic; needs --smp 1)
#   --hostfs            share the host's / read-only over 9p; the guest mounts it on
#                       /host with /dev, /sys, /proc bound inside (to chroot into it)
#                       and a tmpfs on /host/run for scratch files
#
# The guest runs busybox as /init. vfio, vfio_iommu_type1 and mdev are loaded;
# vgpu_shim is NOT (tests load it with their own parameters) and sits at
# /lib/vgpu/vgpu_shim.ko. The guest binaries (vgpu-rig-tests, vgpuctl) are in /bin.
# The guest boots with init_on_alloc=0 so a module that forgets to zero pages
# shows it. The scenario fails when the command exits non-zero, when the guest
# never reports an exit status (panic, hang, timeout), or when the guest's dmesg
# has a WARNING/BUG/Oops/general protection/Call Trace line.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/scripts/lib.sh"

flavour=6.1 mem=1024 smp=1 timeout_s=900 name=rig build=1 append= hostfs=0 icount=
while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) flavour=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--smp) smp=$2; shift 2 ;;
	--timeout) timeout_s=$2; shift 2 ;;
	--name) name=$2; shift 2 ;;
	--no-build) build=0; shift ;;
	--module-only) build=module; shift ;;
	--append) append=$2; shift 2 ;;
	--hostfs) hostfs=1; shift ;;
	--icount) icount=$2; shift 2 ;;
	--) shift; break ;;
	*) die "unknown option '$1' (see the header of $0)" ;;
	esac
done
[ $# -gt 0 ] || die "no guest command given (rig.sh [options] -- <command> [args...])"

kver=$(kver_of "$flavour")
kdir=$RIG_DIR/kernels/$kver
[ -f "$kdir/vmlinux" ] || die "no rig kernel for $kver: run scripts/setup"
musl=$top/target/x86_64-unknown-linux-musl/release
modbuild=$RIG_DIR/build/$kver

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
cp "$ko" "$stage/lib/vgpu/vgpu_shim.ko"
[ ! -f "$modbuild/vgpu_shim_kunit.ko" ] || cp "$modbuild/vgpu_shim_kunit.ko" "$stage/lib/vgpu/"
for b in vgpu-rig-tests vgpuctl; do
	[ -x "$musl/$b" ] && cp "$musl/$b" "$stage/bin/$b"
done
for f in "$top"/tests/rig/guest/*; do
	[ -f "$f" ] && install -m 0755 "$f" "$stage/bin/$(basename "$f")"
done

# Host modules the guest needs, dependencies first (resolved with modinfo).
mods=(vfio vfio_iommu_type1 mdev)
[ "$hostfs" = 1 ] && mods+=(virtio_pci 9pnet_virtio 9p)
pack_modules "$kdir/lib/modules/$kver" "$stage/lib/rig" "${mods[@]}"

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
export PATH=/bin:/sbin HOME=/root TERM=dumb RUST_BACKTRACE=1
for m in $(cat /lib/rig/modules.order); do
	insmod /lib/rig/$m.ko || echo "RIG: insmod $m failed"
done
if grep -q '^9p$' /lib/rig/modules.order; then
	mkdir -p /host
	mount -t 9p -o trans=virtio,version=9p2000.L,ro host /host
	for d in dev sys proc; do mount --bind /$d /host/$d; done
	mount -t tmpfs tmpfs /host/run	# writable scratch; /host/tmp stays the host's
fi
printf "\nRIG-BEGIN\n"
/lib/rig/cmd
rc=$?
echo "RIG-EXIT: $rc"
echo "RIG-DMESG-BEGIN"
dmesg
echo "RIG-DMESG-END"
sync
echo o >/proc/sysrq-trigger
sleep 10
INIT
chmod +x "$stage/init"
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$stage.cpio.gz"
trap 'rm -rf "$stage" "$stage.cpio.gz"' EXIT

# ---- boot ----------------------------------------------------------------
qemu_extra=()
[ -n "$icount" ] && qemu_extra+=(-icount "$icount")
[ "$hostfs" = 1 ] && qemu_extra+=(-virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap)
mkdir -p "$RIG_DIR/logs"
logf=$RIG_DIR/logs/$name-$kver.log
log "booting $kver (TCG, ${mem} MiB, $smp vCPU): $*"
start=$(date +%s%N)
set +e
timeout --foreground -k 5 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -m "$mem" -smp "$smp" \
	-nographic -no-reboot -nodefaults -serial stdio -net none \
	-kernel "$kdir/vmlinux" -initrd "$stage.cpio.gz" "${qemu_extra[@]}" \
	-append "console=ttyS0 panic=-1 quiet loglevel=4 init_on_alloc=0 $append" \
	</dev/null >"$logf" 2>&1
qrc=$?
set -e
ms=$((($(date +%s%N) - start) / 1000000))
tr -d '\r' <"$logf" >"$logf.tmp" && mv "$logf.tmp" "$logf"

# ---- verdict ----------------------------------------------------------------
sed -n '/RIG-BEGIN$/,/^RIG-EXIT: /p' "$logf" | sed '1d;$d' | grep -v '^\[ *[0-9.]*\] ' || true
fail=
exit_line=$(grep -a '^RIG-EXIT: ' "$logf" | tail -n1 || true)
if [ -z "$exit_line" ]; then
	if [ "$qrc" = 124 ]; then
		fail="timed out after ${timeout_s} s without an exit status"
	else
		fail="guest never reported an exit status (panic or crash; qemu rc $qrc)"
	fi
elif [ "${exit_line#RIG-EXIT: }" != 0 ]; then
	fail="guest command exited ${exit_line#RIG-EXIT: }"
fi
bad=$(grep -aE 'WARNING:|BUG:|Oops|general protection|Call Trace|kernel BUG|UBSAN:|KASAN:|list_(add|del) corruption|refcount_t:|hung_task|soft lockup|rcu_sched self-detected|INFO: task .* blocked' "$logf" || true)
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
