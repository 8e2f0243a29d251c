#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Suspend and resume with buffers registered: boots the test kernel with an
# initramfs root and runs bufshare_pm_test in it, against the real backend.
#
#   pm-test.sh [--name NAME] [-- HARNESS-ARG...]
#
# HARNESS-ARGs go to bufshare_pm_test (-t TEST runs that test only).
# The other guests' root is virtio-9p, whose transport (net/9p/trans_virtio.c)
# has no freeze or restore: after a suspend it is dead. This guest has no 9p
# and no virtme-ng: QEMU run directly, the kernel of scripts/kernel.sh, an
# initramfs of the tree's static busybox, the driver and the static test
# (scripts/pm-init.sh is its /init), the bufshare device attached and served
# as scripts/vm.sh does it. Without a shared directory, the guest talks to
# the host through a second serial port (ttyS1, a pair of FIFOs here): the
# test asks what the host holds (bufshare-inspect through the backend's
# inspect socket), and the guest sends its results back at the end.
#
# Shows the guest's console, then prints the run directory (the last line),
# made with new_run, with what run-guest.sh's
# runs have: console.log, bufshare_pm_test.tap, dmesg.txt, kmemleak.txt,
# timing.txt, backend.log, done; and relay.log (the serial port's requests).
# BUFSHARE_PM_MODULE names another driver module to load (a test of the
# test); BUFSHARE_VM_TIMEOUT bounds the boot (default 600 s).

. "$(dirname "$0")/lib.sh"

NAME=pm
while [ $# -gt 0 ]; do
	case "$1" in
	--name) NAME=$2; shift 2 ;;
	--) shift; break ;;
	*) die "usage: pm-test.sh [--name NAME] [-- HARNESS-ARG...]" ;;
	esac
done

KDIR=$(bash "$TOPDIR/scripts/kernel.sh")
bash "$TOPDIR/scripts/tools.sh" build >&2
# The guest programs, as for the other guests: the selftests' Makefile
# links this test static.
bash "$TOPDIR/scripts/guest-programs.sh" >/dev/null
MODULE=${BUFSHARE_PM_MODULE:-$KDIR/drivers/virtio/bufshare/virtio_bufshare.ko}
TEST=$BUILD/tests/bufshare_pm_test
BACKEND=$BUFSHARE_CACHE/cargo-target/release/vhost-user-bufshare
INSPECT=$BUFSHARE_CACHE/cargo-target/release/bufshare-inspect
[ -e "$MODULE" ] || die "no module $MODULE"
[ -x "$TEST" ] || die "no $TEST"
[ -x "$BACKEND" ] && [ -x "$INSPECT" ] || die "no backend or bufshare-inspect (make tools)"
command -v python3 >/dev/null || die "no python3 on the host (the crc32 of what the host reads)"

new_run "$NAME"
mkdir -p "$BUILD/run"
log "suspend test: $RUN"

# The initramfs: uncompressed, so that the guest spends no time unpacking.
mkdir "$RUN/initramfs"
cp "$TOPDIR/scripts/pm-init.sh" "$RUN/initramfs/init"
chmod 755 "$RUN/initramfs/init"
mkdir "$RUN/initramfs/bin"
cp "$ROOT/bin/busybox" "$RUN/initramfs/bin/busybox"
cp "$MODULE" "$RUN/initramfs/virtio_bufshare.ko"
cp "$TEST" "$RUN/initramfs/bufshare_pm_test"
printf '%s\n' "$@" > "$RUN/initramfs/harness-args"
IN_TREE_BINDS="--bind $RUN /build/run" IN_TREE_CHDIR=/build/run/initramfs \
	in_tree sh -c 'find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet > ../initramfs.cpio'
rm -rf "$RUN/initramfs"

# The backend, as vm.sh starts it.
SOCK=$RUN/vhost.sock
INSPECT_SOCK=$RUN/inspect.sock
RUST_LOG=${RUST_LOG:-info} "$BACKEND" --socket-path "$SOCK" \
	--inspect-socket "$INSPECT_SOCK" --consumer-socket "$RUN/consumer.sock" \
	--guest-name guest0 --allow 65534=permitted \
	--trust-ram 0=rw --trust-ram 65534=ro \
	--fault-file "$RUN/fault" >"$RUN/backend.log" 2>&1 &
backend=$!
relay=""
stop() {
	kill ${relay:+"$relay"} "$backend" 2>/dev/null || true
	wait 2>/dev/null || true
}
trap stop EXIT
wait_sockets 10 "$SOCK" || { cat "$RUN/backend.log" >&2; die "backend did not start"; }

# The host's end of the guest's ttyS1: QEMU reads serial.in and writes
# serial.out. A request line gets lines "| TEXT" and "rc N" back (see
# bufshare_pm_test.c); "file NAME SIZE" is followed by SIZE bytes, the
# guest's results, which go to the run directory.
mkfifo "$RUN/serial.in" "$RUN/serial.out"
relay() {
	local line id off len name size
	# A failed request is the guest's to judge: answer it, go on.
	set +e
	# Read and write ends both: opening never waits for QEMU.
	exec 3<>"$RUN/serial.out" 4<>"$RUN/serial.in"
	while IFS= read -r line <&3; do
		echo "guest: $line"
		case "$line" in
		list)
			{ "$INSPECT" --socket "$INSPECT_SOCK" list | sed 's/^/| /'
			  echo "rc ${PIPESTATUS[0]}"; } >&4
			;;
		"crc "*)
			read -r _ id off len <<<"$line"
			{ "$INSPECT" --socket "$INSPECT_SOCK" read "$id" "$off" "$len" |
				python3 -c 'import sys, zlib; print("| %08x" % zlib.crc32(sys.stdin.buffer.read()))'
			  echo "rc ${PIPESTATUS[0]}"; } >&4
			;;
		resets)
			# The backend logs this when a reset made it drop buffers.
			{ sed -n 's/.*device reset: \([0-9]*\) buffers dropped.*/| dropped \1/p' \
				"$RUN/backend.log"
			  echo "rc 0"; } >&4
			;;
		"file "*)
			read -r _ name size <<<"$line"
			# Only the files the guest sends: none of the run's others.
			case "$name" in
			bufshare_pm_test.tap | timing.txt | kmemleak.txt | dmesg.txt | done) ;;
			*) echo "unexpected file: $line"; return 1 ;;
			esac
			case "$size" in
			"" | *[!0-9]*) echo "bad size: $line"; return 1 ;;
			esac
			head -c "$size" <&3 > "$RUN/$name"
			[ "$name" = done ] && return 0
			;;
		*)
			echo "rc 2" >&4
			;;
		esac
	done
}
relay >"$RUN/relay.log" 2>&1 &
relay=$!

MEM=${BUFSHARE_VM_MEM:-1G}
TIMEOUT=${BUFSHARE_VM_TIMEOUT:-600}
qemu_opts=(-machine q35 -accel tcg -smp 2 -m "$MEM" -nodefaults -display none -no-reboot
	-object "memory-backend-memfd,id=mem,size=$MEM,share=on" -numa node,memdev=mem
	-kernel "/build/${KDIR#"$BUILD"/}/arch/x86/boot/bzImage" -initrd /build/run/initramfs.cpio
	-serial stdio -serial pipe:/build/run/serial)
# The device exactly as vm.sh attaches it: behind a PCIe root port.
qemu_opts+=(-chardev socket,id=bufshare,path=/build/run/vhost.sock
	-device pcie-root-port,id=bufshare-port,chassis=1,slot=1
	-device vhost-user-test-device-pci,id=bufshare-dev,bus=bufshare-port,chardev=bufshare,virtio-id=37,num_vqs=2,config_size=24)
# No KUnit tests at boot (vm.sh runs the doctests); the console stays on
# through the suspend, so that a hang there shows.
append="console=ttyS0 panic=-1 rdinit=/init kunit.enable=0 no_console_suspend"

log "booting guest (TCG, initramfs, timeout ${TIMEOUT}s)"
set +e
IN_TREE_BINDS="--bind $RUN /build/run" cpu_counted "$RUN/host-cpu" \
	in_tree timeout --kill-after=10 "$TIMEOUT" \
	qemu-system-x86_64 "${qemu_opts[@]}" -append "$append" </dev/null 2>&1 |
	tee "$RUN/console.log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 124 ] && log "guest timed out after ${TIMEOUT}s"
# What the guest sent last may still be in the FIFO.
for _ in $(seq 100); do
	kill -0 "$relay" 2>/dev/null || break
	sleep 0.1
done
echo "$RUN"
exit "$rc"
