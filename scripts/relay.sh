#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The host relay: lets the guest tests ask the host what it sees of their
# buffers, through the backend's inspect socket and bufshare-inspect.
# Started in the background by scripts/vm.sh; ends with it.
#
#   relay.sh DIR SOCKET TOOL [PARENT-PID]
#
# DIR is shared with the guest (/build/run/relay there). The guest makes a
# request TAG.req (one line: "list", "read ID OFF LEN" or "write ID OFF",
# the data of a write in TAG.in, there before TAG.req), each atomically by
# a rename. The relay polls DIR, runs "TOOL --socket SOCKET <request>",
# and answers with TAG.out (the tool's standard output), TAG.err (its
# standard error) and last TAG.status (its exit status, in decimal; 2 for
# a request it refused), each atomically by a rename too. It makes
# DIR/ready when it starts.
#
# DIR is the guest's: whatever the guest put there (links, directories,
# odd names), the relay writes nothing outside DIR. It works from a
# private directory the guest cannot see, on the same file system: it
# first moves a request and its data there (rename moves a link, never
# what it points to) and reads them only if they are regular files; it
# makes every answer there, then renames it into DIR (rename replaces a
# link, never follows it, and cannot replace a directory). DIR is reached
# through the relay's working directory, so replacing DIR itself by a
# link changes nothing.

. "$(dirname "$0")/lib.sh"
set +e

DIR=${1:?usage: relay.sh DIR SOCKET TOOL [PARENT-PID]}
SOCK=${2:?usage: relay.sh DIR SOCKET TOOL [PARENT-PID]}
TOOL=${3:?usage: relay.sh DIR SOCKET TOOL [PARENT-PID]}
PARENT=${4:-}
# The largest read, in bytes.
MAX_READ=$((1 << 30))
POLL=0.03

[ -d "$DIR" ] && [ ! -L "$DIR" ] || die "relay: $DIR is not a directory"
PRIV=$(mktemp -d "$BUFSHARE_CACHE/relay.XXXXXX") || die "relay: no private directory"
child=""
cleanup() {
	[ -n "$child" ] && kill "$child" 2>/dev/null
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
	mv -f -T -- "$PRIV/$1" "./$2" || echo "relay: cannot make $2"
}

# answer TAG: runs the request in $PRIV/req (with $PRIV/in) and answers it.
answer() {
	local tag=$1 line="" rc=2 input=/dev/null
	local -a args=()

	: >"$PRIV/out"
	: >"$PRIV/err"
	if [ -f "$PRIV/req" ] && [ ! -L "$PRIV/req" ]; then
		IFS= read -r -n 200 line <"$PRIV/req"
	fi
	if [ "$line" = list ]; then
		args=(list)
	elif [[ $line =~ ^read\ ([0-9]{1,20})\ ([0-9]{1,20})\ ([0-9]{1,10})$ ]] &&
		((10#${BASH_REMATCH[3]} <= MAX_READ)); then
		args=(read "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}")
	elif [[ $line =~ ^write\ ([0-9]{1,20})\ ([0-9]{1,20})$ ]] &&
		[ -f "$PRIV/in" ] && [ ! -L "$PRIV/in" ]; then
		args=(write "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}")
		input=$PRIV/in
	fi
	if [ ${#args[@]} = 0 ]; then
		echo "relay: bad request" >"$PRIV/err"
	else
		timeout -k 5 60 "$TOOL" --socket "$SOCK" "${args[@]}" \
			<"$input" >"$PRIV/out" 2>"$PRIV/err" &
		child=$!
		wait "$child"
		rc=$?
		child=""
	fi
	echo "relay: $tag: ${args[*]:-refused} -> $rc"
	put out "$tag.out"
	put err "$tag.err"
	echo "$rc" >"$PRIV/status"
	put status "$tag.status"
}

echo ready >"$PRIV/ready"
put ready ready
echo "relay: serving $DIR through $SOCK"
while [ -z "$PARENT" ] || kill -0 "$PARENT" 2>/dev/null; do
	busy=0
	for req in *.req; do
		tag=${req%.req}
		rm -rf -- "${PRIV:?}"/*
		if ! [[ $tag =~ ^[A-Za-z0-9_-]{1,64}$ ]]; then
			rm -rf -- "./$req" 2>/dev/null
			continue
		fi
		# Out of the guest's reach first; then look at what it is.
		mv -f -T -- "./$req" "$PRIV/req" || continue
		[ -e "./$tag.in" ] || [ -L "./$tag.in" ] && mv -f -T -- "./$tag.in" "$PRIV/in"
		answer "$tag"
		busy=1
	done
	[ "$busy" = 1 ] || sleep "$POLL"
done
echo "relay: parent gone"
