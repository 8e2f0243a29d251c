#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make bench: what the driver's commands cost, measured in the guest by
# samples/bufshare/bufshare-bench on the bench kernel (scripts/kernel.sh
# --bench: the test kernel's configuration without its debug options),
# beside two baselines in the same boot: an echo round trip over a
# virtio-serial port to a host process (scripts/bench-echo-host.py), the
# transport's floor, and 8 MiB frames sent over it, the copy users would
# otherwise make; and the same two over virtio-vsock, whose device is
# rust-vmm's vhost-device-vsock (a vhost-user backend, as this project's
# is), installed from crates.io into the cache by cargo the first time.
# Under TCG unless BUFSHARE_KVM=1, so the numbers speak of
# this setup, not of the device on real hardware. A host consumer,
# bufshare-watch, follows the application bench-events-watched and releases
# each update, for the UPDATE-to-event round trip.
#
# Prints the machine and one table; the results, with the machine, go to
# bench.json in the run directory ($BUFSHARE_CACHE/runs/...).
# BUFSHARE_BENCH_BUFFERS (100000): how many buffers to register at once for
# the memory figures (within BUFSHARE_BENCH_BUFFERS_SECONDS, 180);
# BUFSHARE_BENCH_SECTIONS: only these sections (bufshare-bench -s), for
# measuring one change before and after; BUFSHARE_BENCH_BACKEND_ARGS: more
# arguments for the backend (--no-events, say).

. "$(dirname "$0")/lib.sh"

BUFFERS=${BUFSHARE_BENCH_BUFFERS:-100000}
bash "$TOPDIR/scripts/kernel.sh" --bench >/dev/null
# BUFSHARE_BENCH_PERF=1: the bench runs under perf record -a (cpu-clock,
# call graphs) in the guest; perf-report.txt in the run directory has where
# the guest's time went, by symbol, and perf-callers.txt the call chains of
# the symbols above 2%. The figures are then of a profiled
# guest: compare them with a profiled run only. perf writes to the guest's
# /tmp: its writes from its ring buffer fail on 9p (EFAULT).
perf=""
if [ "${BUFSHARE_BENCH_PERF:-0}" = 1 ]; then
	p=$(bash "$TOPDIR/scripts/perf-tools.sh")
	perf="env LD_LIBRARY_PATH=$p/usr/lib/x86_64-linux-gnu $p/usr/bin/perf"
fi
prepare_vm bench

accel=TCG
[ "${BUFSHARE_KVM:-0}" = 1 ] && accel=KVM
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
machine="$accel on $cpu, $(nproc) host cores; guest: 2 vCPUs, ${BUFSHARE_VM_MEM:-2G} (bench kernel)"
echo "== make bench: $machine"
# The host's load, before and after: on a shared machine it moves the
# numbers more than anything measured here.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# The vsock device: rust-vmm's vhost-user backend, on a socket that QEMU
# connects to. A guest's connection to port VSOCK_PORT of the host (CID 2)
# becomes a connection to the Unix socket vsock.uds_VSOCK_PORT.
VSOCK_VERSION=0.3.0
VSOCK_PORT=5000
VSOCK_ROOT=$BUFSHARE_CACHE/vhost-device-vsock-$VSOCK_VERSION
if [ ! -x "$VSOCK_ROOT/bin/vhost-device-vsock" ]; then
	log "installing vhost-device-vsock $VSOCK_VERSION (crates.io) into $VSOCK_ROOT"
	CARGO_TARGET_DIR=$BUFSHARE_CACHE/vhost-device-vsock-target \
		cargo install --quiet --locked vhost-device-vsock --version "$VSOCK_VERSION" \
		--root "$VSOCK_ROOT" >&2 || die "cannot install vhost-device-vsock"
fi

# The host ends of the virtio-serial port and of the vsock port, before
# QEMU and vhost-device-vsock connect to them.
python3 "$TOPDIR/scripts/bench-echo-host.py" "$RUN/serial.sock" "$RUN/vsock.uds_$VSOCK_PORT" \
	>"$RUN/echo-host.log" 2>&1 &
echo_host=$!
vsock=""
watch=""
trap 'kill $echo_host $vsock $watch 2>/dev/null || true' EXIT
wait_sockets 5 "$RUN/serial.sock" "$RUN/vsock.uds_$VSOCK_PORT" ||
	die "bench-echo-host.py did not start"
# Its buffer per connection, 64 KiB by default, is the guest socket's
# default (256 KiB): an 8 MiB frame took 82 to 113 ms with 64 KiB and 45
# to 64 ms with 256 KiB (a Python sender in the guest).
"$VSOCK_ROOT/bin/vhost-device-vsock" --guest-cid 3 --socket "$RUN/vsock.sock" \
	--uds-path "$RUN/vsock.uds" --tx-buffer-size $((256 << 10)) >"$RUN/vsock.log" 2>&1 &
vsock=$!
wait_sockets 5 "$RUN/vsock.sock" || { cat "$RUN/vsock.log" >&2; die "vhost-device-vsock did not start"; }

# The host consumer of the events figures, on the consumer socket of the
# backend that vm.sh starts: it subscribes once the socket is there (a
# moment after, so that the backend listens on it), releases every update
# it receives, and is killed at the end. bufshare-bench asks the driver
# whether it is attached (GET_CONSUMERS) and skips its row if not.
WATCH=${BUFSHARE_WATCH:-$BUFSHARE_CACHE/cargo-target/release/bufshare-watch}
[ -x "$WATCH" ] || die "no $WATCH (make tools)"
(
	wait_sockets 120 "$RUN/consumer.sock" || { echo "bench: no $RUN/consumer.sock" >&2; exit 1; }
	sleep 0.5
	exec "$WATCH" --socket "$RUN/consumer.sock" --app bench-events-watched --quiet \
		--log "$RUN/watch-events.log"
) >"$RUN/watch.log" 2>&1 &
watch=$!

# The limits: 100000 buffers at once (the driver's and the device's),
# 256 MiB buffers of 4 KiB pages (65536 ranges).
guest="set -e
insmod /build/linux-bench/drivers/virtio/bufshare/virtio_bufshare.ko \
	max_buffers=$BUFFERS max_buffers_per_file=$BUFFERS max_bytes_per_file=$((4 << 30))
for i in \$(seq 100); do [ -c /dev/bufshare ] && break; sleep 0.1; done
port=
for p in /sys/class/virtio-ports/*; do
	[ \"\$(cat \$p/name 2>/dev/null)\" = bench0 ] && port=/dev/\$(basename \$p)
done
# Huge pages for the 256 MiB memfd of 2 MiB pages (its row says skipped
# if the guest got fewer than it needs).
echo 136 > /proc/sys/vm/nr_hugepages
echo \"guest: \$(uname -r), \$(nproc) cpus, port \$port, \$(cat /proc/sys/vm/nr_hugepages) huge pages\"
BUFSHARE_BENCH_BUFFERS=$BUFFERS BUFSHARE_BENCH_BUFFERS_SECONDS=${BUFSHARE_BENCH_BUFFERS_SECONDS:-180} \
	${perf:+$perf record -q -e cpu-clock -F 999 -a -g -o /tmp/perf.data --} \
	/build/tests/bufshare-bench -o /build/run/bench-guest.json \${port:+-p \$port} -V $VSOCK_PORT \
	${BUFSHARE_BENCH_SECTIONS:+-s $BUFSHARE_BENCH_SECTIONS} |
	tee /build/run/bench-table.txt
${perf:+$perf report -i /tmp/perf.data --stdio --no-children --percent-limit 0.5 \
	--sort dso,sym -g none >/build/run/perf-report.txt 2>/build/run/perf-report.err}
${perf:+$perf report -i /tmp/perf.data --stdio --no-children --percent-limit 2 \
	--sort sym -g graph,1 >/build/run/perf-callers.txt 2>>/build/run/perf-report.err}
rmmod virtio_bufshare"
# A file, not the command line: the kernel's has room for 2048 bytes only.
printf '%s\n' "$guest" >"$RUN/bench-guest.sh"
rc=0
BUFSHARE_VM_KERNEL=linux-bench \
BUFSHARE_QEMU_OPTS="-chardev socket,id=benchser,path=/build/run/serial.sock \
-device virtio-serial-pci,id=benchvs -device virtserialport,bus=benchvs.0,chardev=benchser,name=bench0 \
-chardev socket,id=benchvsock,path=/build/run/vsock.sock -device vhost-user-vsock-pci,chardev=benchvsock" \
	bash "$TOPDIR/scripts/vm.sh" \
	--backend-args "--max-buffers $BUFFERS --max-ranges 65536 ${BUFSHARE_BENCH_BACKEND_ARGS:-}" \
	-- bash /build/run/bench-guest.sh >"$RUN/bench.log" 2>&1 || rc=$?
cat "$RUN/bench-table.txt" 2>/dev/null || true
# The watcher ends with the backend (exit 3, its ERROR SHUTDOWN), or here.
kill "$watch" 2>/dev/null || true
wrc=0
wait "$watch" || wrc=$?
watch=""
last=$(tail -1 "$RUN/watch-events.log" 2>/dev/null || true)
case "$wrc:$last" in
0:* | "3:ERROR code=SHUTDOWN"*) ;;
*) echo "bufshare-watch: exit $wrc: $last $(tail -2 "$RUN/watch.log")" ;;
esac
echo "bufshare-watch: $(grep -c '^UPDATE ' "$RUN/watch-events.log" 2>/dev/null) updates received"
machine+="; host load average $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo "== $machine"
[ -e "$RUN/bench-guest.json" ] || { tail -30 "$RUN/console.log"; die "no results (vm.sh exit $rc), see $RUN"; }
python3 - "$RUN/bench-guest.json" "$RUN/bench.json" "$machine" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["machine"] = sys.argv[3]
r["command"] = "make bench"
json.dump(r, open(sys.argv[2], "w"), indent=1)
PY
echo "results: $RUN/bench.json"
exit "$rc"
