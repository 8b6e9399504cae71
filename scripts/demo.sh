#!/usr/bin/env bash
# The main job, on a fresh Debian machine as root: installs what is needed,
# builds kiln, makes the local base images, builds the seed tutorials' Go app
# (examples/go-basic, seed 000's multi-stage Dockerfile) with kiln, runs it
# with -p 8080:8080, prints its answer and the size multi-stage saved (final
# image vs builder stage), and cleans up.
#
#   scripts/demo.sh
#
# No registry is needed: scripts/make-base-images.sh makes kiln/debian:bookworm
# with debootstrap, kiln/golang:1.19 with kiln itself from Debian's Go, and
# kiln/busybox:latest from busybox-static (cached in /var/cache/kiln-base, so
# a second run takes seconds). The store is $KILN_ROOT (default /var/lib/kiln);
# KILN_DEMO_PORT changes the host port (default 8080).
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
source scripts/setup.sh

# KILN_DEMO_BIN: an already built kiln to use instead (the test of this
# script, crates/cli/tests/examples_seeds.rs, passes the one it tests).
if [ -n "${KILN_DEMO_BIN:-}" ]; then
  kiln="$KILN_DEMO_BIN"
else
  echo "== cargo build --release -p kiln"
  cargo build --release -p kiln
  kiln="${CARGO_TARGET_DIR:-$repo_root/target}/release/kiln"
fi
export KILN_ROOT="${KILN_ROOT:-/var/lib/kiln}"
port="${KILN_DEMO_PORT:-8080}"

echo
echo "== Local base images (debootstrap + kiln build; cached after the first run)"
scripts/make-base-images.sh --kiln "$kiln" debian busybox golang

echo
echo "== kiln build -t myapp examples/go-basic"
"$kiln" build --progress plain -t kiln-demo/myapp examples/go-basic
# The builder stage alone (all cached now), to compare sizes.
"$kiln" build -q --target builder -t kiln-demo/myapp:builder examples/go-basic >/dev/null

echo
echo "== kiln run -d -p $port:8080 myapp"
"$kiln" rm -f kiln-demo >/dev/null 2>&1 || true
cleanup() {
  "$kiln" rm -f kiln-demo >/dev/null 2>&1 || true
  "$kiln" rmi kiln-demo/myapp:latest kiln-demo/myapp:builder >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$kiln" run -d --name kiln-demo -p "$port:8080" kiln-demo/myapp
answer=""
for _ in $(seq 100); do
  answer=$(curl -fsS "http://localhost:$port/" 2>/dev/null) && break
  sleep 0.1
done
"$kiln" ps
echo
echo "kiln logs kiln-demo:"
"$kiln" logs kiln-demo
"$kiln" stop kiln-demo >/dev/null
"$kiln" rm kiln-demo >/dev/null
echo "(container stopped and removed)"

if [ -z "$answer" ]; then
  echo "demo: no answer from the container on http://localhost:$port/" >&2
  exit 1
fi
echo
echo "== curl http://localhost:$port/"
echo "$answer"

size_of() { "$kiln" inspect "$1" | jq -r '.[0].Size'; }
human() { numfmt --to=si --suffix=B "$1"; }
final=$(size_of kiln-demo/myapp:latest)
builder=$(size_of kiln-demo/myapp:builder)
echo
echo "== Size report (seed 000: golang builder stage, small runtime stage)"
printf '  builder stage (kiln/golang:1.19 + sources + build)  %8s\n' "$(human "$builder")"
printf '  final image   (kiln/busybox + the binary)            %8s\n' "$(human "$final")"
printf '  multi-stage saved %s (%s%%); the final image is %s%% of the builder\n' \
  "$(human $((builder - final)))" "$(( (builder - final) * 100 / builder ))" \
  "$(awk -v f="$final" -v b="$builder" 'BEGIN { printf "%.1f", f * 100 / b }')"
