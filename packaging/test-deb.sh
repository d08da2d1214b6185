#!/usr/bin/env bash
# Test the Debian package: build it, install it into a throwaway root (dpkg --root,
# unpack only: its maintainer scripts would act on the host), check the files, the
# control data, the binary, the udev rule and the unit (systemd-analyze verify), then
# build the packaged module source with DKMS against the 6.1 and 6.12 headers in a
# private DKMS tree. Prints TAP; exits non-zero on any failure.
#
#   packaging/test-deb.sh [--no-build]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/lib.sh"

n=0 failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else notok "$what"; fi; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vgpu-debtest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
deb=$("$top/packaging/build-deb.sh" --out "$tmp" "$@")
dkms_version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$top/kmod-shim/dkms.conf")

# Control data.
info=$(dpkg-deb --field "$deb")
for want in "Package: vgpu" "Architecture: amd64" "Depends: dkms, kmod, libc6 (>= 2.34), libgcc-s1"; do
	check "control has '$want'" grep -qx "$want" <<<"$info"
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n1)
check "dkms.conf's PACKAGE_VERSION is the workspace's ($dkms_version, $version)" test "$dkms_version" = "$version"
check "the package's version is the workspace's" grep -qx "Version: $version-1" <<<"$info"
check "postinst registers the module with DKMS" sh -c "dpkg-deb --ctrl-tarfile '$deb' | tar -xO ./postinst | grep -q 'dkms add -m vgpu_shim -v $dkms_version'"

# Install into a throwaway root with its own dpkg database.
root=$tmp/root
mkdir -p "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/info"
: >"$root/var/lib/dpkg/status"
check "dpkg --root --unpack" dpkg --root="$root" --force-depends --unpack "$deb"
check "dpkg lists the package as unpacked" sh -c "dpkg --root='$root' -s vgpu | grep -q '^Status: install ok unpacked'"
for f in usr/bin/vgpuctl lib/udev/rules.d/90-vgpu.rules "lib/systemd/system/vgpuctl-start-parent@.service" \
	usr/bin/vgpu-executor "lib/systemd/system/vgpu-executor@.service" usr/share/doc/vgpu/executor.md \
	usr/src/vgpu_shim-$dkms_version/dkms.conf usr/src/vgpu_shim-$dkms_version/vgpu_main.c \
	usr/src/vgpu_shim-$dkms_version/Kbuild usr/share/doc/vgpu/operator-guide.md \
	usr/share/doc/vgpu/examples/modprobe.d/vgpu_shim.conf usr/share/doc/vgpu/examples/modules-load.d/vgpu_shim.conf; do
	check "installed /$f" test -s "$root/$f"
done
for f in usr/share/man/man8/vgpuctl.8.gz usr/share/man/man8/vgpuctl-apply.8.gz \
	usr/share/bash-completion/completions/vgpuctl usr/share/zsh/vendor-completions/_vgpuctl \
	usr/share/fish/vendor_completions.d/vgpuctl.fish; do
	check "installed /$f" test -s "$root/$f"
done
check "the man page renders and names every verb" sh -c "man -l '$root/usr/share/man/man8/vgpuctl.8.gz' 2>&1 | grep -q 'vgpuctl-apply(8)'"
# One page per verb but `help`, plus vgpuctl(8): as many as `--help` lists commands.
verbs=$("$root/usr/bin/vgpuctl" --help | sed -n '/^Commands:/,/^$/p' | grep -c '^  [a-z]')
check "a man page per verb ($verbs)" test "$(ls "$root/usr/share/man/man8" | wc -l)" -eq "$verbs"
check "bash completes vgpuctl's verbs" bash -c ". '$root/usr/share/bash-completion/completions/vgpuctl' && COMP_WORDS=(vgpuctl ap) COMP_CWORD=1 && _vgpuctl vgpuctl ap vgpuctl && [ \"\${COMPREPLY[*]}\" = apply ]"
check "dpkg -L lists vgpuctl" sh -c "dpkg --root='$root' -L vgpu | grep -qx /usr/bin/vgpuctl"
check "vgpuctl is static and runs" sh -c "'$root/usr/bin/vgpuctl' --version | grep -q '^vgpuctl '"
check "vgpu-executor runs (its usage)" sh -c "'$root/usr/bin/vgpu-executor' --help | grep -q -- '--serve'"
check "dkms.conf names the directory's version" grep -q "PACKAGE_VERSION=\"$dkms_version\"" "$root/usr/src/vgpu_shim-$dkms_version/dkms.conf"

# The udev rule starts the unit the package ships, for the vgpu_shim subsystem only.
rule=$root/lib/udev/rules.d/90-vgpu.rules
check "rule matches vgpu_shim parents" grep -q '^SUBSYSTEM!="vgpu_shim", GOTO="vgpu_end"' "$rule"
check "rule reacts to MDEV_STATE=registered" grep -q 'ENV{MDEV_STATE}=="registered", RUN+="/bin/systemctl --no-block start vgpuctl-start-parent@$kernel.service"' "$rule"
unit=$root/lib/systemd/system/vgpuctl-start-parent@.service
check "unit runs vgpuctl start-parent" grep -qx 'ExecStart=/usr/bin/vgpuctl start-parent %i' "$unit"
if command -v systemd-analyze >/dev/null; then
	# verify needs an instance and an ExecStart that exists here.
	mkdir -p "$tmp/units"
	sed "s#/usr/bin/vgpuctl#$root/usr/bin/vgpuctl#" "$unit" >"$tmp/units/vgpuctl-start-parent@vgpu_shim0.service"
	if out=$(systemd-analyze verify "$tmp/units/vgpuctl-start-parent@vgpu_shim0.service" 2>&1) &&
		! grep -qi 'vgpuctl-start-parent' <<<"$out"; then
		ok "systemd-analyze verify accepts the unit"
	else
		notok "systemd-analyze verify accepts the unit"
		printf '# %s\n' "$out"
	fi
	eunit=$root/lib/systemd/system/vgpu-executor@.service
	sed "s#/usr/bin/vgpu-executor#$root/usr/bin/vgpu-executor#" "$eunit" >"$tmp/units/vgpu-executor@vgpu_shim0.service"
	if out=$(systemd-analyze verify "$tmp/units/vgpu-executor@vgpu_shim0.service" 2>&1) &&
		! grep -qi 'vgpu-executor' <<<"$out"; then
		ok "systemd-analyze verify accepts vgpu-executor@.service"
	else
		notok "systemd-analyze verify accepts vgpu-executor@.service"
		printf '# %s\n' "$out"
	fi
else
	echo "ok $((n += 1)) # SKIP systemd-analyze not installed"
fi
check "vgpu-executor@ serves its parent's device" grep -q '^ExecStart=/usr/bin/vgpu-executor --serve /dev/vgpu-exec/%i ' "$root/lib/systemd/system/vgpu-executor@.service"

# DKMS builds the packaged source for both kernels the project supports.
if command -v dkms >/dev/null; then
	for flavour in 6.1 6.12; do
		kver=$(kver_of "$flavour")
		if [ ! -d "/lib/modules/$kver/build" ]; then
			echo "ok $((n += 1)) # SKIP no headers for $kver"
			continue
		fi
		tree=$tmp/dkms-$flavour
		mkdir -p "$tree"
		if dkms add -m vgpu_shim -v "$dkms_version" --sourcetree "$root/usr/src" --dkmstree "$tree" >"$tmp/dkms.log" 2>&1 &&
			dkms build -m vgpu_shim -v "$dkms_version" -k "$kver" --sourcetree "$root/usr/src" --dkmstree "$tree" >>"$tmp/dkms.log" 2>&1 &&
			ls "$tree/vgpu_shim/$dkms_version/$kver/x86_64/module/"vgpu_shim.ko* >/dev/null 2>&1; then
			ok "dkms build of the packaged source for $kver"
		else
			notok "dkms build of the packaged source for $kver"
			sed 's/^/# /' "$tmp/dkms.log" | tail -n 30
			find "$tree" -name make.log -exec tail -n 20 {} \; 2>/dev/null | sed 's/^/# /'
		fi
	done
else
	echo "ok $((n += 1)) # SKIP dkms not installed (apt-get install dkms)"
fi

echo "1..$n"
echo "$((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
