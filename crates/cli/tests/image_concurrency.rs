//! Several kiln processes on one store at once: imports, loads and prunes run
//! concurrently; every command succeeds, nothing tagged is lost to a
//! dangling-only prune, and the store checks clean afterwards.

mod image_common;

use std::path::Path;

use image_common::*;

fn check_clean(root: &Path) {
    let out = kiln_ok(root, &["system", "check"]);
    assert!(out.contains("store is clean"), "{out}");
}

#[test]
fn concurrent_imports_loads_and_prunes_do_not_corrupt() {
    let Some(busybox) = require_busybox() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let tar = busybox_rootfs_tar(&busybox, dir.path(), 4 << 20);
    let tar = tar.to_str().unwrap();
    kiln_ok(&root, &["import", tar, "seed"]);
    let archive = dir.path().join("seed.tar");
    let archive = archive.to_str().unwrap();
    kiln_ok(&root, &["save", "seed", "-o", archive]);
    kiln_ok(&root, &["rmi", "seed"]);

    const N: usize = 8;
    std::thread::scope(|scope| {
        // Two importers of the same content (same blobs written concurrently).
        for who in ["a", "b"] {
            let root = &root;
            scope.spawn(move || {
                for i in 0..N {
                    kiln_ok(root, &["import", tar, &format!("imp-{who}:{i}")]);
                }
            });
        }
        // A loader.
        let root_ref = &root;
        scope.spawn(move || {
            for i in 0..N {
                kiln_ok(root_ref, &["load", "-i", archive]);
                kiln_ok(root_ref, &["tag", "seed", &format!("loaded:{i}")]);
            }
        });
        // A pruner creating and removing dangling images meanwhile.
        scope.spawn(move || {
            for _ in 0..N {
                kiln_ok(root_ref, &["import", tar]);
                kiln_ok(root_ref, &["image", "prune", "-f"]);
                kiln_ok(root_ref, &["system", "prune", "-f"]);
            }
        });
    });
    check_clean(&root);
    let inspect = kiln_ok(
        &root,
        &["inspect", "imp-a:0", "imp-b:7", "loaded:7", "seed"],
    );
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect.as_array().unwrap().len(), 4);
    for i in 0..N {
        for who in ["a", "b"] {
            let out = dir.path().join("out.tar");
            kiln_ok(
                &root,
                &[
                    "save",
                    &format!("imp-{who}:{i}"),
                    "-o",
                    out.to_str().unwrap(),
                ],
            );
        }
    }

    // Imports racing `system prune -a` (which removes every unused image):
    // the imports must still all succeed and the store stay consistent.
    std::thread::scope(|scope| {
        let root_ref = &root;
        scope.spawn(move || {
            for i in 0..N {
                kiln_ok(root_ref, &["import", tar, &format!("race:{i}")]);
            }
        });
        scope.spawn(move || {
            for _ in 0..N {
                kiln_ok(root_ref, &["system", "prune", "-a", "-f"]);
            }
        });
    });
    check_clean(&root);
}
