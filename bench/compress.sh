#!/usr/bin/env bash
# Layer compression benchmark: kiln's parallel gzip and zstd against `gzip -6`, `pigz -6`
# and single-threaded flate2, on ~1 GB of realistic data (a tar of /usr).
# Prints seconds, MB/s of input and compression ratio for each, then kiln's speedups.
# Usage: bench/compress.sh [INPUT_FILE]   (default: builds /tmp/kiln-bench-usr.tar)
# Needs: gzip, pigz (apt-get install pigz), cargo.
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
echo "input: $input, $((in_bytes / 1000000)) MB, $(nproc) cores"
cargo build -q --release -p kiln-snapshot --example compress_bench
bench_bin="$CARGO_TARGET_DIR/release/examples/compress_bench"
cat "$input" > /dev/null   # warm the page cache so every method reads from memory

run_external() { # name, command...
    local name=$1; shift
    local start end out_bytes
    start=$(date +%s.%N)
    out_bytes=$("$@" < "$input" | wc -c)
    end=$(date +%s.%N)
    awk -v n="$name" -v s="$start" -v e="$end" -v i="$in_bytes" -v o="$out_bytes" \
        'BEGIN { t = e - s; printf "%-14s %8.2fs %8.1f MB/s  ratio %.3f  %d bytes\n", n, t, i / 1e6 / t, o / i, o }'
}

results=$(mktemp)
{
    "$bench_bin" kiln-gzip "$input"
    "$bench_bin" kiln-gzip-1t "$input"
    "$bench_bin" kiln-zstd "$input"
    "$bench_bin" kiln-zstd-1t "$input"
    "$bench_bin" flate2-1t "$input"
    run_external "gzip -6" gzip -6 -c
    if command -v pigz > /dev/null; then run_external "pigz -6" pigz -6 -c; else echo "pigz -6        (not installed: apt-get install pigz)"; fi
} | tee "$results"
speed() { awk -v n="$1" '$0 ~ "^"n" " { for (i = 1; i <= NF; i++) if ($i == "MB/s") print $(i - 1) }' "$results"; }
kiln_gzip=$(speed kiln-gzip)
for other in "gzip -6" "pigz -6" "flate2-1t"; do
    theirs=$(speed "$other")
    [[ -n "$theirs" ]] && awk -v a="$kiln_gzip" -v b="$theirs" -v n="$other" 'BEGIN { printf "kiln-gzip vs %-10s %.2fx\n", n, a / b }'
done
kiln_zstd=$(speed kiln-zstd)
awk -v a="$kiln_zstd" -v b="$(speed 'gzip -6')" 'BEGIN { printf "kiln-zstd vs gzip -6    %.2fx\n", a / b }'
rm -f "$results"
