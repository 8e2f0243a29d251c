#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# perf for the guests, for profiling the bench kernel (BUFSHARE_BENCH_PERF=1
# make bench): Debian trixie's linux-perf and the libraries it needs that
# the toolchain tree lacks, unpacked (not installed) into
# $BUFSHARE_CACHE/build/perf-<key>, which guests see as /build/perf-<key>.
# The tree stays as it is, so neither it nor the kernels are rebuilt. apt
# runs on the host with its own lists and cache under that directory, never
# with the host's /etc/apt, and resolves against the tree's dpkg status.
#
# Prints the guest's path of the directory; the guest runs
#   LD_LIBRARY_PATH=DIR/usr/lib/x86_64-linux-gnu DIR/usr/bin/perf
# (scripts/bench.sh does).

. "$(dirname "$0")/lib.sh"

bash "$TOPDIR/scripts/toolchain.sh" >/dev/null
KEY=$(printf '%s\n' "$TREE_KEY" "$(hash_inputs "$0")" | sha256sum | cut -c1-12)
OUT=$BUILD/perf-$KEY
if [ -x "$OUT/usr/bin/perf" ]; then
	echo "/build/perf-$KEY"
	exit 0
fi
command -v apt-get >/dev/null || die "no apt-get on the host"

work=$(mktemp -d "$BUFSHARE_CACHE/perf-apt.XXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
echo "deb http://deb.debian.org/debian trixie main" >"$work/sources.list"
apt=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
	-o Dir::State::Lists="$work/lists" -o Dir::Cache="$work"
	-o Dir::Cache::Archives="$work/archives"
	-o Dir::State::Status="$ROOT/var/lib/dpkg/status" -o APT::Architecture=amd64
	-o Debug::NoLocking=1 -o APT::Sandbox::User=root)
log "perf: apt lists of trixie"
apt-get "${apt[@]}" -qq update
# What installing linux-perf into the tree would add, fetched, not installed.
mapfile -t pkgs < <(apt-get "${apt[@]}" -s install --no-install-recommends linux-perf |
	awk '/^Inst /{print $2}')
[ "${#pkgs[@]}" -gt 0 ] || die "apt-get found nothing to install for linux-perf"
log "perf: ${pkgs[*]}"
(cd "$work/archives" && apt-get "${apt[@]}" -qq download "${pkgs[@]}")
rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp"
for deb in "$work"/archives/*.deb; do
	dpkg-deb -x "$deb" "$OUT.tmp"
done
[ -f "$OUT.tmp/usr/bin/perf" ] || die "linux-perf has no /usr/bin/perf"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
find "$BUILD" -maxdepth 1 -name 'perf-*' ! -name "perf-$KEY" -exec rm -rf {} +
echo "/build/perf-$KEY"
