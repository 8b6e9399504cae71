#!/usr/bin/env bash
# kiln run vs docker run on the same busybox image (issue 6):
#   1. `run --rm IMAGE true` wall time (median of N runs), --network none and default
#   2. time from `run -d -p HOST:8080 IMAGE httpd ...` to the first HTTP answer (median of M)
# The image is imported into kiln, then `kiln save`d and `docker load`ed, so
# both run the very same image. Prints medians and kiln/docker ratios (aim: < 0.2).
# Needs: root, busybox-static, python3, a docker engine (../shared/tools/docker-oracle.sh),
# slirp4netns for kiln's default network.
# KILN=path/to/kiln (default: the release build under CARGO_TARGET_DIR or target/).
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-${CARGO_TARGET_DIR:-target}/release/kiln}
N=${N:-20}
M=${M:-10}
IMG=run-bench/busybox:run
[ -x "$KILN" ] || cargo build --release -p kiln
work=$(mktemp -d)
have_docker=0
cleanup() {
  if [ "$have_docker" = 1 ]; then docker rmi -f "$IMG" >/dev/null 2>&1 || true; fi
  "$KILN" ps -aq 2>/dev/null | xargs -r "$KILN" rm -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
export KILN_ROOT="$work/store"
mkdir -p "$work/rootfs/bin" "$work/rootfs/www" "$work/rootfs/etc"
cp /bin/busybox "$work/rootfs/bin/busybox"
for a in sh true httpd sleep; do ln -s busybox "$work/rootfs/bin/$a"; done
echo "root:x:0:0:root:/root:/bin/sh" > "$work/rootfs/etc/passwd"
echo hello > "$work/rootfs/www/index.html"
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
"$KILN" import "$work/rootfs.tar" "$IMG" >/dev/null
if docker info >/dev/null 2>&1; then
  "$KILN" save "$IMG" -o "$work/image.tar"
  docker load -i "$work/image.tar" >/dev/null
  have_docker=1
  echo "kiln $("$KILN" --version 2>/dev/null || echo "$KILN"); docker $(docker version -f '{{.Server.Version}}'); load $(cut -d' ' -f1-3 /proc/loadavg)"
else
  echo "no docker engine: kiln numbers only"
fi

python3 - "$KILN" "$N" "$M" "$have_docker" "$IMG" <<'PY'
import socket, statistics, subprocess, sys, time, urllib.request
kiln, n, m, have_docker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
img = sys.argv[5]

def median_run(cmd):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)

def first_answer(tool, port):
    times = []
    for i in range(m):
        t = time.perf_counter()
        cid = subprocess.run([tool, "run", "-d", "-p", f"127.0.0.1:{port}:8080", img,
                              "httpd", "-f", "-p", "8080", "-h", "/www"],
                             check=True, capture_output=True, text=True).stdout.strip()
        deadline = t + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=1).read()
                break
            except Exception:
                if time.perf_counter() > deadline:
                    subprocess.run([tool, "rm", "-f", cid], stdout=subprocess.DEVNULL)
                    sys.exit(f"{tool}: no HTTP answer on port {port} within 30 s")
                time.sleep(0.002)
        times.append(time.perf_counter() - t)
        subprocess.run([tool, "rm", "-f", cid], check=True, stdout=subprocess.DEVNULL)
    return statistics.median(times)

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

rows = []
for net in ["none", "default"]:
    k = median_run([kiln, "run", "--rm", "--network", net, img, "true"])
    d = median_run(["docker", "run", "--rm", "--network", "none" if net == "none" else "bridge", img, "true"]) if have_docker else None
    rows.append((f"run --rm true (--network {net})", k, d))
k = first_answer(kiln, free_port())
d = first_answer("docker", free_port()) if have_docker else None
rows.append(("run -d -p -> first HTTP answer", k, d))
print(f"{'measure':40} {'kiln':>10} {'docker':>10} {'ratio':>7}")
for name, k, d in rows:
    ds = f"{d*1000:8.1f}ms" if d else "       n/a"
    ratio = f"{k/d:7.2f}" if d else "    n/a"
    print(f"{name:40} {k*1000:8.1f}ms {ds} {ratio}")
PY
