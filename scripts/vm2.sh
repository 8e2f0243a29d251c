#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Two guests, "a" and "b", each with a bufshare device, both served by one
# vhost-user backend on the host that lets b import what a registers under
# "frames" and "big" (VIRTIO_BUFSHARE_F_IMPORT, a 16 MiB import region per
# guest). Both boot at once (TCG, one vCPU each) and run the same command:
# scripts/run-guest.sh with the given tests, by default the guest-to-guest
# test, bufshare_import_test, as exporter in a and importer in b.
#
#   vm2.sh [--name NAME] [--backend-args ARGS] [--env-a VAR=VALUE]...
#          [--env-b VAR=VALUE]... [--exec-a CMD --exec-b CMD] [-- TEST...]
#
# --exec-a and --exec-b run the shell commands CMD in a and b instead of
# the tests (make run-two).
#
# The run directory ($RUN, printed at the end) holds the backend's log
# (backend.log), one directory per guest (a/, b/: each guest's /build/run,
# with its console.log, dmesg.txt, kmemleak.txt and TEST.tap) and shared/,
# which both guests see as /build/shared, where the two halves of a test
# meet. Each guest has a fault file of its own (/build/run/fault, the
# backend's --fault-file with {guest}), to make its own device misbehave.
# The exit code is the first failing guest's, else 0.

. "$(dirname "$0")/lib.sh"

USAGE="usage: vm2.sh [--name NAME] [--backend-args ARGS] [--env-a V=X]... [--env-b V=X]... [--exec-a CMD --exec-b CMD] [-- TEST...]"
NAME=two-guests
BACKEND_ARGS=""
ENV_A=()
ENV_B=()
EXEC_A=""
EXEC_B=""
while [ $# -gt 0 ]; do
	case "$1" in
	--name) NAME=$2; shift 2 ;;
	--backend-args) BACKEND_ARGS=$2; shift 2 ;;
	--env-a) ENV_A+=("$2"); shift 2 ;;
	--env-b) ENV_B+=("$2"); shift 2 ;;
	--exec-a) EXEC_A=$2; shift 2 ;;
	--exec-b) EXEC_B=$2; shift 2 ;;
	--) shift; break ;;
	*) die "$USAGE" ;;
	esac
done
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(bufshare_import_test)

KDIR=$BUILD/linux
BACKEND=${BUFSHARE_BACKEND:-$BUFSHARE_CACHE/cargo-target/release/vhost-user-bufshare}
[ -x "$BACKEND" ] || die "no backend at $BACKEND (make tools)"
[ -e "$KDIR/arch/x86/boot/bzImage" ] || die "no kernel at $KDIR (make kernel)"
[ -e "$ROOT/.bufshare-done" ] || die "no toolchain tree (make toolchain)"

MEM=${BUFSHARE_VM_MEM:-1G}
TIMEOUT=${BUFSHARE_VM_TIMEOUT:-1200}
SHM=16M
new_run "$NAME"
mkdir -p "$RUN/a" "$RUN/b" "$RUN/shared"
chmod 1777 "$RUN/shared"

# Each guest's environment (scripts/run-guest.sh reads it).
for g in a b; do
	{
		echo "export BUFSHARE_MODULE=/build/linux/drivers/virtio/bufshare/virtio_bufshare.ko"
		echo "export BUFSHARE_TESTS=/build/tests"
		echo "export BUFSHARE_IMPORT_DIR=/build/shared"
		echo "export BUFSHARE_IMPORT_SOURCE=a"
		echo "export BUFSHARE_FAULT_FILE=/build/run/fault"
		if [ "$g" = a ]; then
			echo "export BUFSHARE_IMPORT_ROLE=exporter"
			for v in "${ENV_A[@]}"; do printf 'export %q\n' "$v"; done
		else
			echo "export BUFSHARE_IMPORT_ROLE=importer"
			for v in "${ENV_B[@]}"; do printf 'export %q\n' "$v"; done
		fi
	} > "$RUN/$g/env"
done

rm -f "$RUN/a/vhost.sock" "$RUN/b/vhost.sock"
# shellcheck disable=SC2086
RUST_LOG=${RUST_LOG:-info} "$BACKEND" \
	--guest "a=$RUN/a/vhost.sock" --guest "b=$RUN/b/vhost.sock" \
	--shm-size "$SHM" --allow-import b:frames=a --allow-import b:big=a \
	--fault-file "$RUN/{guest}/fault" \
	$BACKEND_ARGS >"$RUN/backend.log" 2>&1 &
backend=$!
pids=()
stop() {
	kill "${pids[@]}" 2>/dev/null || true
	kill "$backend" 2>/dev/null || true
	wait "$backend" 2>/dev/null || true
}
trap stop EXIT
wait_sockets 10 "$RUN/a/vhost.sock" "$RUN/b/vhost.sock" ||
	{ cat "$RUN/backend.log" >&2; die "backend did not start"; }

accel=--disable-kvm
[ "${BUFSHARE_KVM:-0}" = 1 ] && accel=""
append="rootflags=version=9p2000.L,trans=virtio,access=any,cache=loose,msize=1048576"
# No KUnit test at boot: the single-guest runs have those. Two guests
# under TCG on a busy host may miss the IO-APIC timer check's deadline and
# panic ("IO-APIC + timer doesn't work!"): it is skipped, as on most VMs.
# No ACPI interrupt links and a trusted TSC of a known frequency, as in
# vm.sh.
append+=" kunit.filter_glob=none no_timer_check acpi=noirq $(guest_clock_args "$accel")"
append+=" ${BUFSHARE_APPEND:-}"
guest_tests=()
for t in "${tests[@]}"; do guest_tests+=("/build/tests/$(basename "$t")"); done
cmd=$(printf '%q ' /src/scripts/run-guest.sh /build/run "${guest_tests[@]}")

# boot G: guest G, its run directory as its /build/run, shared/ as
# /build/shared.
boot() {
	local g=$1 qemu_opts exec=$cmd
	if [ -n "$EXEC_A$EXEC_B" ]; then
		[ "$g" = a ] && exec="bash -c $(printf '%q' "$EXEC_A")"
		[ "$g" = b ] && exec="bash -c $(printf '%q' "$EXEC_B")"
	fi
	qemu_opts="-object memory-backend-memfd,id=mem,size=$MEM,share=on -numa node,memdev=mem"
	qemu_opts+=" -chardev socket,id=bufshare,path=/build/run/vhost.sock"
	qemu_opts+=" -device vhost-user-test-device-pci,chardev=bufshare,virtio-id=37,num_vqs=2,config_size=24"
	IN_TREE_BINDS="$GUEST_BINDS --bind $RUN/$g /build/run --bind $RUN/shared /build/shared" \
		IN_TREE_CHDIR=/ cpu_counted "$RUN/$g/host-cpu" in_tree timeout --kill-after=10 "$TIMEOUT" \
		vng --run /build/linux $accel --force-9p --verbose --memory "$MEM" --cpus 1 \
		--user root --rwdir /build/run --rwdir /build/shared --append "$append" \
		--qemu-opts="$qemu_opts" --exec "$exec" </dev/null 2>&1 | cat >"$RUN/$g/console.log"
	# Through a pipe: QEMU reopens its stdout with O_TRUNC.
	return "${PIPESTATUS[0]}"
}

log "booting guests a and b ($([ -n "$accel" ] && echo TCG || echo KVM), timeout ${TIMEOUT}s), run directory $RUN"
mkdir -p "$BUILD/run" "$BUILD/shared"
boot a & pids+=($!)
boot b & pids+=($!)
rc=0
for p in "${pids[@]}"; do
	wait "$p" || { r=$?; [ "$rc" = 0 ] && rc=$r; }
done
pids=()
[ "$rc" = 124 ] && log "a guest timed out after ${TIMEOUT}s"
echo "$RUN"
exit "$rc"
