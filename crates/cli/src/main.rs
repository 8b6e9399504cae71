//! The `kiln` binary: parses flags, calls the library crates, renders output.
//! Keep it thin: behaviour belongs in the crates under `crates/`.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build and run container images from Dockerfiles, without a daemon"
)]
struct Cli {
    /// Store root (default: $KILN_ROOT, else /var/lib/kiln as root, else $XDG_DATA_HOME/kiln)
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile
    Build(cmd::build::BuildArgs),
    /// Inspect Dockerfiles: parse trees and stage graphs
    #[command(subcommand)]
    Dockerfile(cmd::dockerfile::DockerfileCommand),
    #[command(flatten)]
    Image(cmd::image::ImageVerb),
    #[command(flatten)]
    Registry(cmd::registry::RegistryVerb),
    #[command(flatten)]
    Container(cmd::run::ContainerVerb),
    /// Check a Dockerfile against BuildKit's build checks without building
    /// (as `docker build --check`)
    Check(cmd::check::CheckArgs),
    /// Remove stopped containers, unused images and their layers (as
    /// `kiln system prune`)
    Prune(cmd::system::SystemPruneArgs),
    /// Store maintenance: check, prune, df
    #[command(subcommand)]
    System(cmd::system::SystemCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = cli.root.clone().unwrap_or_else(kiln_store::default_root);
    let result = match cli.command {
        Command::Build(c) => cmd::build::run(&root, c),
        Command::Dockerfile(c) => cmd::dockerfile::run(c),
        Command::Image(c) => cmd::image::run(&root, c),
        Command::Registry(c) => cmd::registry::run(&root, c),
        Command::Container(c) => cmd::run::run(&root, c),
        Command::Check(c) => cmd::check::run(c),
        Command::Prune(c) => cmd::system::run(&root, cmd::system::SystemCommand::Prune(c)),
        Command::System(c) => cmd::system::run(&root, c),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
