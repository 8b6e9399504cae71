//! COPY's reuse of an earlier build's layer (crates/build/src/copy.rs,
//! `Reuse`): after files of a context change, unchanged files are
//! hard-linked from the layer the last build of the same step left in the
//! store. What must hold, checked here end to end with the real binary:
//! - the image is exactly what a fresh store builds from the same context
//!   (same layer diff ids, so the same bytes), whatever changed: contents,
//!   modes, mtimes, files added, removed, or turned into links;
//! - files really are linked (the fast path is taken, not silently skipped);
//! - the earlier layer's snapshot is never changed through a link;
//! - `--chown`/`--chmod` copies are reused only when what they set matches.
//!
//! Needs no base image and no docker: `FROM scratch` plus COPY. Everything
//! is copied into `/`: a directory COPY creates gets the time of the build
//! as its mtime (as in BuildKit), which would make two builds' layers differ
//! for a reason that has nothing to do with reuse.

mod image_common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use image_common::*;

fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A context of `files` files in a few directories, a symlink and modes.
fn make_context(dir: &Path, dockerfile: &str, files: usize) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        let content = format!("file {i}\n").repeat(i % 7 + 1);
        write(dir, &format!("d{}/f{i}.txt", i % 5), content.as_bytes());
    }
    fs::set_permissions(dir.join("d1/f1.txt"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(dir.join("d2/f2.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("d0/f0.txt", dir.join("link")).unwrap();
    write(dir, "Dockerfile", dockerfile.as_bytes());
}

/// The diff ids of `image`'s layers.
fn diff_ids(root: &Path, image: &str) -> Vec<String> {
    let text = kiln_ok(root, &["inspect", image]);
    let json: serde_json::Value = serde_json::from_str(&text).expect("inspect prints JSON");
    json[0]["RootFS"]["Layers"]
        .as_array()
        .expect("RootFS.Layers")
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

/// Everything about a tree that an image could show: per path, type, mode,
/// owner, size, mtime and contents (or link target).
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let what = if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            "dir".to_string()
        } else if meta.file_type().is_symlink() {
            format!("link {:?}", fs::read_link(&path).unwrap())
        } else {
            format!("file {:?}", fs::read(&path).unwrap())
        };
        let mtime = if meta.is_dir() { 0 } else { meta.mtime() };
        out.insert(
            path.strip_prefix(dir).unwrap().to_path_buf(),
            format!(
                "{what} mode={:o} owner={}:{} size={} mtime={mtime}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.len()
            ),
        );
    }
    out
}

fn snapshot_trees(root: &Path) -> BTreeMap<PathBuf, BTreeMap<PathBuf, String>> {
    fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), tree(&p)))
        .collect()
}

/// Regular files in the store's snapshots that have more than one name.
fn linked_files(root: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![root.join("snapshots")];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else if meta.is_file() && meta.nlink() > 1 {
            count += 1;
        }
    }
    count
}

/// Builds `dockerfile` over a context, changes it with `change`, rebuilds,
/// and checks the rebuilt image against a fresh store's build of the
/// changed context. Returns how many files the rebuild linked.
fn rebuild_matches_fresh(name: &str, dockerfile: &str, change: impl Fn(&Path)) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    make_context(&ctx, dockerfile, 60);
    let warm = dir.path().join("warm");
    let ctx_arg = ctx.to_str().unwrap();
    kiln_ok(&warm, &["build", "-q", "-t", "img", ctx_arg]);
    let before = snapshot_trees(&warm);
    assert!(
        !before.is_empty(),
        "{name}: the COPY layer became a snapshot"
    );
    let linked_before = linked_files(&warm);

    change(&ctx);
    kiln_ok(&warm, &["build", "-q", "-t", "img", ctx_arg]);
    let rebuilt = diff_ids(&warm, "img");

    let fresh_store = dir.path().join("fresh");
    kiln_ok(&fresh_store, &["build", "-q", "-t", "img", ctx_arg]);
    let fresh = diff_ids(&fresh_store, "img");
    if rebuilt != fresh {
        let keep = std::env::temp_dir().join(format!("build-reuse-{name}"));
        let _ = fs::remove_dir_all(&keep);
        fs::create_dir_all(&keep).unwrap();
        for (store, file) in [(&warm, "rebuilt"), (&fresh_store, "fresh")] {
            let dest = format!("type=local,dest={}", keep.join(file).display());
            kiln_ok(store, &["build", "-q", "-o", &dest, ctx_arg]);
        }
        eprintln!("{name}: both results are in {}", keep.display());
    }
    assert_eq!(
        rebuilt, fresh,
        "{name}: the rebuild's layers differ from a fresh build of the same context"
    );

    // The first build's snapshots are as they were: nothing was written
    // through a link.
    for (path, old_tree) in &before {
        if path.is_dir() {
            assert_eq!(
                &tree(path),
                old_tree,
                "{name}: snapshot {path:?} changed under the rebuild"
            );
        }
    }
    (linked_files(&warm) - linked_before) / 2
}

#[test]
fn one_changed_file_rebuild_equals_a_fresh_build_and_links_the_rest() {
    if !is_root() {
        eprintln!("skipped: needs root (COPY sets owners)");
        return;
    }
    let linked = rebuild_matches_fresh("content", "FROM scratch\nCOPY . /\n", |ctx| {
        write(ctx, "d3/f13.txt", b"changed\n")
    });
    // 60 files, one changed: the other 59 are links (the Dockerfile and the
    // symlink are not linked: one is 60+1 files' sibling, one a link).
    assert!(
        linked >= 59,
        "expected the unchanged files to be hard-linked, {linked} were"
    );
}

#[test]
fn metadata_changes_and_added_or_removed_files_are_never_linked_wrongly() {
    if !is_root() {
        eprintln!("skipped: needs root (COPY sets owners)");
        return;
    }
    rebuild_matches_fresh("metadata", "FROM scratch\nCOPY . /\n", |ctx| {
        // Mode only.
        fs::set_permissions(ctx.join("d0/f5.txt"), fs::Permissions::from_mode(0o700)).unwrap();
        // Same content rewritten: a new mtime.
        let same = fs::read(ctx.join("d4/f9.txt")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(ctx.join("d4/f9.txt"), same).unwrap();
        // Removed, added, a file turned into a symlink.
        fs::remove_file(ctx.join("d1/f11.txt")).unwrap();
        write(ctx, "d9/new.txt", b"new\n");
        fs::remove_file(ctx.join("d2/f12.txt")).unwrap();
        std::os::unix::fs::symlink("f2.txt", ctx.join("d2/f12.txt")).unwrap();
    });
}

#[test]
fn chown_and_chmod_copies_reuse_only_matching_files() {
    if !is_root() {
        eprintln!("skipped: needs root (COPY sets owners)");
        return;
    }
    let linked = rebuild_matches_fresh(
        "chown",
        "FROM scratch\nCOPY --chown=12:34 --chmod=640 d1 /\nCOPY d2 /\n",
        |ctx| write(ctx, "d1/f6.txt", b"changed\n"),
    );
    assert!(
        linked >= 10,
        "expected unchanged files linked, {linked} were"
    );
    // The instruction changed: a different step, so nothing of the old
    // layer may be taken as this one's.
    rebuild_matches_fresh(
        "chmod changed",
        "FROM scratch\nCOPY --chown=12:34 --chmod=640 d1 /\n",
        |ctx| {
            let text = "FROM scratch\nCOPY --chown=12:34 --chmod=600 d1 /\n";
            write(ctx, "Dockerfile", text.as_bytes());
        },
    );
}
