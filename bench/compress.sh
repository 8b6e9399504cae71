#!/usr/bin/env bash
# Layer compression benchmark: kiln's parallel gzip and zstd against `gzip -6`, `pigz -6`
# and single-threaded flate2, on ~1 GB of realistic data (a tar of /usr).
# For each: wall seconds, MB/s of input (wall), CPU seconds (user+sys), MB/s per CPU
# second (efficiency, meaningful even on a busy machine) and compressed/input ratio;
# then kiln's speedups. Usage: bench/compress.sh [INPUT_FILE]
# (default: builds /tmp/kiln-bench-usr.tar). Needs: gzip, pigz (apt-get install pigz), cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
input="${1:-/tmp/kiln-bench-usr.tar}"
size_bytes=$((1024 * 1024 * 1024))
if [[ ! -s "$input" ]]; then
    echo "preparing $input: first 1 GiB of a tar of /usr" >&2
    tar -cf - /usr 2>/dev/null | head -c "$size_bytes" > "$input" || true
fi
in_bytes=$(stat -c %s "$input")
echo "input: $input, $((in_bytes / 1000000)) MB; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
cargo build -q --release -p kiln-snapshot --example compress_bench
bench_bin="$CARGO_TARGET_DIR/release/examples/compress_bench"
cat "$input" > /dev/null   # warm the page cache so every method reads from memory

results=$(mktemp)
timing=$(mktemp)
trap 'rm -f "$results" "$timing"' EXIT
measure() { # NAME COMMAND...: compresses $input to a pipe counting bytes
    local name=$1; shift
    local out_bytes
    out_bytes=$( { TIMEFORMAT='%R %U %S'; time "$@" < "$input" 2>/dev/null | wc -c; } 2> "$timing" )
    read -r real user sys < "$timing"
    awk -v n="$name" -v r="$real" -v u="$user" -v s="$sys" -v i="$in_bytes" -v o="$out_bytes" 'BEGIN {
        c = u + s; printf "%-13s wall %7.2fs %7.1f MB/s | cpu %7.2fs %7.1f MB/cpu-s | ratio %.3f\n",
        n, r, i / 1e6 / r, c, i / 1e6 / c, o / i }' | tee -a "$results"
}
measure kiln-gzip "$bench_bin" kiln-gzip
measure kiln-gzip-1t "$bench_bin" kiln-gzip-1t
measure kiln-zstd "$bench_bin" kiln-zstd
measure kiln-zstd-1t "$bench_bin" kiln-zstd-1t
measure flate2-1t "$bench_bin" flate2-1t
measure "gzip-6" gzip -6 -c
if command -v pigz > /dev/null; then measure "pigz-6" pigz -6 -c; else echo "pigz-6        (not installed: apt-get install pigz)"; fi
column() { awk -v n="$1" -v f="$2" '$1 == n { for (i = 1; i <= NF; i++) if ($i == f) print $(i - 1) }' "$results"; }
for other in gzip-6 pigz-6 flate2-1t; do
    [[ -n "$(column "$other" MB/s)" ]] || continue
    awk -v a="$(column kiln-gzip MB/s)" -v b="$(column "$other" MB/s)" -v ca="$(column kiln-gzip MB/cpu-s)" -v cb="$(column "$other" MB/cpu-s)" -v n="$other" \
        'BEGIN { printf "kiln-gzip vs %-9s wall %.2fx, per cpu-second %.2fx\n", n, a / b, ca / cb }'
done
awk -v a="$(column kiln-zstd MB/s)" -v b="$(column gzip-6 MB/s)" 'BEGIN { printf "kiln-zstd vs gzip-6    wall %.2fx\n", a / b }'
