#!/usr/bin/env bash
# Makes the local base images the examples build FROM, without any registry:
#
#   kiln/debian:bookworm   debootstrap --variant=minbase, imported (PATH, CMD bash),
#                          trusting the host's CA certificates (HTTPS from RUN steps)
#   kiln/busybox:latest    busybox-static (in place of alpine), plus an Alpine-like
#                          adduser/addgroup (images/busybox/)
#   kiln/golang:1.19       \
#   kiln/python:3.11        | built WITH KILN from images/NAME/Dockerfile,
#   kiln/node:18            | FROM kiln/debian:bookworm, with Debian's packages
#   kiln/nginx:latest      /
#
#   scripts/make-base-images.sh [--kiln PATH] [--root STORE] [NAME...]
#
# NAME is any of debian busybox golang python node nginx (default: all; a
# toolchain image brings debian along). Idempotent and cached on disk in
# ${KILN_BASE_CACHE:-/var/cache/kiln-base}: every image is kept there as a
# docker-archive named by a key over what makes it (recipe, Dockerfile and its
# context, the CA certificates, the image it is built FROM), so a second run
# only checks (the store has the image) or loads the archive (a new store).
# Delete the cache directory to make everything again.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

kiln="${KILN:-}"
root_args=()
wanted=()
while [ $# -gt 0 ]; do
  case "$1" in
    --kiln) kiln="$2"; shift 2 ;;
    --kiln=*) kiln="${1#--kiln=}"; shift ;;
    --root) root_args=(--root "$2"); shift 2 ;;
    --root=*) root_args=(--root "${1#--root=}"); shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    debian|busybox|golang|python|node|nginx) wanted+=("$1"); shift ;;
    *) echo "make-base-images: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#wanted[@]} -gt 0 ] || wanted=(debian busybox golang python node nginx)
if [ -z "$kiln" ]; then
  kiln=$(command -v kiln || true)
  [ -n "$kiln" ] || { echo "make-base-images: no kiln binary: pass --kiln PATH or put kiln on PATH" >&2; exit 1; }
fi

cache="${KILN_BASE_CACHE:-/var/cache/kiln-base}"
mkdir -p "$cache"
# One maker at a time per cache (tests and the demo may run it concurrently).
exec 9>"$cache/.lock"
flock 9

k() { "$kiln" "${root_args[@]}" "$@"; }
tmp_paths=()
trap 'rm -rf "${tmp_paths[@]}"' EXIT
log() { echo "make-base-images: $*" >&2; }
sha() { sha256sum | cut -c1-16; }

# The CA certificates RUN steps need for HTTPS (this host's egress proxy, or
# none): they go into kiln/debian's trust store, so they are part of its key.
ca_files=()
for f in /usr/local/share/ca-certificates/*.crt; do [ -f "$f" ] && ca_files+=("$f"); done
ca_key=$( { [ ${#ca_files[@]} -eq 0 ] || cat "${ca_files[@]}"; } | sha)

image_id() { k inspect "$1" 2>/dev/null | jq -r '.[0].Id // empty' 2>/dev/null || true; }

# ensure NAME REF KEY MAKER: REF is in the store as the cached archive of KEY
# says, else loaded from that archive, else made by MAKER and archived.
ensure() {
  local name=$1 ref=$2 key=$3 maker=$4
  local archive="$cache/$name-$key.tar" idfile="$cache/$name-$key.id"
  if [ -f "$idfile" ] && [ -f "$archive" ]; then
    if [ "$(image_id "$ref")" = "$(cat "$idfile")" ]; then
      log "$ref is up to date ($(cut -c1-19 "$idfile"))"
      return
    fi
    log "$ref: loading $archive"
    k load -q -i "$archive" >/dev/null
    if [ "$(image_id "$ref")" = "$(cat "$idfile")" ]; then return; fi
    log "$ref: the archive did not give the recorded image; making it again"
  fi
  local start=$SECONDS
  "$maker" "$ref"
  k save "$ref" -o "$archive.tmp"
  mv "$archive.tmp" "$archive"
  image_id "$ref" > "$idfile"
  log "$ref made in $((SECONDS - start)) s, cached as $archive"
  # Older archives of the same image are stale now.
  for old in "$cache/$name"-*.tar "$cache/$name"-*.id; do
    case "$old" in "$archive"|"$idfile") ;; *) rm -f "$old" ;; esac
  done
}

debian_recipe="debootstrap --variant=minbase --include=ca-certificates bookworm http://deb.debian.org/debian; v1"
debian_key=$(printf '%s %s' "$debian_recipe" "$ca_key" | sha)

make_debian() {
  command -v debootstrap >/dev/null || { log "debootstrap missing (apt-get install debootstrap)"; exit 1; }
  local dir
  dir=$(mktemp -d /var/tmp/kiln-debian.XXXXXX)
  tmp_paths+=("$dir")
  log "debootstrap bookworm (minbase) into $dir (about 30 s here)"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$dir/rootfs" \
    http://deb.debian.org/debian > "$dir/debootstrap.log" 2>&1 \
    || { tail -n 20 "$dir/debootstrap.log" >&2; log "debootstrap failed (log above)"; exit 1; }
  local r="$dir/rootfs"
  if [ ${#ca_files[@]} -gt 0 ]; then
    cp "${ca_files[@]}" "$r/usr/local/share/ca-certificates/"
  fi
  chroot "$r" update-ca-certificates >/dev/null
  # What a container image should not carry: the host's resolver and name,
  # device nodes (the runtime provides /dev), apt's downloaded packages and
  # lists, logs of the bootstrap.
  rm -f "$r/etc/resolv.conf" "$r/etc/hostname"
  find "$r/dev" -mindepth 1 -delete
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/*
  rm -rf "$r/var/log/bootstrap.log" "$r/debootstrap"
  mkdir -p "$r/var/lib/apt/lists/partial"
  tar --numeric-owner --xattrs -C "$r" -cf "$dir/rootfs.tar" .
  k import -m "debootstrap --variant=minbase bookworm" \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["bash"]' "$dir/rootfs.tar" "$1" >/dev/null
}

busybox_key=$( { echo "busybox v2"; cat /bin/busybox "$repo_root"/images/busybox/*; } | sha)
# As scripts/make-busybox-image.sh, plus images/busybox/adduser and addgroup:
# Debian's busybox-static lacks those applets, which alpine-based Dockerfiles
# use (`adduser -D -u 1000 appuser`).
make_busybox() {
  [ -x /bin/busybox ] || { log "/bin/busybox missing (apt-get install busybox-static)"; exit 1; }
  local dir
  dir=$(mktemp -d /var/tmp/kiln-busybox.XXXXXX)
  tmp_paths+=("$dir")
  local r="$dir/rootfs"
  mkdir -p "$r/bin" "$r/sbin" "$r/usr/bin" "$r/usr/sbin" "$r/etc" "$r/tmp" "$r/root" "$r/home" "$r/var"
  cp /bin/busybox "$r/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
  install -m 0755 "$repo_root/images/busybox/adduser" "$repo_root/images/busybox/addgroup" "$r/usr/sbin/"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"
  chmod 1777 "$r/tmp"
  chmod 700 "$r/root"
  tar --numeric-owner -C "$r" -cf "$dir/rootfs.tar" .
  k import -m "busybox-static $(/bin/busybox | head -n 1 | cut -d' ' -f2)" \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["sh"]' "$dir/rootfs.tar" "$1" >/dev/null
}

# Toolchain images: built by kiln from images/NAME (the context), keyed by the
# context's files and the Debian image they start from.
toolchain_key() {
  local name=$1
  { echo "$name v1 $debian_key"; cd "$repo_root/images/$name" && find . -type f | LC_ALL=C sort | xargs sha256sum; } | sha
}
make_toolchain() {
  local ref=$1 name=${1#kiln/}
  name=${name%%:*}
  log "kiln build -t $ref images/$name (FROM kiln/debian:bookworm, apt-get from deb.debian.org)"
  k build --progress plain -t "$ref" "$repo_root/images/$name" > "$cache/$name-build.log" 2>&1 \
    || { tail -n 30 "$cache/$name-build.log" >&2; log "building $ref failed (log: $cache/$name-build.log)"; exit 1; }
}

declare -A toolchain_ref=(
  [golang]=kiln/golang:1.19 [python]=kiln/python:3.11 [node]=kiln/node:18 [nginx]=kiln/nginx:latest
)
need_debian=0
for w in "${wanted[@]}"; do
  case "$w" in busybox) ;; *) need_debian=1 ;; esac
done
[ $need_debian = 0 ] || ensure debian kiln/debian:bookworm "$debian_key" make_debian
for w in "${wanted[@]}"; do
  case "$w" in
    debian) ;;
    busybox) ensure busybox kiln/busybox:latest "$busybox_key" make_busybox ;;
    *) ensure "$w" "${toolchain_ref[$w]}" "$(toolchain_key "$w")" make_toolchain ;;
  esac
done
