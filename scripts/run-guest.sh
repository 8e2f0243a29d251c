#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the guest (started by scripts/vm.sh): loads the driver, runs
# the guest tests, then unloads the driver and collects the kernel's
# reports. Results go to $OUT (a directory shared with the host).
#
#   run-guest.sh OUT [test...]
#
# By default: every *_test binary of $BUFSHARE_TESTS (kselftest harness),
# bufshare-crate-test (the bufshare crate's, TAP too),
# bufshare-udmabuf-selftest (tools/vhost-user-bufshare's, TAP too),
# bufshare-example (samples/bufshare, wrapped as a TAP test of one) and
# bufshare-bench in its short mode (the same; it proves the benchmark runs,
# its numbers, in $OUT/bench.json, are not judged). A kselftest NAME gets
# the words of $BUFSHARE_HARNESS_ARGS_NAME as its arguments, if set.

OUT=${1:?usage: run-guest.sh OUT [test...]}
shift
. "$OUT/env"

# How long each part took, for check.sh's table: "boot" (seconds from the
# kernel's start to here, /proc/uptime), one "test NAME" per test and
# "teardown" (unloading, the kmemleak scans, the kernel log). The files
# "started" and "done" are made on the host's file system, at the host's
# time, by which check.sh times the boot: under TCG on a busy host the
# guest's clock lags the host's during the boot. Each holds the guest's
# time when it was made, so that check.sh can tell whether the guest's
# clock kept the host's time in between.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
echo "boot $(cut -d' ' -f1 /proc/uptime)" > "$OUT/timing.txt"
now > "$OUT/started"

mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
# Only what happens from here on counts as a leak.
[ -e /sys/kernel/debug/kmemleak ] && echo clear > /sys/kernel/debug/kmemleak

echo "guest: $(uname -r), $(nproc) cpus"
insmod "$BUFSHARE_MODULE" || { echo "insmod failed"; exit 1; }
for i in $(seq 100); do [ -c /dev/bufshare ] && break; sleep 0.1; done

# tap_times NAME: passes test NAME's output through, and appends to
# $OUT/subtests.txt the time each of its results took ("SECONDS NAME
# RESULT"), from the one before or from the test's start, for check.sh's
# list of the slowest. The harness flushes its output at each test's end.
tap_times() {
	local line r last=${EPOCHREALTIME/./} now
	while IFS= read -r line; do
		printf '%s\n' "$line"
		case "$line" in
		"ok "* | "not ok "*)
			now=${EPOCHREALTIME/./}
			r=${line#not }
			r=${r#ok [0-9]* }
			printf '%d.%d %s %s\n' $(((now - last) / 1000000)) \
				$(((now - last) / 100000 % 10)) "$1" "${r%% *}" >> "$OUT/subtests.txt"
			last=$now
			;;
		esac
	done
}

# run_example PROGRAM [ARG...]: a program that is no TAP test, as a TAP
# test of one.
run_example() {
	local name rc
	name=$(basename "$1")
	echo "TAP version 13"
	echo "1..1"
	"$@" 2>&1 | sed 's/^/# /'
	rc=${PIPESTATUS[0]}
	if [ "$rc" = 0 ]; then echo "ok 1 $name"; else echo "not ok 1 $name # exit $rc"; fi
	return "$rc"
}

tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=("$BUFSHARE_TESTS"/*_test \
	"$BUFSHARE_TESTS/bufshare-crate-test" "$BUFSHARE_TESTS/bufshare-udmabuf-selftest" \
	"$BUFSHARE_TESTS/bufshare-example" "$BUFSHARE_TESTS/bufshare-bench")
for t in "${tests[@]}"; do
	name=$(basename "$t")
	echo "guest: running $name"
	t0=$(now)
	case "$name" in
	bufshare-example) run_example "$t" ;;
	bufshare-bench) run_example "$t" -q -o "$OUT/bench.json" ;;
	*)
		args=()
		if [[ $name =~ ^[A-Za-z0-9_]+$ ]]; then
			var=BUFSHARE_HARNESS_ARGS_$name
			read -r -a args <<<"${!var:-}"
		fi
		"$t" "${args[@]}"
		;;
	esac 2>&1 | tee "$OUT/$name.tap" | tap_times "$name"
	echo "exit=${PIPESTATUS[0]}" >> "$OUT/$name.tap"
	echo "test $name $(elapsed "$t0")" >> "$OUT/timing.txt"
done

t0=$(now)

# Unloading tears everything down; a leak or a bad teardown shows below.
rmmod virtio_bufshare && echo "guest: rmmod ok" || echo "guest: rmmod failed"
t1=$(now)

if [ -e /sys/kernel/debug/kmemleak ]; then
	# kmemleak reports an object only once it is 5 s old when a scan
	# starts, and only from its second scan on (the first takes its
	# checksum). The second scan starts 6 s after the driver is gone: a
	# scan under TCG takes about that long itself, so the wait is what
	# the first scan left of those 6 s.
	echo scan > /sys/kernel/debug/kmemleak
	sleep "$(awk -v a="$t1" -v b="$(now)" 'BEGIN { d = a + 6 - b; print (d > 0 ? int(d) + 1 : 0) }')"
	echo scan > /sys/kernel/debug/kmemleak
	cat /sys/kernel/debug/kmemleak > "$OUT/kmemleak.txt"
fi
dmesg > "$OUT/dmesg.txt"
echo "teardown $(elapsed "$t0")" >> "$OUT/timing.txt"
now > "$OUT/done"
