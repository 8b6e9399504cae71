//! kiln-sandbox-tool: a small driver for the sandbox crate, used by its tests and
//! by `bench/sandbox-run.sh`.
//!
//!   kiln-sandbox-tool run ROOTDIR CMD...     run CMD with ROOTDIR as root (a Dir
//!                                            rootfs), stream output, exit with its code
//!   kiln-sandbox-tool bench ROOTDIR N (overlay)?
//!                                            N runs of `true`, prints the median and
//!                                            other percentiles in milliseconds; with
//!                                            `overlay`, each run gets ROOTDIR as the lower
//!                                            dir and a fresh upper/work dir (a RUN step)
//!   kiln-sandbox-tool overlay LOWER UPPER WORK CMD...   like run, on an overlay

use kiln_sandbox::{RootFs, SandboxSpec, run};
use std::io::Write;
use std::time::Instant;

fn usage() -> ! {
    eprintln!(
        "usage: kiln-sandbox-tool run ROOTDIR CMD... | bench ROOTDIR N [overlay] | overlay LOWER UPPER WORK CMD..."
    );
    std::process::exit(2)
}

fn run_streaming(spec: &SandboxSpec) -> i32 {
    let result = run(spec, |stream, bytes| {
        let _ = match stream {
            kiln_sandbox::Stream::Stdout => std::io::stdout().write_all(bytes),
            kiln_sandbox::Stream::Stderr => std::io::stderr().write_all(bytes),
        };
    });
    match result {
        Ok(status) => status.code(),
        Err(err) => {
            eprintln!("kiln-sandbox-tool: {err}");
            125
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else { usage() };
    match command.as_str() {
        "run" if args.len() >= 3 => {
            let mut spec =
                SandboxSpec::new(RootFs::Dir(args[1].clone().into()), args[2..].to_vec());
            if std::env::var("KILN_SANDBOX_SECCOMP").as_deref() == Ok("unconfined") {
                spec.seccomp = kiln_sandbox::Seccomp::Unconfined;
            }
            std::process::exit(run_streaming(&spec));
        }
        "overlay" if args.len() >= 5 => {
            let rootfs = RootFs::Overlay {
                lower_dirs: args[1].split(':').map(Into::into).collect(),
                upper_dir: args[2].clone().into(),
                work_dir: args[3].clone().into(),
            };
            let spec = SandboxSpec::new(rootfs, args[4..].to_vec());
            std::process::exit(run_streaming(&spec));
        }
        "bench" if args.len() == 3 || (args.len() == 4 && args[3] == "overlay") => {
            let Ok(count) = args[2].parse::<usize>() else {
                usage()
            };
            let overlay = args.len() == 4;
            let scratch =
                std::env::temp_dir().join(format!("kiln-sandbox-bench-{}", std::process::id()));
            let mut spec =
                SandboxSpec::new(RootFs::Dir(args[1].clone().into()), vec!["true".into()]);
            // Simulate a big kiln process: fork copies page tables per run.
            let ballast_mb: usize = std::env::var("KILN_SANDBOX_BENCH_BALLAST_MB")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let ballast = vec![1u8; ballast_mb << 20];
            if std::env::var("KILN_SANDBOX_BENCH_NETWORK").as_deref() == Ok("host") {
                spec.network = kiln_sandbox::Network::Host;
            }
            let mut times = Vec::with_capacity(count);
            for index in 0..count {
                let start = Instant::now();
                if overlay {
                    // A RUN step's cost includes making its fresh upper/work dirs.
                    let upper = scratch.join(format!("{index}/upper"));
                    let work = scratch.join(format!("{index}/work"));
                    if std::fs::create_dir_all(&upper)
                        .and_then(|()| std::fs::create_dir_all(&work))
                        .is_err()
                    {
                        eprintln!("cannot create {}", upper.display());
                        std::process::exit(1);
                    }
                    spec.rootfs = RootFs::Overlay {
                        lower_dirs: vec![args[1].clone().into()],
                        upper_dir: upper,
                        work_dir: work,
                    };
                }
                match run(&spec, |_, _| {}) {
                    Ok(status) if status.success() => {}
                    Ok(status) => {
                        eprintln!("true exited with {status:?}");
                        std::process::exit(1);
                    }
                    Err(err) => {
                        eprintln!("kiln-sandbox-tool: {err}");
                        std::process::exit(1);
                    }
                }
                times.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            let _ = std::fs::remove_dir_all(&scratch);
            std::hint::black_box(&ballast);
            times.sort_by(|a, b| a.total_cmp(b));
            let pick = |q: f64| {
                times
                    .get(((times.len() as f64 - 1.0) * q) as usize)
                    .copied()
                    .unwrap_or(0.0)
            };
            println!(
                "kiln-sandbox{} runs={count} median_ms={:.2} p10_ms={:.2} p90_ms={:.2} max_ms={:.2}",
                if overlay { "(overlay)" } else { "(dir)" },
                pick(0.5),
                pick(0.1),
                pick(0.9),
                pick(1.0)
            );
        }
        _ => usage(),
    }
}
