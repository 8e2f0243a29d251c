#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the guest programs (kselftest-style tests, examples) with the
# toolchain tree's compiler, against the UAPI headers of the checkout and
# the kernel tree's kselftest_harness.h, and put the Rust guest tests (built
# by tools.sh: the bufshare crate's, and the backend's udmabuf self-test)
# next to them. Output: $BUFSHARE_CACHE/build/tests (/build/tests in the
# guest).

. "$(dirname "$0")/lib.sh"

CRATE_TEST=$BUFSHARE_CACHE/cargo-target/release/bufshare-crate-test
UDMABUF_TEST=$BUFSHARE_CACHE/cargo-target/release/bufshare-udmabuf-selftest
[ -e "$BUILD/linux/tools/testing/selftests/kselftest_harness.h" ] ||
	die "no kernel tree (make kernel)"
[ -x "$CRATE_TEST" ] || die "no $CRATE_TEST (scripts/tools.sh build)"
[ -x "$UDMABUF_TEST" ] || die "no $UDMABUF_TEST (scripts/tools.sh build)"
in_tree bash -c '
	set -e
	rm -rf /build/tests && mkdir -p /build/tests
	CFLAGS="-O2 -g -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare -pthread"
	CFLAGS+=" -I/src/include/uapi -I/src/tests -I/build/linux/tools/testing/selftests"
	for c in /src/tests/*.c /src/samples/bufshare/*.c; do
		gcc $CFLAGS -o /build/tests/$(basename "$c" .c) "$c"
	done
'
# Built on the host (Debian 12), it runs in the guest (trixie, a newer C library).
cp "$CRATE_TEST" "$BUILD/tests/bufshare-crate-test"
cp "$UDMABUF_TEST" "$BUILD/tests/bufshare-udmabuf-selftest"
ls "$BUILD/tests"
