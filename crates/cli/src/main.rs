//! The `kiln` binary: parses flags, calls the library crates, renders output.
//! Keep it thin: behaviour belongs in the crates under `crates/`.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kiln", version, about = "Build and run container images from Dockerfiles, without a daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect Dockerfiles: parse trees and stage graphs
    #[command(subcommand)]
    Dockerfile(cmd::dockerfile::DockerfileCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dockerfile(c) => cmd::dockerfile::run(c),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
