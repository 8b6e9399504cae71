//! Shared helpers for the image crate's integration tests: a small runnable image
//! built in memory, and the rule for tests that need outside tools.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::Command;

use kiln_image::{Digest, ExportImage, MemoryBlobs, Reference, sha256_digest};
use serde_json::json;

/// True when `tool` can run. When it cannot: with `CI=true` the test fails
/// loudly (CI installs every tool); otherwise it is skipped with a message.
pub fn tool_available(tool: &str, probe_args: &[&str]) -> bool {
    let works = Command::new(tool)
        .args(probe_args)
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    if !works {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "{tool} is required in CI but `{tool} {}` failed",
                probe_args.join(" ")
            );
        }
        eprintln!("SKIP: {tool} is not available");
    }
    works
}

/// True when /bin/busybox (Debian `busybox-static`) can run; same CI rule.
pub fn busybox_available() -> bool {
    tool_available("/bin/busybox", &["true"])
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|err| panic!("running {command:?}: {err}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn append_file(builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(1_700_000_000);
    builder.append_data(&mut header, path, data).unwrap();
}

fn append_dir(builder: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o755);
    header.set_mtime(1_700_000_000);
    builder
        .append_data(&mut header, path, std::io::empty())
        .unwrap();
}

fn append_symlink(builder: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    header.set_mtime(1_700_000_000);
    builder.append_link(&mut header, path, target).unwrap();
}

/// The test image: what it holds and how it is stored.
pub struct TestImage {
    pub blobs: MemoryBlobs,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub diff_ids: Vec<Digest>,
    pub greeting: &'static str,
}

impl TestImage {
    pub fn export(&self, names: &[&str]) -> ExportImage {
        ExportImage {
            manifest_digest: self.manifest_digest.clone(),
            names: names
                .iter()
                .map(|name| Reference::parse(name).unwrap())
                .collect(),
        }
    }
}

pub const GREETING: &str = "hello from a kiln-written image\n";

/// A two-layer runnable image: layer 1 (gzip) has /bin/busybox and /bin/sh,
/// layer 2 (plain tar) adds /etc/greeting. Cmd prints the greeting and $KILN_ENV.
pub fn make_test_image() -> TestImage {
    // The format tests do not run the binary: without busybox a stand-in keeps
    // them running; tests that run it check `busybox_available()` first.
    let busybox = std::fs::read("/bin/busybox")
        .unwrap_or_else(|_| b"\x7fELF stand-in for /bin/busybox".repeat(1000));
    let mut base = tar::Builder::new(Vec::new());
    append_dir(&mut base, "bin/");
    append_file(&mut base, "bin/busybox", 0o755, &busybox);
    append_symlink(&mut base, "bin/sh", "busybox");
    append_symlink(&mut base, "bin/cat", "busybox");
    append_dir(&mut base, "etc/");
    let base_tar = base.into_inner().unwrap();

    let mut top = tar::Builder::new(Vec::new());
    append_dir(&mut top, "etc/");
    append_file(&mut top, "etc/greeting", 0o644, GREETING.as_bytes());
    let top_tar = top.into_inner().unwrap();

    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&base_tar).unwrap();
    let base_gz = gzip.finish().unwrap();

    let diff_ids = vec![sha256_digest(&base_tar), sha256_digest(&top_tar)];
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/bin", "KILN_ENV=from-config"],
            "Cmd": ["/bin/sh", "-c", "cat /etc/greeting; echo env=$KILN_ENV"],
            "WorkingDir": "/",
            "Labels": {"org.kiln.test": "yes"}
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "kiln test: busybox"},
            {"created": "2024-01-01T00:00:00Z", "created_by": "kiln test: greeting"}
        ]
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let mut blobs = MemoryBlobs::new();
    let base_digest = blobs.insert(base_gz.clone());
    let top_digest = blobs.insert(top_tar.clone());
    let config_digest = blobs.insert(config_bytes.clone());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": base_digest.to_string(), "size": base_gz.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": top_digest.to_string(), "size": top_tar.len()}
        ]
    });
    let manifest_digest = blobs.insert(serde_json::to_vec_pretty(&manifest).unwrap());
    TestImage {
        blobs,
        manifest_digest,
        config_digest,
        diff_ids,
        greeting: GREETING,
    }
}

/// Lists regular files and symlinks under `root` as sorted relative paths.
pub fn tree(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    fn walk(dir: &Path, root: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if kind.is_dir() {
                walk(&path, root, found);
            } else {
                found.push(relative);
            }
        }
    }
    walk(root, root, &mut found);
    found.sort();
    found
}

pub const DERIVED_GREETING: &str = "hello from the derived image\n";

/// An image on top of `base` (same blob set, shared layers) whose third layer
/// replaces /etc/greeting.
pub fn make_derived_image(base: &TestImage) -> TestImage {
    let mut blobs = base.blobs.clone();
    let base_manifest: serde_json::Value =
        serde_json::from_slice(blobs.get(&base.manifest_digest).unwrap()).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(blobs.get(&base.config_digest).unwrap()).unwrap();

    let mut layer = tar::Builder::new(Vec::new());
    append_dir(&mut layer, "etc/");
    append_file(
        &mut layer,
        "etc/greeting",
        0o644,
        DERIVED_GREETING.as_bytes(),
    );
    let layer_tar = layer.into_inner().unwrap();
    let layer_digest = blobs.insert(layer_tar.clone());

    let mut diff_ids = base.diff_ids.clone();
    diff_ids.push(layer_digest.clone());
    config["rootfs"]["diff_ids"] =
        json!(diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>());
    config["history"]
        .as_array_mut()
        .unwrap()
        .push(json!({"created_by": "kiln test: derived"}));
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = blobs.insert(config_bytes.clone());
    let mut manifest = base_manifest;
    manifest["config"]["digest"] = json!(config_digest.to_string());
    manifest["config"]["size"] = json!(config_bytes.len());
    manifest["layers"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": layer_digest.to_string(),
        "size": layer_tar.len()
    }));
    let manifest_digest = blobs.insert(serde_json::to_vec(&manifest).unwrap());
    TestImage {
        blobs,
        manifest_digest,
        config_digest,
        diff_ids,
        greeting: DERIVED_GREETING,
    }
}

/// The member paths of a tar archive, in archive order.
pub fn member_names(archive: impl std::io::Read) -> Vec<String> {
    let mut tar = tar::Archive::new(archive);
    tar.entries()
        .unwrap()
        .map(|entry| {
            entry
                .unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}
