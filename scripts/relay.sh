#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The host relay: lets the guest tests ask the host what it sees of their
# buffers, through the backend's inspect socket and bufshare-inspect, and
# run host consumers (bufshare-watch) on the backend's consumer socket.
# Started in the background by scripts/vm.sh; ends with it.
#
#   relay.sh [--watch TOOL --consumer-socket PATH [--consumer-socket2 PATH]] [--qmp PATH]
#            DIR SOCKET TOOL [PARENT-PID]
#
# DIR is shared with the guest (/build/run/relay there). The guest makes a
# request TAG.req (one line, below; the data of a write in TAG.in, there
# before TAG.req), each atomically by a rename. The relay polls DIR and
# answers with one file, TAG.ans, made atomically by a rename too: a line
# "STATUS OUTLEN" (the exit status, 2 for a request it refused, and the
# length of the standard output, in decimal), then OUTLEN bytes of standard
# output, then the standard error. One file, as each file the guest opens,
# reads and removes through 9p costs it tens of milliseconds under TCG. It
# makes DIR/ready when it starts.
#
# Requests run by "TOOL --socket SOCKET <request>" (bufshare-inspect):
#
#   list | read ID OFF LEN | write ID OFF | holders
#
# (holders: the buffers consumers hold, or that wait for them after
# UNREGISTER, "id=ID holders=N instances=N draining=0|1" each.)
#
# Requests about watchers, "bufshare-watch --socket PATH --quiet --log
# FILE" run in the background (with --watch and --consumer-socket only):
#
#   watch NAME APPS [OPTION...]
#       Starts watcher NAME (1 to 32 of [A-Za-z0-9_-]), subscribed to APPS:
#       "*" (every application) or names separated by commas. Status 0 once
#       started (out: "pid=PID"); 2 if NAME runs already, or too many
#       watchers do. Options, each at most once, in any order:
#         nobody          it runs as uid and gid 65534, keeping only
#                         CAP_DAC_OVERRIDE so that it can reach the
#                         backend's socket (mode 0600) and its log: what it
#                         then meets is the backend's own check of the
#                         peer's uid
#         hold=SECS       --hold-after-remove SECS (0 to 86400): keeps a
#                         removed buffer mapped SECS before closing it
#                         (CLOSED then)
#         no-release      --no-release: never RELEASE an update
#         verify          --verify: check each frame's crc32 (VERIFY lines)
#         dump            --dump DIR/NAME.frames: write each frame as a PNG
#         stop-reading=N  --stop-reading N: stops reading the socket after
#                         N events, keeping every mapping
#         second          on the consumer socket of the second device's
#                         backend (--consumer-socket2) instead
#   watch-stop NAME
#       SIGTERM (SIGKILL after 10 s), waits: the status and out ("exit=N")
#       are its exit status, err its standard error. A watcher that ended
#       by itself just gives its exit status.
#   watch-kill NAME
#       SIGKILL, waits: status 0 (out "exit=N", 137 when the kill ended it).
#
# With --qmp, the QMP socket of the guest's QEMU:
#
#   device-del
#       Asks QEMU to remove the bufshare device (its id is bufshare-dev),
#       which QEMU starts and the guest carries out (ACPI hotplug): status 0
#       once QEMU took the request, 1 with its error in err.
#
# Unknown watchers are refused (2, empty out). The log of each watcher,
# its --log FILE in the relay's private directory, is published as
# DIR/NAME.log, and its standard error as DIR/NAME.stderr: copied whole
# and renamed into DIR at every poll when it changed, and once more when
# the watcher ended, so that the guest can follow them (a line is only
# whole once it ends with a newline). A new watcher of an old name starts
# with an empty DIR/NAME.log, published before "watch" is answered. Every
# watcher still running is killed when the relay ends.
#
# DIR is the guest's: whatever the guest put there (links, directories,
# odd names), the relay writes nothing outside DIR. It works from a
# private directory the guest cannot see, on the same file system: it
# first moves a request and its data there (rename moves a link, never
# what it points to) and reads them only if they are regular files; it
# makes every answer and every copy of a log there, then renames it into
# DIR (rename replaces a link, never follows it, and cannot replace a
# directory). DIR is reached through the relay's working directory, so
# replacing DIR itself by a link changes nothing. Names the guest gives
# (tags, watcher names) are checked against fixed patterns before use.

. "$(dirname "$0")/lib.sh"
set +e

USAGE="usage: relay.sh [--watch TOOL --consumer-socket PATH [--consumer-socket2 PATH]] [--qmp PATH] DIR SOCKET TOOL [PARENT-PID]"
WATCH=""
CSOCK=""
CSOCK2=""
QMP=""
while [ $# -gt 0 ]; do
	case "$1" in
	--watch) WATCH=${2:?$USAGE}; shift 2 ;;
	--consumer-socket) CSOCK=${2:?$USAGE}; shift 2 ;;
	--consumer-socket2) CSOCK2=${2:?$USAGE}; shift 2 ;;
	--qmp) QMP=${2:?$USAGE}; shift 2 ;;
	--) shift; break ;;
	-*) die "$USAGE" ;;
	*) break ;;
	esac
done
DIR=${1:?$USAGE}
SOCK=${2:?$USAGE}
TOOL=${3:?$USAGE}
PARENT=${4:-}
# The largest read, in bytes.
MAX_READ=$((1 << 30))
POLL=0.03
# Watchers running at a time, and names remembered (running or ended).
WATCH_MAX=16
WATCH_NAMES_MAX=64
NOBODY=65534

[ -d "$DIR" ] && [ ! -L "$DIR" ] || die "relay: $DIR is not a directory"
PRIV=$(mktemp -d "$BUFSHARE_CACHE/relay.XXXXXX") || die "relay: no private directory"
# R: a request and its answer, emptied for each request. W: the watchers'
# logs and standard errors. P: copies of them on their way into DIR.
R=$PRIV/r
W=$PRIV/w
P=$PRIV/p
mkdir "$R" "$W" || die "relay: cannot populate $PRIV"
# The pause between two looks at DIR, without a process for each: a read
# that times out, from a FIFO the relay holds open at both ends (so that it
# never ends sooner). A sleep(1) 33 times a second took 6.5% of a core per
# relay on a busy host.
mkfifo "$PRIV/nap" && exec {NAP}<>"$PRIV/nap" || die "relay: no FIFO to wait on"
nap() { read -r -t "$POLL" -u "$NAP"; }

# Watchers: name -> pid while it may run (empty once reaped), exit status
# once ended, state of the log and standard error last published.
declare -A WPID=() WRC=() WPUB=()

# The relay's own log, whatever a request's output is redirected to.
exec {LOG}>&1
child=""
cleanup() {
	local name pid
	[ -n "$child" ] && kill "$child" 2>/dev/null
	for name in "${!WPID[@]}"; do
		pid=${WPID[$name]}
		[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	done
	for name in "${!WPID[@]}"; do
		pid=${WPID[$name]}
		[ -n "$pid" ] && wait "$pid" 2>/dev/null
	done
	rm -rf "$PRIV"
}
trap cleanup EXIT
trap 'exit 0' TERM INT HUP
cd "$DIR" || die "relay: cannot enter $DIR"
[ "$(stat -c %d .)" = "$(stat -c %d "$PRIV")" ] ||
	die "relay: $PRIV and $DIR are on different file systems"
shopt -s nullglob

# put FILE NAME: moves the private FILE into DIR as NAME, atomically.
put() {
	mv -f -T -- "$1" "./$2" || echo "relay: cannot make $2"
}

# watch_running NAME: whether watcher NAME runs (a live child of ours).
watch_running() {
	local pid=${WPID[$1]:-} stat
	[ -n "$pid" ] || return 1
	{ IFS= read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
	# "PID (COMM) STATE PPID ...", COMM may hold anything: cut after the
	# last parenthesis.
	stat=${stat##*) }
	[[ $stat =~ ^([A-Za-z])\ ([0-9]+) ]] || return 1
	[ "${BASH_REMATCH[1]}" != Z ] && [ "${BASH_REMATCH[2]}" = "$$" ]
}

# publish NAME: copies NAME's log and standard error into DIR.
publish() {
	local name=$1 ext
	for ext in log stderr; do
		if [ -f "$W/$name.$ext" ]; then
			cp -- "$W/$name.$ext" "$P" && put "$P" "$name.$ext"
		fi
	done
}

# publish_running: reaps the watchers that ended; publishes the logs and
# standard errors of the others that changed since the last poll (one
# stat for all of them: this runs at every poll).
publish_running() {
	local name line
	local -a files=()
	local -A now=()

	for name in "${!WPID[@]}"; do
		[ -n "${WPID[$name]}" ] || continue
		reap "$name" || files+=("$W/$name.log" "$W/$name.stderr")
	done
	[ ${#files[@]} -gt 0 ] || return 0
	while IFS= read -r line; do
		# SIZE:MTIME:PATH, PATH .../NAME.log or .../NAME.stderr.
		[[ $line =~ ^([0-9]+:[0-9.]+):.*/([A-Za-z0-9_-]+)\.(log|stderr)$ ]] || continue
		now[${BASH_REMATCH[2]}]+="${BASH_REMATCH[3]}=${BASH_REMATCH[1]} "
	done <<<"$(stat -c '%s:%.9Y:%n' -- "${files[@]}" 2>/dev/null)"
	for name in "${!now[@]}"; do
		[ "${now[$name]}" != "${WPUB[$name]:-}" ] || continue
		WPUB[$name]=${now[$name]}
		publish "$name"
	done
}

# collect NAME: waits for watcher NAME to end, collects its exit status
# and publishes what it wrote last.
collect() {
	local name=$1 pid=${WPID[$1]:-}
	[ -n "$pid" ] || return 0
	wait "$pid" 2>/dev/null
	WRC[$name]=$?
	WPID[$name]=""
	echo "relay: watcher $name (pid $pid) ended: exit ${WRC[$name]}" >&"$LOG"
	publish "$name"
}

# reap NAME: collects watcher NAME if it ended. Returns 0 if it ended (now
# or before), 1 if it runs.
reap() {
	watch_running "$1" && return 1
	collect "$1"
	return 0
}

# watch_start NAME APPS [OPTIONS]: starts watcher NAME, with the options
# of the "watch" request (words, checked by the caller). Prints its pid;
# returns 0, or 2 if it is refused.
watch_start() {
	local name=$1 apps=$2 opts=$3 nobody="" running=0 n opt sock=$CSOCK
	local -a cmd list extra=()
	local -A seen=()

	for opt in $opts; do
		if [ -n "${seen[${opt%%=*}]:-}" ]; then
			echo "relay: option ${opt%%=*} twice" >&2
			return 2
		fi
		seen[${opt%%=*}]=1
		case "$opt" in
		nobody) nobody=1 ;;
		hold=*)
			n=$((10#${opt#hold=}))
			if [ "$n" -gt 86400 ]; then
				echo "relay: hold=$n: at most 86400" >&2
				return 2
			fi
			extra+=(--hold-after-remove "$n")
			;;
		no-release) extra+=(--no-release) ;;
		verify) extra+=(--verify) ;;
		dump) extra+=(--dump "$W/$name.frames") ;;
		stop-reading=*) extra+=(--stop-reading "$((10#${opt#stop-reading=}))") ;;
		second)
			if [ -z "$CSOCK2" ]; then
				echo "relay: no second device (relay.sh --consumer-socket2)" >&2
				return 2
			fi
			sock=$CSOCK2
			;;
		*)
			echo "relay: bad option $opt" >&2
			return 2
			;;
		esac
	done

	if [ -z "$WATCH" ] || [ -z "$CSOCK" ] || [ ! -x "$WATCH" ]; then
		echo "relay: no watch tool (relay.sh --watch, --consumer-socket)" >&2
		return 2
	fi
	for n in "${!WPID[@]}"; do
		reap "$n" || running=$((running + 1))
	done
	if [ -n "${WPID[$name]:-}" ]; then
		echo "relay: watcher $name runs already" >&2
		return 2
	fi
	if [ "$running" -ge "$WATCH_MAX" ]; then
		echo "relay: $running watchers run already" >&2
		return 2
	fi
	if [ -z "${WPID[$name]+set}" ] && [ "${#WPID[@]}" -ge "$WATCH_NAMES_MAX" ]; then
		echo "relay: too many watchers" >&2
		return 2
	fi
	cmd=("$WATCH" --socket "$sock" --log "$W/$name.log" --quiet "${extra[@]}")
	if [ "$apps" != '*' ]; then
		IFS=, read -r -a list <<<"$apps"
		for n in "${list[@]}"; do cmd+=(--app "$n"); done
	fi
	if [ -n "$nobody" ]; then
		cmd=(setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups
			--inh-caps=-all,+dac_override --ambient-caps=+dac_override
			--bounding-set=-all,+dac_override -- "${cmd[@]}")
	fi
	# Empty files first: the guest never sees an older watcher's lines.
	: >"$W/$name.log"
	: >"$W/$name.stderr"
	(cd "$W" && exec "${cmd[@]}" </dev/null >/dev/null 2>"$W/$name.stderr" {LOG}>&-) &
	WPID[$name]=$!
	unset 'WRC[$name]'
	WPUB[$name]=""
	publish "$name"
	echo "relay: watcher $name (pid ${WPID[$name]}): ${cmd[*]}" >&2
	echo "pid=${WPID[$name]}"
	return 0
}

# watch_end NAME SIGNAL: ends watcher NAME with SIGNAL (SIGKILL after 10 s)
# and prints "exit=N"; returns N, or 2 (nothing printed) for an unknown
# watcher.
watch_end() {
	local name=$1 sig=$2 pid i

	if [ -z "${WPID[$name]+set}" ]; then
		echo "relay: no watcher $name" >&2
		return 2
	fi
	pid=${WPID[$name]}
	if ! reap "$name"; then
		kill -"$sig" "$pid"
		for ((i = 0; i < 100; i++)); do
			watch_running "$name" || break
			sleep 0.1
		done
		watch_running "$name" && kill -KILL "$pid"
		collect "$name"
	fi
	cat -- "$W/$name.stderr" >&2
	echo "exit=${WRC[$name]}"
	return "${WRC[$name]}"
}

# qmp_device_del: asks QEMU, over its QMP socket, to remove the device
# bufshare-dev; prints "ok", or QEMU's error on standard error (status 1).
qmp_device_del() {
	timeout -k 5 30 python3 - "$QMP" <<'PY'
import json
import socket
import sys

sock = socket.socket(socket.AF_UNIX)
sock.settimeout(20)
sock.connect(sys.argv[1])
f = sock.makefile("rw")
json.loads(f.readline())  # the greeting


def execute(command, **arguments):
    request = {"execute": command}
    if arguments:
        request["arguments"] = arguments
    f.write(json.dumps(request) + "\n")
    f.flush()
    while True:
        reply = json.loads(f.readline())
        if "return" in reply or "error" in reply:
            return reply


execute("qmp_capabilities")
reply = execute("device_del", id="bufshare-dev")
if "error" in reply:
    print(reply["error"].get("desc", reply["error"]), file=sys.stderr)
    sys.exit(1)
print("ok")
PY
}

# answer TAG: runs the request in $R/req (with $R/in) and answers it.
answer() {
	local tag=$1 line="" rc=2 input=/dev/null answered=""
	local -a args=()

	: >"$R/out"
	: >"$R/err"
	if [ -f "$R/req" ] && [ ! -L "$R/req" ]; then
		IFS= read -r -n 5000 line <"$R/req"
	fi
	if [ "$line" = list ]; then
		args=(list)
	elif [[ $line =~ ^read\ ([0-9]{1,20})\ ([0-9]{1,20})\ ([0-9]{1,10})$ ]] &&
		((10#${BASH_REMATCH[3]} <= MAX_READ)); then
		args=(read "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}")
	elif [[ $line =~ ^write\ ([0-9]{1,20})\ ([0-9]{1,20})$ ]] &&
		[ -f "$R/in" ] && [ ! -L "$R/in" ]; then
		args=(write "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}")
		input=$R/in
	elif [ "$line" = holders ]; then
		args=(holders)
	elif [[ $line =~ ^watch\ ([A-Za-z0-9_-]{1,32})\ (\*|[A-Za-z0-9_.-]{1,63}(,[A-Za-z0-9_.-]{1,63}){0,63})((\ (nobody|hold=[0-9]{1,5}|no-release|verify|dump|stop-reading=[0-9]{1,9}|second)){0,7})$ ]]; then
		watch_start "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[4]}" \
			>"$R/out" 2>"$R/err"
		rc=$?
		answered=1
	elif [ "$line" = device-del ] && [ -n "$QMP" ]; then
		qmp_device_del >"$R/out" 2>"$R/err"
		rc=$?
		answered=1
	elif [[ $line =~ ^watch-(stop|kill)\ ([A-Za-z0-9_-]{1,32})$ ]]; then
		if [ "${BASH_REMATCH[1]}" = stop ]; then
			watch_end "${BASH_REMATCH[2]}" TERM >"$R/out" 2>"$R/err"
			rc=$?
		else
			watch_end "${BASH_REMATCH[2]}" KILL >"$R/out" 2>"$R/err"
			rc=$?
			[ -s "$R/out" ] && rc=0
		fi
		answered=1
	fi
	if [ -n "$answered" ]; then
		args=("$line")
	elif [ ${#args[@]} = 0 ]; then
		echo "relay: bad request" >"$R/err"
	else
		timeout -k 5 60 "$TOOL" --socket "$SOCK" "${args[@]}" \
			<"$input" >"$R/out" 2>"$R/err" &
		child=$!
		wait "$child"
		rc=$?
		child=""
	fi
	echo "relay: $tag: ${args[*]:-refused} -> $rc"
	{
		echo "$rc $(stat -c %s "$R/out")"
		cat "$R/out" "$R/err"
	} >"$R/ans"
	put "$R/ans" "$tag.ans"
}

echo ready >"$R/ready"
put "$R/ready" ready
echo "relay: serving $DIR through $SOCK${WATCH:+, watchers on $CSOCK}"
while [ -z "$PARENT" ] || kill -0 "$PARENT" 2>/dev/null; do
	busy=0
	for req in *.req; do
		tag=${req%.req}
		rm -rf -- "${R:?}"/*
		if ! [[ $tag =~ ^[A-Za-z0-9_-]{1,64}$ ]]; then
			rm -rf -- "./$req" 2>/dev/null
			continue
		fi
		# Out of the guest's reach first; then look at what it is.
		mv -f -T -- "./$req" "$R/req" || continue
		[ -e "./$tag.in" ] || [ -L "./$tag.in" ] && mv -f -T -- "./$tag.in" "$R/in"
		answer "$tag"
		busy=1
	done
	# The watchers' logs, as they grow; and the last of those that ended.
	publish_running
	[ "$busy" = 1 ] || nap
done
echo "relay: parent gone"
