//! Crash safety: kill kiln with SIGKILL at random moments during import,
//! save, load and prune (60 times); after each kill `kiln system check` must
//! report a clean store and the interrupted command must then succeed.

mod image_common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use image_common::*;

const ROUNDS: usize = 60;

fn check_clean(root: &Path, context: &str) {
    let out = kiln(root).args(["system", "check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("store is clean"),
        "store not clean after {context}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigkill_at_random_moments_never_corrupts_the_store() {
    let Some(busybox) = require_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    // ~24 MB of incompressible data makes each command take long enough to be
    // killed in the middle of writing blobs or metadata.
    let tar = busybox_rootfs_tar(&busybox, dir.path(), 24 << 20);
    let tar = tar.to_str().unwrap().to_string();
    kiln_ok(&root, &["import", &tar, "base"]);
    let archive = dir.path().join("base.tar");
    let archive = archive.to_str().unwrap().to_string();
    kiln_ok(&root, &["save", "base", "-o", &archive]);
    let saved = dir.path().join("out.tar");
    let saved = saved.to_str().unwrap().to_string();

    let ops: Vec<(&str, Vec<String>)> = vec![
        (
            "import",
            vec!["import".into(), tar.clone(), "imported".into()],
        ),
        (
            "save",
            vec!["save".into(), "base".into(), "-o".into(), saved.clone()],
        ),
        ("load", vec!["load".into(), "-i".into(), archive.clone()]),
        ("prune", vec!["image".into(), "prune".into(), "-f".into()]),
    ];
    // How long each command takes uninterrupted: kills land inside that window.
    let mut durations = Vec::new();
    for (name, args) in &ops {
        if *name == "prune" {
            kiln_ok(&root, &["import", &tar]);
        }
        let start = Instant::now();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kiln_ok(&root, &args);
        durations.push(start.elapsed().as_millis() as u64 + 1);
    }
    eprintln!("uninterrupted durations (ms): {durations:?}");

    let mut rng = Rng::from_time();
    let mut killed_mid_run = 0;
    for round in 0..ROUNDS {
        let op = round % ops.len();
        let (name, args) = &ops[op];
        if *name == "prune" {
            // Something dangling for prune to remove.
            kiln_ok(&root, &["import", &tar]);
        }
        let delay = rng.below(durations[op] * 11 / 10);
        let mut child = kiln(&root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let context = format!(
            "round {round}: SIGKILL of `kiln {}` after {delay} ms",
            args.join(" ")
        );
        check_clean(&root, &context);
        // The next command works: the same operation, to completion.
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kiln_ok(&root, &args);
    }
    eprintln!("{killed_mid_run} of {ROUNDS} kills landed while kiln was running");
    assert!(
        killed_mid_run >= ROUNDS / 3,
        "only {killed_mid_run} of {ROUNDS} kills interrupted a running command"
    );
    // Nothing a dead process left behind survives the next gc.
    kiln_ok(&root, &["system", "prune", "-f"]);
    check_clean(&root, "the final prune");
    let leftovers = std::fs::read_dir(root.join("tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "temp dirs of dead processes remain");
    // And the images are intact and usable.
    kiln_ok(&root, &["save", "base", "-o", &saved]);
    let images = kiln_ok(&root, &["images"]);
    assert!(
        images.contains("base") && images.contains("imported"),
        "{images}"
    );
}
