//! Context scanning: ignore rules applied during the walk, symlinks kept as
//! entries, digests, and the stat cache's no-read guarantee.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use kiln_build::context::{Context, ContextError, EntryKind, ScanOptions};
use kiln_build::dockerignore::{PatternMatcher, locate_ignore_file, parse_ignore_file};

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

fn paths(ctx: &Context) -> Vec<String> {
    ctx.entries()
        .iter()
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .collect()
}

fn matcher(text: &str) -> PatternMatcher {
    PatternMatcher::from_lines(&parse_ignore_file(text.as_bytes()), ".dockerignore")
        .expect("patterns compile")
}

fn scan(root: &Path, ignore: Option<&PatternMatcher>) -> Context {
    Context::scan(
        root,
        &ScanOptions {
            ignore,
            ..Default::default()
        },
    )
    .expect("scan")
}

#[test]
fn walk_order_is_deterministic_and_sorted() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "b.txt", "b");
    write(dir.path(), "a/z", "z");
    write(dir.path(), "a.txt", "a");
    write(dir.path(), "a/b/c", "c");
    let ctx = scan(dir.path(), None);
    assert_eq!(
        paths(&ctx),
        vec!["a", "a/b", "a/b/c", "a/z", "a.txt", "b.txt"]
    );
    let again = scan(dir.path(), None);
    assert_eq!(ctx.root_digest(), again.root_digest());
}

#[test]
fn ignored_subtrees_and_exceptions_match_buildkit() {
    // Same layout and patterns as a BuildKit run checked by hand:
    // Docker 20.10 gave /ctx/a, /ctx/sub, /ctx/sub/keep, /ctx/sub/keep/x.
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "Dockerfile", "FROM busybox:local\n");
    write(
        dir.path(),
        ".dockerignore",
        "Dockerfile\n.dockerignore\nsub\n!sub/keep\n",
    );
    write(dir.path(), "a", "");
    write(dir.path(), "sub/keep/x", "");
    write(dir.path(), "sub/drop/y", "");
    write(dir.path(), "sub/z", "");
    let ignore = locate_ignore_file(dir.path(), Some(&dir.path().join("Dockerfile")))
        .expect("read")
        .expect("found");
    let m = PatternMatcher::from_lines(&ignore.lines, ".dockerignore").expect("compile");
    let ctx = scan(dir.path(), Some(&m));
    assert_eq!(paths(&ctx), vec!["a", "sub", "sub/keep", "sub/keep/x"]);
    // sub/drop is ignored with no exception inside: never read.
    assert_eq!(ctx.stats().dirs_skipped, 1);
}

#[test]
fn ignored_dir_without_exceptions_is_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "keep", "k");
    write(dir.path(), "node_modules/x/y.js", "y");
    // An unreadable directory inside the ignored tree would fail the walk
    // if it were visited (as root, remove it instead of chmod).
    let m = matcher("node_modules\n");
    let ctx = scan(dir.path(), Some(&m));
    assert_eq!(paths(&ctx), vec!["keep"]);
    assert_eq!(ctx.stats().dirs_skipped, 1);
}

#[test]
fn wildcard_exception_walks_ignored_dirs_and_keeps_parents() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "src/a/main.go", "package main");
    write(dir.path(), "src/a/notes.txt", "n");
    write(dir.path(), "docs/x.txt", "x");
    let m = matcher("*\n!**/*.go\n");
    let ctx = scan(dir.path(), Some(&m));
    assert_eq!(paths(&ctx), vec!["src", "src/a", "src/a/main.go"]);
}

#[test]
fn symlinks_are_entries_never_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    write(outside.path(), "secret/passwd", "root");
    write(dir.path(), "real", "r");
    symlink(outside.path().join("secret"), dir.path().join("escape")).expect("symlink");
    symlink("real", dir.path().join("rel-link")).expect("symlink");
    symlink("missing", dir.path().join("dangling")).expect("symlink");
    let ctx = scan(dir.path(), None);
    assert_eq!(paths(&ctx), vec!["dangling", "escape", "real", "rel-link"]);
    let escape = ctx.get(b"escape").expect("entry");
    assert_eq!(escape.kind, EntryKind::Symlink);
    assert_eq!(
        escape.link_target.as_deref(),
        Some(outside.path().join("secret").as_os_str().as_bytes())
    );
    assert!(escape.content_hash.is_none());
    // Retargeting a link changes its digest.
    let before = ctx.get(b"rel-link").expect("entry").digest;
    std::fs::remove_file(dir.path().join("rel-link")).expect("rm");
    symlink("dangling", dir.path().join("rel-link")).expect("symlink");
    let after = scan(dir.path(), None);
    assert_ne!(after.get(b"rel-link").expect("entry").digest, before);
}

#[test]
fn digests_track_content_mode_and_names_not_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "src/main.go", "package main");
    write(dir.path(), "src/util.go", "package util");
    write(dir.path(), "src/README", "r");
    let base = scan(dir.path(), None);
    let sel = base.digest_of_selection(b"src/*.go").expect("select");
    let selected: Vec<&[u8]> = base
        .select(b"./src/*.go")
        .expect("select")
        .iter()
        .map(|e| e.path.as_slice())
        .collect();
    assert_eq!(selected, vec![&b"src/main.go"[..], b"src/util.go"]);

    // Changing a file outside the selection keeps the selection digest.
    write(dir.path(), "src/README", "changed");
    let other = scan(dir.path(), None);
    assert_eq!(other.digest_of_selection(b"src/*.go").expect("select"), sel);
    assert_ne!(other.digest_of_path(b"src"), base.digest_of_path(b"src"));

    // Timestamps alone do not matter.
    let f = std::fs::File::options()
        .write(true)
        .open(dir.path().join("src/main.go"))
        .expect("open");
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1000))
        .expect("set mtime");
    let touched = scan(dir.path(), None);
    assert_eq!(
        touched.digest_of_selection(b"src/*.go").expect("select"),
        sel
    );

    // Mode changes do.
    std::fs::set_permissions(
        dir.path().join("src/main.go"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let chmod = scan(dir.path(), None);
    assert_ne!(chmod.digest_of_selection(b"src/*.go").expect("select"), sel);

    // Renames do.
    std::fs::rename(
        dir.path().join("src/util.go"),
        dir.path().join("src/util2.go"),
    )
    .expect("mv");
    let renamed = scan(dir.path(), None);
    assert_ne!(renamed.digest_of_path(b"src"), chmod.digest_of_path(b"src"));

    assert!(matches!(
        base.select(b"src/[").expect_err("bad pattern"),
        ContextError::BadSourcePattern { .. }
    ));
    assert_eq!(base.digest_of_path(b"."), Some(base.root_digest()));
}

#[test]
fn odd_names_and_deep_trees_do_not_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let odd = std::ffi::OsStr::from_bytes(b"bad\xffname\nwith newline");
    std::fs::write(dir.path().join(odd), "x").expect("write odd");
    let mut deep = dir.path().to_path_buf();
    for _ in 0..300 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).expect("deep");
    std::fs::write(deep.join("leaf"), "leaf").expect("leaf");
    let m = matcher("**/nothing\n!x\n");
    let ctx = Context::scan(
        dir.path(),
        &ScanOptions {
            ignore: Some(&m),
            ..Default::default()
        },
    )
    .expect("scan");
    assert!(ctx.get(b"bad\xffname\nwith newline").is_some());
    assert_eq!(ctx.stats().files, 2);
    assert_eq!(ctx.entries().len(), 302);
}

#[test]
fn missing_or_file_context_gives_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err =
        Context::scan(&dir.path().join("nope"), &ScanOptions::default()).expect_err("missing");
    assert!(err.to_string().contains("nope"), "{err}");
    write(dir.path(), "file", "x");
    let err = Context::scan(&dir.path().join("file"), &ScanOptions::default()).expect_err("file");
    assert!(matches!(err, ContextError::NotADirectory { .. }), "{err}");
}

/// Waits until freshly written files are no longer "racy" for the cache.
fn settle() {
    std::thread::sleep(Duration::from_millis(80));
}

#[test]
fn stat_cache_skips_reading_unchanged_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("cache");
    for i in 0..50 {
        write(
            dir.path(),
            &format!("d{}/f{i}", i % 5),
            &format!("content {i}"),
        );
    }
    settle();
    let opts = ScanOptions {
        ignore: None,
        cache_dir: Some(cache.path().to_path_buf()),
        threads: 2,
    };
    let cold = Context::scan(dir.path(), &opts).expect("cold");
    assert_eq!(cold.stats().files_hashed, 50);
    assert!(cold.stats().cache_written);

    let warm = Context::scan(dir.path(), &opts).expect("warm");
    assert_eq!(warm.stats().files_hashed, 0, "no file may be read");
    assert_eq!(warm.stats().bytes_hashed, 0);
    assert_eq!(warm.stats().cache_hits, 50);
    assert!(!warm.stats().cache_written, "nothing changed: no rewrite");
    assert_eq!(warm.root_digest(), cold.root_digest());

    // One file changed: only it is read again.
    write(dir.path(), "d3/f13", "new content");
    settle();
    let one = Context::scan(dir.path(), &opts).expect("one changed");
    assert_eq!(one.stats().files_hashed, 1);
    assert_ne!(one.root_digest(), cold.root_digest());
}

#[test]
fn stat_cache_notices_same_size_same_mtime_rewrites_via_ctime() {
    // Contents replaced with the same size and the mtime put back: the
    // ctime still moves, so kiln rehashes (mtime-only caches would not).
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("cache");
    write(dir.path(), "f", "aaaa");
    let path = dir.path().join("f");
    let mtime = std::fs::metadata(&path)
        .expect("stat")
        .modified()
        .expect("mtime");
    settle();
    let opts = ScanOptions {
        ignore: None,
        cache_dir: Some(cache.path().to_path_buf()),
        threads: 1,
    };
    let first = Context::scan(dir.path(), &opts).expect("scan");
    let cached = Context::scan(dir.path(), &opts).expect("scan");
    assert_eq!(cached.stats().files_hashed, 0);

    std::fs::write(&path, "bbbb").expect("rewrite");
    let f = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_modified(mtime).expect("restore mtime");
    drop(f);
    assert_eq!(
        std::fs::metadata(&path)
            .expect("stat")
            .modified()
            .expect("mtime"),
        mtime
    );
    settle();
    let after = Context::scan(dir.path(), &opts).expect("scan");
    assert_eq!(after.stats().files_hashed, 1);
    assert_ne!(
        after.get(b"f").expect("f").content_hash,
        first.get(b"f").expect("f").content_hash
    );
    // Touching (new mtime) without changing contents rehashes but the
    // digest, which ignores times, stays.
    let f = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_modified(std::time::SystemTime::now()).expect("touch");
    drop(f);
    settle();
    let touched = Context::scan(dir.path(), &opts).expect("scan");
    assert_eq!(touched.stats().files_hashed, 1);
    assert_eq!(touched.root_digest(), after.root_digest());
}

#[test]
fn damaged_stat_cache_is_rebuilt_not_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("cache");
    write(dir.path(), "f", "x");
    settle();
    let opts = ScanOptions {
        ignore: None,
        cache_dir: Some(cache.path().to_path_buf()),
        threads: 1,
    };
    Context::scan(dir.path(), &opts).expect("scan");
    for entry in std::fs::read_dir(cache.path()).expect("ls") {
        let path = entry.expect("entry").path();
        std::fs::write(&path, b"garbage").expect("damage");
    }
    let again = Context::scan(dir.path(), &opts).expect("scan");
    assert!(again.stats().cache_warning.is_some());
    assert_eq!(again.stats().files_hashed, 1);
}

#[test]
fn parallel_walk_equals_sequential_walk() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..40 {
        write(
            dir.path(),
            &format!("t{}/s{}/f{i}", i % 7, i % 3),
            &format!("{i}"),
        );
        write(dir.path(), &format!("top{i}.txt"), "x");
    }
    write(dir.path(), "t1/keep.go", "go");
    let m = matcher("t*\n!t1/*.go\n!t2/s1\n");
    let scan_with = |threads| {
        Context::scan(
            dir.path(),
            &ScanOptions {
                ignore: Some(&m),
                cache_dir: None,
                threads,
            },
        )
        .expect("scan")
    };
    let one = scan_with(1);
    let four = scan_with(4);
    assert_eq!(one.entries(), four.entries());
    assert_eq!(one.root_digest(), four.root_digest());
    let kept: Vec<String> = paths(&one)
        .into_iter()
        .filter(|p| p.starts_with("t1") || p.starts_with("t2"))
        .collect();
    assert_eq!(kept[0], "t1");
    assert!(kept.contains(&"t1/keep.go".to_string()));
    assert!(kept.contains(&"t2/s1".to_string()));
    assert!(!kept.iter().any(|p| p.starts_with("t3")));
}

#[test]
fn scan_build_context_uses_the_dockerfile_specific_ignore_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), ".dockerignore", "a\n");
    write(dir.path(), "app.Dockerfile.dockerignore", "b\n");
    write(dir.path(), "app.Dockerfile", "FROM scratch\n");
    write(dir.path(), "a", "");
    write(dir.path(), "b", "");
    let general = Context::scan_build_context(dir.path(), None, None).expect("scan");
    assert!(general.get(b"a").is_none() && general.get(b"b").is_some());
    let specific =
        Context::scan_build_context(dir.path(), Some(&dir.path().join("app.Dockerfile")), None)
            .expect("scan");
    assert!(specific.get(b"a").is_some() && specific.get(b"b").is_none());
    write(dir.path(), ".dockerignore", "ok\n[\n");
    let err = Context::scan_build_context(dir.path(), None, None).expect_err("bad pattern");
    assert!(err.to_string().contains(".dockerignore:2"), "{err}");
}
