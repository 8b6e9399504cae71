//! Overlay upper dir → layer with a real overlayfs mount (needs root): deletions become
//! `.wh.` entries, a replaced directory becomes opaque, and applying the layer (flattened
//! or as overlay lower dirs) reproduces exactly what the merged mount showed.

mod common;

use common::tree;
use kiln_snapshot::{ApplyMode, ApplyOptions, CreateOptions, DiffKind, apply_layer, create_layer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Unmounts on drop so a failing assertion does not leave a mount behind.
struct Mount(PathBuf);

impl Mount {
    fn overlay(lowers: &[&Path], upper: Option<(&Path, &Path)>, target: &Path) -> Self {
        let lowerdir = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut options = format!("lowerdir={lowerdir}");
        if let Some((upper, work)) = upper {
            options.push_str(&format!(
                ",upperdir={},workdir={}",
                upper.display(),
                work.display()
            ));
        }
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(target)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t overlay -o {options} failed");
        Mount(target.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// What a user sees: kind, mode and content per path (directory mtimes legitimately
/// differ between a merged view and a flattened copy).
/// kind, mode, content, symlink target.
type Visible = (&'static str, u32, Vec<u8>, Option<Vec<u8>>);

fn view(root: &Path) -> BTreeMap<String, Visible> {
    tree(root)
        .into_iter()
        .map(|(path, node)| (path, (node.kind, node.mode, node.content, node.link_target)))
        .collect()
}

fn layer_names(layer: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(layer);
    archive
        .entries()
        .expect("entries")
        .map(|e| String::from_utf8_lossy(&e.expect("entry").path_bytes()).into_owned())
        .collect()
}

#[test]
fn overlay_upper_dir_becomes_an_oci_diff() {
    if !common::require_root("overlay_upper_dir_becomes_an_oci_diff") {
        return;
    }
    let base = tempfile::tempdir().expect("temp");
    let dir = |name: &str| {
        let path = base.path().join(name);
        std::fs::create_dir_all(&path).expect("mkdir");
        path
    };
    let (lower, upper, work, merged) = (dir("lower"), dir("upper"), dir("work"), dir("merged"));
    std::fs::write(lower.join("a"), b"deleted").expect("write");
    std::fs::write(lower.join("keep"), b"kept").expect("write");
    std::fs::create_dir_all(lower.join("d/deep")).expect("mkdir");
    std::fs::write(lower.join("d/x"), b"hidden by opaque").expect("write");
    std::fs::write(lower.join("d/deep/y"), b"hidden by opaque").expect("write");
    std::fs::create_dir(lower.join("e")).expect("mkdir");
    std::fs::write(lower.join("e/z"), b"stays").expect("write");
    std::os::unix::fs::symlink("keep", lower.join("link")).expect("symlink");

    let expected = {
        let _mount = Mount::overlay(&[&lower], Some((&upper, &work)), &merged);
        std::fs::remove_file(merged.join("a")).expect("rm a");
        std::fs::remove_dir_all(merged.join("d")).expect("rm -r d");
        std::fs::create_dir(merged.join("d")).expect("mkdir d");
        std::fs::write(merged.join("d/new"), b"new in replaced dir").expect("write");
        std::fs::write(merged.join("e/added"), b"added").expect("write");
        std::fs::write(merged.join("b"), b"new file").expect("write");
        std::fs::remove_file(merged.join("link")).expect("rm link");
        view(&merged)
    };

    let mut upper_layer = Vec::new();
    let opts = CreateOptions {
        source_date_epoch: Some(1_700_000_000),
        ..CreateOptions::default()
    };
    create_layer(&upper, DiffKind::OverlayUpper, &mut upper_layer, &opts)
        .expect("create from upper");
    let names = layer_names(&upper_layer);
    for wanted in [
        ".wh.a",
        ".wh.link",
        "b",
        "d/",
        "d/.wh..wh..opq",
        "d/new",
        "e/",
        "e/added",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }
    for unwanted in ["keep", "d/x", "e/z", "a"] {
        assert!(
            !names.iter().any(|n| n == unwanted),
            "{unwanted} must not be in {names:?}"
        );
    }
    assert!(
        names.iter().position(|n| n == "d/") < names.iter().position(|n| n == "d/.wh..wh..opq")
    );
    let mut archive = tar::Archive::new(upper_layer.as_slice());
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if let Some(pax) = entry.pax_extensions().expect("pax") {
            for record in pax {
                let key = record.expect("record").key().expect("key").to_string();
                assert!(!key.contains("overlay"), "overlay xattr leaked: {key}");
            }
        }
    }

    let mut lower_layer = Vec::new();
    create_layer(&lower, DiffKind::Directory, &mut lower_layer, &opts).expect("create from lower");

    // Flattened: lower then upper into one directory.
    let flat = dir("flat");
    apply_layer(lower_layer.as_slice(), &flat, &ApplyOptions::default()).expect("apply lower");
    apply_layer(upper_layer.as_slice(), &flat, &ApplyOptions::default()).expect("apply upper");
    assert_eq!(
        view(&flat),
        expected,
        "flattened layers differ from the merged overlay view"
    );

    // Overlay mode: each layer its own lower dir, stacked by a read-only overlay mount.
    let (l1, l2, stacked) = (dir("l1"), dir("l2"), dir("stacked"));
    let overlay = ApplyOptions {
        mode: ApplyMode::Overlay,
        ..ApplyOptions::default()
    };
    apply_layer(lower_layer.as_slice(), &l1, &overlay).expect("apply lower as overlay");
    apply_layer(upper_layer.as_slice(), &l2, &overlay).expect("apply upper as overlay");
    let _mount = Mount::overlay(&[&l2, &l1], None, &stacked);
    assert_eq!(
        view(&stacked),
        expected,
        "stacked overlay lower dirs differ from the merged view"
    );
}

#[test]
fn partial_copy_up_is_refused() {
    if !common::require_root("partial_copy_up_is_refused") {
        return;
    }
    // An upper file marked metacopy (its data would be in a lower layer) must not become
    // an empty file in the layer.
    let upper = tempfile::tempdir().expect("temp");
    std::fs::write(upper.path().join("bin"), b"").expect("write");
    rustix::fs::setxattr(
        upper.path().join("bin").as_path(),
        "trusted.overlay.metacopy",
        b"",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("xattr");
    let error = create_layer(
        upper.path(),
        DiffKind::OverlayUpper,
        std::io::sink(),
        &CreateOptions::default(),
    )
    .expect_err("metacopy");
    assert!(error.to_string().contains("metacopy=off"), "{error}");
    // In a plain directory the same xattr is just overlay bookkeeping, dropped.
    create_layer(
        upper.path(),
        DiffKind::Directory,
        std::io::sink(),
        &CreateOptions::default(),
    )
    .expect("plain dir");
}
