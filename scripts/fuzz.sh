#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The libFuzzer targets of the host side (tools/fuzz, cargo-fuzz layout),
# built with the host's stable cargo: libfuzzer-sys compiles libFuzzer
# with the C++ compiler, and the coverage instrumentation takes only
# stable -C flags (those of `cargo fuzz build --sanitizer none`), so
# neither nightly nor cargo-fuzz is needed. With FUZZ_CARGO_FUZZ=1 and
# cargo-fuzz installed, cargo-fuzz builds them instead.
#
#   fuzz.sh build              build every target
#   fuzz.sh run [TARGET...]    build, then run each target (all by default)
#                              for FUZZ_TIME seconds (600), all at once
#   fuzz.sh corpus             write the seed corpus again from the encoders
#   fuzz.sh lint               cargo fmt --check and clippy -D warnings
#
# Each run starts from the seeds in tools/fuzz/corpus/TARGET (read only)
# and what earlier runs found, kept in $BUFSHARE_CACHE/fuzz-corpus/TARGET.
# A crash, leak or timeout stops the run: its input is kept under
# $BUFSHARE_CACHE/fuzz-artifacts/ and the script exits non-zero. Ends with
# one line per target: "fuzz TARGET: N runs, N exec/s, N s". Build output
# goes to $BUFSHARE_CACHE/fuzz-target.

. "$(dirname "$0")/lib.sh"

FUZZ_DIR=$TOPDIR/tools/fuzz
TARGETS=(device_commands consumer_wire props)
FUZZ_TIME=${FUZZ_TIME:-600}
export CARGO_TARGET_DIR=$BUFSHARE_CACHE/fuzz-target
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BIN=$CARGO_TARGET_DIR/$TRIPLE/release

build() {
	# libfuzzer-sys compiles libFuzzer's C++ sources: Debian's g++ on the
	# host (installed here rather than by toolchain.sh, whose hash keys the
	# toolchain tree and the kernel build).
	if ! command -v g++ >/dev/null; then
		log "installing g++ on the host"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
	fi
	# Built from $CARGO_SRC (lib.sh), the same path for every clone.
	sync_cargo_src
	cd "$CARGO_SRC/tools/fuzz"
	if [ "${FUZZ_CARGO_FUZZ:-0}" = 1 ] && cargo fuzz --version >/dev/null 2>&1; then
		cargo fuzz build --sanitizer none --release --target "$TRIPLE" \
			--target-dir "$CARGO_TARGET_DIR" -- --locked
		return
	fi
	# What cargo-fuzz passes for --sanitizer none, without -Zsanitizer.
	# --target keeps the flags off build scripts and proc macros.
	RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cllvm-args=-sanitizer-coverage-stack-depth \
-Cdebug-assertions -Coverflow-checks --cfg fuzzing $CARGO_REMAP" \
		cargo build --release --locked --bins --target "$TRIPLE"
}

run_one() {
	local target=$1 work=$BUFSHARE_CACHE/fuzz-corpus/$1 artifacts=$BUFSHARE_CACHE/fuzz-artifacts
	local log start rc runs rate
	mkdir -p "$work" "$artifacts"
	log=$(mktemp)
	start=$(date +%s)
	# Corpus directories: the first takes what the run finds.
	"$BIN/$target" -max_total_time="$FUZZ_TIME" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$artifacts/$target-" \
		"$work" "$FUZZ_DIR/corpus/$target" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	if [ "$rc" != 0 ]; then
		grep -E -B2 -A40 '^(thread .* panicked|==[0-9]+== ERROR|.*deadly signal|SUMMARY)' "$log" | head -80 >&2
		grep -E 'Test unit written to' "$log" >&2
		echo "fuzz $target: FAILED (exit $rc) after $(( $(date +%s) - start )) s; reproduce with: $BIN/$target ARTIFACT"
		rm -f "$log"
		return 1
	fi
	rm -f "$log"
	echo "fuzz $target: ${runs:-?} runs, ${rate:-?} exec/s, $(( $(date +%s) - start )) s"
}

case "${1:-run}" in
build) build ;;
run)
	shift || true
	[ $# -gt 0 ] || set -- "${TARGETS[@]}"
	(build) >&2 || die "fuzz targets do not build"
	for t in "$@"; do
		[ -x "$BIN/$t" ] || die "no fuzz target $t (have: ${TARGETS[*]})"
	done
	# The targets run at once, each on one core as libFuzzer does, rather
	# than one after another: FUZZ_TIME is the wall time of all of them.
	# Their reports are printed in the targets' order.
	failed=0
	tmp=$(mktemp -d)
	pids=()
	for t in "$@"; do
		run_one "$t" >"$tmp/$t.out" 2>"$tmp/$t.err" &
		pids+=($!)
	done
	i=0
	for t in "$@"; do
		wait "${pids[$i]}" || failed=1
		i=$((i + 1))
		cat "$tmp/$t.err" >&2
		cat "$tmp/$t.out"
	done
	rm -rf "$tmp"
	exit "$failed"
	;;
corpus)
	cd "$FUZZ_DIR"
	CARGO_TARGET_DIR=$BUFSHARE_CACHE/fuzz-target/corpus \
		cargo run --release --locked --example make-corpus -- corpus
	;;
lint)
	(cd "$FUZZ_DIR" && cargo fmt --check)
	sync_cargo_src
	cd "$CARGO_SRC/tools/fuzz"
	RUSTFLAGS=$CARGO_REMAP CARGO_TARGET_DIR=$BUFSHARE_CACHE/fuzz-target/lint \
		cargo clippy --release --locked --all-targets -- -D warnings
	;;
*) die "usage: fuzz.sh build | run [TARGET...] | corpus | lint" ;;
esac
