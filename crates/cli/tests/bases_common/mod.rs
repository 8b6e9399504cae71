//! The local base images (`kiln/debian:bookworm`, `kiln/busybox`, `kiln/golang`,
//! `kiln/python`, `kiln/node`, `kiln/nginx`) for tests that build real apps:
//! `scripts/make-base-images.sh` run once per test binary into a throwaway
//! store (the script's on-disk cache makes every run after the first on a
//! machine a matter of loading archives), and the same images handed to the
//! real Docker engine through `kiln save` + `docker load`.
#![allow(dead_code)] // each test binary uses its own subset

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;

use crate::diff_common::output_text;
use crate::image_common::{have_tool, is_root, kiln, kiln_bin};

/// Every image the script makes.
pub const BASE_IMAGES: [&str; 6] = [
    "kiln/debian:bookworm",
    "kiln/busybox:latest",
    "kiln/golang:1.19",
    "kiln/python:3.11",
    "kiln/node:18",
    "kiln/nginx:latest",
];

/// The store with the base images, shared by the tests of one binary.
pub struct Bases {
    /// Scratch directory of this test binary (the store is `root` inside it).
    pub dir: PathBuf,
    pub root: PathBuf,
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Skips (returns false) locally, panics under CI=true.
pub fn skip_or_fail(why: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why} (required under CI=true)");
    }
    eprintln!("SKIP: {why}");
    false
}

static STORE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Removes the shared store when the test binary exits (statics are never
/// dropped): containers first, so no monitor keeps a mount busy.
extern "C" fn remove_store() {
    if let Some(dir) = STORE_DIR.get() {
        let root = dir.join("store");
        if let Ok(out) = kiln(&root).args(["ps", "-a", "-q", "--no-trunc"]).output() {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = kiln(&root).arg("rm").arg("-f").args(&ids).output();
            }
        }
        let _ = fs::remove_dir_all(dir);
    }
}

/// Runs scripts/make-base-images.sh once into a fresh store named after
/// `label`; None: skip (locally, when root or a tool is missing).
pub fn bases(label: &str) -> Option<&'static Bases> {
    static BASES: OnceLock<Result<Option<Bases>, String>> = OnceLock::new();
    let made = BASES.get_or_init(|| {
        if !is_root() {
            skip_or_fail("building the base images needs root (kiln's sandbox)");
            return Ok(None);
        }
        for (tool, probe) in [
            ("debootstrap", "--version"),
            ("jq", "--version"),
            ("/bin/busybox", "true"),
        ] {
            if !have_tool(tool, &[probe]) {
                return Ok(None);
            }
        }
        let dir = std::env::temp_dir().join(format!("kiln-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let _ = STORE_DIR.set(dir.clone());
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe { libc::atexit(remove_store) };
        let root = dir.join("store");
        let start = Instant::now();
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/make-base-images.sh"))
            .arg("--kiln")
            .arg(kiln_bin())
            .arg("--root")
            .arg(&root)
            .env_remove("KILN_ROOT")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running make-base-images.sh: {e}"))?;
        eprintln!(
            "make-base-images.sh: {:.1} s\n{}",
            start.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(format!("make-base-images.sh failed: {}", output_text(&out)));
        }
        Ok(Some(Bases { dir, root }))
    });
    match made {
        Ok(bases) => bases.as_ref(),
        Err(e) => panic!("{e}"),
    }
}

pub fn run_kiln(root: &Path, args: &[&str]) -> Output {
    kiln(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running kiln")
}

/// Runs kiln, asserts success, returns stdout.
pub fn ok(root: &Path, args: &[&str]) -> String {
    let out = run_kiln(root, args);
    assert!(
        out.status.success(),
        "kiln {}: {}",
        args.join(" "),
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kiln inspect WHAT`'s first object.
pub fn inspect(root: &Path, what: &str) -> Value {
    let text = ok(root, &["inspect", what]);
    let value: Value = serde_json::from_str(&text).expect("inspect JSON");
    value[0].clone()
}

/// The reference engine's CLI, with BuildKit.
pub fn docker() -> Command {
    let mut cmd = Command::new("/usr/bin/docker");
    cmd.env("DOCKER_BUILDKIT", "1");
    cmd
}

pub fn docker_id(image: &str) -> Option<String> {
    let out = docker()
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Loads the kiln/* base images into docker (`kiln save | docker load`)
/// unless docker already has the very same images.
pub fn load_bases_into_docker(bases: &Bases) {
    static LOADED: OnceLock<()> = OnceLock::new();
    LOADED.get_or_init(|| {
        let missing: Vec<&str> = BASE_IMAGES
            .iter()
            .copied()
            .filter(|r| docker_id(r).as_deref() != inspect(&bases.root, r)["Id"].as_str())
            .collect();
        if missing.is_empty() {
            return;
        }
        let archive = bases.dir.join("bases-for-docker.tar");
        let mut args = vec!["save", "-o", archive.to_str().expect("utf8 path")];
        args.extend(missing.iter().copied());
        ok(&bases.root, &args);
        let out = docker()
            .arg("load")
            .arg("-i")
            .arg(&archive)
            .output()
            .expect("docker load");
        assert!(out.status.success(), "docker load: {}", output_text(&out));
        let _ = fs::remove_file(&archive);
    });
}
