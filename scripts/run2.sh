#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make run-two: the guest-to-guest demo. Two guests, one backend
# (scripts/vm2.sh): bufshare-animate in guest a draws an animated test
# pattern into its framebuffer, and bufshare-view in guest b shows it,
# reading every frame in place through an import of a's framebuffer
# (VIRTIO_BUFSHARE_F_IMPORT) and checking its crc32: no frame is copied,
# in the guests or on the host. a draws only into frames b released. The
# framebuffer is in 2 MiB pages (bufshare-animate -P): the backend maps a
# buffer into b piece by piece of guest memory, and QEMU takes only a few
# such mappings.
#
#   BUFSHARE_RUN_SECONDS   how long a animates (default 5)
#   BUFSHARE_RUN_RATE      frames per second it asks for (default 30)

. "$(dirname "$0")/lib.sh"

SECONDS_=${BUFSHARE_RUN_SECONDS:-5}
RATE=${BUFSHARE_RUN_RATE:-30}
bash "$TOPDIR/scripts/kernel.sh" >/dev/null
bash "$TOPDIR/scripts/tools.sh" build
bash "$TOPDIR/scripts/guest-programs.sh" >/dev/null

KO=/build/linux/drivers/virtio/bufshare/virtio_bufshare.ko
# b attaches first and says so; a starts drawing then.
view="insmod $KO
/build/tests/bufshare-view -s $((SECONDS_ + 120)) a framebuffer > /build/run/view.out 2>&1 &
for i in \$(seq 600); do grep -q attached /build/run/view.out && break; sleep 0.1; done
touch /build/shared/viewer-ready
wait \$!
echo \"view exit \$?\" >> /build/run/view.out
cat /build/run/view.out
rmmod virtio_bufshare"
animate="insmod $KO
echo 8 > /proc/sys/vm/nr_hugepages
for i in \$(seq 3000); do [ -e /build/shared/viewer-ready ] && break; sleep 0.1; done
/build/tests/bufshare-animate -P -s $SECONDS_ -r $RATE > /build/run/animate.out 2>&1
echo \"animate exit \$?\" >> /build/run/animate.out
cat /build/run/animate.out
rmmod virtio_bufshare"
out=$(bash "$TOPDIR/scripts/vm2.sh" --name run-two --backend-args "--allow-import b:framebuffer=a" \
	--exec-a "$animate" --exec-b "$view") || true
RUN=$(echo "$out" | tail -1)
echo
grep -h '^bufshare-animate:' "$RUN/a/animate.out" 2>/dev/null | sed 's/^/guest a: /'
grep -h '^bufshare-view:' "$RUN/b/view.out" 2>/dev/null | sed 's/^/guest b: /'
echo "run directory: $RUN (backend.log, a/ and b/ with each guest's console.log)"
grep -q '^view exit 0$' "$RUN/b/view.out" 2>/dev/null && grep -q '^animate exit 0$' "$RUN/a/animate.out"
