//! `kiln system check|prune|df`: store maintenance with docker's output shapes.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::image::{confirm, open_store, prune_images};
use super::output::{human_size4, table};

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Verify every blob against its digest and every image's content; --repair removes what is broken
    Check(CheckArgs),
    /// Remove dangling images (-a: all unused images), unused layers and leftovers of dead kiln processes
    Prune(SystemPruneArgs),
    /// Show kiln disk usage
    Df,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Remove broken blobs, images, names and snapshot records
    #[arg(long)]
    pub repair: bool,
}

#[derive(Args)]
pub struct SystemPruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(root: &Path, command: SystemCommand) -> Result<ExitCode> {
    super::image::quiet_broken_pipe(match command {
        SystemCommand::Check(args) => check(root, args),
        SystemCommand::Prune(args) => prune(root, args),
        SystemCommand::Df => df(root),
    })
}

fn check(root: &Path, args: CheckArgs) -> Result<ExitCode> {
    let store = open_store(root)?;
    let report = store
        .check(args.repair)
        .with_context(|| format!("checking the store at {}", root.display()))?;
    println!(
        "checked {} blobs ({}), {} images, {} snapshots in {}",
        report.blobs_checked,
        human_size4(report.bytes_checked),
        report.images_checked,
        report.snapshots_checked,
        root.display()
    );
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    for repaired in &report.repaired {
        println!("repaired: {repaired}");
    }
    if report.unreferenced_blobs + report.unreferenced_snapshots > 0 {
        println!(
            "unused: {} blobs, {} snapshots (free them with `kiln system prune`)",
            report.unreferenced_blobs, report.unreferenced_snapshots
        );
    }
    if report.problems.is_empty() {
        println!("store is clean");
        Ok(ExitCode::SUCCESS)
    } else if report.is_clean() {
        println!("store repaired");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "store has {} problem(s); run `kiln system check --repair` to remove what is broken",
            report.problems.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

fn prune(root: &Path, args: SystemPruneArgs) -> Result<ExitCode> {
    let images = if args.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    };
    let warning = format!(
        "WARNING! This will remove:\n  - all stopped containers\n  - {images}\n  - all layers and snapshots no image uses\n  - temporary files of kiln processes that died"
    );
    if !args.force && !confirm(&warning)? {
        return Ok(ExitCode::SUCCESS);
    }
    // Containers first, as docker: their images are then free to go.
    let containers = super::run::prune_stopped_containers(root)?;
    let store = open_store(root)?;
    let reclaimed = containers + prune_images(&store, args.all)?;
    println!("Total reclaimed space: {}", human_size4(reclaimed));
    Ok(ExitCode::SUCCESS)
}

fn df(root: &Path) -> Result<ExitCode> {
    let store = open_store(root)?;
    let usage = store.usage()?;
    let percent = |part: u64, whole: u64| (part * 100).checked_div(whole).unwrap_or(0);
    let rows = vec![
        vec![
            "TYPE".to_string(),
            "TOTAL".into(),
            "ACTIVE".into(),
            "SIZE".into(),
            "RECLAIMABLE".into(),
        ],
        vec![
            "Images".into(),
            usage.images.to_string(),
            usage.images_in_use.to_string(),
            human_size4(usage.blob_bytes),
            format!(
                "{} ({}%)",
                human_size4(usage.reclaimable_blob_bytes),
                percent(usage.reclaimable_blob_bytes, usage.blob_bytes)
            ),
        ],
        vec![
            "Snapshots".into(),
            usage.snapshots.to_string(),
            usage.snapshots_in_use.to_string(),
            human_size4(usage.snapshot_bytes),
            format!(
                "{} ({}%)",
                human_size4(usage.reclaimable_snapshot_bytes),
                percent(usage.reclaimable_snapshot_bytes, usage.snapshot_bytes)
            ),
        ],
        vec![
            "Build Cache".into(),
            usage.build_cache_entries.to_string(),
            "0".into(),
            "0B".into(),
            "0B".into(),
        ],
    ];
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}
