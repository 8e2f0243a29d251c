#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make run: build what is missing, boot a guest with the device attached,
# load the driver and show a round trip through it to the backend.
# BUFSHARE_SHELL=1 leaves you in a shell in the guest instead.

. "$(dirname "$0")/lib.sh"

bash "$TOPDIR/scripts/kernel.sh" >/dev/null
bash "$TOPDIR/scripts/tools.sh" build
bash "$TOPDIR/scripts/guest-programs.sh" >/dev/null

RUN=$BUILD/run
rm -rf "$RUN"
mkdir -p "$RUN"
if [ "${BUFSHARE_SHELL:-0}" = 1 ]; then
	guest='insmod /build/linux/drivers/virtio/virtio_bufshare.ko; PATH=/build/tests:$PATH bash -i'
else
	guest='set -x
insmod /build/linux/drivers/virtio/virtio_bufshare.ko
ls -l /dev/bufshare
/build/tests/bufshare_info
/build/tests/bufshare_info -n 1000
dmesg | grep -i bufshare
rmmod virtio_bufshare'
fi
bash "$TOPDIR/scripts/vm.sh" -- bash -c "$guest"
echo "backend log ($RUN/backend.log):"
tail -n 20 "$RUN/backend.log"
