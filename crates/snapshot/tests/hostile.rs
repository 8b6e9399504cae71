//! Hostile layers: each crafted tar must be refused with a clear error or contained in
//! the target directory, and nothing outside the target may change.

mod common;

use common::{RawTar, tree};
use kiln_snapshot::{ApplyError, ApplyMode, ApplyOptions, apply_layer};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A temp dir with `root/` (the apply target) and `outside/` (sentinel files that must
/// never change).
struct Arena {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

impl Arena {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = dir.path().to_path_buf();
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir(&root).expect("mkdir root");
        std::fs::create_dir_all(outside.join("sub")).expect("mkdir outside");
        std::fs::write(outside.join("secret"), b"host secret").expect("write sentinel");
        std::fs::write(outside.join("sub/file"), b"host file").expect("write sentinel");
        Arena {
            _dir: dir,
            base,
            root,
            outside,
        }
    }

    /// Applies `layer`, asserting that the base dir holds only root/ and outside/ and that
    /// outside/ is byte-for-byte and metadata-for-metadata unchanged.
    fn apply(
        &self,
        layer: &[u8],
        opts: &ApplyOptions,
    ) -> Result<kiln_snapshot::ApplyStats, ApplyError> {
        let before = tree(&self.outside);
        let result = apply_layer(layer, &self.root, opts);
        assert_eq!(
            tree(&self.outside),
            before,
            "a file outside the target changed"
        );
        let mut names: Vec<_> = std::fs::read_dir(&self.base)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["outside", "root"],
            "something was created next to the target"
        );
        result
    }

    fn outside_abs(&self, rel: &str) -> String {
        format!("{}/{rel}", self.outside.display())
    }
}

fn opts() -> ApplyOptions {
    ApplyOptions::default()
}

fn assert_message(error: &ApplyError, needle: &str) {
    let message = error.to_string();
    assert!(
        message.contains(needle),
        "error message {message:?} should mention {needle:?}"
    );
}

#[test]
fn dot_dot_traversal_is_refused() {
    let arena = Arena::new();
    let layer = RawTar::new().file("../outside/secret", b"pwned").finish();
    let error = arena.apply(&layer, &opts()).expect_err("must refuse");
    assert!(matches!(error, ApplyError::PathEscapes { .. }), "{error:?}");
    assert_message(&error, "../outside/secret");

    let layer = RawTar::new().file("a/../../outside/new", b"pwned").finish();
    assert!(matches!(
        arena.apply(&layer, &opts()),
        Err(ApplyError::PathEscapes { .. })
    ));
}

#[test]
fn absolute_paths_are_contained_in_the_root() {
    let arena = Arena::new();
    let target = arena.outside_abs("secret");
    let layer = RawTar::new().file(&target, b"contained").finish();
    arena
        .apply(&layer, &opts())
        .expect("absolute names are taken relative to the root");
    let contained = arena.root.join(target.trim_start_matches('/'));
    assert_eq!(
        std::fs::read(contained).expect("written inside root"),
        b"contained"
    );
}

#[test]
fn symlink_then_write_through_stays_inside() {
    let arena = Arena::new();
    let inside = |arena: &Arena| {
        arena
            .root
            .join(arena.outside.strip_prefix("/").expect("absolute temp dir"))
    };
    // Absolute symlink to the host dir, then a file through it: the symlink resolves as
    // if root were `/`, so the directories are created inside the root (as docker does).
    let layer = RawTar::new()
        .symlink("evil", &arena.outside.display().to_string())
        .file("evil/secret", b"contained")
        .finish();
    arena.apply(&layer, &opts()).expect("contained");
    assert_eq!(
        std::fs::read(inside(&arena).join("secret")).expect("inside root"),
        b"contained"
    );

    // Relative symlink climbing out: resolves to the root itself, so the write lands there.
    let arena = Arena::new();
    let layer = RawTar::new()
        .symlink("up", "../../../../../..")
        .file("up/pwned", b"contained")
        .finish();
    arena.apply(&layer, &opts()).expect("contained");
    assert_eq!(
        std::fs::read(arena.root.join("pwned")).expect("inside root"),
        b"contained"
    );

    // A relative dangling symlink with `..` is followed inside the root too.
    let arena = Arena::new();
    let layer = RawTar::new()
        .dir("a/")
        .symlink("a/link", "../../../b/c")
        .file("a/link/f", b"rel")
        .finish();
    arena.apply(&layer, &opts()).expect("contained");
    assert_eq!(
        std::fs::read(arena.root.join("b/c/f")).expect("inside root"),
        b"rel"
    );

    // Symlink loops and symlinks to files cannot serve as parents.
    let arena = Arena::new();
    let layer = RawTar::new()
        .symlink("loop", "loop/x")
        .file("loop/f", b"x")
        .finish();
    let error = arena.apply(&layer, &opts()).expect_err("loop");
    assert!(
        matches!(
            error,
            ApplyError::DanglingParent { .. } | ApplyError::Io { .. }
        ),
        "{error:?}"
    );
    let layer = RawTar::new()
        .file("plain", b"x")
        .symlink("to-file", "plain")
        .file("to-file/f", b"x")
        .finish();
    assert!(arena.apply(&layer, &opts()).is_err());

    // Symlink to a host file, then a regular file with the same name: the symlink is
    // replaced, its target untouched.
    let arena = Arena::new();
    let layer = RawTar::new()
        .symlink("link", &arena.outside_abs("secret"))
        .file("link", b"replaced")
        .finish();
    arena.apply(&layer, &opts()).expect("replace symlink");
    let meta = std::fs::symlink_metadata(arena.root.join("link")).expect("exists");
    assert!(meta.is_file());

    // A directory replaced by a symlink, then written through: lands inside the root.
    let arena = Arena::new();
    let layer = RawTar::new()
        .dir("d/")
        .symlink("d", &arena.outside.display().to_string())
        .file("d/sub/file", b"contained")
        .finish();
    arena.apply(&layer, &opts()).expect("contained");
    assert_eq!(
        std::fs::read(inside(&arena).join("sub/file")).expect("inside root"),
        b"contained"
    );
}

#[test]
fn hardlinks_to_host_files_are_refused() {
    let arena = Arena::new();
    let layer = RawTar::new()
        .hardlink("stolen", "../outside/secret")
        .finish();
    let error = arena.apply(&layer, &opts()).expect_err("must refuse");
    assert!(matches!(error, ApplyError::BadHardlink { .. }), "{error:?}");
    assert_message(&error, "climbs out");

    let layer = RawTar::new()
        .hardlink("stolen", &arena.outside_abs("secret"))
        .finish();
    let error = arena
        .apply(&layer, &opts())
        .expect_err("absolute target is inside root, where it does not exist");
    assert_message(&error, "does not exist");

    let layer = RawTar::new()
        .symlink("s", &arena.outside.display().to_string())
        .hardlink("stolen", "s/secret")
        .finish();
    let error = arena.apply(&layer, &opts()).expect_err("through a symlink");
    assert_message(&error, "symlink");
    let layer = RawTar::new()
        .symlink("s2", "../outside")
        .hardlink("stolen2", "s2/secret")
        .finish();
    assert!(matches!(
        arena.apply(&layer, &opts()),
        Err(ApplyError::BadHardlink { .. })
    ));
    assert_eq!(
        std::fs::metadata(arena.outside.join("secret"))
            .expect("sentinel")
            .nlink(),
        1
    );
}

#[test]
fn hardlinks_inside_the_layer_work() {
    let arena = Arena::new();
    let layer = RawTar::new()
        .file("bin/busybox", b"binary")
        .hardlink("bin/sh", "bin/busybox")
        .hardlink("bin/ls", "/bin/busybox")
        .finish();
    arena.apply(&layer, &opts()).expect("valid links");
    let first = std::fs::metadata(arena.root.join("bin/busybox")).expect("file");
    assert_eq!(first.nlink(), 3);
    assert_eq!(
        std::fs::metadata(arena.root.join("bin/ls"))
            .expect("link")
            .ino(),
        first.ino()
    );
}

#[test]
fn bad_whiteouts_are_refused() {
    let arena = Arena::new();
    for name in [".wh..", "sub/.wh..", ".wh."] {
        let layer = RawTar::new().file(name, b"").finish();
        let error = arena.apply(&layer, &opts()).expect_err(name);
        assert!(
            matches!(error, ApplyError::BadWhiteout { .. }),
            "{name}: {error:?}"
        );
    }
    let layer = RawTar::new().file(".wh.foo/bar", b"x").finish();
    let error = arena
        .apply(&layer, &opts())
        .expect_err("whiteout as parent");
    assert_message(&error, "whiteout name is used as a directory");
    // Whiteouts cannot reach outside either.
    let layer = RawTar::new().file("../outside/.wh.secret", b"").finish();
    assert!(matches!(
        arena.apply(&layer, &opts()),
        Err(ApplyError::PathEscapes { .. })
    ));
    let layer = RawTar::new()
        .symlink("o", "/")
        .file("o/.wh.root", b"")
        .finish();
    arena.apply(&layer, &opts()).expect("contained whiteout");
}

#[test]
fn whiteouts_and_opaque_dirs_in_flatten_mode() {
    let arena = Arena::new();
    let lower = RawTar::new()
        .file("keep", b"1")
        .file("gone", b"2")
        .dir("d/")
        .file("d/old", b"3")
        .dir("d/sub/")
        .file("d/sub/old2", b"4")
        .finish();
    arena.apply(&lower, &opts()).expect("lower");
    let upper = RawTar::new()
        .file(".wh.gone", b"")
        .dir("d/")
        .file("d/.wh..wh..opq", b"")
        .file("d/new", b"5")
        .finish();
    let stats = arena.apply(&upper, &opts()).expect("upper");
    assert_eq!(stats.whiteouts, 2);
    let names: Vec<String> = tree(&arena.root).into_keys().collect();
    assert_eq!(names, ["d", "d/new", "keep"]);
}

#[test]
fn overlay_mode_writes_overlay_whiteouts() {
    if !common::require_root("overlay_mode_writes_overlay_whiteouts") {
        return;
    }
    let arena = Arena::new();
    let layer = RawTar::new()
        .file(".wh.gone", b"")
        .dir("d/")
        .file("d/.wh..wh..opq", b"")
        .file("d/new", b"5")
        .finish();
    let opts = ApplyOptions {
        mode: ApplyMode::Overlay,
        ..ApplyOptions::default()
    };
    arena.apply(&layer, &opts).expect("overlay apply");
    let whiteout = std::fs::symlink_metadata(arena.root.join("gone")).expect("whiteout node");
    use std::os::unix::fs::FileTypeExt;
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    let mut value = [0u8; 8];
    let len = rustix::fs::getxattr(
        arena.root.join("d").as_path(),
        "trusted.overlay.opaque",
        &mut value[..],
    )
    .expect("opaque xattr");
    assert_eq!(&value[..len], b"y");
}

#[test]
fn huge_sparse_entry_is_refused_and_small_one_stays_sparse() {
    fn sparse_tar(name: &str, real_size: u64, data_offset: u64, data: &[u8]) -> Vec<u8> {
        let mut header = RawTar::header(
            name.as_bytes(),
            tar::EntryType::GNUSparse,
            data.len() as u64,
            0o644,
            None,
        );
        let gnu = header.as_gnu_mut().expect("gnu header");
        gnu.set_real_size(real_size);
        // 11 octal digits when they fit, else GNU base-256 (high bit set, big-endian).
        let octal = |field: &mut [u8; 12], value: u64| {
            if value < 0o77777777777 {
                let text = format!("{value:011o}");
                field[..11].copy_from_slice(text.as_bytes());
                field[11] = 0;
            } else {
                field.fill(0);
                field[4..].copy_from_slice(&value.to_be_bytes());
                field[0] = 0x80;
            }
        };
        octal(&mut gnu.sparse[0].offset, data_offset);
        octal(&mut gnu.sparse[0].numbytes, data.len() as u64);
        header.set_cksum();
        RawTar::new().raw(&header, data).finish()
    }
    let arena = Arena::new();
    let one_tib = 1u64 << 40;
    let error = arena
        .apply(
            &sparse_tar("huge", one_tib, one_tib - 512, &[7u8; 512]),
            &opts(),
        )
        .expect_err("bomb");
    assert!(
        matches!(
            error,
            ApplyError::LimitExceeded {
                field: "max_unpacked_bytes",
                ..
            }
        ),
        "{error:?}"
    );
    assert_message(&error, "max_unpacked_bytes");

    let size = 32u64 << 20;
    arena
        .apply(
            &sparse_tar("sparse", size, size - 512, &[7u8; 512]),
            &opts(),
        )
        .expect("small sparse file");
    let meta = std::fs::metadata(arena.root.join("sparse")).expect("file");
    assert_eq!(meta.len(), size);
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "file should stay sparse, uses {} bytes",
        meta.blocks() * 512
    );
    let content = std::fs::read(arena.root.join("sparse")).expect("read");
    assert!(content[..(size - 512) as usize].iter().all(|&b| b == 0));
    assert!(content[(size - 512) as usize..].iter().all(|&b| b == 7));
}

#[test]
fn compression_bomb_and_entry_limits() {
    let arena = Arena::new();
    let zeros = vec![0u8; 64 << 20];
    let layer = RawTar::new().file("bomb", &zeros).finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&layer).expect("compress");
    let bomb = gz.finish().expect("gzip");
    assert!(bomb.len() < 1 << 20);
    let limited = ApplyOptions {
        max_stream_bytes: 16 << 20,
        ..ApplyOptions::default()
    };
    let error = arena.apply(&bomb, &limited).expect_err("bomb");
    assert!(
        matches!(
            error,
            ApplyError::LimitExceeded {
                field: "max_stream_bytes",
                ..
            }
        ),
        "{error:?}"
    );

    let mut many = RawTar::new();
    for i in 0..200 {
        many = many.file(&format!("f{i}"), b"x");
    }
    let limited = ApplyOptions {
        max_entries: 100,
        ..ApplyOptions::default()
    };
    let error = arena
        .apply(&many.finish(), &limited)
        .expect_err("too many entries");
    assert!(
        matches!(
            error,
            ApplyError::LimitExceeded {
                field: "max_entries",
                ..
            }
        ),
        "{error:?}"
    );

    let long = format!("{}/f", "d".repeat(90));
    let limited = ApplyOptions {
        max_path_len: 64,
        ..ApplyOptions::default()
    };
    let error = arena
        .apply(&RawTar::new().file(&long, b"x").finish(), &limited)
        .expect_err("long path");
    assert!(
        matches!(
            error,
            ApplyError::LimitExceeded {
                field: "max_path_len",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn pax_header_bomb_is_refused_before_it_fills_memory() {
    let arena = Arena::new();
    let record_value = "x".repeat(1000);
    let record = format!("1014 comment={record_value}\n");
    assert_eq!(record.len(), 1014);
    let records = record.repeat(20_000); // ~20 MB of PAX records for one entry
    let header = RawTar::header(
        b"PaxHeaders/x",
        tar::EntryType::XHeader,
        records.len() as u64,
        0o644,
        None,
    );
    let layer = RawTar::new()
        .raw(&header, records.as_bytes())
        .file("x", b"x")
        .finish();
    let error = arena.apply(&layer, &opts()).expect_err("metadata bomb");
    assert!(
        matches!(
            error,
            ApplyError::LimitExceeded {
                field: "max_entry_metadata_bytes",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn devices_fifos_and_setuid() {
    let arena = Arena::new();
    let mut char_dev = RawTar::header(b"dev/null", tar::EntryType::Char, 0, 0o666, None);
    char_dev.set_device_major(1).expect("major");
    char_dev.set_device_minor(3).expect("minor");
    char_dev.set_cksum();
    let fifo = RawTar::header(b"run/fifo", tar::EntryType::Fifo, 0, 0o600, None);
    let mut setuid = RawTar::header(b"bin/su", tar::EntryType::Regular, 4, 0o4755, None);
    setuid.set_uid(1000);
    setuid.set_gid(1000);
    setuid.set_cksum();
    let mut setgid_dir = RawTar::header(b"shared/", tar::EntryType::Directory, 0, 0o2775, None);
    setgid_dir.set_gid(50);
    setgid_dir.set_cksum();
    let layer = RawTar::new()
        .raw(&char_dev, b"")
        .raw(&fifo, b"")
        .raw(&setuid, b"suid")
        .raw(&setgid_dir, b"")
        .dir("tmp/")
        .finish();
    let stats = arena.apply(&layer, &opts()).expect("apply");
    let nodes = tree(&arena.root);
    assert_eq!(nodes["run/fifo"].kind, "fifo");
    assert_eq!(nodes["run/fifo"].mode, 0o600);
    if common::is_root() {
        assert_eq!(nodes["dev/null"].kind, "char");
        assert_eq!(nodes["dev/null"].rdev, rustix::fs::makedev(1, 3));
        assert_eq!(nodes["bin/su"].mode, 0o4755, "setuid must survive chown");
        assert_eq!((nodes["bin/su"].uid, nodes["bin/su"].gid), (1000, 1000));
        assert_eq!(nodes["shared"].mode, 0o2775);
        assert_eq!(nodes["shared"].gid, 50);
    } else {
        assert_eq!(stats.skipped_devices, 1);
        assert!(!nodes.contains_key("dev/null"));
    }
    // Directory mtimes are set after their contents were written.
    assert_eq!(nodes["tmp"].mtime, 1_600_000_000);
}

#[test]
fn garbage_is_a_clear_tar_error() {
    let arena = Arena::new();
    let error = arena
        .apply(&[0x1f, 0x8b, 8, 0, 1, 2, 3], &opts())
        .expect_err("broken gzip");
    assert!(matches!(error, ApplyError::Tar { .. }), "{error:?}");
    let error = arena.apply(&[b'x'; 700], &opts()).expect_err("not a tar");
    assert!(matches!(error, ApplyError::Tar { .. }), "{error:?}");
    assert_message(&error, "not a readable tar");
    let _ = Path::new("");
}

mod mutated {
    //! Randomly corrupted layers (bit flips, truncation) must fail cleanly or apply inside
    //! the root: no panic, nothing outside touched. Complements the cargo-fuzz target in
    //! crates/snapshot/fuzz, which CI cannot run on stable.

    use super::*;
    use proptest::prelude::*;

    fn base_layer() -> Vec<u8> {
        RawTar::new()
            .dir("etc/")
            .file("etc/hostname", b"kiln\n")
            .symlink("etc/link", "hostname")
            .hardlink("etc/hard", "etc/hostname")
            .symlink("up", "../../..")
            .file("up/escape", b"contained")
            .dir("d/")
            .file("d/.wh..wh..opq", b"")
            .file(".wh.gone", b"")
            .file("d/data", &[7u8; 3000])
            .finish()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn corrupted_layers_never_escape(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
            gzip in any::<bool>(),
        ) {
            let mut layer = base_layer();
            for (index, value) in flips {
                let at = index.index(layer.len());
                layer[at] = value;
            }
            if truncate {
                let keep = cut.index(layer.len());
                layer.truncate(keep);
            }
            if gzip {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(&layer).expect("compress");
                layer = encoder.finish().expect("gzip");
            }
            let arena = Arena::new();
            let opts = ApplyOptions { max_stream_bytes: 1 << 20, ..ApplyOptions::default() };
            // Either outcome is fine; Arena::apply asserts nothing outside changed.
            let _ = arena.apply(&layer, &opts);
        }
    }
}

#[test]
fn entries_after_a_whiteout_of_their_directory_recreate_it() {
    // Guards the parent-directory fd cache: a whiteout between two entries of the same
    // directory removes it, so the second entry must not land in the removed directory.
    let arena = Arena::new();
    let layer = RawTar::new()
        .file("a/b/f1", b"1")
        .file("a/.wh.b", b"")
        .file("a/b/f2", b"2")
        .finish();
    arena.apply(&layer, &opts()).expect("apply");
    let names: Vec<String> = tree(&arena.root).into_keys().collect();
    assert_eq!(names, ["a", "a/b", "a/b/f2"]);
    // And a directory replaced by a symlink between entries of it is resolved afresh.
    let arena = Arena::new();
    let layer = RawTar::new()
        .file("x/f1", b"1")
        .symlink("x", "y")
        .file("x/f2", b"2")
        .finish();
    arena.apply(&layer, &opts()).expect("apply");
    assert_eq!(
        std::fs::read(arena.root.join("y/f2")).expect("through the new symlink"),
        b"2"
    );
    assert!(!arena.root.join("y/f1").exists());
}
