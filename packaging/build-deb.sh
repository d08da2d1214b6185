#!/usr/bin/env bash
# Build the Debian package `vgpu`: vgpuctl (static), the vgpu_shim module source for
# DKMS, the udev rule and systemd unit that start auto definitions, the external
# executor vgpu-executor (glibc; it loads the Vulkan loader at run time) and its unit
# vgpu-executor@.service (not enabled: docs/executor.md), the docs, and the
# man pages and bash/zsh/fish completions generated from vgpuctl's command line
# (mdev-manager/examples/vgpuctl-docs.rs).
#
#   packaging/build-deb.sh [--out DIR] [--no-build]
#
# Prints the path of the .deb. Uses dpkg-deb only (no cargo-deb), so it runs on any
# Debian host with the project's toolchain (scripts/setup).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/lib.sh"

out=$top/target/deb build=1
while [ $# -gt 0 ]; do
	case "$1" in
	--out) out=$2; shift 2 ;;
	--no-build) build=0; shift ;;
	*) die "unknown option '$1' (see the header of $0)" ;;
	esac
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n1)
dkms_version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$top/kmod-shim/dkms.conf")
[ -n "$version" ] && [ -n "$dkms_version" ] || die "cannot read the versions"
# One version for the package, vgpuctl and the DKMS module: kmod-shim/dkms.conf must
# carry the workspace's (dkms.conf is read as it is by `dkms add` of the source tree).
[ "$version" = "$dkms_version" ] ||
	die "kmod-shim/dkms.conf has PACKAGE_VERSION=\"$dkms_version\" but Cargo.toml's workspace version is $version: make them one"
musl=$top/target/x86_64-unknown-linux-musl/release
if [ "$build" = 1 ]; then
	log "cargo build --release (musl) vgpuctl"
	cargo build -q --release --target x86_64-unknown-linux-musl -p vgpu-mdev-manager --bin vgpuctl
	cargo build -q --release -p vgpu-mdev-manager --example vgpuctl-docs
	log "cargo build --release vgpu-executor"
	cargo build -q --release -p vgpu-executor --bin vgpu-executor
fi
[ -x "$musl/vgpuctl" ] || die "$musl/vgpuctl missing (build it, or drop --no-build)"
executor=$top/target/release/vgpu-executor
[ -x "$executor" ] || die "$executor missing (build it, or drop --no-build)"
docgen=$top/target/release/examples/vgpuctl-docs
[ -x "$docgen" ] || die "$docgen missing (build it, or drop --no-build)"

stage=$(mktemp -d "${TMPDIR:-/tmp}/vgpu-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
pkg=$stage/vgpu
install -D -m 0755 "$musl/vgpuctl" "$pkg/usr/bin/vgpuctl"
install -D -m 0755 "$executor" "$pkg/usr/bin/vgpu-executor"
src=$pkg/usr/src/vgpu_shim-$dkms_version
mkdir -p "$src"
for f in "$top"/kmod-shim/*.c "$top"/kmod-shim/*.h "$top"/kmod-shim/Kbuild "$top"/kmod-shim/Makefile "$top"/kmod-shim/dkms.conf; do
	install -m 0644 "$f" "$src/"
done
install -D -m 0644 "$top/udev/90-vgpu.rules" "$pkg/lib/udev/rules.d/90-vgpu.rules"
install -D -m 0644 "$top/udev/vgpuctl-start-parent@.service" "$pkg/lib/systemd/system/vgpuctl-start-parent@.service"
install -D -m 0644 "$top/udev/vgpu-executor@.service" "$pkg/lib/systemd/system/vgpu-executor@.service"
doc=$pkg/usr/share/doc/vgpu
install -D -m 0644 "$top/README.md" "$doc/README.md"
for f in operator-guide device-abi engine-abi scheduler architecture benchmarks executor; do
	install -m 0644 "$top/docs/$f.md" "$doc/$f.md"
done
gen=$stage/gen
"$docgen" "$gen"
install -D -m 0644 "$gen/completions/vgpuctl.bash" "$pkg/usr/share/bash-completion/completions/vgpuctl"
install -D -m 0644 "$gen/completions/_vgpuctl" "$pkg/usr/share/zsh/vendor-completions/_vgpuctl"
install -D -m 0644 "$gen/completions/vgpuctl.fish" "$pkg/usr/share/fish/vendor_completions.d/vgpuctl.fish"
mkdir -p "$pkg/usr/share/man/man8"
for page in "$gen"/man/*.8; do
	gzip -9n <"$page" >"$pkg/usr/share/man/man8/$(basename "$page").gz"
done
install -D -m 0644 "$top/udev/modules-load.d-vgpu_shim.conf" "$doc/examples/modules-load.d/vgpu_shim.conf"
install -D -m 0644 "$top/udev/modprobe.d-vgpu_shim.conf" "$doc/examples/modprobe.d/vgpu_shim.conf"
cat >"$doc/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vgpu

Files: *
License: GPL-2.0-only OR Apache-2.0
 vgpuctl: GPL-2.0-only OR Apache-2.0. The vgpu_shim kernel module: GPL-2.0.
 On Debian systems the licenses are in /usr/share/common-licenses/.
COPY
mkdir -p "$pkg/etc/mdevctl.d"

mkdir -p "$pkg/DEBIAN"
size=$(du -sk "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: vgpu
Version: $version-1
Architecture: amd64
Maintainer: vgpu developers <vgpu@localhost>
Installed-Size: $size
Depends: dkms, kmod, libc6 (>= 2.34), libgcc-s1
Recommends: linux-headers-amd64, libvulkan1, mesa-vulkan-drivers
Suggests: mdevctl, libvirt-daemon-system, qemu-system-x86
Section: admin
Priority: optional
Description: vendor-neutral vGPU mediator for KVM hosts (VFIO mdev)
 vgpu_shim is an mdev vendor driver that slices an engine between VMs, each vGPU
 with a hard VRAM quota and an enforced share of engine time. This package holds
 the module source (built by DKMS for every installed kernel), vgpuctl (persistent
 mdevctl-compatible definitions, placement, libvirt XML, Prometheus metrics, top),
 the udev rule and systemd unit that start auto definitions at boot, and
 vgpu-executor, the daemon that runs a parent's commands on any GPU with a Vulkan
 driver in the module's external executor mode (unit vgpu-executor@<parent>).
CONTROL
cat >"$pkg/DEBIAN/postinst" <<POSTINST
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
	if ! dkms status -m vgpu_shim -v $dkms_version 2>/dev/null | grep -q .; then
		dkms add -m vgpu_shim -v $dkms_version
	fi
	# Build and install for the running kernel (when its headers are there); DKMS
	# builds it for kernels installed later by itself (AUTOINSTALL).
	dkms autoinstall -k "\$(uname -r)" || echo "vgpu: DKMS could not build vgpu_shim for \$(uname -r) (headers installed?)" >&2
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
	fi
	udevadm control --reload-rules 2>/dev/null || true
fi
exit 0
POSTINST
cat >"$pkg/DEBIAN/prerm" <<PRERM
#!/bin/sh
set -e
if [ "\$1" = remove ] || [ "\$1" = upgrade ] || [ "\$1" = deconfigure ]; then
	dkms remove -m vgpu_shim -v $dkms_version --all 2>/dev/null || true
fi
exit 0
PRERM
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm"
mkdir -p "$out"
deb=$out/vgpu_${version}-1_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
printf '%s\n' "$deb"
