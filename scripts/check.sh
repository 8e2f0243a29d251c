#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make check: build everything from cold (or reuse the caches), then run
# every test: host unit tests, style checks, the external module build, and
# the guest tests in a real VM through the real backend. Ends with one line
# "N passed, N failed" and exits non-zero on any failure.

. "$(dirname "$0")/lib.sh"
set +e

PASSED=0
FAILED=0
FAILURES=()
RUN_DIRS=()
START=$(date +%s)
# How long each phase took, printed as one table at the end: mark NAME
# closes the phase that started at the previous mark (or the start) and
# names it; guest runs add their own rows (boot, each test, teardown).
TIMES=()
LAST_MARK=$START
mark() {
	local now
	now=$(date +%s)
	TIMES+=("$(printf '%6d s  %s' $((now - LAST_MARK)) "$1")")
	LAST_MARK=$now
}
# run_name DIR: the name of the guest run in DIR (default-1, two-guests/a).
run_name() {
	local d=$1 guest=""
	case "$d" in */a | */b) guest=/${d##*/}; d=${d%/*} ;; esac
	d=${d##*/}
	d=${d#*-*-check-}
	echo "${d%.*}$guest"
}
print_times() {
	local d
	echo
	echo "== time per phase"
	printf '%s\n' "${TIMES[@]}"
	# The guest tests' slowest results, from run-guest.sh's subtests.txt.
	echo
	echo "== the ten slowest guest tests (each from the result before it, by the guest's clock)"
	for d in "${RUN_DIRS[@]}"; do
		[ -e "$d/subtests.txt" ] || continue
		awk -v run="$(run_name "$d")" \
			'{ printf "%6.1f s  %s %s: %s\n", $1, run, $2, $3 }' "$d/subtests.txt"
	done | sort -rn | head -10
}

pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$*"); echo "FAIL: $*"; }
finish() {
	print_times
	echo
	echo "== summary ($(( $(date +%s) - START )) s)"
	for f in "${FAILURES[@]}"; do echo "failed: $f"; done
	if [ "$FAILED" != 0 ]; then
		# Each guest run's console.log, dmesg.txt, kmemleak.txt,
		# backend.log and test output (*.tap).
		for d in "${RUN_DIRS[@]}"; do echo "evidence: $d"; done
	fi
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" = 0 ]
	exit
}
# step NAME CMD...: a step that must work for anything after it to mean
# something; its failure ends the run.
step() {
	local name=$1
	shift
	log "$name"
	if "$@"; then
		mark "$name"
		return 0
	fi
	mark "$name"
	fail "$name"
	finish
}

step "toolchain" bash scripts/toolchain.sh >/dev/null

# The host's cargo builds (the tools, the host tests, the fuzz targets, then
# the two clippy runs, whose verdicts are counted below) go on beside the
# kernel build and then the guests, at the lowest priority: they fill what
# the kernel build leaves of the two cores (its links and its Rust crates
# use one) without slowing it, and beside the guests they take no CPU a
# guest wants (a cold build at the same priority as three guests once
# slowed them so much that a guest test outlasted its harness timeout).
# Each build's output, exit code and time go to $HOSTB. Warm, all of it
# takes seconds.
HOSTB=$(mktemp -d "${TMPDIR:-/tmp}/bufshare-host-builds.XXXXXX")
host_build() {
	local name=$1 t0
	shift
	t0=$(date +%s)
	nice -n 19 "$@" > "$HOSTB/$name.out" 2>&1
	echo $? > "$HOSTB/$name.rc.new"
	echo $(( $(date +%s) - t0 )) > "$HOSTB/$name.time"
	mv "$HOSTB/$name.rc.new" "$HOSTB/$name.rc"
}
(
	host_build tools bash scripts/tools.sh build
	host_build tests bash scripts/tools.sh test-build
	host_build fuzz bash scripts/fuzz.sh build
	host_build clippy bash scripts/tools.sh clippy
	host_build fuzz-lint bash scripts/fuzz.sh lint
) &
HOST_BUILDS=$!
# A run that ends early (a failed step) takes the host builds with it.
kill_tree() {
	local p
	[ -n "$1" ] || return 0
	for p in $(pgrep -P "$1"); do kill_tree "$p"; done
	kill "$1" 2>/dev/null
}
JOBS=
trap 'kill_tree "$HOST_BUILDS"; rm -rf "$HOSTB" ${JOBS:+"$JOBS"}' EXIT
# host_wait NAME LABEL: waits for the host build NAME; the phase is the
# wait, and names the time the build took beside the rest.
host_wait() {
	local name=$1 label=$2
	log "$label"
	while [ ! -e "$HOSTB/$name.rc" ] && kill -0 "$HOST_BUILDS" 2>/dev/null; do
		sleep 1
	done
	mark "$label (waited for; it took $(cat "$HOSTB/$name.time" 2>/dev/null || echo ?) s beside the rest)"
}
host_ok() { [ "$(cat "$HOSTB/$1.rc" 2>/dev/null)" = 0 ]; }
# host_step NAME LABEL: a step like the others, made by the host build NAME.
host_step() {
	local name=$1 label=$2
	host_wait "$name" "$label"
	host_ok "$name" && return 0
	tail -40 "$HOSTB/$name.out"
	fail "$label"
	finish
}
# host_check NAME CHECK PHASE: the host build NAME as the check CHECK, which
# does not end the run (a lint).
host_check() {
	local name=$1 check=$2 phase=$3
	host_wait "$name" "$phase"
	if host_ok "$name"; then
		pass "$check"
	else
		tail -30 "$HOSTB/$name.out"
		fail "$check"
	fi
}

step "kernel build" bash scripts/kernel.sh >/dev/null
host_step tools "host tools build"
step "guest programs build" bash scripts/guest-programs.sh >/dev/null

# The guest runs (below) go on in the background from here, in three lanes,
# while the host tests, style checks and fuzz targets run: a guest under TCG
# leaves the host's two cores 30 to 50% idle, waiting on its round trips.
# Each run's output, start, end and exit code go to $JOBS; their results
# are counted once everything else is done.
JOBS=$(mktemp -d "${TMPDIR:-/tmp}/bufshare-check.XXXXXX")
LANES=()

# The stress test's two cases of mixed commands run for 15 s each here, in
# both boots it runs in (2,900 to 3,500 commands a case under TCG), against
# the test's own 30 s: they were the guests' largest use of the host's
# CPU (about 20 s of it per case). BUFSHARE_STRESS_SECONDS sets another
# length for make check too.
export BUFSHARE_STRESS_SECONDS=${BUFSHARE_STRESS_SECONDS:-15}

# job NAME CMD...: runs CMD, its standard output to $JOBS/NAME.out, and
# notes when it started and ended and how it exited.
job() {
	local name=$1
	shift
	date +%s > "$JOBS/$name.start"
	"$@" > "$JOBS/$name.out"
	echo $? > "$JOBS/$name.rc"
	date +%s > "$JOBS/$name.end"
}

# The guest tests with the default device and settings, in two boots side
# by side: the first runs DEFAULT_FIRST, the second all the others, so that
# a new test runs without being listed here.
DEFAULT_FIRST=(bufshare_stress_test bufshare_events_test bufshare_consumer_test
	bufshare_errno_test bufshare_reset_test bufshare_fault_test)
DEFAULT_SECOND=()
for t in "$BUILD"/tests/*_test bufshare-crate-test bufshare-udmabuf-selftest \
	bufshare-example bufshare-bench; do
	t=$(basename "$t")
	[[ " ${DEFAULT_FIRST[*]} " == *" $t "* ]] || DEFAULT_SECOND+=("$t")
done

# The first two lanes: the two default boots. The lanes are balanced by
# the times of the last runs (check.sh's table): in e574ad2's, default-1
# took 314 s with the limits test (18 s), default-2 254 s without it, and
# the third lane 295 s; the limits test now runs in default-2.
job default-1 bash scripts/guest-tests.sh --name check-default-1 --device-opts "" \
	"${DEFAULT_FIRST[@]}" &
LANES+=($!)
job default-2 bash scripts/guest-tests.sh --name check-default-2 --device-opts "" \
	"${DEFAULT_SECOND[@]}" &
LANES+=($!)

# The third lane: first, what needs the guest or the device set up
# otherwise, one boot for all of it, as each setting leaves the others'
# tests whole:
# - The notification path without event indices: the driver asks for every
#   interrupt with the used ring's flags, the device for every kick; the
#   command-queue stress test runs there.
# - A second device (/dev/bufshare1) for the devices test, without events
#   (vhost-user-bufshare --no-events, one queue): the events test's
#   no_events_device tests, and only those, run against it.
# - Every DMA mapping bounced through swiotlb: memfds, given to the device
#   by physical address, still go through both ways; dma-bufs, whose
#   mappings the device would not see as the CPU writes them, are refused
#   (the zero-copy test). The stress, devices and events tests use memfds
#   only.
# - Last, as the device does not come back: QEMU removes it (device_del)
#   with commands pending.
# Then guest to guest (scripts/vm2.sh): two guests at once, one backend, b
# importing what a registers; the import test runs in both, as exporter in
# a and importer in b. Last, suspend and resume (scripts/pm-test.sh): the
# 9p root of the other guests does not survive a suspend, so this guest
# boots an initramfs, without virtme-ng, and runs bufshare_pm_test against
# the backend, which it asks through a serial port what it holds.
NO_EVENT_IDX_TESTS=(bufshare_stress_test bufshare_devices_test bufshare_events_test
	bufshare_zerocopy_test bufshare_hotplug_test)
(
	BUFSHARE_SECOND_DEVICE=1 BUFSHARE_SECOND_BACKEND_ARGS=--no-events \
		BUFSHARE_HARNESS_ARGS_bufshare_events_test="-f no_events_device" \
		BUFSHARE_HOTPLUG_TEST=1 BUFSHARE_APPEND="swiotlb=force" \
		job no-event-idx-swiotlb bash scripts/guest-tests.sh \
		--name check-no-event-idx-swiotlb --device-opts ",event_idx=off" \
		"${NO_EVENT_IDX_TESTS[@]}"
	job two-guests bash scripts/vm2.sh --name check-two-guests -- bufshare_import_test
	job pm bash scripts/pm-test.sh --name check-pm
) &
LANES+=($!)

# Host tests: count cargo's own results.
host_step tests "host tests build"
log "host tests (cargo test)"
out=$(bash scripts/tools.sh test 2>&1)
rc=$?
echo "$out" | grep -E '^test |^test result|error' | grep -v ' ok$' | head -50
# A failed test's panic, with the lines that say what it found.
echo "$out" | grep -A3 ' panicked at ' | head -50
p=$(echo "$out" | awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^passed/) s += $i } END { print s + 0 }')
f=$(echo "$out" | awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^failed/) s += $i } END { print s + 0 }')
PASSED=$((PASSED + ${p:-0}))
FAILED=$((FAILED + ${f:-0}))
echo "cargo test: ${p:-0} passed, ${f:-0} failed"
if [ "$rc" != 0 ] && [ "${f:-0}" = 0 ]; then
	echo "$out" | tail -30
	fail "cargo test (exit $rc)"
fi
[ "${f:-0}" = 0 ] || FAILURES+=("cargo test: $f failed")
mark "host tests (cargo test)"

log "style and lints"
if bash scripts/tools.sh fmt >/dev/null 2>&1; then pass "cargo fmt"; else fail "cargo fmt --check"; fi
mark "style: cargo fmt"
if out=$(bash scripts/module.sh rustfmtcheck 2>&1); then pass "kernel rustfmtcheck"; else echo "$out" | tail -30; fail "kernel rustfmtcheck"; fi
mark "style: kernel rustfmtcheck"
if out=$(bash scripts/series.sh 2>&1); then
	pass "upstream series: checkpatch --strict clean"
else
	echo "$out" | tail -40
	fail "upstream series: checkpatch --strict"
fi
mark "style: upstream series (checkpatch)"
# The checkout as a fresh clone has it: every tracked file that starts with
# "#!" is executable (the Makefile and the docs run scripts by their path),
# and no Python bytecode is tracked.
if git -C "$TOPDIR" rev-parse --git-dir >/dev/null 2>&1; then
	out=$(git -C "$TOPDIR" ls-files -s | while IFS=$' \t' read -r mode _ _ path; do
		case "$path" in
		*__pycache__/* | *.pyc) echo "$path: Python bytecode is tracked"; continue ;;
		esac
		[ "$mode" = 100755 ] && continue
		first=""
		IFS= read -r -n2 first < "$TOPDIR/$path" 2>/dev/null
		[ "$first" = '#!' ] && echo "$path: starts with #! but is not executable (mode $mode)"
	done)
	if [ -z "$out" ]; then pass "tracked files: scripts executable, no bytecode"; else echo "$out"; fail "tracked files"; fi
else
	log "not a git checkout: the tracked files' modes are not checked"
fi
mark "style: tracked files"
# A clean build is not made again from the same driver sources against the
# same kernel: its verdict is kept in $BUILD/module-clean, keyed by the
# kernel's key and the sources.
# shellcheck disable=SC2046
mkey=$( (cat "$BUILD/linux/.bufshare-key"; echo "CLIPPY=1 W=1 modules"
	hash_inputs "$TOPDIR/Kbuild" "$TOPDIR/scripts/module.sh" \
		$(find "$TOPDIR/drivers/virtio/bufshare" -name '*.rs' | LC_ALL=C sort)) |
	sha256sum | cut -c1-16)
if [ -e "$BUILD/module-clean/$mkey" ]; then
	log "external module build: these sources built clean before ($mkey), not built again"
	pass "external module build (CLIPPY=1)"
elif out=$(bash scripts/module.sh CLIPPY=1 W=1 modules 2>&1) && ! echo "$out" | grep -q 'warning:'; then
	pass "external module build (CLIPPY=1)"
	mkdir -p "$BUILD/module-clean" && touch "$BUILD/module-clean/$mkey"
else
	echo "$out" | grep -A8 -E 'warning|error' | head -60
	fail "external module build (CLIPPY=1)"
fi
mark "style: external module build (CLIPPY=1)"
# Last, as it waits for the host builds, which ran clippy.
host_check clippy "cargo clippy" "style: cargo clippy"

# The fuzz targets (scripts/fuzz.sh), all at once for FUZZ_CHECK_TIME (20)
# seconds: a short run from the seed corpus and what earlier runs found;
# `make fuzz` runs them for longer.
host_step fuzz "fuzz targets build"
host_check fuzz-lint "fuzz crate: cargo fmt and clippy" "style: fuzz crate fmt and clippy"
wait "$HOST_BUILDS"
HOST_BUILDS=
log "fuzz targets (${FUZZ_CHECK_TIME:-20} s, all at once)"
out=$(FUZZ_TIME=${FUZZ_CHECK_TIME:-20} bash scripts/fuzz.sh run 2>&1)
rc=$?
while IFS= read -r line; do
	case "$line" in
	"fuzz "*": FAILED"*) echo "$out" | grep -v '^ *at \|^ *[0-9]*: ' | tail -40; fail "${line#fuzz }" ;;
	"fuzz "*) pass "${line#fuzz }" ;;
	esac
done <<< "$out"
if [ "$rc" != 0 ] && ! echo "$out" | grep -q '^fuzz .*: FAILED'; then
	echo "$out" | tail -30
	fail "fuzz targets (exit $rc)"
fi
mark "fuzz targets"

# The guest runs' results. Each boot has a run directory of its own: its
# console, kernel log, kmemleak report and backend log stay there, and their
# paths are printed when anything failed.
log "waiting for the guest runs"
wait "${LANES[@]}"
mark "waiting for the guest runs (started after the guest programs build)"
TIMES+=("" "guest runs, each from its own start: three lanes, side by side with the above")

# have_run NAME DIR: whether the guest run NAME left its run directory DIR;
# if not, the run is counted as a failure.
have_run() {
	[ -d "$2" ] && return 0
	tail -20 "$JOBS/$1.out" 2>/dev/null
	fail "guest run $1: no run directory"
	return 1
}

# job_result NAME: sets $RUN and $vmrc from the job NAME's output.
job_result() {
	RUN=$(tail -1 "$JOBS/$1.out" 2>/dev/null)
	vmrc=$(cat "$JOBS/$1.rc" 2>/dev/null || echo "none")
}

# guest_run NAME LABEL DOCTESTS TEST...: counts the results of the guest run
# NAME, its tests named "TEST$LABEL", what is checked of the boot
# "CHECK[NAME]" (see guest_results for DOCTESTS).
guest_run() {
	local name=$1 label=$2 doctests=$3
	shift 3
	job_result "$name"
	have_run "$name" "$RUN" || return
	guest_times "$name"
	RUN_DIRS+=("$RUN")
	guest_results "$label" "[$name]" "$vmrc" "$doctests" "$@"
}

# clock_check BOOT: whether the guest's clock of the run in $RUN kept the
# host's time, within 5% and a second, from its first test to its end:
# the guest's times are in the files "started" and "done" (run-guest.sh),
# the host's are the files' own. The guests are given their TSC's
# frequency (vm.sh); one that measured it itself on a busy host ran its
# clock, and every timeout in it, five times too fast. A run without the
# files' times (the suspend guest's) is not checked.
clock_check() {
	local boot=$1 verdict
	[ -s "$RUN/started" ] && [ -s "$RUN/done" ] || return 0
	verdict=$(awk -v g0="$(cat "$RUN/started")" -v g1="$(cat "$RUN/done")" \
		-v h0="$(stat -c %.3Y "$RUN/started")" -v h1="$(stat -c %.3Y "$RUN/done")" 'BEGIN {
		g = g1 - g0; h = h1 - h0
		printf "%s: %.1f s by its clock, %.1f s by the host'"'"'s", \
			(g >= 0.95 * h - 1 && g <= 1.05 * h + 1) ? "ok" : "off", g, h }')
	case "$verdict" in
	ok:*) pass "guest clock keeps the host's time$boot (${verdict#ok: })" ;;
	*) fail "guest clock keeps the host's time$boot (${verdict#off: })" ;;
	esac
}

# guest_results LABEL BOOT VMRC DOCTESTS TEST...: the results of the guest
# run in $RUN (vm.sh's exit code VMRC): each test's TAP lines, named
# "TEST$LABEL", then, named "CHECK$BOOT", the driver's unloading, the
# kernel's reports and, if DOCTESTS is 1, the KUnit doctests.
guest_results() {
	local label=$1 boot=$2 vmrc=$3 doctests=$4 bin tap line reports leaks
	shift 4
	local tests=("$@")
	if [ ! -e "$RUN/done" ]; then
		tail -40 "$RUN/console.log"
		fail "guest boot and run$boot (vm.sh exit $vmrc)"
	fi
	for bin in "${tests[@]}"; do
		bin=$(basename "$bin")$label
		tap=$RUN/${bin%"$label"}.tap
		if [ ! -e "$tap" ]; then
			fail "$bin: did not run"
			continue
		fi
		while IFS= read -r line; do
			case "$line" in
			"ok "*"# SKIP"*) echo "SKIP: $bin: ${line#ok }" ;;
			"ok "*) pass "$bin: ${line#ok [0-9]* }" ;;
			"not ok "*) fail "$bin: ${line#not ok [0-9]* }" ;;
			esac
		done < "$tap"
		if ! grep -q '^exit=0$' "$tap"; then
			grep -q '^not ok' "$tap" || fail "$bin: exit $(sed -n 's/^exit=//p' "$tap")"
			grep -E '^#' "$tap" | tail -20
		fi
	done
	if [ -e "$RUN/done" ]; then
		if grep -q 'guest: rmmod ok' "$RUN/console.log"; then
			pass "driver unloads$boot"
		else
			fail "driver unloads$boot"
		fi
		clock_check "$boot"
		# The debug kernel's reports: any is a failure, shown in full.
		# KASAN and sleeping-in-atomic reports start with "BUG:", lockdep's
		# with "WARNING:" or "INFO:"; every one carries a call trace.
		reports=$(grep -E -A30 'BUG:|WARNING:|INFO: |Oops|UBSAN:|DEADLOCK|circular locking|recursive locking|inconsistent lock state|suspicious RCU usage|general protection fault|kernel BUG|Call Trace:' "$RUN/dmesg.txt" | head -200)
		leaks=$(grep -A20 'unreferenced object' "$RUN/kmemleak.txt" 2>/dev/null | head -100)
		if [ -z "$reports$leaks" ]; then
			pass "guest kernel log$boot has no KASAN, lockdep, kmemleak, WARN, BUG or Oops report"
		else
			echo "$reports"
			echo "$leaks"
			fail "guest kernel log$boot has reports"
		fi
		if [ "$vmrc" != 0 ]; then
			fail "vm.sh exit $vmrc$boot"
		fi
		# The examples of the virtio and rate limit abstractions, run
		# by KUnit at boot (vm.sh keeps KUnit to them).
		[ "$doctests" = 1 ] || return 0
		for mod in virtio ratelimit; do
			if grep -qE "(^|[] ])ok [0-9]+ rust_doctest_kernel_$mod" "$RUN/dmesg.txt" &&
				! grep -qE "not ok [0-9]+ rust_doctest_kernel_$mod" "$RUN/dmesg.txt"; then
				pass "doctests of the $mod abstractions$boot (KUnit)"
			else
				fail "doctests of the $mod abstractions$boot (KUnit)"
			fi
		done
	fi
}

# host_cpu DIR...: the host CPU time, in seconds, of the QEMUs of the runs
# in DIR... (their files host-cpu, from vm.sh, vm2.sh and pm-test.sh);
# nothing if one has none.
GUEST_CPU=0
host_cpu() {
	local d
	for d in "$@"; do [ -s "$d/host-cpu" ] || return 0; done
	for d in "$@"; do cat "$d/host-cpu"; done | awk '{ s += $1 } END { printf "%.0f\n", s }'
}

# guest_times NAME [CPU_DIR...]: the guest run's rows of the table: each
# test and the guest's teardown by the guest's clock (run-guest.sh's
# timing.txt); the boot, from the run's start (QEMU's, the firmware's, the
# kernel's) to the first test, and the power-off by the host's, from the times of the
# guest's "started" and "done" files, as the guest's clock falls behind
# during a boot on a busy host. A run without those files (the suspend
# guest's come at its end, over a serial port) has its boot by the
# guest's clock, from the kernel's start, and the rest in one row. The
# row of the run in all has its QEMUs' host CPU (of the runs in CPU_DIR...,
# by default $RUN's): with the host's cores busy throughout, that, not a
# run's length, is what it cost make check.
guest_times() {
	local run=$1 start end total kind name secs sum=0 booted="" done="" cpu
	start=$(cat "$JOBS/$run.start")
	end=$(cat "$JOBS/$run.end" 2>/dev/null || date +%s)
	total=$((end - start))
	shift
	[ $# -gt 0 ] || set -- "$RUN"
	cpu=$(host_cpu "$@")
	[ -z "$cpu" ] || GUEST_CPU=$((GUEST_CPU + cpu))
	cpu=${cpu:+" ($cpu s of host CPU)"}
	if [ ! -e "$RUN/timing.txt" ]; then
		TIMES+=("$(printf '%6d s  guest run %s (no timing from the guest)%s' "$total" "$run" "$cpu")")
		return
	fi
	# Both or neither: the host's times of the first test and of the end.
	if [ -e "$RUN/started" ] && [ -e "$RUN/done" ]; then
		booted=$(stat -c %Y "$RUN/started")
		done=$(stat -c %Y "$RUN/done")
	fi
	while read -r kind name secs; do
		case "$kind" in
		boot)
			secs=$name
			name="boot, kernel start to first test"
			if [ -n "$booted" ]; then
				name="boot, run start to first test (the guest's clock: ${secs%.*} s from the kernel's start)"
				secs=$((booted - start))
			fi
			;;
		teardown) secs=$name; name="teardown (rmmod, kmemleak scans, dmesg)" ;;
		esac
		sum=$(awk -v a="$sum" -v b="$secs" 'BEGIN { print a + b }')
		TIMES+=("$(printf '%6.0f s  guest run %s: %s' "$secs" "$run" "$name")")
	done < "$RUN/timing.txt"
	if [ -n "$done" ]; then
		TIMES+=("$(printf '%6d s  guest run %s: power-off' "$((end - done))" "$run")")
	else
		TIMES+=("$(printf '%6.0f s  guest run %s: QEMU start and power-off' \
			"$(awk -v a="$total" -v b="$sum" 'BEGIN { print a - b }')" "$run")")
	fi
	TIMES+=("$(printf '%6d s  guest run %s, in all%s' "$total" "$run" "$cpu")")
}

guest_run default-1 "" 1 "${DEFAULT_FIRST[@]}"
guest_run default-2 "" 1 "${DEFAULT_SECOND[@]}"
guest_run no-event-idx-swiotlb "[no-event-idx-swiotlb]" 1 "${NO_EVENT_IDX_TESTS[@]}"

# The two guests' results, a's and b's, from one run directory.
two_guests() {
	local base g
	job_result two-guests
	base=$RUN
	have_run two-guests "$base/a" || return
	RUN=$base/b
	guest_times two-guests "$base/a" "$base/b"
	for g in a b; do
		RUN=$base/$g
		RUN_DIRS+=("$RUN")
		guest_results "[two-guests/$g]" "[two-guests/$g]" "$vmrc" 0 bufshare_import_test
	done
}
two_guests

guest_run pm "[pm]" 0 bufshare_pm_test
TIMES+=("$(printf '%6d s  of host CPU for the guests'"'"' QEMUs, in all' "$GUEST_CPU")")
finish
