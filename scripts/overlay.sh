#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Lay the project's kernel-side work over a kernel tree.
#
#   overlay.sh KDIR     copy the files and apply the patches; idempotent, and
#                       files whose content does not change keep their times
#   overlay.sh --list   the project files the overlay is made of
#
# The work is the series of patches/series: each line names a patch of
# edits to existing kernel files, then the files and folders the same
# commit adds. New files are copied as they are (a folder's files as git
# knows them, not what a build left there); the patches are applied with
# git apply to pristine copies of the files they edit, so the result
# depends only on the inputs.

. "$(dirname "$0")/lib.sh"

SERIES=$TOPDIR/patches/series
PATCHES=()
FILES=()
while read -r patch paths; do
	case "$patch" in '' | '#'*) continue ;; esac
	PATCHES+=("patches/$patch")
	for p in $paths; do
		if [ -d "$TOPDIR/$p" ]; then
			while IFS= read -r f; do
				FILES+=("$f")
			done < <(git -C "$TOPDIR" ls-files --cached --others --exclude-standard -- "$p" |
				LC_ALL=C sort)
		else
			[ -e "$TOPDIR/$p" ] || die "overlay: $p, named in patches/series, is missing"
			FILES+=("$p")
		fi
	done
done < "$SERIES"

if [ "${1:-}" = --list ]; then
	for f in patches/series "${PATCHES[@]}" "${FILES[@]}"; do echo "$TOPDIR/$f"; done
	exit 0
fi

KDIR=${1:?usage: overlay.sh KDIR | --list}
PRISTINE=$BUILD/pristine/linux-source-7.3
STAGE=$BUILD/overlay-stage
rm -rf "$STAGE"
mkdir -p "$STAGE"

for f in "${FILES[@]}"; do
	mkdir -p "$STAGE/$(dirname "$f")"
	cp "$TOPDIR/$f" "$STAGE/$f"
done

for p in "${PATCHES[@]}"; do
	# The files it edits, from their pristine copies (or as an earlier
	# patch left them).
	while IFS= read -r f; do
		[ -e "$STAGE/$f" ] && continue
		[ -e "$PRISTINE/$f" ] || die "overlay: $p edits $f, which linux-source-7.3 lacks"
		mkdir -p "$STAGE/$(dirname "$f")"
		cp "$PRISTINE/$f" "$STAGE/$f"
	done < <(sed -n 's|^+++ b/||p' "$TOPDIR/$p")
	(cd "$STAGE" && git apply --whitespace=error-all "$TOPDIR/$p") ||
		die "overlay: $p does not apply to linux-source-7.3"
done

# rsync from the toolchain tree: copies only files whose content changed.
case "$KDIR" in
"$BUILD"/*) in_tree rsync -rc /build/overlay-stage/ "/build/${KDIR#"$BUILD"/}/" ;;
*) die "overlay: $KDIR is not under $BUILD" ;;
esac
