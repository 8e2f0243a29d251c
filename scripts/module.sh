#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the driver as an external module against the project's kernel tree,
# the way a user builds it against their own (make KDIR=...).
#
#   module.sh [make arguments]     e.g. CLIPPY=1, rustfmtcheck

. "$(dirname "$0")/lib.sh"

KDIR=$(bash "$TOPDIR/scripts/kernel.sh")
[ "$KDIR" = "$BUILD/linux" ] || die "unexpected kernel tree $KDIR"
if [ "${1:-}" = rustfmtcheck ]; then
	# The kernel's rustfmtcheck does not take M=: check the project's Rust
	# files the same way, with the kernel's rustfmt settings.
	in_tree bash -c 'cd /src && rustfmt --check --edition 2021 \
		--config-path /build/linux/.rustfmt.toml drivers/virtio/bufshare/virtio_bufshare.rs rust/kernel/*.rs rust/kernel/dma_buf/*.rs'
	exit
fi
args=$(printf '%q ' "$@")
in_tree bash -c "make -C /build/linux M=/src LLVM=1 ${args:-modules}"
