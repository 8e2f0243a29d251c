# SPDX-License-Identifier: GPL-2.0
# Common settings for the virtio-bufshare scripts. Sourced, not run.
#
# Everything expensive lives outside the checkout, under $BUFSHARE_CACHE,
# keyed by the hash of its inputs, so that a warm run costs seconds.

set -euo pipefail

TOPDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUFSHARE_CACHE=${BUFSHARE_CACHE:-/var/cache/virtio-bufshare}
mkdir -p "$BUFSHARE_CACHE"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# hash_inputs FILE... : a short, stable hash of the named files' contents
# (directories are walked in sorted order, paths included).
hash_inputs() {
	local f
	for f in "$@"; do
		if [ -d "$f" ]; then
			(cd "$f" && find . -type f -print0 | LC_ALL=C sort -z |
				xargs -0 sha256sum)
		else
			sha256sum "$f"
		fi
	done | sed "s|$TOPDIR/||" | sha256sum | cut -c1-16
}

# CARGO_SRC: where the host's cargo builds the tools from, a copy of the
# checkout's tools/ and include/ (the UAPI headers bufshare-uapi reads) at a
# path that stays the same from one clone to the next. cargo keys its builds
# by each package's path and checks sources by their times, so that built
# from the checkout, every fresh clone built the workspace again (tests and
# fuzz targets too). sync_cargo_src copies only the files whose contents
# changed (they get a new time) and removes those gone; CARGO_REMAP makes
# the compiler's messages name the files as the checkout does
# ("tools/...").
CARGO_SRC=$BUFSHARE_CACHE/src
CARGO_REMAP="--remap-path-prefix=$CARGO_SRC/="
sync_cargo_src() {
	python3 - "$TOPDIR" "$CARGO_SRC" tools include <<'PY'
import filecmp, os, shutil, sys

top, dst = sys.argv[1], sys.argv[2]
for sub in sys.argv[3:]:
    src_root, dst_root = os.path.join(top, sub), os.path.join(dst, sub)
    want = set()
    for dirpath, dirnames, filenames in os.walk(src_root):
        # Build output (the fuzz crate's own target/) is not a source.
        dirnames[:] = [d for d in dirnames if d != "target"]
        rel = os.path.relpath(dirpath, src_root)
        os.makedirs(os.path.join(dst_root, rel), exist_ok=True)
        for name in filenames:
            r = os.path.normpath(os.path.join(rel, name))
            want.add(r)
            s, d = os.path.join(src_root, r), os.path.join(dst_root, r)
            if os.path.isfile(d) and filecmp.cmp(s, d, shallow=False):
                continue
            tmp = "%s.sync-%d" % (d, os.getpid())
            shutil.copyfile(s, tmp)
            shutil.copymode(s, tmp)
            os.replace(tmp, d)
    for dirpath, dirnames, filenames in os.walk(dst_root, topdown=False):
        rel = os.path.relpath(dirpath, dst_root)
        if "/target/" in "/%s/" % rel:
            continue
        for name in filenames:
            r = os.path.normpath(os.path.join(rel, name))
            if r not in want and ".sync-" not in name:
                os.remove(os.path.join(dirpath, name))
        if rel != "." and not os.listdir(dirpath):
            os.rmdir(dirpath)
PY
}

# The toolchain tree: its key is the hash of the script that makes it.
TREE_KEY=$(hash_inputs "$TOPDIR/scripts/toolchain.sh")
ROOT=$BUFSHARE_CACHE/tree-$TREE_KEY

# in_tree CMD... : run CMD inside the trixie tree. The checkout is bound at
# /src, the cache's work area at /build.
BUILD=$BUFSHARE_CACHE/build
in_tree() {
	mkdir -p "$BUILD"
	bwrap --bind "$ROOT" / --dev-bind /dev /dev --proc /proc --bind /sys /sys \
		--perms 1777 --tmpfs /tmp \
		--bind "$BUILD" /build --bind "$TOPDIR" /src \
		${IN_TREE_BINDS:-} \
		--unshare-pid --die-with-parent --chdir "${IN_TREE_CHDIR:-/build}" \
		/usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root TERM=dumb LANG=C.UTF-8 \
		"$@"
}

# cpu_counted FILE CMD...: runs CMD (a command or a function) in a cgroup
# of its own and writes to FILE the host CPU time, in seconds, that CMD and
# every process it started used: for a guest run, its QEMU's. make check
# prints it beside each run's times, as what the run cost the host's cores
# (which bounds make check, as the cores are busy throughout); it moves
# with the machine's speed as the times do. The cgroup is cgroup2's or, on
# a host with the v1 hierarchies, cpuacct's; where neither can be made, CMD
# runs all the same and FILE is not written. Returns CMD's exit code.
cpu_counted() {
	local file=$1 cg="" rc=0
	shift
	if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
		cg=/sys/fs/cgroup/bufshare.$BASHPID.$RANDOM
	elif [ -e /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then
		cg=/sys/fs/cgroup/cpuacct/bufshare.$BASHPID.$RANDOM
	fi
	if [ -n "$cg" ] && ! mkdir "$cg" 2>/dev/null; then
		cg=""
	fi
	(
		if [ -n "$cg" ]; then
			echo "$BASHPID" 2>/dev/null > "$cg/cgroup.procs" || true
		fi
		"$@"
	) || rc=$?
	[ -n "$cg" ] || return "$rc"
	# A process that did not move in counts nothing: no figure then.
	if [ -e "$cg/cpu.stat" ]; then
		awk '$1 == "usage_usec" && $2 > 0 { printf "%.1f\n", $2 / 1e6 }' "$cg/cpu.stat"
	else
		awk '$1 > 0 { printf "%.1f\n", $1 / 1e9 }' "$cg/cpuacct.usage"
	fi > "$file" 2>/dev/null
	[ -s "$file" ] || rm -f "$file"
	# Empty once the last of its processes is gone.
	for _ in $(seq 50); do
		rmdir "$cg" 2>/dev/null && break
		sleep 0.1
	done
	return "$rc"
}

# wait_sockets SECONDS PATH...: waits, up to SECONDS, until every PATH is a
# socket (a server started in the background listens on it); fails if one
# is not by then.
wait_sockets() {
	local tenths=$(($1 * 10)) p
	shift
	for _ in $(seq "$tenths"); do
		# Stops at the first that is not there yet.
		for p in "$@"; do [ -S "$p" ] || break; done
		[ -S "$p" ] && return 0
		sleep 0.1
	done
	return 1
}

# guest_clock_args ACCEL: the clock arguments of a test guest's kernel
# command line (vm.sh, vm2.sh; ACCEL is vng's, empty under KVM). The TSC
# is trusted (tsc=reliable): checked, it would be checked by the
# clocksource watchdog, whose skew check across CPUs waits with interrupts
# off for the other CPU; during the boot's switch to tsc-early, with that
# CPU in stop_machine and the clock the check times out by still jiffies,
# neither ever went on: a boot of three at once hung so. With no watchdog
# to catch a wrong TSC frequency, a TCG guest is told its TSC's, which is
# the host's (scripts/tsc-khz.c, built with the tree's compiler): its own
# calibration against the PIT goes wrong on a busy host, and one guest of a
# make check found 509 MHz for a 2596 MHz TSC, its clock five times fast.
guest_clock_args() {
	local khz
	if [ -z "$1" ]; then
		echo "tsc=reliable"
		return
	fi
	khz=$(in_tree sh -c 'cc -O2 -Wall -Werror -o /tmp/tsc-khz /src/scripts/tsc-khz.c && /tmp/tsc-khz') ||
		die "cannot measure the host's TSC frequency"
	case "$khz" in
	"" | *[!0-9]*) die "tsc-khz: not a frequency: $khz" ;;
	esac
	echo "tsc=reliable tsc_early_khz=$khz"
}

# GUEST_BINDS: what a guest boot binds into the tree for vng, as
# IN_TREE_BINDS words: the project's own init (scripts/guest-init) over
# virtme-ng's virtme-init, the init vng names on the kernel's command line.
GUEST_BINDS="--ro-bind $TOPDIR/scripts/guest-init /usr/lib/python3/dist-packages/virtme/guest/virtme-init"

# Guest runs: each boot gets a directory of its own under $RUNS, which the
# guest sees as /build/run: the backend's sockets and log, the guest's
# console, kernel log and results. The newest $BUFSHARE_KEEP_RUNS (8) are
# kept, so that a failed run's evidence survives the next boots; $RUNS/latest
# points to the newest.
RUNS=$BUFSHARE_CACHE/runs
# new_run NAME: makes a fresh run directory, exported as $RUN, and drops the
# oldest ones. Runs start side by side (check.sh's lanes): one at a time
# updates latest and prunes, under a lock, as one's find failed on a
# directory that another had just removed, which ended that run before it
# began.
new_run() {
	local keep=${BUFSHARE_KEEP_RUNS:-8} name=${1//[^A-Za-z0-9_.-]/-}
	mkdir -p "$RUNS"
	RUN=$(mktemp -d "$RUNS/$(date +%Y%m%d-%H%M%S)-$name.XXXX")
	export RUN
	(
		flock 9
		ln -sfn "$(basename "$RUN")" "$RUNS/latest"
		find "$RUNS" -mindepth 1 -maxdepth 1 -type d | LC_ALL=C sort |
			head -n -"$keep" | xargs -r rm -rf
	) 9>"$RUNS/.lock"
}

# prepare_vm NAME: build what a guest run needs (kernel, backend, guest
# programs) and start a fresh run directory, $RUN.
prepare_vm() {
	bash "$TOPDIR/scripts/kernel.sh" >/dev/null
	bash "$TOPDIR/scripts/tools.sh" build
	bash "$TOPDIR/scripts/guest-programs.sh" >/dev/null
	new_run "$1"
}
