#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest-to-guest import against real QEMU (the toolchain tree's), with no
# guest kernel: one backend serves two QEMUs run with the qtest accelerator,
# and scripts/import-qtest.py plays the driver in both (see there).
# Documentation/host/bufshare-import.rst says what it checks.
#
#   import-qtest.sh [NBUF [GRACE_SECONDS]]    (12 buffers, 1 s by default)

. "$(dirname "$0")/lib.sh"

NBUF=${1:-12}
GRACE=${2:-1}
[ -x "$ROOT/usr/bin/qemu-system-x86_64" ] || die "no toolchain tree: make toolchain"
bash "$TOPDIR/scripts/tools.sh" build >&2
BACKEND=$BUFSHARE_CACHE/cargo-target/release/vhost-user-bufshare
new_run import-qtest
log "run directory: $RUN"

pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

RUST_LOG=${RUST_LOG:-info} "$BACKEND" --guest a="$RUN/a.sock" --guest b="$RUN/b.sock" \
	--shm-size 64M --allow-import b:frames=a --import-grace "$GRACE" \
	>"$RUN/backend.log" 2>&1 &
pids+=($!)
for g in a b; do
	while [ ! -S "$RUN/$g.sock" ]; do sleep 0.1; done
	IN_TREE_BINDS="--bind $RUN /build/run" IN_TREE_CHDIR=/ in_tree timeout 600 \
		qemu-system-x86_64 -machine q35 -accel qtest -m 256M \
		-object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
		-chardev socket,id=c0,path=/build/run/$g.sock \
		-device vhost-user-test-device-pci,chardev=c0,virtio-id=37,num_vqs=2,config_size=24 \
		-display none -nodefaults -qtest unix:/build/run/qtest-$g.sock,server=on,wait=off \
		>"$RUN/qemu-$g.log" 2>&1 &
	pids+=($!)
done
status=0
IN_TREE_BINDS="--bind $RUN /build/run" in_tree timeout 300 python3 /src/scripts/import-qtest.py \
	/build/run/qtest-a.sock /build/run/qtest-b.sock "$NBUF" "$GRACE" || status=$?
echo "# QEMU b: $(grep -c 'vhost_set_mem_table failed' "$RUN/qemu-b.log" || true) times 'vhost_set_mem_table failed'"
exit $status
