//! Scans a build context once and prints what it did, for bench/context-hash.sh.
//!
//!     cargo run --release -p kiln-build --example context_scan -- CONTEXT CACHE_DIR [DOCKERFILE]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use kiln_build::context::Context;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (Some(context), Some(cache_dir)) = (args.first(), args.get(1)) else {
        eprintln!("usage: context_scan CONTEXT CACHE_DIR [DOCKERFILE]");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    let dockerfile = args.get(2).map(PathBuf::as_path);
    match Context::scan_build_context(context, dockerfile, Some(cache_dir.clone())) {
        Ok(ctx) => {
            let s = ctx.stats();
            println!(
                "ms={:.2} entries={} files={} hashed={} bytes_hashed={} cache_hits={} digest={}",
                start.elapsed().as_secs_f64() * 1000.0,
                s.entries,
                s.files,
                s.files_hashed,
                s.bytes_hashed,
                s.cache_hits,
                ctx.root_digest()
            );
            if let Some(w) = &s.cache_warning {
                eprintln!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
