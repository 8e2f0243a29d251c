#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Lay the project's in-tree files over a kernel tree.
#
#   overlay.sh KDIR     copy the files and hook them into Kconfig, Makefiles
#                       and the Rust bindings; idempotent, and files whose
#                       content does not change keep their times
#   overlay.sh --list   the project files the overlay is made of
#
# New files are copied as they are. Existing kernel files are edited from
# their pristine version each time (the edits are listed below), so the
# result depends only on the inputs.

. "$(dirname "$0")/lib.sh"

# Files of ours, at the same path in the kernel tree.
FILES=(
	include/uapi/linux/virtio_bufshare.h
	include/uapi/linux/bufshare.h
)
for f in drivers/virtio/bufshare/Kconfig drivers/virtio/bufshare/Makefile rust/kernel/*.rs \
	rust/kernel/virtio/*.rs rust/helpers/*.c; do
	[ -e "$TOPDIR/$f" ] && FILES+=("$f")
done
# The driver's sources, not what an external module build left beside them.
while IFS= read -r f; do
	FILES+=("$f")
done < <(cd "$TOPDIR" && find drivers/virtio/bufshare -name '*.rs' | LC_ALL=C sort)

# Fragments the edits below insert into kernel files.
FRAGMENTS=(rust/kernel/sync/condvar_wait_timeout.rs)

if [ "${1:-}" = --list ]; then
	for f in "${FILES[@]}" "${FRAGMENTS[@]}"; do echo "$TOPDIR/$f"; done
	exit 0
fi

KDIR=${1:?usage: overlay.sh KDIR | --list}
PRISTINE=$BUILD/pristine/linux-source-7.3
STAGE=$BUILD/overlay-stage
rm -rf "$STAGE"
mkdir -p "$STAGE"

for f in "${FILES[@]}"; do
	mkdir -p "$STAGE/$(dirname "$f")"
	cp "$TOPDIR/$f" "$STAGE/$f"
done

# edit FILE: start from the pristine copy of FILE in the stage.
edit() {
	mkdir -p "$STAGE/$(dirname "$1")"
	[ -e "$STAGE/$1" ] || cp "$PRISTINE/$1" "$STAGE/$1"
}

# add_after FILE PATTERN TEXT: insert TEXT after the first line matching PATTERN.
add_after() {
	edit "$1"
	grep -q -- "$2" "$STAGE/$1" || die "overlay: '$2' not found in $1"
	awk -v pat="$2" -v text="$3" '
		{ print }
		!done && $0 ~ pat { print text; done = 1 }
	' "$STAGE/$1" > "$STAGE/$1.new"
	mv "$STAGE/$1.new" "$STAGE/$1"
}

# add_before FILE PATTERN TEXT: insert TEXT before the last line matching PATTERN.
add_before() {
	edit "$1"
	grep -q -- "$2" "$STAGE/$1" || die "overlay: '$2' not found in $1"
	local n
	n=$(grep -n -- "$2" "$STAGE/$1" | tail -1 | cut -d: -f1)
	awk -v n="$n" -v text="$3" 'NR == n { print text; print "" } { print }' \
		"$STAGE/$1" > "$STAGE/$1.new"
	mv "$STAGE/$1.new" "$STAGE/$1"
}

# append FILE TEXT
append() {
	edit "$1"
	printf '%s\n' "$2" >> "$STAGE/$1"
}

if [ -e "$TOPDIR/drivers/virtio/bufshare/Kconfig" ]; then
	add_before drivers/virtio/Kconfig '^endif # VIRTIO_MENU' 'source "drivers/virtio/bufshare/Kconfig"'
	append drivers/virtio/Makefile 'obj-$(CONFIG_VIRTIO_BUFSHARE)	+= bufshare/'
fi
if [ -e "$TOPDIR/rust/kernel/virtio.rs" ]; then
	add_after rust/kernel/lib.rs '^pub mod usb;' '#[cfg(CONFIG_VIRTIO)]
pub mod virtio;'
	add_after rust/kernel/lib.rs '^pub mod driver;' '#[cfg(CONFIG_DMA_SHARED_BUFFER)]
pub mod dma_buf;'
	add_after rust/kernel/lib.rs '^pub mod maple_tree;' '#[cfg(CONFIG_MEMFD_CREATE)]
pub mod memfd;'
	add_after rust/bindings/bindings_helper.h '#include <linux/xarray.h>' \
		'#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/scatterlist.h>
#include <linux/dma-buf.h>
#include <linux/memfd.h>'
	add_before rust/kernel/sync/condvar.rs '/// Calls the kernel function to notify the appropriate number of threads.' \
		"$(cat "$TOPDIR/rust/kernel/sync/condvar_wait_timeout.rs")"
	add_after rust/helpers/helpers.c '#include "vmalloc.c"' '#include "virtio.c"'
	add_after rust/helpers/helpers.c '#include "dma.c"' '#include "dma_map.c"'
	add_after rust/helpers/helpers.c '#include "mm.c"' '#include "memfd.c"'
	add_after rust/uapi/uapi_helper.h '#include <uapi/linux/ioctl.h>' \
		'#include <uapi/linux/virtio_bufshare.h>
#include <uapi/linux/bufshare.h>'
fi

# rsync from the toolchain tree: copies only files whose content changed.
case "$KDIR" in
"$BUILD"/*) in_tree rsync -rc /build/overlay-stage/ "/build/${KDIR#"$BUILD"/}/" ;;
*) die "overlay: $KDIR is not under $BUILD" ;;
esac
