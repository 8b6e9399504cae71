#!/usr/bin/env bash
# Benchmark: `kiln build` against docker BuildKit on the same Dockerfile:
#   1. N trivial RUN steps without cache (per-RUN overhead),
#   2. the same build again, all cached (no-op rebuild),
#   3. a small multi-stage build (builder RUN + COPY --from) after one context
#      file changed.
# Prints wall-clock times and kiln/BuildKit ratios (aims, issue 5: per RUN step
# under 0.1x BuildKit, no-op rebuilds under 25 ms and under 0.15x BuildKit).
#
#   bench/build-steps.sh [STEPS]          # default 20
#   KILN_BIN=target/debug/kiln bench/build-steps.sh   # use an existing binary
#
# Needs root, /bin/busybox (busybox-static), and for the BuildKit side a Docker
# engine with busybox:local (shared/tools/docker-oracle.sh). Times are whole
# command runs (process start included) on a warm page cache; on a shared
# machine run it more than once.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
steps=${1:-20}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo_root/target}
if [ -z "${KILN_BIN:-}" ]; then
  echo "building kiln (release)..."
  cargo build -q --release -p kiln --manifest-path "$repo_root/Cargo.toml"
  KILN_BIN="$CARGO_TARGET_DIR/release/kiln"
fi

work=$(mktemp -d /tmp/kiln-build-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export KILN_ROOT="$work/store"

# The same busybox base docker-oracle.sh imports as busybox:local.
rootfs="$work/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root"
cp /bin/busybox "$rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
tar -C "$rootfs" -c . | "$KILN_BIN" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - busybox:local >/dev/null

runs="$work/runs"
mkdir -p "$runs"
{
  echo "FROM busybox:local"
  for i in $(seq "$steps"); do echo "RUN echo step $i > /step-$i"; done
} >"$runs/Dockerfile"

multi="$work/multi"
mkdir -p "$multi"
cat >"$multi/Dockerfile" <<'EOF'
FROM busybox:local AS builder
WORKDIR /src
COPY . .
RUN mkdir -p /out && cat *.c > /out/app && chmod 755 /out/app
FROM busybox:local
COPY --from=builder /out/app /usr/local/bin/app
CMD ["app"]
EOF
for i in $(seq 50); do echo "int f$i(void) { return $i; }" >"$multi/f$i.c"; done

now() { date +%s.%N; }
time_it() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); echo "$t1 - $t0" | bc -l; }
ms() { printf '%.1f' "$(echo "$1 * 1000" | bc -l)"; }
ratio() { printf '%.3f' "$(echo "$1 / $2" | bc -l)"; }

kiln_cold=$(time_it "$KILN_BIN" build --no-cache -t bench-runs "$runs")
kiln_noop=$(time_it "$KILN_BIN" build -t bench-runs "$runs")
"$KILN_BIN" build -t bench-multi "$multi" >/dev/null 2>&1
# A nonce per edit: BuildKit's cache outlives this script, and content it
# saw in an earlier run would be a cache hit, not a rebuild.
nonce="$(date +%s%N)-$$"
echo "int changed(void) { return 0; } /* kiln $nonce */" >"$multi/f1.c"
kiln_change=$(time_it "$KILN_BIN" build -t bench-multi "$multi")
echo "int f1(void) { return 1; }" >"$multi/f1.c"

echo "kiln: $steps RUN steps cold $(ms "$kiln_cold") ms ($(ms "$(echo "$kiln_cold / $steps" | bc -l)") ms/step), no-op $(ms "$kiln_noop") ms, multi-stage one file changed $(ms "$kiln_change") ms"

if /usr/bin/docker image inspect busybox:local >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=1
  docker_cold=$(time_it /usr/bin/docker build --no-cache -t bench-runs "$runs")
  docker_noop=$(time_it /usr/bin/docker build -t bench-runs "$runs")
  /usr/bin/docker build -t bench-multi "$multi" >/dev/null 2>&1
  echo "int changed(void) { return 0; } /* docker $nonce */" >"$multi/f1.c"
  docker_change=$(time_it /usr/bin/docker build -t bench-multi "$multi")
  /usr/bin/docker rmi -f bench-runs bench-multi >/dev/null 2>&1 || true
  echo "BuildKit: $steps RUN steps cold $(ms "$docker_cold") ms ($(ms "$(echo "$docker_cold / $steps" | bc -l)") ms/step), no-op $(ms "$docker_noop") ms, multi-stage one file changed $(ms "$docker_change") ms"
  echo "ratios kiln/BuildKit: RUN steps cold $(ratio "$kiln_cold" "$docker_cold"), no-op $(ratio "$kiln_noop" "$docker_noop"), one file changed $(ratio "$kiln_change" "$docker_change")"
else
  echo "BuildKit side skipped: no Docker engine with busybox:local (run shared/tools/docker-oracle.sh)"
fi
