#!/usr/bin/env bash
# Makes a small base image from the host's busybox-static and imports it into
# kiln's store, shaped like the reference engine's busybox:local (same files,
# same PATH), so kiln and docker builds start from the same base.
#
#   scripts/make-busybox-image.sh [REF]      (default busybox:local; needs KILN or kiln on PATH)
set -euo pipefail
ref="${1:-busybox:local}"
kiln="${KILN:-kiln}"
[ -x /bin/busybox ] || { echo "make-busybox-image: /bin/busybox missing (apt-get install busybox-static)" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
cp /bin/busybox "$root/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
tar -C "$root" -c . | "$kiln" import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$ref" >/dev/null
echo "imported $ref"
