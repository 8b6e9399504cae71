#!/usr/bin/env bash
# Dockerfile parse throughput: generates a large Dockerfile (default 64 MiB,
# a realistic mix of multi-stage FROMs, continued RUN chains with comments,
# heredocs, JSON exec forms, ENV/LABEL pairs and flags) and parses it from
# memory with a release build, printing MiB/s (best and median of 5 rounds).
#
#   bench/parse-throughput.sh [MEGABYTES]
#
# A benchmark, not a test: run it by hand or from the benchmark job.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb="${1:-64}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo build --quiet --release -p kiln-dockerfile --example parse_throughput
target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/release/examples/parse_throughput"
"$bin" generate "$work/Dockerfile" "$size_mb"
"$bin" measure "$work/Dockerfile" 5
