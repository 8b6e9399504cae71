//! `kiln dockerfile ...`: parse trees and stage graphs.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum DockerfileCommand {}

pub fn run(command: DockerfileCommand) -> anyhow::Result<ExitCode> {
    match command {}
}
