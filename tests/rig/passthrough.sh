#!/usr/bin/env bash
# End-to-end passthrough through a stock VMM, nested in the rig:
#   L1 = the rig guest (Debian kernel + vgpu_shim), which runs the host's own
#        QEMU (over the 9p host share) with
#        -device vfio-pci,sysfsdev=/sys/bus/mdev/devices/<uuid>,display=on
#   L2 = the same Debian kernel with the stock bochs-drm driver, which must bind
#        to the vGPU and draw a known pattern into its framebuffer.
# L1 then takes a QEMU screendump (which goes through VFIO_DEVICE_QUERY_GFX_PLANE
# and the display region) and compares it byte for byte with the expected image.
#   tests/rig/passthrough.sh [6.1|6.12] [rig options...]
# L2 runs under KVM in L1 (kvm_amd on QEMU's emulated SVM, as for tests/rig/vmm.sh):
# ~4x faster than nested TCG. VGPU_PT_ACCEL=tcg runs L2 under TCG instead (slow:
# ~1-2 minutes), e.g. to tell a nested-KVM problem from a device one.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/scripts/lib.sh"
flavour=${1:-6.1}
shift || true
kver=$(kver_of "$flavour")
kdir=$RIG_DIR/kernels/$kver
l2=$RIG_DIR/l2/$kver
W=1024 H=768

rm -rf "$l2"
mkdir -p "$l2/root"/{bin,dev,proc,sys,lib/mods}
cp /bin/busybox "$l2/root/bin/busybox"
ln -s busybox "$l2/root/bin/sh"
pack_modules "$kdir/lib/modules/$kver" "$l2/root/lib/mods" bochs
# The pattern L2 draws (XRGB8888, little-endian B,G,R,X) and the PPM QEMU must show.
python3 - "$l2/root/pattern.raw" "$l2/expected.ppm" "$W" "$H" <<'PY'
import sys
raw, ppm, w, h = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
px = bytearray(w * h * 4)
rgb = bytearray(w * h * 3)
for y in range(h):
    for x in range(w):
        r, g, b = ((x >> 8) | ((y >> 8) << 4)) & 0xff, y & 0xff, x & 0xff
        i = y * w + x
        px[4 * i:4 * i + 4] = bytes((b, g, r, 0))
        rgb[3 * i:3 * i + 3] = bytes((r, g, b))
open(raw, "wb").write(px)
open(ppm, "wb").write(b"P6\n%d %d\n255\n" % (w, h) + rgb)
PY
cat >"$l2/root/init" <<INIT
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in \$(cat /lib/mods/modules.order); do insmod /lib/mods/\$m.ko || echo "L2: insmod \$m failed"; done
# Keep the text console off the framebuffer so the picture is ours alone.
for v in /sys/class/vtconsole/vtcon*; do
	grep -q 'frame buffer' \$v/name 2>/dev/null && echo 0 >\$v/bind
done
echo "L2: pci \$(cat /sys/bus/pci/devices/*/vendor /sys/bus/pci/devices/*/device | tr '\n' ' ')"
echo "L2: fb \$(cat /proc/fb) size \$(cat /sys/class/graphics/fb0/virtual_size) bpp \$(cat /sys/class/graphics/fb0/bits_per_pixel) stride \$(cat /sys/class/graphics/fb0/stride)"
drv=\$(basename \$(readlink /sys/class/drm/card0/device/driver) 2>/dev/null)
echo "L2: card0 driver \$drv"
[ "\$(cat /sys/class/graphics/fb0/virtual_size)" = "$W,$H" ] || echo "L2-FAIL: unexpected fb size"
cat /pattern.raw >/dev/fb0
sleep 3
echo "L2-READY"
sleep 600
INIT
chmod +x "$l2/root/init"
(cd "$l2/root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$l2/l2.cpio.gz"
rm -rf "$l2/root"

accel=${VGPU_PT_ACCEL:-kvm}
case $accel in
kvm) rig_accel=(--kvm --smp 1) ;; # L1 on one vCPU, as in vmm.sh (docs/reliability.md)
tcg) rig_accel=() ;;
*) die "VGPU_PT_ACCEL must be kvm or tcg, not $accel" ;;
esac
exec "$top/tests/rig/rig.sh" --kernel "$flavour" --hostfs --mem 3072 \
	"${rig_accel[@]}" --name passthrough "$@" -- vgpu-passthrough "/host$kdir/vmlinux" "/host$l2" "$accel"
