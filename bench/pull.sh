#!/usr/bin/env bash
# Pull benchmark: a multi-layer image (~500 MB of /usr content in 5 gzip
# layers) in a local docker-registry on 127.0.0.1, pulled into an empty store
# by kiln, by `skopeo copy` to an OCI directory and by `docker pull`. Prints
# seconds for each and the ratios (other / kiln: above 1 means kiln is faster).
# kiln's pull, like skopeo, only hashes and writes each blob; docker pull also
# unpacks. docker's layer size (which needs every layer decompressed) is
# measured later, once: when a layer is first unpacked (kiln run, build) or
# its size first asked for. The first `kiln images` after the pull pays that
# here, and is timed separately (see crates/registry/README.md).
#
# Usage: bench/pull.sh            (BENCH_MB=500 BENCH_LAYERS=5 to change the size)
# Needs: docker-registry, skopeo, python3, a running docker engine, cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
total_mb="${BENCH_MB:-500}"
layers="${BENCH_LAYERS:-5}"
docker=/usr/bin/docker
work=$(mktemp -d /tmp/kiln-bench-pull.XXXXXX)
registry_pid=
cleanup() {
    [[ -n "$registry_pid" ]] && kill "$registry_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p kiln
kiln="$CARGO_TARGET_DIR/release/kiln"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

echo "preparing a ${total_mb} MB image of ${layers} gzip layers from /usr" >&2
layout="$work/layout"
mkdir -p "$layout/blobs/sha256"
python3 - "$layout" "$total_mb" "$layers" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
layout, total_mb, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
per_layer = total_mb * 1000 * 1000 // count
files = []
for dirpath, dirnames, filenames in os.walk("/usr"):
    dirnames.sort(); filenames.sort()
    for name in filenames:
        path = os.path.join(dirpath, name)
        if os.path.isfile(path) and not os.path.islink(path):
            files.append(path)
def put(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs/sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)
layers, diff_ids, index = [], [], 0
for n in range(count):
    raw = io.BytesIO()
    size = 0
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        while size < per_layer and index < len(files):
            path = files[index]; index += 1
            try:
                tar.add(path, arcname=f"layer{n}" + path, recursive=False)
                size += os.path.getsize(path)
            except OSError:
                pass
    raw = raw.getvalue()
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    digest, length = put(gzip.compress(raw, compresslevel=1))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": length})
config = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
cd, cs = put(json.dumps(config).encode())
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs}, "layers": layers}
md, ms = put(json.dumps(manifest).encode())
with open(os.path.join(layout, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": manifest["mediaType"], "digest": md, "size": ms,
               "annotations": {"org.opencontainers.image.ref.name": "big"}}]}, f)
print(f"{sum(l['size'] for l in layers) / 1e6:.0f} MB compressed in {count} layers", file=sys.stderr)
PY
image="127.0.0.1:$port/bench/big:1"
skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:$layout:big" "docker://$image"
sync

seconds() { python3 -c 'import sys,time; print(f"{time.time():.3f}")'; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

t0=$(seconds); "$kiln" --root "$work/kiln-root" pull -q "$image" >/dev/null; t1=$(seconds)
kiln_s=$(elapsed "$t0" "$t1")
t0=$(seconds); "$kiln" --root "$work/kiln-root" images >/dev/null; t1=$(seconds)
images_s=$(elapsed "$t0" "$t1")
t0=$(seconds); "$kiln" --root "$work/kiln-root" images >/dev/null; t1=$(seconds)
images_again_s=$(elapsed "$t0" "$t1")
t0=$(seconds); skopeo copy -q --src-tls-verify=false "docker://$image" "oci:$work/skopeo-oci:big"; t1=$(seconds)
skopeo_s=$(elapsed "$t0" "$t1")
docker_s=n/a
if "$docker" info >/dev/null 2>&1; then
    "$docker" rmi -f "$image" >/dev/null 2>&1 || true
    t0=$(seconds); "$docker" pull -q "$image" >/dev/null; t1=$(seconds)
    docker_s=$(elapsed "$t0" "$t1")
    "$docker" rmi -f "$image" >/dev/null 2>&1 || true
fi
"$kiln" --root "$work/kiln-root" system check | tail -1

printf 'pull of %s MB (%s layers) from a local registry into an empty store\n' "$total_mb" "$layers"
printf '  kiln pull            %8s s\n' "$kiln_s"
printf '  (then kiln images    %8s s: measures the layer sizes, once; again: %s s)\n' "$images_s" "$images_again_s"
printf '  skopeo copy -> oci   %8s s   ratio %s\n' "$skopeo_s" "$(python3 -c "print(f'{$skopeo_s / $kiln_s:.2f}')")"
if [[ "$docker_s" != n/a ]]; then
    printf '  docker pull          %8s s   ratio %s\n' "$docker_s" "$(python3 -c "print(f'{$docker_s / $kiln_s:.2f}')")"
fi
