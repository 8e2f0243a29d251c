#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make run: build what is missing, boot a guest with the device attached,
# load the driver, and show the main job: bufshare-animate in the guest
# draws an animated test pattern into a shared framebuffer, 60 times a
# second for a few seconds, and bufshare-watch on the host receives the
# buffer over the backend's consumer socket and writes every updated frame
# as a PNG, checking each frame's crc32 property against the bytes.
#
#   BUFSHARE_RUN_SECONDS   how long the guest animates (default 3)
#   BUFSHARE_RUN_FRAMES    where the PNGs go (default $RUN/frames)

. "$(dirname "$0")/lib.sh"

SECONDS_=${BUFSHARE_RUN_SECONDS:-3}
WATCH=$BUFSHARE_CACHE/cargo-target/release/bufshare-watch

prepare_vm run
FRAMES=${BUFSHARE_RUN_FRAMES:-$RUN/frames}
mkdir -p "$FRAMES"
[ -x "$WATCH" ] || die "no $WATCH (scripts/tools.sh build)"

# The watcher connects once vm.sh's backend has made its consumer socket.
(
	wait_sockets 60 "$RUN/consumer.sock" || true
	exec "$WATCH" --socket "$RUN/consumer.sock" --app framebuffer \
		--dump "$FRAMES" --verify --log "$RUN/watch.log"
) &
watch=$!
trap 'kill $watch 2>/dev/null; wait $watch 2>/dev/null' EXIT

guest="set -x
insmod /build/linux/drivers/virtio/bufshare/virtio_bufshare.ko
/build/tests/bufshare-info
/build/tests/bufshare-animate -s $SECONDS_ -r 60
rmmod virtio_bufshare"
# Piped, not redirected: QEMU reopens its standard output.
bash "$TOPDIR/scripts/vm.sh" -- bash -c "$guest" | tee "$RUN/guest.out"

kill -TERM "$watch" 2>/dev/null || true
wait "$watch" 2>/dev/null || true
trap - EXIT

frames=$(find "$FRAMES" -name '*.png' | wc -l)
ok=$(grep -c '^VERIFY .* ok' "$RUN/watch.log" 2>/dev/null || true)
bad=$(grep -c '^VERIFY .* mismatch' "$RUN/watch.log" 2>/dev/null || true)
last=$(find "$FRAMES" -name '*.png' | sort -V | tail -1)
drawn=$(sed -n 's/^bufshare-animate: \([0-9]*\) frames drawn and shown.*/\1/p' "$RUN/guest.out" | tail -1)
echo
echo "guest: ${drawn:-?} frames drawn and shown (each into a frame the host had released)"
echo "host: $frames frames written to $FRAMES, crc32 checked: ${ok:-0} ok, ${bad:-0} torn (mismatched)"
[ -n "$last" ] && echo "host: last frame: $last"
echo "backend log: $RUN/backend.log, watcher log: $RUN/watch.log"
