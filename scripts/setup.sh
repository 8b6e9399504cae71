#!/usr/bin/env bash
# Installs everything kiln's build, tests and demo need on a fresh Debian machine
# (run as root). Safe to run again: it only does what is missing.
#
#   scripts/setup.sh            # apt packages, Rust toolchain, reference Docker engine
#
# Sourced by scripts/test.sh and scripts/demo.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Packages: build tools, the real consumers kiln is tested against (docker,
# skopeo, umoci), OCI runtimes for side-by-side benchmarks (runc, crun), a real
# registry, busybox-static and debootstrap for local base images.
packages=(build-essential pkg-config curl ca-certificates git jq
          busybox-static debootstrap pigz hyperfine
          docker.io skopeo umoci runc crun docker-registry apache2-utils
          libseccomp-dev iproute2 iptables
          golang-go golang-github-moby-patternmatcher-dev openssl bc python3 tar gzip util-linux slirp4netns)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust toolchain (edition 2024 needs Rust >= 1.85).
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing Rust with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

# The reference Docker engine (BuildKit). Debian installs dockerd in /usr/sbin;
# the shared oracle script looks for it in /usr/bin.
[ -e /usr/bin/dockerd ] || ln -s /usr/sbin/dockerd /usr/bin/dockerd
oracle="${KILN_DOCKER_ORACLE:-$repo_root/../shared/tools/docker-oracle.sh}"
if [ -f "$oracle" ]; then
  bash "$oracle"
else
  echo "setup: $oracle not found; starting dockerd without the oracle's busybox:local image" >&2
  if ! /usr/bin/docker info >/dev/null 2>&1; then
    nohup /usr/sbin/dockerd >/var/log/dockerd-kiln.log 2>&1 &
    for _ in $(seq 60); do /usr/bin/docker info >/dev/null 2>&1 && break; sleep 0.5; done
  fi
fi
