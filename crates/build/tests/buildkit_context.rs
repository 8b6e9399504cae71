//! Differential test against the real thing: the same context and
//! `.dockerignore` sent through Docker's BuildKit (`FROM scratch`, `COPY . /`,
//! exported with `-o type=local`) and scanned by kiln must give the same set
//! of paths, kinds and symlink targets.
//!
//! Needs `/usr/bin/docker` with BuildKit (../shared/tools/docker-oracle.sh);
//! skipped without it, or fails when `CI=true`.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use kiln_build::context::{Context, EntryKind, ScanOptions};
use kiln_build::dockerignore::{PatternMatcher, locate_ignore_file};

/// The engine's version, or None (after skipping or failing) without one.
fn docker_version() -> Option<String> {
    let out = Command::new("/usr/bin/docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    if let Ok(out) = out
        && out.status.success()
    {
        return Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let msg = "buildkit_context: needs a running Docker engine at /usr/bin/docker \
               (run ../shared/tools/docker-oracle.sh)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}: missing under CI=true");
    }
    eprintln!("skipping: {msg}");
    None
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

fn make_context(root: &Path) {
    for rel in [
        "a/b/c.txt",
        "a/b.go",
        "a.md",
        "README.md",
        "docs/README.md",
        "keep.tmp",
        "x.tmp",
        "deep/er/x.tmp",
        "node_modules/m/index.js",
        "sub/keep/x",
        "sub/drop/y",
        "sub/z",
        "dir/x/y",
        "dir/x/z",
        "dir/w",
        "src/main.go",
        "src/util/u.go",
        "src/notes.txt",
        "ab",
        "ba",
        "we*rd",
        "sp ace/f",
        "a+b.log",
    ] {
        write(root, rel, rel);
    }
    std::fs::create_dir_all(root.join("empty")).expect("mkdir");
    // Special files: BuildKit drops FIFOs and sends sockets and devices as
    // empty regular files.
    let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).expect("cstr");
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
    let dev = std::ffi::CString::new(root.join("null-dev").as_os_str().as_bytes()).expect("cstr");
    // SAFETY: as above; creating a character device needs root, which the
    // test environment is (skip the node otherwise).
    let _ = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o640, libc::makedev(1, 3)) };
    std::os::unix::net::UnixListener::bind(root.join("sock")).expect("bind socket");
    symlink("a", root.join("link")).expect("symlink");
    symlink("/etc/passwd", root.join("abs-link")).expect("symlink");
}

/// (kind, link target) per path, from a directory tree.
type Tree = BTreeMap<String, (char, Option<String>)>;

fn tree_of_dir(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).expect("readdir") {
            let item = item.expect("entry");
            let path = item.path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let (kind, target) = if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&path).expect("readlink");
                ('l', Some(t.to_string_lossy().into_owned()))
            } else if meta.is_dir() {
                stack.push(path.clone());
                ('d', None)
            } else {
                ('f', None)
            };
            out.insert(rel, (kind, target));
        }
    }
    out
}

fn tree_of_scan(ctx: &Context) -> Tree {
    ctx.entries()
        .iter()
        .map(|e| {
            let kind = match e.kind {
                EntryKind::Dir => 'd',
                EntryKind::Symlink => 'l',
                _ => 'f',
            };
            let target = e
                .link_target
                .as_ref()
                .map(|t| String::from_utf8_lossy(t).into_owned());
            (
                String::from_utf8_lossy(&e.path).into_owned(),
                (kind, target),
            )
        })
        .collect()
}

struct Scenario {
    name: &'static str,
    ignore_file: &'static str,
    /// Dockerfile path relative to the context (None: outside it).
    dockerfile_in_context: Option<&'static str>,
    patterns: &'static str,
    /// Paths where Docker 20.10's BuildKit (v0.8: the older docker/docker
    /// fileutils matcher and fsutil walker) differs from current
    /// moby/patternmatcher + fsutil, which kiln follows. Empty for engines
    /// newer than 20.10.
    differs_on_docker_20_10: &'static [&'static str],
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "exception-in-excluded-dir",
        ignore_file: ".dockerignore",
        dockerfile_in_context: None,
        patterns: "sub\n!sub/keep\n.dockerignore\n",
        differs_on_docker_20_10: &[],
    },
    Scenario {
        name: "everything-but-go",
        ignore_file: ".dockerignore",
        dockerfile_in_context: None,
        patterns: "*\n!**/*.go\n",
        // Old fsutil skipped excluded directories unless an exception was a
        // literal path under them; current fsutil walks them when an
        // exception has wildcards, so the .go files come back.
        differs_on_docker_20_10: &[
            "a",
            "a/b.go",
            "src",
            "src/main.go",
            "src/util",
            "src/util/u.go",
        ],
    },
    Scenario {
        name: "double-star-and-exception",
        ignore_file: ".dockerignore",
        dockerfile_in_context: None,
        patterns: "**/*.tmp\n!keep.tmp\n# comment\n\n  node_modules  \n",
        differs_on_docker_20_10: &[],
    },
    Scenario {
        name: "markdown-with-readme-exception",
        ignore_file: ".dockerignore",
        dockerfile_in_context: None,
        patterns: "*.md\n!README.md\n**/README.md\n!docs/README.md\n",
        differs_on_docker_20_10: &[],
    },
    Scenario {
        name: "classes-question-escape-leading-slash",
        ignore_file: ".dockerignore",
        dockerfile_in_context: None,
        patterns: "/a/b\n[ab]?\nwe\\*rd\n./sp ace/\na+b.*\n",
        // The old matcher left `+` unescaped in its regex (`a+` = one or
        // more a), so `a+b.*` did not match the file `a+b.log`.
        differs_on_docker_20_10: &["a+b.log"],
    },
    Scenario {
        name: "dir-star-with-deep-exception",
        ignore_file: ".dockerignore",
        dockerfile_in_context: None,
        patterns: "dir/*\n!dir/x/y\nlink\n",
        differs_on_docker_20_10: &[],
    },
    Scenario {
        name: "dockerfile-and-ignore-file-ignored",
        ignore_file: ".dockerignore",
        dockerfile_in_context: Some("Dockerfile"),
        patterns: "Dockerfile\n.dockerignore\nsrc/*.txt\n",
        differs_on_docker_20_10: &[],
    },
    Scenario {
        name: "dockerfile-specific-ignore-file",
        ignore_file: "build.Dockerfile.dockerignore",
        dockerfile_in_context: Some("build.Dockerfile"),
        patterns: "a\nsrc\n!src/util\n",
        differs_on_docker_20_10: &[],
    },
    Scenario {
        name: "double-star-in-the-middle",
        ignore_file: ".dockerignore",
        dockerfile_in_context: None,
        patterns: "a/**/c.txt\nsrc/**\n!src/util/**\n",
        differs_on_docker_20_10: &[],
    },
    Scenario {
        name: "star-slash-and-dotfiles",
        ignore_file: ".dockerignore",
        dockerfile_in_context: None,
        patterns: "*/*\n.*\n!dir/x\n",
        differs_on_docker_20_10: &[],
    },
    Scenario {
        name: "re-exclude-after-exception",
        ignore_file: ".dockerignore",
        dockerfile_in_context: None,
        patterns: "src\n!src\nsrc/util\n!src/util/u.go\n",
        differs_on_docker_20_10: &[],
    },
    Scenario {
        name: "literal-exception-two-levels-down",
        ignore_file: ".dockerignore",
        dockerfile_in_context: None,
        patterns: "a\n!a/b/c.txt\ndeep\n!deep/er\n",
        differs_on_docker_20_10: &[],
    },
    Scenario {
        name: "ignore-everything",
        ignore_file: ".dockerignore",
        dockerfile_in_context: None,
        patterns: "**\n",
        differs_on_docker_20_10: &[],
    },
    Scenario {
        name: "crlf-bom-and-spaces",
        ignore_file: ".dockerignore",
        dockerfile_in_context: None,
        patterns: "\u{feff}x.tmp\r\n  ab  \r\n! ab\r\n#ba\r\nba\r\n",
        differs_on_docker_20_10: &[],
    },
];

#[test]
fn context_filtering_matches_buildkit() {
    let Some(version) = docker_version() else {
        return;
    };
    let old_engine = version.starts_with("20.10.");
    let mut failures = Vec::new();
    for scenario in SCENARIOS {
        let work = tempfile::tempdir().expect("tempdir");
        let ctx = work.path().join("context");
        make_context(&ctx);
        write(&ctx, scenario.ignore_file, scenario.patterns);
        // A general .dockerignore that the Dockerfile-specific one overrides.
        if scenario.ignore_file != ".dockerignore" {
            write(&ctx, ".dockerignore", "ab\nba\n");
        }
        let dockerfile = match scenario.dockerfile_in_context {
            Some(rel) => ctx.join(rel),
            None => work.path().join("Dockerfile"),
        };
        std::fs::write(&dockerfile, "FROM scratch\nCOPY . /\n").expect("dockerfile");
        let out = work.path().join("out");
        let status = Command::new("/usr/bin/docker")
            .env("DOCKER_BUILDKIT", "1")
            .arg("build")
            .arg("-q")
            .arg("-f")
            .arg(&dockerfile)
            .arg("-o")
            .arg(format!("type=local,dest={}", out.display()))
            .arg(&ctx)
            .status()
            .expect("run docker build");
        assert!(status.success(), "{}: docker build failed", scenario.name);
        let expected = tree_of_dir(&out);

        let ignore = locate_ignore_file(&ctx, Some(&dockerfile))
            .expect("read ignore file")
            .expect("ignore file exists");
        let name = ignore.path.display().to_string();
        let matcher = PatternMatcher::from_lines(&ignore.lines, &name).expect("patterns");
        let scanned = Context::scan(
            &ctx,
            &ScanOptions {
                ignore: Some(&matcher),
                ..Default::default()
            },
        )
        .expect("scan");
        let got = tree_of_scan(&scanned);
        let only_kiln: Vec<&String> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
        let only_bk: Vec<&String> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
        let mut differing: Vec<&str> = only_kiln
            .iter()
            .chain(&only_bk)
            .map(|s| s.as_str())
            .collect();
        differing.sort_unstable();
        let mut allowed: Vec<&str> = if old_engine {
            scenario.differs_on_docker_20_10.to_vec()
        } else {
            Vec::new()
        };
        allowed.sort_unstable();
        let same_shared = got
            .iter()
            .filter(|(k, _)| expected.contains_key(*k))
            .all(|(k, v)| expected.get(k) == Some(v));
        if differing != allowed || !same_shared {
            failures.push(format!(
                "{} (docker {version}): only kiln {only_kiln:?}, only BuildKit {only_bk:?}, kinds/targets equal: {same_shared}",
                scenario.name
            ));
        }
        // Keep the name bytes check honest for odd names too.
        assert!(ctx.join("we*rd").as_os_str().as_bytes().contains(&b'*'));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
