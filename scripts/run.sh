#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make run: build what is missing, boot a guest with the device attached,
# load the driver and show a round trip through it to the backend.

. "$(dirname "$0")/lib.sh"

prepare_vm
guest='set -x
insmod /build/linux/drivers/virtio/virtio_bufshare.ko
ls -l /dev/bufshare
/build/tests/bufshare_info
/build/tests/bufshare_info -n 1000
dmesg | grep -i bufshare
rmmod virtio_bufshare'
bash "$TOPDIR/scripts/vm.sh" -- bash -c "$guest"
echo "backend log ($RUN/backend.log):"
tail -n 20 "$RUN/backend.log"
