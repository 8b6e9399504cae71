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
          golang-go golang-github-moby-patternmatcher-dev openssl bc python3 tar gzip bzip2 xz-utils zstd util-linux slirp4netns)
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
  echo "setup: $oracle not found; starting dockerd and importing busybox:local here" >&2
  if ! /usr/bin/docker info >/dev/null 2>&1; then
    nohup /usr/sbin/dockerd >/var/log/dockerd-kiln.log 2>&1 &
    for _ in $(seq 60); do /usr/bin/docker info >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  # The same busybox:local the oracle script imports, so differential tests
  # compare kiln and docker on identical bases.
  if ! /usr/bin/docker image inspect busybox:local >/dev/null 2>&1; then
    bbroot=$(mktemp -d)
    mkdir -p "$bbroot/bin" "$bbroot/etc" "$bbroot/tmp" "$bbroot/root"
    cp /bin/busybox "$bbroot/bin/busybox"
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$bbroot/bin/$a"; done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$bbroot/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$bbroot/etc/group"
    chmod 1777 "$bbroot/tmp"
    tar -C "$bbroot" -c . | /usr/bin/docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - busybox:local >/dev/null
    rm -rf "$bbroot"
  fi
fi
