#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The host tools (tools/, a cargo workspace), built with the host's cargo.
# Build output goes to $BUFSHARE_CACHE/cargo-target; the tests build into
# $BUFSHARE_CACHE/cargo-target-test. cargo test builds the programs again
# with the dev-dependencies' features (vhost's frontend, virtio-queue's
# test-utils) and would link them over the ones guest runs start, which
# check.sh runs while the host tests build.
#
#   tools.sh build | test | test-build | fmt | clippy

. "$(dirname "$0")/lib.sh"

export CARGO_TARGET_DIR=$BUFSHARE_CACHE/cargo-target
TEST_TARGET=$BUFSHARE_CACHE/cargo-target-test
# Built from $CARGO_SRC (lib.sh), the same path for every clone.
sync_cargo_src
export RUSTFLAGS=$CARGO_REMAP
cd "$CARGO_SRC/tools"
case "${1:-build}" in
build) cargo build --release --locked ;;
test) CARGO_TARGET_DIR=$TEST_TARGET cargo test --release --locked --workspace --no-fail-fast ;;
test-build) CARGO_TARGET_DIR=$TEST_TARGET cargo test --release --locked --workspace --no-run ;;
fmt) cd "$TOPDIR/tools" && cargo fmt --all --check ;;
clippy) cargo clippy --release --locked --workspace --all-targets -- -D warnings ;;
*) die "usage: tools.sh build|test|test-build|fmt|clippy" ;;
esac
