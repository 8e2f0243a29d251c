#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot the guest kernel with virtme-ng and the bufshare device attached,
# served by the vhost-user backend on the host, and run a command in it.
#
#   vm.sh [--backend-args "ARGS"] [--device-opts ",PROP=VALUE..."] -- GUEST-COMMAND...
#
# The guest's root is the toolchain tree over 9p; /src is the checkout,
# /build the cache's work area. The run directory, $RUN (made by the
# caller with new_run, or here), is the guest's /build/run: writable, it
# holds the backend's sockets and log (backend.log), the guest's console
# (console.log), environment file and results, and the relay's directory
# (scripts/relay.sh). --device-opts are appended to the bufshare device's
# QEMU properties (",event_idx=off", say).
#
# TCG by default (the /dev/kvm of these hosts is PVM, under which a stock
# guest hangs); BUFSHARE_KVM=1 uses KVM. Every boot is bounded by
# BUFSHARE_VM_TIMEOUT seconds (default 1200). BUFSHARE_SECOND_DEVICE=1
# attaches a second bufshare device, served by a backend of its own
# (backend2.log), for the driver's second misc device, /dev/bufshare1; its
# consumers connect to $RUN/consumer2.sock (the relay's "watch ... second").
# BUFSHARE_SECOND_BACKEND_ARGS are added to that backend's arguments; with
# --no-events among them the device has one queue (num_vqs=1).
# BUFSHARE_HOTPLUG_TEST=1 boots with ACPI's interrupt routing, which the
# hotplug test's device_del needs (below). BUFSHARE_APPEND adds to the
# kernel's command line, BUFSHARE_QEMU_OPTS to QEMU's options.

. "$(dirname "$0")/lib.sh"

USAGE="usage: vm.sh [--backend-args ARGS] [--device-opts OPTS] -- COMMAND..."
BACKEND_ARGS=""
DEVICE_OPTS=""
while [ $# -gt 0 ]; do
	case "$1" in
	--backend-args) BACKEND_ARGS=$2; shift 2 ;;
	--device-opts) DEVICE_OPTS=$2; shift 2 ;;
	--) shift; break ;;
	*) die "$USAGE" ;;
	esac
done
[ $# -gt 0 ] || die "$USAGE"
[ -n "${RUN:-}" ] && [ -d "$RUN" ] || new_run vm

# BUFSHARE_VM_KERNEL names the kernel tree under the cache's build
# directory (linux; make bench: linux-bench). BUFSHARE_QEMU_OPTS are added
# to QEMU's options (make bench: a virtio-serial port to a host process).
KNAME=${BUFSHARE_VM_KERNEL:-linux}
KDIR=$BUILD/$KNAME
BACKEND=${BUFSHARE_BACKEND:-$BUFSHARE_CACHE/cargo-target/release/vhost-user-bufshare}
[ -x "$BACKEND" ] || die "no backend at $BACKEND (make tools)"
[ -e "$KDIR/arch/x86/boot/bzImage" ] || die "no kernel at $KDIR (make kernel)"
[ -e "$ROOT/.bufshare-done" ] || die "no toolchain tree (make toolchain)"

MEM=${BUFSHARE_VM_MEM:-2G}
TIMEOUT=${BUFSHARE_VM_TIMEOUT:-1200}
SOCK=$RUN/vhost.sock
INSPECT=${BUFSHARE_INSPECT:-$BUFSHARE_CACHE/cargo-target/release/bufshare-inspect}
# Host programs (bufshare-watch) get the guest's buffers here.
export BUFSHARE_CONSUMER_SOCKET=$RUN/consumer.sock
# Host tools find the backend's inspect socket here.
export BUFSHARE_INSPECT_SOCKET=$RUN/inspect.sock
INSPECT_SOCK=$BUFSHARE_INSPECT_SOCKET

# The backend, on the host, with its inspect socket for host tools. Where
# the host has no /dev/udmabuf (these machines), consumers get buffers as
# segments of the guest's memory file, which the backend hands only to the
# uids it is told to trust with all of guest RAM: the host tools' (root)
# and the tests' unprivileged watcher (nobody, read-only).
rm -f "$SOCK" "$INSPECT_SOCK" "$BUFSHARE_CONSUMER_SOCKET"
# shellcheck disable=SC2086
RUST_LOG=${RUST_LOG:-info} "$BACKEND" --socket-path "$SOCK" \
	--inspect-socket "$INSPECT_SOCK" --consumer-socket "$BUFSHARE_CONSUMER_SOCKET" \
	--guest-name guest0 --allow 65534=permitted \
	--trust-ram 0=rw --trust-ram 65534=ro \
	--fault-file "$RUN/fault" $BACKEND_ARGS >"$RUN/backend.log" 2>&1 &
backend=$!
backend2=""
CSOCK2=""
SECOND_VQS=2
if [ "${BUFSHARE_SECOND_DEVICE:-0}" = 1 ]; then
	CSOCK2=$RUN/consumer2.sock
	SECOND_ARGS=${BUFSHARE_SECOND_BACKEND_ARGS:-}
	case " $SECOND_ARGS " in *" --no-events "*) SECOND_VQS=1 ;; esac
	rm -f "$RUN/vhost2.sock" "$CSOCK2"
	# shellcheck disable=SC2086
	RUST_LOG=${RUST_LOG:-info} "$BACKEND" --socket-path "$RUN/vhost2.sock" \
		--consumer-socket "$CSOCK2" --allow 65534=permitted \
		--trust-ram 0=rw --trust-ram 65534=ro \
		--guest-name guest0-second $BACKEND_ARGS $SECOND_ARGS >"$RUN/backend2.log" 2>&1 &
	backend2=$!
fi
relay=""
stop() {
	if [ -n "$relay" ]; then
		kill "$relay" 2>/dev/null || true
		wait "$relay" 2>/dev/null || true
	fi
	kill "$backend" $backend2 2>/dev/null || true
	wait "$backend" $backend2 2>/dev/null || true
}
trap stop EXIT
wait_sockets 10 "$SOCK" || { cat "$RUN/backend.log" >&2; die "backend did not start"; }
if [ -n "$backend2" ]; then
	wait_sockets 10 "$RUN/vhost2.sock" ||
		{ cat "$RUN/backend2.log" >&2; die "second backend did not start"; }
fi

# The relay (scripts/relay.sh): the guest tests' way to the inspect
# socket, and to host consumers (bufshare-watch) on the consumer socket,
# through $RUN/relay (/build/run/relay in the guest).
WATCH=${BUFSHARE_WATCH:-$BUFSHARE_CACHE/cargo-target/release/bufshare-watch}
rm -rf "$RUN/relay"
mkdir "$RUN/relay"
if [ -x "$INSPECT" ]; then
	bash "$TOPDIR/scripts/relay.sh" --watch "$WATCH" --qmp "$RUN/qmp.sock" \
		--consumer-socket "$BUFSHARE_CONSUMER_SOCKET" ${CSOCK2:+--consumer-socket2 "$CSOCK2"} \
		"$RUN/relay" "$INSPECT_SOCK" "$INSPECT" $$ \
		>"$RUN/relay.log" 2>&1 &
	relay=$!
else
	log "no $INSPECT: no relay"
fi

accel=--disable-kvm
[ "${BUFSHARE_KVM:-0}" = 1 ] && accel=""

# With a 9p root vng sets up no shared memory: the backend must map guest
# RAM, so it comes from a shared memfd.
qemu_opts="-object memory-backend-memfd,id=mem,size=$MEM,share=on -numa node,memdev=mem"
qemu_opts+=" -chardev socket,id=bufshare,path=/build/run/vhost.sock"
# The device sits behind a PCIe root port, as a PCIe function: it has a
# function level reset (the guest's /sys/bus/pci/devices/*/reset), and QEMU
# can remove it (device_del, which QEMU signals through ACPI and the
# guest's acpiphp carries out) when the relay asks on the QMP socket.
qemu_opts+=" -qmp unix:/build/run/qmp.sock,server=on,wait=off"
qemu_opts+=" -device pcie-root-port,id=bufshare-port,chassis=1,slot=1"
qemu_opts+=" -device vhost-user-test-device-pci,id=bufshare-dev,bus=bufshare-port,chardev=bufshare,virtio-id=37,num_vqs=2,config_size=24$DEVICE_OPTS"
if [ -n "$backend2" ]; then
	qemu_opts+=" -chardev socket,id=bufshare2,path=/build/run/vhost2.sock"
	qemu_opts+=" -device pcie-root-port,id=bufshare-port2,chassis=2,slot=2"
	qemu_opts+=" -device vhost-user-test-device-pci,bus=bufshare-port2,chardev=bufshare2,virtio-id=37,num_vqs=$SECOND_VQS,config_size=24"
fi

# Kernel arguments. A cached 9p root saves reading every binary again at
# every start (the root is read-only; the shared /build/run stays
# uncached). PCI's resources are left to ACPI (with pci=noacpi the
# windows of the root port conflict with ACPI's host bridge and the device
# behind it gets no usable BARs). Its legacy interrupts are left to ACPI
# only where the hotplug test runs (BUFSHARE_HOTPLUG_TEST=1): acpi=noirq
# spares the ACPI interpreter the interrupt links, which it evaluated for
# every PCI device it enabled (virtio_pci_driver_init alone took 6.5 s,
# under initcall_debug), when every device here interrupts through MSI-X;
# booting to a test, five alternating boots took 32 to 40 s with the
# links, 26 to 27 s without. But it also puts ACPI's own interrupt in PIC
# mode, so ACPI's events are lost, and with them QEMU's device_del: the
# hotplug test timed out.
append="rootflags=version=9p2000.L,trans=virtio,access=any,cache=loose,msize=1048576"
[ "${BUFSHARE_HOTPLUG_TEST:-0}" = 1 ] || append+=" acpi=noirq"
# Of the KUnit tests built in, only the doctests of the project's virtio and
# rate limit abstractions run ("vir..." and "rat...").
append+=" kunit.filter_glob=rust_doctests_kernel.rust_doctest_kernel_[rv][ai][rt]*"
# A trusted TSC, of the host's frequency under TCG (lib.sh).
append+=" $(guest_clock_args "$accel")"
append+=" ${BUFSHARE_APPEND:-}"
qemu_opts+=" ${BUFSHARE_QEMU_OPTS:-}"

cmd=$(printf '%q ' "$@")
log "booting guest ($([ -n "$accel" ] && echo TCG || echo KVM), timeout ${TIMEOUT}s), run directory $RUN"
# vng's console goes through a pipe: QEMU reopens its stdout with O_TRUNC.
set +e
# vng resolves --rwdir relative to its working directory: run it from /.
# The run directory is the guest's /build/run (a bind over an empty
# directory, so that runs may go on side by side).
mkdir -p "$BUILD/run"
# Its host CPU goes to $RUN/host-cpu (cpu_counted).
IN_TREE_BINDS="$GUEST_BINDS --bind $RUN /build/run" IN_TREE_CHDIR=/ \
	cpu_counted "$RUN/host-cpu" in_tree timeout --kill-after=10 "$TIMEOUT" \
	vng --run "/build/$KNAME" $accel --force-9p --verbose --memory "$MEM" --cpus 2 \
	--user root --rwdir /build/run --append "$append" \
	--qemu-opts="$qemu_opts" --exec "$cmd" </dev/null 2>&1 | tee "$RUN/console.log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 124 ] && log "guest timed out after ${TIMEOUT}s"
exit "$rc"
