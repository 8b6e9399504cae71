#!/usr/bin/env bash
# Import + save benchmark: a ~1 GB root filesystem tarball (a valid tar of part
# of /usr, built once) imported and saved by kiln and by docker on the same
# data. Prints seconds for each step and kiln's speedup (docker time / kiln time).
#
# Usage: bench/import-save.sh [ROOTFS_TAR]   (default: builds /tmp/kiln-bench-rootfs.tar)
# Needs: a running docker engine (/usr/bin/docker), python3, cargo.
#
# Note what each side does: `docker import` unpacks the layer into overlay2
# (files on disk) and `docker save` re-tars it; `kiln import` stores the layer
# tar as a verified blob (unpacking happens once, on first use as a snapshot)
# and `kiln save` streams the stored blob into the archive.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
input="${1:-/tmp/kiln-bench-rootfs.tar}"
docker=/usr/bin/docker
target_bytes=$((1000 * 1000 * 1000))

if [[ ! -s "$input" ]]; then
    echo "preparing $input: a tar of ~1 GB of /usr (whole files, valid tar)" >&2
    list=$(mktemp)
    python3 - "$target_bytes" > "$list" <<'PY'
import os, sys
limit = int(sys.argv[1]); total = 0
for dirpath, dirnames, filenames in os.walk("/usr"):
    dirnames.sort(); filenames.sort()
    print(dirpath.lstrip("/"))
    for name in filenames:
        path = os.path.join(dirpath, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        print(path.lstrip("/"))
        total += st.st_size
        if total >= limit:
            sys.exit(0)
PY
    tar -C / --no-recursion -cf "$input" -T "$list" 2>/dev/null || true
    rm -f "$list"
fi
in_bytes=$(stat -c %s "$input")
echo "input: $input, $((in_bytes / 1000000)) MB, $(nproc) cores"

cargo build -q --release -p kiln
kiln="$CARGO_TARGET_DIR/release/kiln"
root=$(mktemp -d /var/tmp/kiln-bench-root.XXXXXX)
out=$(mktemp -d /var/tmp/kiln-bench-out.XXXXXX)
tag="kiln-bench/rootfs:$$"
cleanup() {
    rm -rf "$root" "$out"
    $docker rmi -f "$tag" > /dev/null 2>&1 || true
}
trap cleanup EXIT
cat "$input" > /dev/null   # warm the page cache: both sides read from memory

seconds() { # command... -> prints elapsed seconds
    local start end
    start=$(date +%s.%N)
    "$@" > /dev/null
    sync
    end=$(date +%s.%N)
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }'
}

kiln_import=$(seconds "$kiln" --root "$root" import "$input" "$tag")
kiln_save=$(seconds "$kiln" --root "$root" save "$tag" -o "$out/kiln.tar")
docker_import=$(seconds $docker import "$input" "$tag")
docker_save=$(seconds $docker save "$tag" -o "$out/docker.tar")

kiln_size=$("$kiln" --root "$root" inspect "$tag" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Size"])')
docker_size=$($docker inspect --format '{{.Size}}' "$tag")
kiln_layer=$("$kiln" --root "$root" inspect "$tag" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["RootFS"]["Layers"][0])')
docker_layer=$($docker inspect --format '{{index .RootFS.Layers 0}}' "$tag")

printf '%-8s %10s %10s %10s\n' "step" "kiln" "docker" "speedup"
awk -v k="$kiln_import" -v d="$docker_import" 'BEGIN { printf "%-8s %9.2fs %9.2fs %9.1fx\n", "import", k, d, d / k }'
awk -v k="$kiln_save" -v d="$docker_save" 'BEGIN { printf "%-8s %9.2fs %9.2fs %9.1fx\n", "save", k, d, d / k }'
awk -v ki="$kiln_import" -v ks="$kiln_save" -v di="$docker_import" -v ds="$docker_save" \
    'BEGIN { printf "%-8s %9.2fs %9.2fs %9.1fx\n", "total", ki + ks, di + ds, (di + ds) / (ki + ks) }'
echo "image size: kiln $kiln_size, docker $docker_size; layer diff_id: $([[ $kiln_layer == "$docker_layer" ]] && echo same || echo "DIFFERENT (kiln $kiln_layer, docker $docker_layer)")"
echo "archives: kiln $(stat -c %s "$out/kiln.tar") bytes, docker $(stat -c %s "$out/docker.tar") bytes"
