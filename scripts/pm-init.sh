#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the suspend test's initramfs (scripts/pm-test.sh): the tree's
# static busybox, the driver and bufshare_pm_test, nothing else. Loads the
# driver, runs the test, unloads the driver and collects the kernel's
# reports, as scripts/run-guest.sh does in the 9p guests; the root here
# is the initramfs, which a suspend leaves alone.
#
# Progress goes to the console (ttyS0). The results go to the host on the
# second serial port (ttyS1), which the test also uses to ask the host
# what it holds: each file as a line "file NAME SIZE", then its bytes;
# "file done 0" last.

/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
cd /tmp || exit 1

# For check.sh's table, as run-guest.sh writes it: "boot" (seconds from
# the kernel's start to here), "test NAME", "teardown".
uptime_s() { cut -d' ' -f1 /proc/uptime; }
echo "boot $(uptime_s)" > timing.txt

# Only what happens from here on counts as a leak.
[ -e /sys/kernel/debug/kmemleak ] && echo clear > /sys/kernel/debug/kmemleak

echo "guest: $(uname -r), $(nproc) cpus, initramfs root"
# Raw bytes on the host's port: no echo, no CR/LF mapping.
stty -F /dev/ttyS1 raw -echo 115200
insmod /virtio_bufshare.ko || echo "guest: insmod failed"
for _ in $(seq 100); do [ -c /dev/bufshare ] && break; sleep 0.1; done

echo "guest: running bufshare_pm_test"
t0=$(uptime_s)
# pm-test.sh's harness arguments, one a line, without blanks.
# shellcheck disable=SC2046
set -- $(cat /harness-args)
# The console shows the TAP lines as they come; the file keeps them.
{
	BUFSHARE_PM_SERIAL=/dev/ttyS1 /bufshare_pm_test "$@"
	echo "exit=$?"
} 2>&1 | tee bufshare_pm_test.tap
echo "test bufshare_pm_test $(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }')" >> timing.txt

t0=$(uptime_s)
# Unloading tears everything down; a leak or a bad teardown shows below.
if rmmod virtio_bufshare; then echo "guest: rmmod ok"; else echo "guest: rmmod failed"; fi
t1=$(uptime_s)
if [ -e /sys/kernel/debug/kmemleak ]; then
	# Two scans, the second 6 s after the driver is gone, as in
	# run-guest.sh.
	echo scan > /sys/kernel/debug/kmemleak
	sleep "$(awk -v a="$t1" -v b="$(uptime_s)" 'BEGIN { d = a + 6 - b; print (d > 0 ? int(d) + 1 : 0) }')"
	echo scan > /sys/kernel/debug/kmemleak
	cat /sys/kernel/debug/kmemleak > kmemleak.txt
fi
dmesg > dmesg.txt
echo "teardown $(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }')" >> timing.txt

send() {
	[ -e "$1" ] || return 0
	echo "file $1 $(wc -c < "$1")"
	cat "$1"
}
{
	for f in bufshare_pm_test.tap timing.txt kmemleak.txt dmesg.txt; do
		send "$f"
	done
	echo "file done 0"
} > /dev/ttyS1
echo "guest: done"
# Reboot, which QEMU (-no-reboot) takes as the end: after a suspend to
# RAM, an ACPI poweroff no longer stops QEMU's machine.
reboot -f
