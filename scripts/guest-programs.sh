#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the guest programs (kselftest-style tests, examples) with the
# toolchain tree's compiler, against the UAPI headers of the checkout and
# the kernel tree's kselftest_harness.h. Output: $BUFSHARE_CACHE/build/tests.

. "$(dirname "$0")/lib.sh"

[ -e "$BUILD/linux/tools/testing/selftests/kselftest_harness.h" ] ||
	die "no kernel tree (make kernel)"
in_tree bash -c '
	set -e
	rm -rf /build/tests && mkdir -p /build/tests
	CFLAGS="-O2 -g -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare -pthread"
	CFLAGS+=" -I/src/include/uapi -I/src/tests -I/build/linux/tools/testing/selftests"
	for c in /src/tests/*.c; do
		gcc $CFLAGS -o /build/tests/$(basename "$c" .c) "$c"
	done
'
ls "$BUILD/tests"
