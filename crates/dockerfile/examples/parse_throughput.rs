//! Parse-throughput benchmark for the Dockerfile parser (run by
//! `bench/parse-throughput.sh`).
//!
//! `parse_throughput generate FILE MEGABYTES` writes a large Dockerfile with a
//! realistic mix of instructions (multi-stage FROMs, RUN chains with line
//! continuations and comments inside them, heredocs, JSON exec forms, ENV and
//! LABEL pairs, flags); `parse_throughput measure FILE [ROUNDS]` parses it
//! ROUNDS times from memory and prints the best and median throughput.

use std::fmt::Write as _;
use std::time::Instant;

/// One block of the generated file; `{n}` is replaced by the block number.
const BLOCK: &str = r#"# ---- stage {n}: build ----
ARG GO_VERSION=1.22 BASE_{n}=debian:bookworm-slim
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine AS build{n}
WORKDIR /src/app{n}
ENV CGO_ENABLED=0 GOOS=linux GOFLAGS="-mod=readonly -trimpath" \
    PATH=/usr/local/go/bin:$PATH
LABEL org.opencontainers.image.title="app {n}" \
      org.opencontainers.image.version="1.{n}.0" maintainer="team@example.com"
COPY --link go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    # download modules first so they are cached
    go mod download && \
    go mod verify
COPY --chown=1000:1000 --chmod=0644 . .
RUN <<EOF
set -eux
go vet ./...
go build -ldflags="-s -w -X main.version=1.{n}" -o /out/app{n} ./cmd/app
EOF
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tzdata \
 && rm -rf /var/lib/apt/lists/*

FROM ${BASE_{n}} AS runtime{n}
COPY --from=build{n} /out/app{n} /usr/local/bin/app
COPY <<-"CONF" /etc/app/config.yaml
	listen: ":8080"
	stage: {n}
	CONF
EXPOSE 8080/tcp 9090
USER 1000:1000
VOLUME ["/data", "/cache"]
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD ["curl", "-fsS", "http://localhost:8080/healthz"]
STOPSIGNAL SIGTERM
SHELL ["/bin/sh", "-c"]
ONBUILD RUN echo "triggered by {n}"
ENTRYPOINT ["/usr/local/bin/app", "--config", "/etc/app/config.yaml"]
CMD ["serve", "--port=8080", "--log-level=info"]

"#;

fn generate(path: &str, megabytes: usize) -> std::io::Result<()> {
    let target = megabytes * 1024 * 1024;
    let mut out = String::with_capacity(target + 4096);
    out.push_str("# syntax=docker/dockerfile:1\n# check=skip=JSONArgsRecommended\n\n");
    let mut block = 0usize;
    while out.len() < target {
        let mut number = String::new();
        let _ = write!(number, "{block}");
        out.push_str(&BLOCK.replace("{n}", &number));
        block += 1;
    }
    std::fs::write(path, out)
}

/// Nanoseconds this thread has spent on a CPU (Linux schedstat), so that the
/// throughput can also be stated independent of other load on the machine.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn measure(path: &str, rounds: usize) -> Result<(), String> {
    let source = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let megabytes = source.len() as f64 / (1024.0 * 1024.0);
    let mut seconds = Vec::with_capacity(rounds);
    let mut cpu_seconds = Vec::with_capacity(rounds);
    let mut instructions = 0;
    let mut heredocs = 0;
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        let cpu_start = thread_cpu_ns();
        let file = kiln_dockerfile::parse(&source).map_err(|e| format!("{path}: {e}"))?;
        seconds.push(start.elapsed().as_secs_f64());
        if let (Some(before), Some(after)) = (cpu_start, thread_cpu_ns()) {
            cpu_seconds.push(after.saturating_sub(before) as f64 / 1e9);
        }
        instructions = file.instructions.len();
        heredocs = file.instructions.iter().map(|i| i.heredocs.len()).sum();
        drop(std::hint::black_box(file));
    }
    seconds.sort_by(f64::total_cmp);
    let best = seconds[0];
    let median = seconds[seconds.len() / 2];
    println!(
        "parsed {megabytes:.1} MiB ({instructions} instructions, {heredocs} heredocs) {} times",
        seconds.len()
    );
    println!("best   {best:.3} s  {:.0} MiB/s", megabytes / best);
    println!("median {median:.3} s  {:.0} MiB/s", megabytes / median);
    cpu_seconds.sort_by(f64::total_cmp);
    // On-CPU time excludes the time other processes held the CPU, so it
    // states the throughput of one core even on a busy machine.
    if let (Some(best_cpu), Some(median_cpu)) =
        (cpu_seconds.first(), cpu_seconds.get(cpu_seconds.len() / 2))
    {
        println!(
            "on-CPU best {best_cpu:.3} s  {:.0} MiB/s, median {median_cpu:.3} s  {:.0} MiB/s",
            megabytes / best_cpu,
            megabytes / median_cpu
        );
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        [_, "generate", path, megabytes] => megabytes
            .parse()
            .map_err(|e| format!("bad size {megabytes}: {e}"))
            .and_then(|mb| generate(path, mb).map_err(|e| format!("cannot write {path}: {e}"))),
        [_, "measure", path] => measure(path, 5),
        [_, "measure", path, rounds] => rounds
            .parse()
            .map_err(|e| format!("bad rounds {rounds}: {e}"))
            .and_then(|r| measure(path, r)),
        _ => Err("usage: parse_throughput generate FILE MEGABYTES | measure FILE [ROUNDS]".into()),
    };
    if let Err(message) = result {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}
