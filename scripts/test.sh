#!/usr/bin/env bash
# Sets up a fresh Debian machine (as root) and runs every kiln test.
#
#   scripts/test.sh
#
# Environment: KILN_CONFORMANCE_DIR (default ../shared/conformance/buildkit from
# the repository root) holds BuildKit's conformance vectors. With CI=true, tests
# whose tools or data are missing fail instead of skipping.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
source scripts/setup.sh

export KILN_CONFORMANCE_DIR="${KILN_CONFORMANCE_DIR:-$repo_root/../shared/conformance/buildkit}"
if [ "${CI:-}" = "true" ] && [ ! -d "$KILN_CONFORMANCE_DIR" ]; then
  echo "test: conformance data not found at $KILN_CONFORMANCE_DIR (set KILN_CONFORMANCE_DIR)" >&2
  exit 1
fi

cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
