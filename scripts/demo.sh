#!/usr/bin/env bash
# The main job, on a fresh Debian machine as root: installs what is needed,
# builds kiln, and shows it at work on the Dockerfiles of the seed tutorials
# (../shared/seeds, extracted to crates/dockerfile/tests/seeds/).
#
#   scripts/demo.sh
#
# It builds a two-stage example with kiln (examples/hello-busybox: busybox only,
# since no registry is reachable here), runs it with -p 8080:8080, prints its
# answer and the size multi-stage saved, then shows the seed Dockerfiles'
# stage graphs. Building the seed Go app itself needs local Debian/Go base
# images (issue 8), which come next.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
source scripts/setup.sh

cargo build --release -p kiln
kiln="${CARGO_TARGET_DIR:-$repo_root/target}/release/kiln"

export KILN_ROOT="${KILN_ROOT:-/var/lib/kiln}"
echo
echo "== A base image from busybox-static (no registry needed)"
KILN="$kiln" scripts/make-busybox-image.sh busybox:demo
echo
echo "== kiln build -t hello examples/hello-busybox"
"$kiln" build --progress plain -t hello examples/hello-busybox
echo
echo "== kiln run -d -p 8080:8080 hello"
"$kiln" rm -f kiln-demo >/dev/null 2>&1 || true
"$kiln" run -d --name kiln-demo -p 8080:8080 hello
answer=""
for _ in $(seq 50); do
  answer=$(curl -fsS http://localhost:8080/ 2>/dev/null) && break
  sleep 0.1
done
echo "curl http://localhost:8080/ -> $answer"
"$kiln" ps
"$kiln" stop kiln-demo >/dev/null
"$kiln" rm kiln-demo >/dev/null
echo "(container stopped and removed)"
[ -n "$answer" ] || { echo "demo: no answer from the container" >&2; exit 1; }

seeds=crates/dockerfile/tests/seeds
echo
echo "== The seed Go app's Dockerfile (seed 000), as BuildKit's parser would dump it"
"$kiln" dockerfile parse --dump "$seeds/000_3c478a5a2a7f5e0d-01.Dockerfile"
echo
echo "== Its stage graph: what the final image needs"
"$kiln" dockerfile stages "$seeds/000_3c478a5a2a7f5e0d-01.Dockerfile"
echo
echo "== Seed 003's multi-target Dockerfile, --target development vs production-runtime"
multi=$(grep -l "AS production-runtime" "$seeds"/*.Dockerfile | head -n 1)
"$kiln" dockerfile stages "$multi" --target development
echo
"$kiln" dockerfile stages "$multi" --target production-runtime
echo
echo "== Every seed Dockerfile parses; stage graphs for all but the tutorials' fragments"
parsed=0; graphs=0; fragments=()
for f in "$seeds"/*.Dockerfile; do
  "$kiln" dockerfile parse --dump "$f" >/dev/null
  parsed=$((parsed + 1))
  if "$kiln" dockerfile stages "$f" >/dev/null 2>&1; then
    graphs=$((graphs + 1))
  else
    fragments+=("$(basename "$f"): $(head -n 1 "$f")")
  fi
done
echo "$parsed seed Dockerfiles parsed; $graphs stage graphs resolved"
if [ ${#fragments[@]} -gt 0 ]; then
  echo "rejected as BuildKit rejects them (placeholders or fragments in the tutorials):"
  printf '  %s\n' "${fragments[@]}"
fi
