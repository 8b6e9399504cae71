#!/usr/bin/env bash
# Per-container overhead: 100 runs of `true` in a busybox rootfs, kiln's sandbox
# (plain-dir root, and overlay root with a fresh upper dir per run as a RUN step
# uses) beside `runc run` and `crun run` on the same rootfs. Prints medians.
#
#   bench/sandbox-run.sh [RUNS]        (root; needs busybox-static, runc, crun)
set -euo pipefail
runs=${1:-100}
here=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target-sandbox}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "needs /bin/busybox (apt-get install busybox-static)" >&2; exit 1; }

cargo build --release -q -p kiln-sandbox --bin kiln-sandbox-tool --manifest-path "$here/Cargo.toml"
tool=$CARGO_TARGET_DIR/release/kiln-sandbox-tool

work=$(mktemp -d /tmp/kiln-sandbox-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/bundle/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/dev" "$root/sys"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"

echo "== $runs runs of 'true' in a busybox rootfs (median per run) =="
dir_line=$("$tool" bench "$root" "$runs")
echo "$dir_line"
overlay_line=$("$tool" bench "$root" "$runs" overlay)
echo "$overlay_line"
kiln_overlay_ms=$(echo "$overlay_line" | sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p')
# A big caller (1 GiB resident, like a busy kiln): the per-run cost must not grow
# with it (the child shares the address space instead of copying page tables).
echo "with a 1 GiB resident caller: $(KILN_SANDBOX_BENCH_BALLAST_MB=1024 "$tool" bench "$root" "$runs")"

# median of the newline-separated milliseconds on stdin
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "n/a"} else {printf "%.2f", a[int((NR+1)/2)]}}'; }

oci_bench() { # NAME BINARY
  local name=$1 bin=$2
  local times=$work/$name.times err=$work/$name.err
  if ! command -v "$bin" >/dev/null; then echo "$name: not installed"; return; fi
  (cd "$work/bundle" && rm -f config.json && "$bin" spec)
  python3 - "$work/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["true"]
spec["root"] = {"path": "rootfs", "readonly": False}
json.dump(spec, open(path, "w"))
PY
  : > "$times"
  for i in $(seq "$runs"); do
    start=$(date +%s%N)
    if ! (cd "$work/bundle" && "$bin" run "kiln-bench-$name-$$-$i" </dev/null >/dev/null 2>"$err"); then
      echo "$name run: failed: $(head -c 300 "$err" | tr '\n' ' ')"
      "$bin" delete -f "kiln-bench-$name-$$-$i" >/dev/null 2>&1 || true
      return
    fi
    end=$(date +%s%N)
    echo "scale=3; ($end - $start) / 1000000" | bc >> "$times"
  done
  local med
  med=$(median < "$times")
  echo "$name run runs=$runs median_ms=$med ($($bin --version | head -1)); ratio kiln(overlay)/$name = $(echo "scale=2; $kiln_overlay_ms / $med" | bc)"
}
oci_bench runc runc
oci_bench crun crun

# Floor: what a plain fork+exec of /bin/true costs on this machine right now (no
# namespaces at all), to read the numbers above against the machine's load.
: > "$work/base.times"
for i in $(seq "$runs"); do
  start=$(date +%s%N); /bin/true; end=$(date +%s%N)
  echo "scale=3; ($end - $start) / 1000000" | bc >> "$work/base.times"
done
echo "baseline fork+exec of /bin/true (no isolation) median_ms=$(median < "$work/base.times")"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
