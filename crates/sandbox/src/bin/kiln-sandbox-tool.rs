//! kiln-sandbox-tool: a small driver for the sandbox crate, used by its tests and
//! by `bench/sandbox-run.sh`.
//!
//!   kiln-sandbox-tool run ROOTDIR CMD...     run CMD with ROOTDIR as root (a Dir
//!                                            rootfs), stream output, exit with its code
//!   kiln-sandbox-tool bench ROOTDIR N        N runs of `true`, prints the median and
//!                                            other percentiles in milliseconds
//!   kiln-sandbox-tool overlay LOWER UPPER WORK CMD...   like run, on an overlay

use kiln_sandbox::{RootFs, SandboxSpec, run};
use std::io::Write;
use std::time::Instant;

fn usage() -> ! {
    eprintln!(
        "usage: kiln-sandbox-tool run ROOTDIR CMD... | bench ROOTDIR N | overlay LOWER UPPER WORK CMD..."
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
            let spec = SandboxSpec::new(RootFs::Dir(args[1].clone().into()), args[2..].to_vec());
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
        "bench" if args.len() == 3 => {
            let Ok(count) = args[2].parse::<usize>() else {
                usage()
            };
            let spec = SandboxSpec::new(RootFs::Dir(args[1].clone().into()), vec!["true".into()]);
            let mut times = Vec::with_capacity(count);
            for _ in 0..count {
                let start = Instant::now();
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
            times.sort_by(|a, b| a.total_cmp(b));
            let pick = |q: f64| {
                times
                    .get(((times.len() as f64 - 1.0) * q) as usize)
                    .copied()
                    .unwrap_or(0.0)
            };
            println!(
                "kiln-sandbox runs={count} median_ms={:.2} p10_ms={:.2} p90_ms={:.2} max_ms={:.2}",
                pick(0.5),
                pick(0.1),
                pick(0.9),
                pick(1.0)
            );
        }
        _ => usage(),
    }
}
