#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the guest programs with the toolchain tree's compiler: the
# kselftests (tools/testing/selftests/drivers/virtio/bufshare, through the
# kernel tree's lib.mk, against its installed UAPI headers) and the samples
# (samples/bufshare), and put the Rust guest tests (built by tools.sh: the
# bufshare crate's, and the backend's udmabuf self-test) and the two-guest
# demo's viewer (bufshare-view) next to them.
# Output: $BUFSHARE_CACHE/build/tests (/build/tests in the guest).

. "$(dirname "$0")/lib.sh"

CRATE_TEST=$BUFSHARE_CACHE/cargo-target/release/bufshare-crate-test
UDMABUF_TEST=$BUFSHARE_CACHE/cargo-target/release/bufshare-udmabuf-selftest
VIEW=$BUFSHARE_CACHE/cargo-target/release/bufshare-view
SELFTESTS=tools/testing/selftests/drivers/virtio/bufshare
# The selftests build in the kernel tree, where the overlay puts them.
bash "$TOPDIR/scripts/kernel.sh" >/dev/null
[ -x "$CRATE_TEST" ] || die "no $CRATE_TEST (scripts/tools.sh build)"
[ -x "$UDMABUF_TEST" ] || die "no $UDMABUF_TEST (scripts/tools.sh build)"
[ -x "$VIEW" ] || die "no $VIEW (scripts/tools.sh build)"
# Built again only when what goes into them changed: every guest run calls
# this, and check.sh boots guests side by side, so a run must not take away
# the programs of a guest that is running them.
KEY=$(hash_inputs "$TOPDIR/scripts/guest-programs.sh" "$TOPDIR/$SELFTESTS" "$TOPDIR/samples/bufshare" \
	"$TOPDIR/include/uapi" "$BUILD/linux/.bufshare-key" "$CRATE_TEST" "$UDMABUF_TEST" "$VIEW")
if [ "$(cat "$BUILD/tests/.key" 2>/dev/null)" = "$KEY" ]; then
	log "guest programs up to date ($KEY)"
	ls "$BUILD/tests"
	exit 0
fi
in_tree bash -c "
	set -e
	rm -rf /build/tests.new && mkdir -p /build/tests.new
	# The UAPI headers the selftests build against (usr/include).
	make -s -C /build/linux LLVM=1 headers
	make -s -C /build/linux/$SELFTESTS OUTPUT=/build/tests.new USERCFLAGS=-Werror
	make -s -C /src/samples/bufshare OUTPUT=/build/tests.new CFLAGS='-O2 -g -Werror'
"
# Built on the host (Debian 12), it runs in the guest (trixie, a newer C library).
cp "$CRATE_TEST" "$BUILD/tests.new/bufshare-crate-test"
cp "$UDMABUF_TEST" "$BUILD/tests.new/bufshare-udmabuf-selftest"
cp "$VIEW" "$BUILD/tests.new/bufshare-view"
echo "$KEY" > "$BUILD/tests.new/.key"
rm -rf "$BUILD/tests.old"
[ ! -e "$BUILD/tests" ] || mv "$BUILD/tests" "$BUILD/tests.old"
mv "$BUILD/tests.new" "$BUILD/tests"
rm -rf "$BUILD/tests.old"
ls "$BUILD/tests"
