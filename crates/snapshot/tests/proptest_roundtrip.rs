//! Property: for any tree of files, directories, symlinks and hard links with arbitrary
//! modes and mtimes, create_layer → apply_layer reproduces the tree exactly.

mod common;

use common::tree;
use kiln_snapshot::{
    ApplyOptions, Compression, CreateOptions, DiffKind, apply_layer, create_layer_compressed,
};
use proptest::prelude::*;
use rustix::fs::{AtFlags, Timespec, Timestamps};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[derive(Clone, Debug)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    /// Hard link to the n-th created regular file (modulo how many exist).
    Hardlink(usize),
}

#[derive(Clone, Debug)]
struct Spec {
    path: Vec<String>,
    kind: Kind,
    mode: u32,
    mtime: i64,
}

fn spec() -> impl Strategy<Value = Spec> {
    let name = prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("ccc".to_string()),
        Just("é文".to_string()),
        "[a-z]{1,12}",
        Just("x".repeat(110))
    ];
    let kind = prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Kind::File),
        2 => Just(Kind::Dir),
        1 => "[a-z./]{1,30}".prop_map(Kind::Symlink),
        1 => (0usize..8).prop_map(Kind::Hardlink),
    ];
    let mode = prop_oneof![
        Just(0o644u32),
        Just(0o755),
        Just(0o600),
        Just(0o4755),
        Just(0o2755),
        Just(0o1777),
        Just(0o000),
        Just(0o777)
    ];
    (
        proptest::collection::vec(name, 1..4),
        kind,
        mode,
        0i64..2_000_000_000,
    )
        .prop_map(|(path, kind, mode, mtime)| Spec {
            path,
            kind,
            mode,
            mtime,
        })
}

fn build(root: &Path, specs: &[Spec]) {
    let mut files = Vec::new();
    for spec in specs {
        let path = spec.path.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let Some(parent) = path.parent() else {
            continue;
        };
        if std::fs::create_dir_all(parent).is_err() || std::fs::symlink_metadata(&path).is_ok() {
            continue; // a parent is a file, or the name is taken: skip this spec
        }
        let created = match &spec.kind {
            Kind::File(data) => std::fs::write(&path, data)
                .map(|_| files.push(path.clone()))
                .is_ok(),
            Kind::Dir => std::fs::create_dir(&path).is_ok(),
            Kind::Symlink(target) => std::os::unix::fs::symlink(target, &path).is_ok(),
            Kind::Hardlink(n) => {
                !files.is_empty() && std::fs::hard_link(&files[n % files.len()], &path).is_ok()
            }
        };
        if created && !matches!(spec.kind, Kind::Symlink(_) | Kind::Hardlink(_)) {
            // Keep directories writable until the end so later specs can fill them.
            let mode = if matches!(spec.kind, Kind::Dir) {
                spec.mode | 0o700
            } else {
                spec.mode
            };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
    }
    let mut paths: Vec<_> = tree(root).into_iter().collect();
    paths.sort_by_key(|(p, _)| std::cmp::Reverse(p.matches('/').count()));
    for (i, (path, _)) in paths.iter().enumerate() {
        let mtime = specs.get(i % specs.len().max(1)).map_or(0, |s| s.mtime);
        let time = Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            root.join(path),
            &Timestamps {
                last_access: time,
                last_modification: time,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .expect("utimensat");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(specs in proptest::collection::vec(spec(), 1..25), gzip in any::<bool>()) {
        let source = tempfile::tempdir().expect("temp");
        build(source.path(), &specs);
        let compression = if gzip { Compression::GZIP_DEFAULT } else { Compression::None };
        let mut blob = Vec::new();
        create_layer_compressed(source.path(), DiffKind::Directory, compression, &mut blob, &CreateOptions::default()).expect("create");
        let target = tempfile::tempdir().expect("temp");
        apply_layer(blob.as_slice(), target.path(), &ApplyOptions::default()).expect("apply");
        prop_assert_eq!(tree(target.path()), tree(source.path()));
    }
}
