//! Differential tests of COPY and ADD against the real Docker engine with
//! BuildKit (the helpers of `build_differential`, in `diff_common`): every
//! case is a Dockerfile plus a context, built by `DOCKER_BUILDKIT=1 docker
//! build` from `busybox:local` and by `kiln build` from the same busybox
//! imported into a throwaway store; both images are saved, flattened and
//! compared on paths, types, modes, owners, link targets, contents and
//! config. Cases where BuildKit fails must fail in kiln too.
//!
//! ADD of URLs fetches from a small HTTP server this test runs on 127.0.0.1
//! (Docker 20.10's BuildKit runs inside dockerd, in the host's network
//! namespace, so both builders fetch the same URL).
//!
//! The reference engine here is Docker 20.10, whose built-in Dockerfile
//! frontend predates `COPY --link`, `--parents`, `--exclude`, `ADD
//! --checksum` and heredocs: those are checked at the end of this file
//! against the Dockerfile reference's documented results.
//!
//! Cost: about 30 docker builds and as many kiln builds of busybox-sized
//! images, roughly a minute on the 2-core CI machine.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use diff_common::{
    config_fields, describe_differences, docker_build, docker_present, flatten_archive,
    import_busybox, kiln_build, output_text, set_mode, tools_present,
};
use image_common::kiln;
use serde_json::Value;

mod diff_common;
mod image_common;

/// A context entry.
enum Item {
    File(&'static str, u32),
    Bytes(Vec<u8>, u32),
    Dir(u32),
    Link(&'static str),
    /// A hard link to an earlier entry of the context.
    HardLink(&'static str),
    /// A tar archive (members as [`Member`]), piped through this compressor
    /// command (`gzip`, `bzip2`, `xz`, `zstd`) unless it is empty.
    Archive(Vec<Member>, &'static str),
}

/// A tar member: owned 3:4 like a tarball made on another machine.
enum Member {
    File(&'static str, &'static str, u32),
    Dir(&'static str, u32),
    Link(&'static str, &'static str),
    HardLink(&'static str, &'static str),
}

/// What the two builders must agree on.
#[derive(PartialEq)]
enum Outcome {
    /// Both succeed with the same image.
    Same,
    /// Both fail; kiln's error contains this text.
    BothFail(&'static str),
}

struct Case {
    name: &'static str,
    /// `{URL}` is replaced by the test HTTP server's base URL.
    dockerfile: &'static str,
    files: Vec<(&'static str, Item)>,
    outcome: Outcome,
    /// Paths whose modification times must match too (ADD of URLs).
    mtimes: Vec<&'static str>,
}

fn case(name: &'static str, dockerfile: &'static str, files: Vec<(&'static str, Item)>) -> Case {
    Case {
        name,
        dockerfile,
        files,
        outcome: Outcome::Same,
        mtimes: Vec::new(),
    }
}

fn failing(
    name: &'static str,
    dockerfile: &'static str,
    files: Vec<(&'static str, Item)>,
    kiln_says: &'static str,
) -> Case {
    Case {
        outcome: Outcome::BothFail(kiln_says),
        ..case(name, dockerfile, files)
    }
}

fn tar_bytes(members: &[Member]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for member in members {
        let mut header = tar::Header::new_gnu();
        header.set_uid(3);
        header.set_gid(4);
        header.set_mtime(1_600_000_000);
        match member {
            Member::File(path, content, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(content.len() as u64);
                builder
                    .append_data(&mut header, path, content.as_bytes())
                    .unwrap();
            }
            Member::Dir(path, mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .unwrap();
            }
            Member::Link(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
            Member::HardLink(path, target) => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_mode(0o644);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

fn compress_with(command: &str, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(command)
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {command}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{command} failed");
    out.stdout
}

fn write_context(dir: &Path, dockerfile: &str, files: &[(&'static str, Item)]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    for (path, item) in files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        match item {
            Item::File(content, mode) => {
                fs::write(&full, content).unwrap();
                set_mode(&full, *mode);
            }
            Item::Bytes(content, mode) => {
                fs::write(&full, content).unwrap();
                set_mode(&full, *mode);
            }
            Item::Dir(mode) => {
                fs::create_dir_all(&full).unwrap();
                set_mode(&full, *mode);
            }
            Item::Link(target) => std::os::unix::fs::symlink(target, &full).unwrap(),
            Item::HardLink(target) => fs::hard_link(dir.join(target), &full).unwrap(),
            Item::Archive(members, compressor) => {
                let tar = tar_bytes(members);
                let bytes = if compressor.is_empty() {
                    tar
                } else {
                    compress_with(compressor, &tar)
                };
                fs::write(&full, bytes).unwrap();
            }
        }
    }
    // Directories' modes last: writing into a 0500 directory needs its w bit.
    for (path, item) in files {
        if let Item::Dir(mode) = item {
            set_mode(&dir.join(path), *mode);
        }
    }
}

/// The files the test HTTP server serves: path → (body, Last-Modified).
fn served_files() -> BTreeMap<&'static str, (Vec<u8>, &'static str)> {
    let mut files = BTreeMap::new();
    files.insert(
        "/files/hello.txt",
        (
            b"hello from http\n".to_vec(),
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ),
    );
    files.insert(
        "/dl/archive.tar.gz",
        (
            compress_with(
                "gzip",
                &tar_bytes(&[Member::File("inside.txt", "x\n", 0o644)]),
            ),
            "Tue, 01 Mar 2022 10:00:00 GMT",
        ),
    );
    files.insert("/nolastmod/data.bin", (vec![1, 2, 3, 4, 5], ""));
    files
}

/// A strong ETag from the content (FNV-1a), quoted.
fn etag_of(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

/// The `/disk/` paths whose bodies the test server sent, once per response
/// (304 answers not counted).
static DISK_BODIES_SENT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn bodies_sent(path: &str) -> usize {
    DISK_BODIES_SENT
        .lock()
        .map(|sent| sent.iter().filter(|p| *p == path).count())
        .unwrap_or(0)
}

/// Where `/disk/NAME` URLs of the test server are read from.
fn changing_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("kiln-copy-diff-http-{}", std::process::id()))
}

/// Serves [`served_files`] on 127.0.0.1 (one request per connection) until
/// the test process ends; returns the base URL.
fn start_http_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let files = served_files();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => continue,
            });
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut if_none_match = None;
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line == "\r\n" || line == "\n" => break,
                    Ok(_) => {
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("if-none-match")
                        {
                            if_none_match = Some(value.trim().to_string());
                        }
                    }
                }
            }
            let mut words = request.split_whitespace();
            let method = words.next().unwrap_or_default().to_string();
            let path = words.next().unwrap_or_default().to_string();
            // `/disk/NAME`: the current content of NAME in the test's
            // changing-files directory (for cache tests).
            let from_disk = path
                .strip_prefix("/disk/")
                .and_then(|name| fs::read(changing_dir().join(name)).ok())
                .map(|body| (body, ""));
            if let Some(target) = path.strip_prefix("/redirect") {
                let response = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(response.as_bytes());
                continue;
            }
            let response = match from_disk.as_ref().or(files.get(path.as_str())) {
                Some((body, _)) if if_none_match.as_deref() == Some(&etag_of(body)) => format!(
                    "HTTP/1.1 304 Not Modified\r\nETag: {}\r\nConnection: close\r\n\r\n",
                    etag_of(body)
                )
                .into_bytes(),
                Some((body, modified)) => {
                    if path.starts_with("/disk/")
                        && let Ok(mut sent) = DISK_BODIES_SENT.lock()
                    {
                        sent.push(path.clone());
                    }
                    let mut head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nETag: {}\r\nConnection: close\r\n",
                        body.len(),
                        etag_of(body)
                    );
                    if !modified.is_empty() {
                        head.push_str(&format!("Last-Modified: {modified}\r\n"));
                    }
                    head.push_str("\r\n");
                    let mut bytes = head.into_bytes();
                    if method != "HEAD" {
                        bytes.extend_from_slice(body);
                    }
                    bytes
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// Modification times of the paths in a saved image (the last layer that
/// has a path wins).
fn mtimes(archive: &Path, work: &Path, paths: &[&str]) -> BTreeMap<String, u64> {
    let dir = work.join(format!(
        "mtimes-{}",
        archive.file_name().unwrap().to_string_lossy()
    ));
    fs::create_dir_all(&dir).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-xf")
        .arg(archive)
        .status()
        .unwrap();
    assert!(status.success());
    let manifest: Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let mut found = BTreeMap::new();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let file = fs::File::open(dir.join(layer.as_str().unwrap())).unwrap();
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = raw.trim_start_matches("./").trim_end_matches('/');
            if paths.contains(&path) {
                found.insert(path.to_string(), entry.header().mtime().unwrap_or(0));
            }
        }
    }
    found
}

fn cases() -> Vec<Case> {
    use Item::*;
    let archive_members = || {
        vec![
            Member::Dir("top/", 0o750),
            Member::File("top/a.txt", "a\n", 0o640),
            Member::File("top/run.sh", "#!/bin/sh\n", 0o755),
            Member::Link("top/link", "a.txt"),
            Member::File("loose/b.txt", "b\n", 0o600),
        ]
    };
    vec![
        case(
            "add-archives-in-every-compression",
            "FROM busybox:local\nADD plain.tar /plain/\nADD gz.tgz /gz\nADD bz.tar.bz2 /bz/\nADD xz.tar.xz /xz/\n",
            vec![
                ("plain.tar", Archive(archive_members(), "")),
                ("gz.tgz", Archive(archive_members(), "gzip")),
                ("bz.tar.bz2", Archive(archive_members(), "bzip2")),
                ("xz.tar.xz", Archive(archive_members(), "xz")),
            ],
        ),
        case(
            "add-archive-detected-by-content-not-name",
            "FROM busybox:local\nADD data.bin /by-content/\nADD fake.tar.gz /fake/\nADD text.gz /gz/\nADD empty.tar /empty/\n",
            vec![
                (
                    "data.bin",
                    Archive(vec![Member::File("inner.txt", "in\n", 0o644)], "gzip"),
                ),
                ("fake.tar.gz", File("not an archive\n", 0o644)),
                (
                    "text.gz",
                    Bytes(compress_with("gzip", b"just text\n"), 0o644),
                ),
                ("empty.tar", Bytes(vec![0; 1024], 0o644)),
            ],
        ),
        case(
            "add-archive-into-existing-dirs-and-root",
            "FROM busybox:local\nADD etc.tar /\nADD more.tar.xz /tmp\n",
            vec![
                (
                    "etc.tar",
                    Archive(
                        vec![
                            Member::File("etc/added.conf", "conf\n", 0o644),
                            Member::File("usr/share/x", "x\n", 0o644),
                        ],
                        "",
                    ),
                ),
                (
                    "more.tar.xz",
                    Archive(vec![Member::File("sub/m", "m\n", 0o644)], "xz"),
                ),
            ],
        ),
        case(
            "add-archive-with-chown",
            "FROM busybox:local\nADD --chown=nobody:nogroup a.tar.gz /owned/\n",
            vec![("a.tar.gz", Archive(archive_members(), "gzip"))],
        ),
        case(
            "copy-does-not-unpack-archives",
            "FROM busybox:local\nCOPY a.tar.bz2 b.tar.xz /kept/\n",
            vec![
                ("a.tar.bz2", Archive(archive_members(), "bzip2")),
                ("b.tar.xz", Archive(archive_members(), "xz")),
            ],
        ),
        Case {
            mtimes: vec!["hello.txt", "dir/hello.txt", "renamed", "dl/archive.tar.gz"],
            ..case(
                "add-url-file-names-modes-and-times",
                "FROM busybox:local\nADD {URL}/files/hello.txt /\nADD {URL}/files/hello.txt /dir/\nADD {URL}/files/hello.txt /renamed\nADD {URL}/dl/archive.tar.gz /dl/\n",
                vec![],
            )
        },
        case(
            "add-url-chown-chmod-and-workdir",
            "FROM busybox:local\nWORKDIR /w\nADD --chown=nobody {URL}/files/hello.txt ./\nADD {URL}/nolastmod/data.bin rel/\n",
            vec![],
        ),
        case(
            "add-url-and-local-files-together",
            "FROM busybox:local\nADD {URL}/files/hello.txt f a.tar {URL}/nolastmod/data.bin /mix/\n",
            vec![
                ("f", File("f\n", 0o644)),
                (
                    "a.tar",
                    Archive(vec![Member::File("from-tar", "t\n", 0o644)], ""),
                ),
            ],
        ),
        Case {
            mtimes: vec!["r/hello.txt"],
            ..case(
                "add-url-follows-redirects-keeping-the-url-name",
                "FROM busybox:local\nADD {URL}/redirect/files/hello.txt /r/\n",
                vec![],
            )
        },
        failing(
            "copy-under-an-existing-file",
            "FROM busybox:local\nCOPY f /etc/passwd/x\n",
            vec![("f", File("f\n", 0o644))],
            "creating directory /etc/passwd: it is not a directory in the image",
        ),
        failing(
            "copy-dir-onto-an-existing-file",
            "FROM busybox:local\nCOPY d /etc/passwd\n",
            vec![("d/x", File("x\n", 0o644))],
            "copying a directory to /etc/passwd: it is not a directory in the image",
        ),
        failing(
            "workdir-under-an-existing-file",
            "FROM busybox:local\nWORKDIR /bin/busybox/x\n",
            vec![],
            "not a directory",
        ),
        case(
            "dangling-symlink-destinations",
            "FROM busybox:local\nRUN ln -s /nowhere/file /dl && ln -s /missingdir /dd\nCOPY f /dl\nCOPY d /dd/\nCOPY f /dd/inside\n",
            vec![("f", File("f\n", 0o644)), ("d/x", File("x\n", 0o644))],
        ),
        case(
            "add-archive-through-a-symlink-and-in-a-dir",
            "FROM busybox:local\nADD link.tgz /vialink/\nADD pkg /pkgdir/\n",
            vec![
                (
                    "real.tgz",
                    Archive(vec![Member::File("in-real", "r\n", 0o644)], "gzip"),
                ),
                ("link.tgz", Link("real.tgz")),
                (
                    "pkg/nested.tar",
                    Archive(vec![Member::File("not-unpacked", "n\n", 0o644)], ""),
                ),
            ],
        ),
        case(
            "add-archive-with-chmod",
            "FROM busybox:local\nADD --chmod=600 a.tar /x/\n",
            vec![(
                "a.tar",
                Archive(
                    vec![
                        Member::Dir("sub/", 0o750),
                        Member::File("sub/f", "f\n", 0o644),
                    ],
                    "",
                ),
            )],
        ),
        failing(
            "add-url-not-found",
            "FROM busybox:local\nADD {URL}/missing.txt /x\n",
            vec![],
            "404",
        ),
        case(
            "copy-chmod-octal-files-and-dirs",
            "FROM busybox:local\nCOPY --chmod=0755 f /x/\nCOPY --chmod=700 d /d700\nCOPY --chmod=4755 f /suid\nADD --chmod=640 f /added\n",
            vec![
                ("f", File("f\n", 0o644)),
                ("d/a", File("a\n", 0o600)),
                ("d/sub/b", File("b\n", 0o755)),
            ],
        ),
        case(
            "copy-chown-names-numbers-and-groups",
            "FROM busybox:local\nRUN echo app:x:1001:1002::/home/app:/bin/sh >> /etc/passwd && echo appg:x:1002: >> /etc/group && echo other:x:2000: >> /etc/group\nCOPY --chown=app f /u/\nCOPY --chown=app:other f /ug/\nCOPY --chown=1001:other f /ng/\nCOPY --chown=app:7 f /un/\nCOPY --chown=5 f /n/\nCOPY --chown=:other f /g/\nCOPY --chown=app d /d/\n",
            vec![("f", File("f\n", 0o644)), ("d/x/y", File("y\n", 0o640))],
        ),
        case(
            "wildcard-single-match-names-the-file",
            "FROM busybox:local\nCOPY *.md /readme\nCOPY s?b/*.c /csrc/\nCOPY [ab].txt /brackets/\n",
            vec![
                ("only.md", File("md\n", 0o644)),
                ("sub/x.c", File("c\n", 0o644)),
                ("a.txt", File("a\n", 0o644)),
                ("c.txt", File("c\n", 0o644)),
            ],
        ),
        case(
            "relative-destinations-under-workdir",
            "FROM busybox:local\nWORKDIR /app/src\nCOPY f ../up/\nCOPY f ./here\nCOPY d lib\nCOPY f ../../top-level\nWORKDIR rel\nCOPY f .\n",
            vec![("f", File("f\n", 0o644)), ("d/x", File("x\n", 0o644))],
        ),
        case(
            "copy-from-stage-name-index-and-image",
            "FROM busybox:local AS build\nRUN mkdir -p /out/sub /out/empty && echo one > /out/one && echo two > /out/sub/two && ln -s one /out/l && chown -R 12:34 /out/sub\nFROM busybox:local\nCOPY --from=build /out /by-name\nCOPY --from=0 /out/sub/ /by-index/\nCOPY --from=busybox:local /etc/passwd /etc/group /from-image/\nCOPY --from=build /out/o* /glob/\n",
            vec![],
        ),
        case(
            "symlinks-copied-as-symlinks",
            "FROM busybox:local\nCOPY tree /tree\nCOPY tolink /via-link-file\nCOPY todir /via-link-dir\nCOPY dangling-parent /dp/\n",
            vec![
                ("tree/f", File("f\n", 0o644)),
                ("tree/rel", Link("f")),
                ("tree/abs", Link("/etc/passwd")),
                ("tree/dangling", Link("nowhere")),
                ("tree/up", Link("../outside")),
                ("outside", File("o\n", 0o644)),
                ("tolink", Link("tree/f")),
                ("todir", Link("tree")),
                ("dangling-parent/broken", Link("../missing")),
            ],
        ),
        case(
            "directory-contents-not-the-directory",
            "FROM busybox:local\nCOPY d /a\nCOPY d/ /b/\nCOPY d/. /c\nCOPY . /all/\n",
            vec![
                ("d/x", File("x\n", 0o644)),
                ("d/sub/y", File("y\n", 0o600)),
                ("d/sub", Dir(0o711)),
                ("d", Dir(0o750)),
            ],
        ),
        case(
            "empty-directories",
            "FROM busybox:local\nCOPY empty /e\nCOPY empty /e2/\nCOPY withempty /w\n",
            vec![
                ("empty", Dir(0o700)),
                ("withempty/inner", Dir(0o755)),
                ("withempty/file", File("f\n", 0o644)),
            ],
        ),
        case(
            "onto-existing-symlinked-directories",
            "FROM busybox:local\nRUN mkdir -p /real/dir && ln -s /real /abslink && ln -s real /rellink && ln -s real/dir /deeplink\nCOPY f /abslink/\nCOPY d /rellink\nCOPY f /deeplink/g\nCOPY f /rellink/dir/\n",
            vec![("f", File("f\n", 0o644)), ("d/x", File("x\n", 0o644))],
        ),
        case(
            "overwrite-files-links-and-dirs",
            "FROM busybox:local\nRUN mkdir -p /o && echo old > /o/file && ln -s file /o/link && mkdir /o/dir && echo keep > /o/dir/keep\nCOPY over/ /o/\n",
            vec![
                ("over/file", File("new\n", 0o600)),
                ("over/link", File("now a file\n", 0o644)),
                ("over/dir/added", File("a\n", 0o644)),
            ],
        ),
        case(
            "odd-file-names",
            "FROM busybox:local\nCOPY [\"with space.txt\", \"/spaces/\"]\nCOPY ünï.txt .hidden /names/\nCOPY * /star/\n",
            vec![
                ("with space.txt", File("s\n", 0o644)),
                ("ünï.txt", File("u\n", 0o644)),
                (".hidden", File("h\n", 0o644)),
            ],
        ),
        case(
            "dockerignore-and-explicit-sources",
            "FROM busybox:local\nCOPY keep/ /k/\nCOPY . /all/\n",
            vec![
                (".dockerignore", File("**/*.tmp\nkeep/skip\n", 0o644)),
                ("keep/a", File("a\n", 0o644)),
                ("keep/skip", File("s\n", 0o644)),
                ("keep/x.tmp", File("t\n", 0o644)),
                ("deep/er/y.tmp", File("t\n", 0o644)),
            ],
        ),
        failing(
            "ignored-source-is-not-found",
            "FROM busybox:local\nCOPY secret.txt /s\n",
            vec![
                (".dockerignore", File("secret.txt\n", 0o644)),
                ("secret.txt", File("s\n", 0o644)),
            ],
            "not found",
        ),
        case(
            "add-local-files-dirs-and-archives-together",
            "FROM busybox:local\nADD f d a.tar.gz /mixed/\n",
            vec![
                ("f", File("f\n", 0o644)),
                ("d/x", File("x\n", 0o644)),
                (
                    "a.tar.gz",
                    Archive(vec![Member::File("from-tar", "t\n", 0o644)], "gzip"),
                ),
            ],
        ),
        case(
            "context-modes-hardlinks-and-special-bits",
            "FROM busybox:local\nCOPY m /m/\n",
            vec![
                ("m/setuid", File("s\n", 0o4755)),
                ("m/setgid", File("g\n", 0o2750)),
                ("m/sticky", Dir(0o1777)),
                ("m/ro", File("r\n", 0o400)),
                ("m/orig", File("h\n", 0o644)),
                ("m/hard", HardLink("m/orig")),
            ],
        ),
        case(
            "chown-creates-owned-parents",
            "FROM busybox:local\nCOPY --chown=nobody:nogroup f /a/b/c/\nCOPY --chown=1:2 d /x/y\nCOPY --chown=3 f /tmp/owned\n",
            vec![("f", File("f\n", 0o644)), ("d/e/g", File("g\n", 0o644))],
        ),
        case(
            "from-stage-with-chmod-chown-and-links",
            "FROM busybox:local AS s\nRUN mkdir -p /d/sub && echo a > /d/a && chmod 4711 /d/a && ln -s sub /d/lsub && ln -s /d/a /d/abs && chown -R 9:9 /d\nFROM busybox:local\nCOPY --from=s --chmod=640 /d /c1\nCOPY --from=s --chown=nobody /d/ /c2/\nCOPY --from=s /d/lsub /c3\nCOPY --from=s /d/abs /c4\n",
            vec![],
        ),
        case(
            "file-onto-existing-names",
            "FROM busybox:local\nRUN mkdir /dir && echo x > /file && ln -s /file /flink && ln -s /dir /dlink\nCOPY f /dir\nCOPY f /file\nCOPY f /flink\nCOPY f /dlink\n",
            vec![("f", File("new\n", 0o600))],
        ),
        case(
            "add-archive-overwrites-and-hardlinks",
            "FROM busybox:local\nRUN mkdir -p /real && ln -s /real /lnk && echo old > /real/over\nADD a.tar /lnk/\nADD b.tar.gz /\n",
            vec![
                (
                    "a.tar",
                    Archive(
                        vec![
                            Member::File("over", "new\n", 0o600),
                            Member::File("orig", "o\n", 0o644),
                            Member::HardLink("hard", "orig"),
                        ],
                        "",
                    ),
                ),
                (
                    "b.tar.gz",
                    Archive(
                        vec![
                            Member::Dir("etc/", 0o700),
                            Member::File("etc/extra", "e\n", 0o644),
                        ],
                        "gzip",
                    ),
                ),
            ],
        ),
        case(
            "add-wildcard-archives-and-dest-without-slash",
            "FROM busybox:local\nADD *.tar /many/\nADD one.tgz /single\n",
            vec![
                ("x.tar", Archive(vec![Member::File("x", "x\n", 0o644)], "")),
                ("y.tar", Archive(vec![Member::File("y", "y\n", 0o644)], "")),
                (
                    "one.tgz",
                    Archive(vec![Member::File("z/one", "1\n", 0o644)], "gzip"),
                ),
            ],
        ),
        case(
            "add-archive-with-whiteout-names",
            "FROM busybox:local\nRUN mkdir -p /w && echo keep > /w/victim\nADD wh.tar /w/\n",
            vec![(
                "wh.tar",
                Archive(vec![Member::File(".wh.victim", "", 0o644)], ""),
            )],
        ),
        case(
            "source-paths-with-dots-and-slashes",
            "FROM busybox:local\nCOPY ./d/../f /a\nCOPY d/./x /b\nCOPY /f /c\nCOPY d//x /dd/\n",
            vec![("f", File("f\n", 0o644)), ("d/x", File("x\n", 0o644))],
        ),
        case(
            "workdir-dot-and-trailing-slash-dot",
            "FROM busybox:local\nWORKDIR /w\nCOPY f .\nCOPY d ./\nCOPY f /t/.\nCOPY d /u/.\n",
            vec![("f", File("f\n", 0o644)), ("d/x", File("x\n", 0o644))],
        ),
        failing(
            "from-stage-missing-path",
            "FROM busybox:local AS s\nFROM busybox:local\nCOPY --from=s /nope /x\n",
            vec![],
            "not found",
        ),
        failing(
            "from-unknown-stage-index",
            "FROM busybox:local\nCOPY --from=5 /etc/passwd /x\n",
            vec![],
            "",
        ),
        case(
            "source-symlinks-resolved-inside-the-context",
            "FROM busybox:local\nCOPY linkdir/f /via/\nCOPY linkdir /whole\nCOPY abs-in-context /abs\n",
            vec![
                ("d/f", File("f\n", 0o644)),
                ("linkdir", Link("d")),
                ("abs-in-context", Link("/d/f")),
            ],
        ),
        failing(
            "source-symlink-leaving-the-context",
            "FROM busybox:local\nCOPY escape /e\n",
            vec![("escape", Link("../../../../etc/passwd"))],
            "",
        ),
        case(
            "wildcard-directories-merge-contents",
            "FROM busybox:local\nCOPY d* /w/\nCOPY d /\n",
            vec![
                ("d1/a", File("a\n", 0o644)),
                ("d2/b", File("b\n", 0o644)),
                ("d2/sub/c", File("c\n", 0o600)),
                ("d/rootfile", File("r\n", 0o644)),
            ],
        ),
        case(
            "from-stage-empty-dirs-and-root",
            "FROM busybox:local AS s\nRUN mkdir -p /e /full/inner && chmod 751 /e && echo x > /full/inner/x\nFROM scratch\nCOPY --from=s /e /e\nCOPY --from=s /e/ /e2/\nCOPY --from=s /full /\n",
            vec![],
        ),
        case(
            "add-plain-files-to-root-and-renamed",
            "FROM busybox:local\nADD f /\nADD f /renamed.txt\nADD d /\n",
            vec![("f", File("f\n", 0o755)), ("d/inside", File("i\n", 0o644))],
        ),
        case(
            "env-and-arg-in-sources-and-destinations",
            "FROM busybox:local\nARG SUB=d\nENV DEST=/envdest\nCOPY $SUB/x ${DEST}/\nCOPY ${SUB} $DEST/dir\n",
            vec![("d/x", File("x\n", 0o644))],
        ),
    ]
}

fn save(docker: bool, root: &Path, tag: &str, dest: &Path) {
    let out = if docker {
        Command::new("/usr/bin/docker")
            .args(["save", "-o"])
            .arg(dest)
            .arg(tag)
            .output()
            .unwrap()
    } else {
        kiln(root)
            .arg("save")
            .arg(tag)
            .arg("-o")
            .arg(dest)
            .output()
            .unwrap()
    };
    assert!(out.status.success(), "save {tag}: {}", output_text(&out));
}

/// Runs one case; returns the problems found.
fn run_case(work: &Path, root: &Path, base_url: &str, case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let context = work.join("contexts").join(case.name);
    let dockerfile = case.dockerfile.replace("{URL}", base_url);
    write_context(&context, &dockerfile, &case.files);
    let tag = format!("kiln-copy-diff-{}", case.name);
    let docker = docker_build(&context, &tag, &[]);
    let kiln_result = kiln_build(root, &context, &tag, &[]).map(|_| ());
    match (&case.outcome, docker, kiln_result) {
        (Outcome::BothFail(text), Err(_), Err(kiln_error)) => {
            if !kiln_error.contains(text) {
                problems.push(format!(
                    "kiln failed as docker did, but without {text:?}: {kiln_error}"
                ));
            }
            return problems;
        }
        (Outcome::BothFail(_), Ok(()), _) => {
            let _ = Command::new("/usr/bin/docker")
                .args(["rmi", "-f", &tag])
                .output();
            problems.push("docker build succeeded; the case expects it to fail".into());
            return problems;
        }
        (Outcome::BothFail(_), Err(_), Ok(())) => {
            problems.push("kiln build succeeded where docker build failed".into());
            return problems;
        }
        (Outcome::Same, Err(e), _) => {
            problems.push(format!("docker build failed: {e}"));
            return problems;
        }
        (Outcome::Same, Ok(()), Err(e)) => {
            let _ = Command::new("/usr/bin/docker")
                .args(["rmi", "-f", &tag])
                .output();
            problems.push(format!("kiln build failed: {e}"));
            return problems;
        }
        (Outcome::Same, Ok(()), Ok(())) => {}
    }
    let docker_tar = work.join(format!("{}-docker.tar", case.name));
    save(true, root, &tag, &docker_tar);
    let _ = Command::new("/usr/bin/docker")
        .args(["rmi", "-f", &tag])
        .output();
    let kiln_tar = work.join(format!("{}-kiln.tar", case.name));
    save(false, root, &tag, &kiln_tar);
    let (docker_tree, docker_config) = flatten_archive(&docker_tar, work);
    let (kiln_tree, kiln_config) = flatten_archive(&kiln_tar, work);
    problems.extend(describe_differences(&docker_tree, &kiln_tree));
    // History entries as docker shows them: what made each layer, and
    // which entries made none.
    let history = |config: &Value| -> Vec<(bool, String)> {
        config["history"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|h| {
                        (
                            h["empty_layer"].as_bool().unwrap_or(false),
                            h["created_by"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (docker_history, kiln_history) = (history(&docker_config), history(&kiln_config));
    if docker_history != kiln_history {
        problems.push(format!(
            "history differs:\n  docker {docker_history:?}\n  kiln   {kiln_history:?}"
        ));
    }
    let kiln_fields = config_fields(&kiln_config);
    for (key, value) in config_fields(&docker_config) {
        if kiln_fields.get(key) != Some(&value) {
            problems.push(format!(
                "config {key}: docker {value} kiln {}",
                kiln_fields.get(key).cloned().unwrap_or(Value::Null)
            ));
        }
    }
    if !case.mtimes.is_empty() {
        let docker_times = mtimes(&docker_tar, work, &case.mtimes);
        let kiln_times = mtimes(&kiln_tar, work, &case.mtimes);
        if docker_times != kiln_times {
            problems.push(format!(
                "modification times: docker {docker_times:?} kiln {kiln_times:?}"
            ));
        }
    }
    problems
}

#[test]
fn copy_and_add_match_buildkit() {
    if !tools_present() || !docker_present() {
        return;
    }
    for tool in ["gzip", "bzip2", "xz", "zstd"] {
        if !image_common::have_tool(tool, &["--version"]) {
            return;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let base_url = start_http_server();
    let only = std::env::var("KILN_DIFF_CASE").ok();
    let mut failures = Vec::new();
    let mut compared = 0;
    for case in cases() {
        if only.as_deref().is_some_and(|o| o != case.name) {
            continue;
        }
        let problems = run_case(work.path(), &root, &base_url, &case);
        if !problems.is_empty() {
            failures.push(format!("[{}]\n  {}", case.name, problems.join("\n  ")));
        }
        compared += 1;
    }
    eprintln!("{compared} COPY/ADD cases compared with BuildKit");
    assert!(compared > 0, "no case matched KILN_DIFF_CASE={only:?}");
    assert!(
        failures.is_empty(),
        "{} of {compared} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Flattened tree of a kiln build under `dir` (type=local output) as
/// path → "kind mode uid:gid link|content".
fn local_tree(dir: &Path, under: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.join(under)];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(dir).unwrap().display().to_string();
        let mode = meta.mode() & 0o7777;
        let owner = format!("{}:{}", meta.uid(), meta.gid());
        let text = if meta.file_type().is_symlink() {
            format!(
                "l {mode:o} {owner} -> {}",
                fs::read_link(&path).unwrap().display()
            )
        } else if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            format!("d {mode:o} {owner}")
        } else {
            let mut content = String::new();
            fs::File::open(&path)
                .unwrap()
                .read_to_string(&mut content)
                .unwrap();
            format!("f {mode:o} {owner} {content:?}")
        };
        out.insert(rel, text);
    }
    out
}

/// Builds `dockerfile` with `files` by kiln alone into a local directory.
fn kiln_local(
    work: &Path,
    root: &Path,
    name: &str,
    dockerfile: &str,
    files: &[(&'static str, Item)],
) -> Result<std::path::PathBuf, String> {
    let context = work.join("contexts").join(name);
    write_context(&context, dockerfile, files);
    let dest = work.join("out").join(name);
    let out = kiln(root)
        .args(["build", "-q", "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(&context)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(dest)
    } else {
        Err(output_text(&out))
    }
}

/// The entries of a local tree under `under`, as `local_tree` renders them,
/// for assertions that print what was found.
fn tree_lines(dir: &Path, under: &str) -> String {
    local_tree(dir, under)
        .into_iter()
        .map(|(path, text)| format!("{path} {text}\n"))
        .collect()
}

/// Features Docker 20.10's frontend lacks (`--parents`, `--link`, symbolic
/// `--chmod`, multiple heredocs with `--chmod`, zstd archives) and errors it
/// does not raise but BuildKit >= 0.11 does (several sources into a
/// destination without `/`, an unknown `--chown` user): checked against the
/// Dockerfile reference's documented results.
#[test]
fn documented_copy_features_newer_than_the_reference() {
    if !tools_present() || !image_common::have_tool("zstd", &["--version"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    use Item::*;

    // --parents keeps each source's path, after a `/./` pivot when there is one.
    let out = kiln_local(
        work.path(),
        &root,
        "parents",
        "FROM scratch\nCOPY --parents src/*/*.go top.txt /p/\nCOPY --parents ./src/./b/y.go /pivot/\nCOPY --parents src/a /dirs/\n",
        &[
            ("src/a/x.go", File("x\n", 0o644)),
            ("src/b/y.go", File("y\n", 0o644)),
            ("src/b/y.txt", File("t\n", 0o644)),
            ("top.txt", File("top\n", 0o644)),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for path in [
        "p/src/a/x.go",
        "p/src/b/y.go",
        "p/top.txt",
        "pivot/b/y.go",
        "dirs/src/a/x.go",
    ] {
        assert!(
            out.join(path).is_file(),
            "{path} missing:\n{}{}{}",
            tree_lines(&out, "p"),
            tree_lines(&out, "pivot"),
            tree_lines(&out, "dirs")
        );
    }
    assert!(!out.join("p/src/b/y.txt").exists());
    assert!(!out.join("pivot/src").exists());

    // --link gives the same files; symbolic --chmod like chmod(1);
    // heredocs named after their delimiters; zstd archives unpacked.
    let zstd_tar = compress_with(
        "zstd",
        &tar_bytes(&[Member::File("z/inside", "zst\n", 0o640)]),
    );
    let out = kiln_local(
        work.path(),
        &root,
        "link-chmod-heredoc-zstd",
        "FROM busybox:local\nCOPY --link f /linked/\nCOPY --link --chmod=600 d /linkeddir\nCOPY --chmod=u+x,g-r f /sym1\nCOPY --chmod=a=rX d /sym2\nCOPY --chmod=755 <<A <<B /h/\nfirst\nA\nsecond\nB\nADD a.tar.zst /unz/\nCOPY <<C f /hm/\nthird\nC\n",
        &[
            ("f", File("f\n", 0o644)),
            ("d/x", File("x\n", 0o644)),
            ("d/run", File("r\n", 0o755)),
            ("a.tar.zst", Bytes(zstd_tar, 0o644)),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tree = |under: &str| local_tree(&out, under);
    assert_eq!(
        tree("linked").get("linked/f").map(String::as_str),
        Some("f 644 0:0 \"f\\n\"")
    );
    assert_eq!(
        tree("linkeddir").get("linkeddir/run").map(String::as_str),
        Some("f 600 0:0 \"r\\n\"")
    );
    assert_eq!(
        tree("sym1").get("sym1").map(String::as_str),
        Some("f 704 0:0 \"f\\n\"")
    );
    let sym2 = tree("sym2");
    assert_eq!(
        sym2.get("sym2/x").map(String::as_str),
        Some("f 444 0:0 \"x\\n\"")
    );
    assert_eq!(
        sym2.get("sym2/run").map(String::as_str),
        Some("f 555 0:0 \"r\\n\"")
    );
    let heredocs = tree("h");
    assert_eq!(
        heredocs.get("h/A").map(String::as_str),
        Some("f 755 0:0 \"first\\n\"")
    );
    assert_eq!(
        heredocs.get("h/B").map(String::as_str),
        Some("f 755 0:0 \"second\\n\"")
    );
    let mixed = tree("hm");
    assert_eq!(
        mixed.get("hm/C").map(String::as_str),
        Some("f 644 0:0 \"third\\n\"")
    );
    assert_eq!(
        mixed.get("hm/f").map(String::as_str),
        Some("f 644 0:0 \"f\\n\"")
    );
    assert_eq!(
        tree("unz").get("unz/z/inside").map(String::as_str),
        Some("f 640 3:4 \"zst\\n\""),
        "{}",
        tree_lines(&out, "unz")
    );

    // --exclude and --parents on another stage's files; ADD --exclude;
    // ADD --unpack=false keeps an archive as it is.
    let plain_tar = tar_bytes(&[Member::File("t", "t\n", 0o644)]);
    let out = kiln_local(
        work.path(),
        &root,
        "from-exclude-parents-unpack",
        "FROM busybox:local AS s\nRUN mkdir -p /src/a /src/b && echo 1 > /src/a/keep.go && echo 2 > /src/a/drop.log && echo 3 > /src/b/keep.go\nFROM scratch\nCOPY --from=s --exclude=**/*.log /src /ex/\nCOPY --from=s --parents /src/*/keep.go /par/\nADD --exclude=*.log d /addex/\nADD --unpack=false a.tar /packed/\n",
        &[
            ("d/x", File("x\n", 0o644)),
            ("d/y.log", File("y\n", 0o644)),
            ("a.tar", Bytes(plain_tar.clone(), 0o644)),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for (path, present) in [
        ("ex/a/keep.go", true),
        ("ex/a/drop.log", false),
        ("ex/b/keep.go", true),
        ("par/src/a/keep.go", true),
        ("par/src/b/keep.go", true),
        ("addex/x", true),
        ("addex/y.log", false),
        ("packed/a.tar", true),
        ("packed/t", false),
    ] {
        assert_eq!(
            out.join(path).exists(),
            present,
            "{path}:\n{}{}{}",
            tree_lines(&out, "ex"),
            tree_lines(&out, "par"),
            tree_lines(&out, "packed")
        );
    }
    assert_eq!(fs::read(out.join("packed/a.tar")).unwrap(), plain_tar);

    // Errors that say what and what to do.
    let url = start_http_server();
    let hello_digest = "sha256:25d5fcb9d5a4e7c5aa7d2d1a20ca3fd8e4a1d2c8d9bd1ff7b1fd7d6b0a0b0c0d";
    let failures: Vec<FailingCase> = vec![
        (
            "several-sources-no-slash",
            "FROM busybox:local\nCOPY a b /notadir\n".into(),
            vec![("a", File("a\n", 0o644)), ("b", File("b\n", 0o644))],
            "the destination must be a directory and end with a /",
        ),
        (
            "wildcard-no-slash",
            "FROM busybox:local\nCOPY *.txt /notadir\n".into(),
            vec![("a.txt", File("a\n", 0o644)), ("b.txt", File("b\n", 0o644))],
            "the destination must be a directory and end with a /",
        ),
        (
            "unknown-user",
            "FROM busybox:local\nCOPY --chown=nosuchuser a /a\n".into(),
            vec![("a", File("a\n", 0o644))],
            "unable to find user nosuchuser",
        ),
        (
            "checksum-mismatch",
            format!("FROM busybox:local\nADD --checksum={hello_digest} {url}/files/hello.txt /\n"),
            vec![],
            "--checksum wants sha256:25d5fcb9",
        ),
        (
            "checksum-malformed",
            format!("FROM busybox:local\nADD --checksum=md5:abc {url}/files/hello.txt /\n"),
            vec![],
            "use sha256:<64 hex digits>",
        ),
        (
            "checksum-on-a-local-file",
            format!(
                "FROM busybox:local\nADD --checksum=sha256:{} a /a\n",
                "0".repeat(64)
            ),
            vec![("a", File("a\n", 0o644))],
            "--checksum is only supported for an ADD of one http(s) URL",
        ),
        (
            "git-source",
            "FROM busybox:local\nADD git@github.com:moby/buildkit.git /src\n".into(),
            vec![],
            "not supported by kiln yet",
        ),
        (
            "hostile-archive",
            "FROM busybox:local\nADD evil.tar /x/\n".into(),
            vec![("evil.tar", Bytes(climbing_tar(), 0o644))],
            "climbs out of the target directory",
        ),
    ];
    for (name, dockerfile, files, expected) in failures {
        match kiln_local(work.path(), &root, name, &dockerfile, &files) {
            Ok(_) => panic!("[{name}] kiln build succeeded"),
            Err(e) => assert!(
                e.contains(expected),
                "[{name}] wanted {expected:?} in:\n{e}"
            ),
        }
    }
    assert!(!work.path().join("out/escaped").exists());

    // The right checksum passes; the digest of the download is in the message above.
    let body = served_files()["/files/hello.txt"].0.clone();
    let digest = sha256_hex(&body);
    let out = kiln_local(
        work.path(),
        &root,
        "checksum-ok",
        &format!("FROM busybox:local\nADD --checksum=sha256:{digest} {url}/files/hello.txt /ok/\n"),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fs::read(out.join("ok/hello.txt")).unwrap(), body);
}

/// A kiln-only build that must fail: name, Dockerfile, context, text the
/// error must contain.
type FailingCase = (
    &'static str,
    String,
    Vec<(&'static str, Item)>,
    &'static str,
);

/// A tar whose only member is `../escaped` (the tar crate refuses to write
/// such a name, so the header is patched by hand).
fn climbing_tar() -> Vec<u8> {
    let mut tar = tar_bytes(&[Member::File("escaped-name", "x\n", 0o644)]);
    let name = b"../escaped";
    tar[..100].fill(0);
    tar[..name.len()].copy_from_slice(name);
    tar[148..156].fill(b' ');
    let sum: u32 = tar[..512].iter().map(|&b| u32::from(b)).sum();
    tar[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    tar
}

fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// ADD <url>'s cache key follows the content at the URL: an unchanged file
/// hits the cache, a changed one runs the step again (BuildKit checks the
/// URL on every build too).
#[test]
fn add_url_cache_follows_the_content() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let url = start_http_server();
    fs::create_dir_all(changing_dir()).unwrap();
    let served = changing_dir().join("data.txt");
    let context = work.path().join("ctx");
    write_context(
        &context,
        &format!("FROM busybox:local\nADD {url}/disk/data.txt /data.txt\n"),
        &[],
    );
    let build = || {
        let out = kiln(&root)
            .args(["build", "--progress=plain", "-t", "kiln-copy-url-cache"])
            .arg(&context)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    fs::write(&served, "one\n").unwrap();
    let first = build();
    assert!(!first.contains("CACHED"), "{first}");
    let again = build();
    assert!(
        again.contains("CACHED"),
        "unchanged URL content must hit the cache:\n{again}"
    );
    // The rebuild revalidated with the ETag: a 304, no second download.
    assert_eq!(bodies_sent("/disk/data.txt"), 1);
    fs::write(&served, "two\n").unwrap();
    let changed = build();
    assert!(
        !changed.contains("CACHED"),
        "changed URL content must run the ADD again:\n{changed}"
    );
    assert_eq!(bodies_sent("/disk/data.txt"), 2);
    // Without the cache, an unchanged (304) file is downloaded for the copy.
    let out = kiln(&root)
        .args(["build", "-q", "--no-cache", "-o"])
        .arg(format!(
            "type=local,dest={}",
            work.path().join("out").display()
        ))
        .arg(&context)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = fs::remove_file(&served);
    // Other tests of this process may still serve files from there.
    let _ = fs::remove_dir(changing_dir());
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        fs::read(work.path().join("out/data.txt")).unwrap(),
        b"two\n"
    );
    assert_eq!(bodies_sent("/disk/data.txt"), 3);
}

/// A COPY whose source is a symlink (or goes through one) reads what the
/// link points to: changing that content must invalidate the step.
#[test]
fn copy_through_symlinks_is_invalidated_by_the_target() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let context = work.path().join("ctx");
    write_context(
        &context,
        "FROM busybox:local\nCOPY todir /whole\nCOPY linkdir/f /via/\n",
        &[
            ("tree/f", Item::File("one\n", 0o644)),
            ("todir", Item::Link("tree")),
            ("linkdir", Item::Link("tree")),
        ],
    );
    let build = || {
        let out = kiln(&root)
            .args(["build", "--progress=plain", "-t", "kiln-copy-link-cache"])
            .arg(&context)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    build();
    let again = build();
    assert_eq!(again.matches("CACHED").count(), 2, "{again}");
    fs::write(context.join("tree/f"), "two\n").unwrap();
    let changed = build();
    assert_eq!(
        changed.matches("CACHED").count(),
        0,
        "a changed link target must run both COPY steps again:\n{changed}"
    );
}

/// With `--checksum` the content is known before the download, so a cached
/// rebuild does not fetch at all (it passes even though the server now sends
/// something else), while a rebuild without the cache fetches and fails on
/// the mismatch, naming both digests.
#[test]
fn add_url_with_checksum_is_cached_without_fetching() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    import_busybox(&root, work.path());
    let url = start_http_server();
    fs::create_dir_all(changing_dir()).unwrap();
    let served = changing_dir().join("pinned.txt");
    fs::write(&served, "pinned\n").unwrap();
    let digest = sha256_hex(b"pinned\n");
    let context = work.path().join("ctx");
    write_context(
        &context,
        &format!("FROM busybox:local\nADD --checksum=sha256:{digest} {url}/disk/pinned.txt /p/\n"),
        &[],
    );
    let build = |extra: &[&str]| {
        kiln(&root)
            .args(["build", "--progress=plain", "-t", "kiln-copy-url-pinned"])
            .args(extra)
            .arg(&context)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let first = build(&[]);
    assert!(first.status.success(), "{}", output_text(&first));
    fs::write(&served, "changed upstream\n").unwrap();
    let cached = build(&[]);
    assert!(cached.status.success(), "{}", output_text(&cached));
    assert!(
        String::from_utf8_lossy(&cached.stderr).contains("CACHED"),
        "{}",
        output_text(&cached)
    );
    let fresh = build(&["--no-cache"]);
    let _ = fs::remove_file(&served);
    // Other tests of this process may still serve files from there.
    let _ = fs::remove_dir(changing_dir());
    let text = output_text(&fresh);
    assert!(!fresh.status.success(), "{text}");
    assert!(
        text.contains(&format!("sha256:{digest}"))
            && text.contains(&sha256_hex(b"changed upstream\n")),
        "both digests named: {text}"
    );
}
