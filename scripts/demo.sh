#!/usr/bin/env bash
# The main job, on a fresh Debian machine as root: installs what is needed,
# builds kiln, and shows it at work on the Dockerfiles of the seed tutorials
# (../shared/seeds, extracted to crates/dockerfile/tests/seeds/).
#
#   scripts/demo.sh
#
# Today kiln reads Dockerfiles (parse trees, stage graphs, --target pruning);
# building and running the seed Go app arrive with the build and run engines.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
source scripts/setup.sh

cargo build --release -p kiln
kiln="$repo_root/target/release/kiln"

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
echo "== Every seed Dockerfile parses and validates"
count=0
for f in "$seeds"/*.Dockerfile; do
  "$kiln" dockerfile stages "$f" >/dev/null
  count=$((count + 1))
done
echo "$count seed Dockerfiles: all parsed, stage graphs resolved"
