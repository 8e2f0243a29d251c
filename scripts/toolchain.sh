#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Make (once) the Debian trixie tree that holds everything the project
# builds and boots with: the kernel source, a rustc/bindgen pair that the
# kernel accepts, QEMU >= 10.2, virtme-ng. The host's apt sources are never
# touched: the tree is made with mmdebstrap and entered with bubblewrap.
#
# The tree is cached under $BUFSHARE_CACHE/tree-<hash of this file>.
# Changing anything here makes a new tree.

. "$(dirname "$0")/lib.sh"

# Versions: rustc 1.85.1 + bindgen 0.71.1 + clang 19 is the set Debian built
# its own CONFIG_RUST=y 7.3 kernels with (7.3's min-tool-version asks
# rustc >= 1.85.0, bindgen >= 0.71.1). Newer rustc from backports pulls a
# newer LLVM that does not match clang 19. QEMU comes from trixie-backports
# (>= 10.2 has vhost-user-test-device-pci).
PKGS="build-essential,bc,bison,flex,libelf-dev,libssl-dev,cpio,kmod,rsync,xz-utils,python3"
PKGS+=",rustc,rust-src,rustfmt,rust-clippy,bindgen,libclang-dev,clang,lld,llvm"
PKGS+=",virtme-ng,virtiofsd,busybox-static,qemu-system-x86,linux-source-7.3"
PKGS+=",mount,udev,systemd-sysv,procps,iproute2,util-linux,kmod,strace"

PIN='Package: qemu* seabios ipxe-qemu* ovmf*
Pin: release n=trixie-backports
Pin-Priority: 990

Package: rustc rust-src rustfmt rust-clippy cargo libstd-rust*
Pin: version 1.85.1*
Pin-Priority: 995

Package: bindgen
Pin: version 0.71.1*
Pin-Priority: 995

Package: linux-source-7.3
Pin: version 7.3.4-*
Pin-Priority: 995
'

host_tools() {
	local need=()
	command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
	command -v bwrap >/dev/null || need+=(bubblewrap)
	command -v zstd >/dev/null || need+=(zstd)
	if [ ${#need[@]} -gt 0 ]; then
		log "installing host tools: ${need[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
	fi
}

make_tree() {
	local tmp=$ROOT.tmp
	rm -rf "$tmp"
	log "making toolchain tree $ROOT (about a minute)"
	mmdebstrap --quiet --variant=apt --components=main --include="$PKGS" \
		--setup-hook="mkdir -p \"\$1/etc/apt/preferences.d\" && printf '%s' '$PIN' > \"\$1/etc/apt/preferences.d/bufshare-pins\"" \
		trixie "$tmp" \
		"deb http://deb.debian.org/debian trixie main" \
		"deb http://deb.debian.org/debian trixie-backports main"
	mkdir -p "$tmp/src" "$tmp/build"
	# Old trees of other keys are of no further use.
	find "$BUFSHARE_CACHE" -maxdepth 1 -name 'tree-*' ! -name "tree-$TREE_KEY*" \
		-exec rm -rf {} +
	mv "$tmp" "$ROOT"
	touch "$ROOT/.bufshare-done"
}

host_tools
if [ ! -e "$ROOT/.bufshare-done" ]; then
	make_tree
fi

in_tree sh -c '
	printf "toolchain tree: %s\n" "$(cat /etc/debian_version)"
	for p in rustc rust-src bindgen clang-19 libclang-19-dev qemu-system-x86 virtme-ng linux-source-7.3; do
		dpkg-query -W -f="  \${Package} \${Version}\n" "$p" 2>/dev/null || echo "  $p (missing)"
	done
	qemu-system-x86_64 -device help 2>/dev/null | grep -q vhost-user-test-device-pci ||
		{ echo "qemu has no vhost-user-test-device-pci" >&2; exit 1; }
' >&2
echo "$ROOT"
