#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The host tools (tools/, a cargo workspace), built with the host's cargo.
# Build output goes to $BUFSHARE_CACHE/cargo-target.
#
#   tools.sh build | test | fmt | clippy

. "$(dirname "$0")/lib.sh"

export CARGO_TARGET_DIR=$BUFSHARE_CACHE/cargo-target
cd "$TOPDIR/tools"
case "${1:-build}" in
build) cargo build --release --locked ;;
test) cargo test --release --locked --workspace ;;
fmt) cargo fmt --all --check ;;
clippy) cargo clippy --release --locked --workspace --all-targets -- -D warnings ;;
*) die "usage: tools.sh build|test|fmt|clippy" ;;
esac
