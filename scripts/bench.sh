#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make bench: command round trips through the driver to the backend and
# back, measured in the guest (under TCG unless BUFSHARE_KVM=1, so the
# numbers speak of this setup, not of the device on real hardware).

. "$(dirname "$0")/lib.sh"

prepare_vm bench
N=${BUFSHARE_BENCH_N:-1000}
guest="insmod /build/linux/drivers/virtio/bufshare/virtio_bufshare.ko
echo '== one caller, $N GET_INFO round trips'
/build/tests/bufshare-info -n $N | grep 'round trip'
echo '== four callers at once, $N each'
for i in 1 2 3 4; do /build/tests/bufshare-info -n $N | grep 'round trip' & done; wait
rmmod virtio_bufshare"
bash "$TOPDIR/scripts/vm.sh" -- bash -c "$guest" | grep -E '^==|round trip'
