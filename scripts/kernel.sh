#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the guest kernel: Debian's linux-source-7.3 with the project's
# in-tree files laid over it (scripts/overlay.sh), configured from
# virtme-ng's small VM config plus scripts/kernel.config, built with
# LLVM=1 (KASAN with Rust needs clang).
#
# The build tree lives in $BUFSHARE_CACHE/build/linux and carries the hash
# of its inputs; when it matches nothing is done, when it does not the
# overlay is refreshed (unchanged files keep their times) and make rebuilds
# what changed. Prints the tree's path.
#
#   kernel.sh           the test kernel, $BUFSHARE_CACHE/build/linux
#   kernel.sh --bench   the bench kernel (make bench only): the same with
#                       scripts/kernel-bench.config laid over
#                       scripts/kernel.config (no debug options), in a tree
#                       of its own, $BUFSHARE_CACHE/build/linux-bench

. "$(dirname "$0")/lib.sh"

ROOT=$(bash "$TOPDIR/scripts/toolchain.sh")
KNAME=linux
FRAGMENT=/src/scripts/kernel.config
BENCH_INPUTS=()
if [ "${1:-}" = --bench ]; then
	KNAME=linux-bench
	BENCH_INPUTS=("$TOPDIR/scripts/kernel-bench.config")
	# The fragment: kernel.config without the options the bench
	# fragment names (set or not), then the bench fragment.
	mkdir -p "$BUILD"
	opts=$(sed -n -e 's/^# \(CONFIG_[A-Z0-9_]*\) is not set$/\1/p' \
		-e 's/^\(CONFIG_[A-Z0-9_]*\)=.*/\1/p' \
		"$TOPDIR/scripts/kernel-bench.config" | paste -sd'|')
	{ grep -vE "^(# )?($opts)[= ]" "$TOPDIR/scripts/kernel.config"
	  cat "$TOPDIR/scripts/kernel-bench.config"; } > "$BUILD/kernel-bench.fragment"
	FRAGMENT=/build/kernel-bench.fragment
fi
KDIR=$BUILD/$KNAME
# shellcheck disable=SC2046
KEY=$( (echo "$ROOT"; hash_inputs "$TOPDIR/scripts/kernel.sh" \
	"$TOPDIR/scripts/kernel.config" "$TOPDIR/scripts/overlay.sh" \
	$(bash "$TOPDIR/scripts/overlay.sh" --list) ${BENCH_INPUTS[@]+"${BENCH_INPUTS[@]}"}) |
	sha256sum | cut -c1-16)

if [ -e "$KDIR/.bufshare-key" ] && [ "$(cat "$KDIR/.bufshare-key")" = "$KEY" ]; then
	log "kernel up to date ($KEY)"
	echo "$KDIR"
	exit 0
fi

if [ ! -e "$KDIR/.bufshare-unpacked" ]; then
	rm -rf "$KDIR"
	if [ "$KNAME" = linux ] || [ ! -d "$BUILD/pristine/linux-source-7.3" ]; then
		log "unpacking linux-source-7.3"
		rm -rf "$BUILD/pristine"
		in_tree sh -c 'mkdir -p /build/pristine && tar xf /usr/src/linux-source-7.3.tar.xz -C /build/pristine'
	fi
	# The build tree shares the pristine files; rsync in the overlay
	# replaces files (never writes through), so the pristine copy stays.
	cp -al "$BUILD/pristine/linux-source-7.3" "$KDIR"
	touch "$KDIR/.bufshare-unpacked"
fi

bash "$TOPDIR/scripts/overlay.sh" "$KDIR"

rm -f "$KDIR/.bufshare-key"
in_tree env KNAME="$KNAME" FRAGMENT="$FRAGMENT" bash -c '
	set -e
	cd /build/$KNAME
	export LLVM=1
	if ! cmp -s $FRAGMENT .bufshare-fragment; then
		vng --kconfig --config $FRAGMENT >/build/kconfig-$KNAME.log 2>&1 ||
			{ tail -20 /build/kconfig-$KNAME.log; exit 1; }
		# vng appends its own fragment (debug info on, and more) after
		# ours: lay ours over the result again.
		./scripts/config --disable DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT \
			--disable DEBUG_INFO_DWARF4 --disable DEBUG_INFO_DWARF5
		./scripts/kconfig/merge_config.sh -m .config $FRAGMENT >/dev/null
		cp $FRAGMENT .bufshare-fragment
	fi
	make -s olddefconfig
	bad=0
	while IFS= read -r line; do
		case "$line" in CONFIG_*) ;; *) continue ;; esac
		grep -qx "$line" .config || { echo "kernel config: $line did not stick" >&2; bad=1; }
	done < $FRAGMENT
	for opt in $(sed -n "s/^# \(CONFIG_[A-Z0-9_]*\) is not set$/\1/p" $FRAGMENT); do
		grep -qE "^$opt=[ym]" .config && { echo "kernel config: $opt is still set" >&2; bad=1; }
	done
	[ $bad = 0 ]
	make -s rustavailable >&2
	start=$(date +%s)
	make -j$(nproc) 2>&1 | grep -v "^  [A-Z]" | tail -40 >&2
	test ${PIPESTATUS[0]} = 0
	echo "kernel ($KNAME) built in $(( $(date +%s) - start )) s" >&2
'
echo "$KEY" > "$KDIR/.bufshare-key"
echo "$KDIR"
