#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot a guest in a run directory of its own and run guest tests in it
# (scripts/run-guest.sh), with the backend limits the tests expect. Prints
# the run directory: its console.log, dmesg.txt, kmemleak.txt,
# backend.log and one TEST.tap per test are the results.
#
#   guest-tests.sh [--name NAME] [--device-opts OPTS] [TEST...]
#
# TEST is a program of $BUFSHARE_CACHE/build/tests (bufshare_stress_test,
# say); all of them by default. OPTS are appended to the device's QEMU
# properties (",event_idx=off"). The environment's BUFSHARE_STRESS_SECONDS,
# BUFSHARE_STRESS_BOUND_MS and BUFSHARE_WIDE_SECONDS reach the stress test,
# BUFSHARE_RANDOM_SECONDS and BUFSHARE_RANDOM_SEED the random-ioctl test.
# BUFSHARE_HARNESS_ARGS_<TEST> (TEST a kselftest's name, bufshare_events_test
# say) are passed to that test (harness options: "-f FIXTURE" runs only that
# fixture's tests). With BUFSHARE_SECOND_DEVICE=1 and --no-events in
# BUFSHARE_SECOND_BACKEND_ARGS (scripts/vm.sh), the tests find the device
# without events in BUFSHARE_NO_EVENTS_DEV (/dev/bufshare1).

. "$(dirname "$0")/lib.sh"

NAME=tests
DEVICE_OPTS=""
while [ $# -gt 0 ]; do
	case "$1" in
	--name) NAME=$2; shift 2 ;;
	--device-opts) DEVICE_OPTS=$2; shift 2 ;;
	--) shift; break ;;
	-*) die "usage: guest-tests.sh [--name NAME] [--device-opts OPTS] [TEST...]" ;;
	*) break ;;
	esac
done

# Backend limits the tests fit in: a 256 MiB buffer of scattered pages
# (65536 ranges), a buffer larger than the limit that the guest can still
# make (sparse), and fewer buffers than the driver's own default limits
# (1024 per file, 4096 in all) so that the device's is the one reached.
MAX_RANGES=100000 MAX_PROPS=3000 MAX_BUFFERS=999 MAX_SIZE=$((512 << 20))

new_run "$NAME"
cat > "$RUN/env" <<ENV
export BUFSHARE_MODULE=/build/linux/drivers/virtio/bufshare/virtio_bufshare.ko
export BUFSHARE_TESTS=/build/tests
export BUFSHARE_FAULT_FILE=/build/run/fault
export BUFSHARE_RELAY_DIR=/build/run/relay
export BUFSHARE_EXPECT_MAX_RANGES=$MAX_RANGES
export BUFSHARE_EXPECT_MAX_PROPS_SIZE=$MAX_PROPS
export BUFSHARE_EXPECT_MAX_BUFFERS=$MAX_BUFFERS
export BUFSHARE_EXPECT_MAX_BUFFER_SIZE=$MAX_SIZE
export BUFSHARE_STRESS_SECONDS=${BUFSHARE_STRESS_SECONDS:-30}
export BUFSHARE_STRESS_BOUND_MS=${BUFSHARE_STRESS_BOUND_MS:-3000}
export BUFSHARE_WIDE_SECONDS=${BUFSHARE_WIDE_SECONDS:-8}
export BUFSHARE_RANDOM_SECONDS=${BUFSHARE_RANDOM_SECONDS:-10}
export BUFSHARE_HOTPLUG_TEST=${BUFSHARE_HOTPLUG_TEST:-0}
ENV
# A seed repeats a random-ioctl run; without one, each run picks its own.
if [ -n "${BUFSHARE_RANDOM_SEED:-}" ]; then
	case "$BUFSHARE_RANDOM_SEED" in
	*[!0-9a-fA-Fx]*) die "BUFSHARE_RANDOM_SEED is a number (0x... as the test prints it)" ;;
	esac
	echo "export BUFSHARE_RANDOM_SEED=$BUFSHARE_RANDOM_SEED" >> "$RUN/env"
fi
for v in ${!BUFSHARE_HARNESS_ARGS_*}; do
	printf 'export %s=%q\n' "$v" "${!v}" >> "$RUN/env"
done
if [ "${BUFSHARE_SECOND_DEVICE:-0}" = 1 ]; then
	case " ${BUFSHARE_SECOND_BACKEND_ARGS:-} " in
	*" --no-events "*) echo "export BUFSHARE_NO_EVENTS_DEV=/dev/bufshare1" >> "$RUN/env" ;;
	esac
fi
log "guest tests ($NAME): $RUN"
# The guest tests take longer than a boot's default bound.
export BUFSHARE_VM_TIMEOUT=${BUFSHARE_VM_TIMEOUT:-2400}
tests=()
for t in "$@"; do tests+=("/build/tests/$(basename "$t")"); done
rc=0
bash "$TOPDIR/scripts/vm.sh" --backend-args "--max-ranges $MAX_RANGES \
--max-props-size $MAX_PROPS --max-buffers $MAX_BUFFERS --max-buffer-size $MAX_SIZE" \
	--device-opts "$DEVICE_OPTS" \
	-- /src/scripts/run-guest.sh /build/run "${tests[@]}" >/dev/null || rc=$?
echo "$RUN"
exit "$rc"
