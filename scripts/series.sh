#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The kernel side of virtio-bufshare as an upstream series, checked with
# checkpatch.pl.
#
#   series.sh [OUT]     (make series) writes the series to OUT, by default
#                       $BUFSHARE_CACHE/series/out
#
# A git repository in the cache starts from the pristine linux-source-7.3
# files the patches edit; each line of patches/series becomes one commit:
# the files it adds, its patch of edits, its message (signed off by the
# committer of this checkout). git format-patch writes the series, and
# scripts/checkpatch.pl --strict checks every patch: any error, warning or
# check fails.
#
# A patch checkpatch passed is not checked again: its verdict is kept under
# $BUFSHARE_CACHE/series/clean, keyed by the patch's contents but for the
# two header lines that change with every commit of this checkout (the
# commit's id on the first line and its date, which checkpatch does not
# look at), checkpatch's own files and options and the Perl that ran it.
# A patch that fails is checked every time.

. "$(dirname "$0")/lib.sh"

OUT=${1:-$BUFSHARE_CACHE/series/out}
REPO=$BUFSHARE_CACHE/series/repo
PRISTINE=$BUILD/pristine/linux-source-7.3
[ -e "$PRISTINE/scripts/checkpatch.pl" ] || die "no pristine kernel source (make kernel)"

rm -rf "$REPO" "$OUT"
mkdir -p "$REPO" "$OUT"
# The pristine files the patches edit: enough for git to write the same
# diffs as a whole kernel tree would.
while read -r patch _; do
	case "$patch" in '' | '#'*) continue ;; esac
	sed -n 's|^+++ b/||p' "$TOPDIR/patches/$patch"
done < "$TOPDIR/patches/series" | LC_ALL=C sort -u | while IFS= read -r f; do
	mkdir -p "$REPO/$(dirname "$f")"
	cp "$PRISTINE/$f" "$REPO/$f"
done

# The committer of this checkout signs off, or a stand-in where git knows none.
name=$(git -C "$TOPDIR" config user.name) || name="virtio-bufshare developers"
email=$(git -C "$TOPDIR" config user.email) || email="virtio-bufshare@invalid"
export GIT_AUTHOR_NAME=$name GIT_AUTHOR_EMAIL=$email
export GIT_COMMITTER_NAME=$name GIT_COMMITTER_EMAIL=$email
git -C "$REPO" init -q
git -C "$REPO" add -A
git -C "$REPO" commit -q -m "linux-source-7.3 (the files the series edits)"
base=$(git -C "$REPO" rev-parse HEAD)

# The same files as the overlay copies.
mapfile -t files < <(bash "$TOPDIR/scripts/overlay.sh" --list | sed "s|^$TOPDIR/||")
while read -r patch paths; do
	case "$patch" in '' | '#'*) continue ;; esac
	for p in $paths; do
		for f in "${files[@]}"; do
			case "$f" in "$p" | "$p"/*)
				mkdir -p "$REPO/$(dirname "$f")"
				cp "$TOPDIR/$f" "$REPO/$f"
				;;
			esac
		done
	done
	git -C "$REPO" apply --whitespace=error-all "$TOPDIR/patches/$patch" ||
		die "$patch does not apply"
	git -C "$REPO" add -A
	git mailinfo "$REPO/.git/msg" /dev/null < "$TOPDIR/patches/$patch" > "$REPO/.git/mailinfo"
	{
		sed -n 's/^Subject: //p' "$REPO/.git/mailinfo"
		echo
		cat "$REPO/.git/msg"
	} | git -C "$REPO" commit -q -s -F -
done < "$TOPDIR/patches/series"

git -C "$REPO" format-patch -q --no-signature -o "$OUT" "$base"
log "series: $(ls "$OUT" | wc -l) patches in $OUT"

set +e
CHECKPATCH=(perl "$PRISTINE/scripts/checkpatch.pl" --no-tree --strict --show-types)
CLEAN=$BUFSHARE_CACHE/series/clean
mkdir -p "$CLEAN"
# checkpatch also takes options from the first .checkpatch.conf it finds
# in $CHECKPATCH_CONFIG_DIR, here, $HOME or .scripts.
checker=$( (perl -e 'print "$^V\n"'; echo "${CHECKPATCH[*]}"
	cat "${CHECKPATCH_CONFIG_DIR:-/nonexistent}/.checkpatch.conf" .checkpatch.conf \
		"$HOME/.checkpatch.conf" .scripts/.checkpatch.conf 2>/dev/null
	cd "$PRISTINE/scripts" && sha256sum checkpatch.pl spelling.txt const_structs.checkpatch) |
	sha256sum | cut -c1-16)
rc=0
for p in "$OUT"/*.patch; do
	# The header ends at its first empty line.
	key=$checker-$(awk 'h && /^$/ { h = 0 }
		!(h && (/^From [0-9a-f]+ / || /^Date: /)) { print }' h=1 "$p" |
		sha256sum | cut -c1-16)
	if [ -s "$CLEAN/$key" ]; then
		echo "$(basename "$p"): $(cat "$CLEAN/$key") (passed before, not checked again)"
		continue
	fi
	result=$("${CHECKPATCH[@]}" "$p" 2>&1)
	summary=$(echo "$result" | grep -E '^total: ')
	echo "$(basename "$p"): $summary"
	if echo "$summary" | grep -q '^total: 0 errors, 0 warnings, 0 checks'; then
		echo "$summary" > "$CLEAN/$key"
	else
		echo "$result" | grep -v '^total: ' | head -60
		rc=1
	fi
done
exit $rc
