#!/usr/bin/env bash
# Benchmark: build-context scanning and hashing (kiln-build's context module)
# on a generated 10,000-file, ~100 MB context, against BuildKit sending the
# same context.
#
#   bench/context-hash.sh [FILES]        # default 10000 files
#
# kiln: cold scan (empty stat cache: every file read and hashed), no-op
# rescan (stat cache hit for every file: nothing read), one file changed.
# BuildKit (if /usr/bin/docker and busybox:local are there): `FROM
# busybox:local` + `COPY . /ctx`, cold (a context directory BuildKit has never
# seen) and no-op (same build again), one file changed (includes re-running
# the COPY, which is what a user waits for). kiln's times are measured inside
# the process (scan only); BuildKit's are whole `docker build` runs. Numbers
# are wall-clock (plus kiln's no-op CPU time); on a shared machine run it more
# than once. The page cache is warm in all cases
# (the generator just wrote the files).
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
files=${1:-10000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo_root/target}

echo "building kiln-build (release)..."
cargo build -q --release -p kiln-build --example context_scan --manifest-path "$repo_root/Cargo.toml"
scan="$CARGO_TARGET_DIR/release/examples/context_scan"

work=$(mktemp -d /tmp/kiln-context-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
ctx="$work/context"
cache="$work/cache"
echo "generating $files files (~10 KB each) in $ctx..."
python3 - "$ctx" "$files" <<'PY'
import os, random, sys
root, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(5)
per_dir = 100
for i in range(count):
    d = os.path.join(root, "dir%03d" % (i // per_dir), "sub%d" % ((i // per_dir) % 7))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "file%03d.dat" % (i % per_dir)), "wb") as f:
        f.write(os.urandom(rng.randint(2000, 18000)))
PY
du -sh "$ctx" | awk '{print "context size: " $1}'
# Let freshly written files age past the stat cache's racy window.
sleep 0.2

ms_of() { sed -n 's/^ms=\([0-9.]*\).*/\1/p'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

cold=$("$scan" "$ctx" "$cache" | tee "$work/cold.txt" | ms_of)
sed 's/ digest=.*//' "$work/cold.txt"
noop=$(for _ in 1 2 3 4 5; do "$scan" "$ctx" "$cache" | ms_of; done | median)
"$scan" "$ctx" "$cache" | sed 's/ digest=.*//'
# CPU time of one no-op rescan process: robust against a busy machine, where
# wall time mostly measures waiting for a core. perf's task-clock is exact;
# without perf, getrusage (tick-sampled, overestimates short runs).
if command -v perf >/dev/null 2>&1; then
  noop_cpu=$(perf stat -x, -e task-clock "$scan" "$ctx" "$cache" 2>&1 >/dev/null | awk -F, '/task-clock/ {printf "%.1f", $1}')
  cpu_how="perf task-clock"
else
  noop_cpu=$(python3 -c '
import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print("%.1f" % ((r.ru_utime + r.ru_stime) * 1000))' "$scan" "$ctx" "$cache")
  cpu_how="getrusage, approximate"
fi
echo "changed" >> "$ctx/dir042/sub0/file042.dat"
sleep 0.1
one=$("$scan" "$ctx" "$cache" | tee "$work/one.txt" | ms_of)
sed 's/ digest=.*//' "$work/one.txt"
printf 'kiln  cold scan+hash:        %8.1f ms\n' "$cold"
printf 'kiln  no-op rescan (median): %8.1f ms\n' "$noop"
printf 'kiln  no-op CPU time:        %8.1f ms (whole process, %s)\n' "$noop_cpu" "$cpu_how"
printf 'kiln  one file changed:      %8.1f ms\n' "$one"

if [ -x /usr/bin/docker ] && /usr/bin/docker image inspect busybox:local >/dev/null 2>&1; then
  df="$work/Dockerfile"
  printf 'FROM busybox:local\nCOPY . /ctx\n' > "$df"
  tag="kiln-context-bench:$$"
  build_ms() {
    local start end
    start=$(date +%s%N)
    DOCKER_BUILDKIT=1 /usr/bin/docker build -q -t "$tag" -f "$df" "$ctx" >/dev/null
    end=$(date +%s%N)
    echo $(( (end - start) / 1000000 ))
  }
  bk_cold=$(build_ms)
  bk_noop=$(for _ in 1 2 3; do build_ms; done | median)
  echo "changed again" >> "$ctx/dir042/sub0/file042.dat"
  bk_one=$(build_ms)
  /usr/bin/docker rmi "$tag" >/dev/null 2>&1 || true
  printf 'BuildKit cold (send+COPY):   %8.1f ms\n' "$bk_cold"
  printf 'BuildKit no-op (median):     %8.1f ms\n' "$bk_noop"
  printf 'BuildKit one file changed:   %8.1f ms\n' "$bk_one"
  awk -v a="$cold" -v b="$bk_cold" 'BEGIN {printf "ratio cold   kiln/BuildKit: %.3f\n", a / b}'
  awk -v a="$noop" -v b="$bk_noop" 'BEGIN {printf "ratio no-op  kiln/BuildKit: %.3f\n", a / b}'
  awk -v a="$one" -v b="$bk_one" 'BEGIN {printf "ratio 1-file kiln/BuildKit: %.3f (BuildKit re-runs the COPY; kiln only rescans)\n", a / b}'
else
  echo "BuildKit comparison skipped: /usr/bin/docker or busybox:local missing (run ../shared/tools/docker-oracle.sh)"
fi
