//! Helpers of the differential build suites (`build_differential`,
//! `build_differential_copy`): tool checks that skip locally and fail under
//! CI=true, the busybox base image imported exactly as
//! `shared/tools/docker-oracle.sh` makes `busybox:local`, and flattening of
//! docker-archives into comparable file trees and config fields.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::image_common::{is_root, kiln, tar_directory};
use serde_json::Value;

/// `docker build -q -t TAG EXTRA... CONTEXT` through BuildKit; Err: its output.
pub fn docker_build(context: &Path, tag: &str, extra: &[String]) -> Result<(), String> {
    let out = Command::new("/usr/bin/docker")
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "-q", "-t", tag])
        .args(extra)
        .arg(context)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(output_text(&out))
    }
}

/// `kiln build --progress=plain -t TAG EXTRA... CONTEXT`; Ok: the build log
/// (stderr), Err: its output.
pub fn kiln_build(
    root: &Path,
    context: &Path,
    tag: &str,
    extra: &[String],
) -> Result<String, String> {
    let out = kiln(root)
        .args(["build", "--progress=plain", "-t", tag])
        .args(extra)
        .arg(context)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    } else {
        Err(output_text(&out))
    }
}

pub fn output_text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// True when `probe` succeeds; else panics under CI=true or prints a skip note.
pub fn require(what: &str, probe: &mut Command) -> bool {
    let ok = probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{what} is required under CI=true (see shared/tools/docker-oracle.sh)");
        }
        eprintln!("SKIP: {what} not available");
    }
    ok
}

pub fn tools_present() -> bool {
    let root = is_root();
    if !root {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("kiln build tests need root (the sandbox uses namespaces and overlayfs)");
        }
        eprintln!("SKIP: not root");
        return false;
    }
    require(
        "busybox-static (/bin/busybox)",
        Command::new("/bin/busybox").arg("true"),
    ) && require("tar", Command::new("tar").arg("--version"))
}

pub fn docker_present() -> bool {
    require(
        "a Docker engine with busybox:local",
        Command::new("/usr/bin/docker").args(["image", "inspect", "busybox:local"]),
    )
}

/// Imports the busybox rootfs the docker oracle imports as `busybox:local`.
pub fn import_busybox(root: &Path, work: &Path) {
    let rootfs = work.join("busybox-rootfs");
    for dir in ["bin", "etc", "tmp", "root"] {
        fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    let status = Command::new("chmod")
        .arg("1777")
        .arg(rootfs.join("tmp"))
        .status()
        .unwrap();
    assert!(status.success());
    let tar = work.join("busybox.tar");
    tar_directory(&rootfs, &tar);
    let out = kiln(root)
        .arg("import")
        .arg("--change")
        .arg("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .arg(&tar)
        .arg("busybox:local")
        .output()
        .unwrap();
    assert!(out.status.success(), "kiln import: {}", output_text(&out));
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// One path of a flattened image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub link: String,
    pub content: Vec<u8>,
}

/// Flattens a docker-archive (manifest.json + layer tars) into path → node,
/// and returns its config JSON.
pub fn flatten_archive(archive: &Path, work: &Path) -> (BTreeMap<String, Node>, Value) {
    let dir = work.join(format!(
        "unpacked-{}",
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
    let entry = &manifest[0];
    let config: Value =
        serde_json::from_slice(&fs::read(dir.join(entry["Config"].as_str().unwrap())).unwrap())
            .unwrap();
    let mut tree: BTreeMap<String, Node> = BTreeMap::new();
    for layer in entry["Layers"].as_array().unwrap() {
        let file = fs::File::open(dir.join(layer.as_str().unwrap())).unwrap();
        let mut archive = tar::Archive::new(file);
        let mut additions: Vec<(String, Node, Option<String>)> = Vec::new();
        let mut removals: Vec<String> = Vec::new();
        let mut opaque: Vec<String> = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = raw
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            if path.is_empty() || path == "." {
                continue;
            }
            let (parent, base) = match path.rsplit_once('/') {
                Some((p, b)) => (p.to_string(), b.to_string()),
                None => (String::new(), path.clone()),
            };
            if base == ".wh..wh..opq" {
                opaque.push(parent);
                continue;
            }
            if let Some(hidden) = base.strip_prefix(".wh.") {
                removals.push(if parent.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{parent}/{hidden}")
                });
                continue;
            }
            let header = entry.header();
            let kind = header.entry_type();
            let mode = header.mode().unwrap() & 0o7777;
            let uid = header.uid().unwrap();
            let gid = header.gid().unwrap();
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            let (node_kind, hardlink) = if kind.is_dir() {
                ('d', None)
            } else if kind.is_symlink() {
                ('l', None)
            } else if kind.is_hard_link() {
                ('f', Some(link.trim_start_matches("./").to_string()))
            } else if kind.is_file() {
                ('f', None)
            } else {
                ('o', None)
            };
            let mut content = Vec::new();
            if node_kind == 'f' && hardlink.is_none() {
                entry.read_to_end(&mut content).unwrap();
            }
            additions.push((
                path,
                Node {
                    kind: node_kind,
                    mode,
                    uid,
                    gid,
                    link: if node_kind == 'l' {
                        link
                    } else {
                        String::new()
                    },
                    content,
                },
                hardlink,
            ));
        }
        for dir in opaque {
            let prefix = format!("{dir}/");
            tree.retain(|p, _| !p.starts_with(&prefix));
        }
        for path in removals {
            let prefix = format!("{path}/");
            tree.retain(|p, _| *p != path && !p.starts_with(&prefix));
        }
        for (path, mut node, hardlink) in additions {
            if let Some(target) = hardlink
                && let Some(existing) = tree.get(&target)
            {
                node.content = existing.content.clone();
            }
            if node.kind != 'd' {
                let prefix = format!("{path}/");
                tree.retain(|p, _| !p.starts_with(&prefix));
            }
            tree.insert(path, node);
        }
    }
    (tree, config)
}

/// The config fields compared, with "absent", null, empty list/map/string all equal.
pub fn config_fields(config: &Value) -> BTreeMap<&'static str, Value> {
    let section = &config["config"];
    let mut out = BTreeMap::new();
    for key in [
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Labels",
        "Volumes",
        "StopSignal",
        "Healthcheck",
        "Shell",
        "OnBuild",
    ] {
        let value = section.get(key).cloned().unwrap_or(Value::Null);
        let empty = match &value {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        out.insert(key, if empty { Value::Null } else { value });
    }
    out
}

pub fn describe_differences(
    docker: &BTreeMap<String, Node>,
    kiln: &BTreeMap<String, Node>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (path, node) in docker {
        match kiln.get(path) {
            None => diffs.push(format!(
                "only in docker: {path} {node:?}",
                node = short(node)
            )),
            Some(other) if other != node => diffs.push(format!(
                "differs: {path}: docker {} kiln {}",
                short(node),
                short(other)
            )),
            Some(_) => {}
        }
    }
    for (path, node) in kiln {
        if !docker.contains_key(path) {
            diffs.push(format!("only in kiln: {path} {}", short(node)));
        }
    }
    diffs
}

pub fn short(node: &Node) -> String {
    format!(
        "{} {:o} {}:{} link={:?} {} bytes",
        node.kind,
        node.mode,
        node.uid,
        node.gid,
        node.link,
        node.content.len()
    )
}
