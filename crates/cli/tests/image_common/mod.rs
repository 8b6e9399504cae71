//! Helpers shared by the end-to-end tests of the `kiln` binary (`image_*`,
//! `build_differential`, `run_containers`, and `registry_*` through
//! `registry_common`): run the real `kiln` binary against a throwaway store,
//! build and tar a busybox rootfs, check for root and external tools (skip
//! locally, fail under CI=true).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn kiln_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

/// A `kiln` command using the store at `root`.
pub fn kiln(root: &Path) -> Command {
    let mut cmd = Command::new(kiln_bin());
    cmd.arg("--root").arg(root).env_remove("KILN_ROOT");
    cmd
}

/// Runs kiln with `args` (stdin closed) and returns what it did.
pub fn kiln_output(root: &Path, args: &[&str]) -> Output {
    kiln(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running kiln")
}

/// Runs kiln and asserts success; returns stdout.
pub fn kiln_ok(root: &Path, args: &[&str]) -> String {
    let out = kiln_output(root, args);
    assert_success(&format!("kiln {}", args.join(" ")), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// True if the tool can run; otherwise fails under CI=true, or prints a skip
/// message and returns false.
pub fn have_tool(name: &str, probe: &[&str]) -> bool {
    let ok = Command::new(name)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "{name} is required under CI=true but `{name} {}` failed",
                probe.join(" ")
            );
        }
        eprintln!(
            "SKIP: {name} not available (`{name} {}` failed)",
            probe.join(" ")
        );
    }
    ok
}

/// True when the tests run as root (kiln's sandbox needs namespaces and
/// overlayfs).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The static busybox binary (Debian's busybox-static).
pub fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

pub fn require_busybox() -> Option<PathBuf> {
    let found = busybox();
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("busybox (package busybox-static) is required under CI=true");
        }
        eprintln!("SKIP: busybox not found (install busybox-static)");
    }
    found
}

/// Builds a busybox root filesystem in `dir`: /bin/busybox, applet symlinks,
/// /etc/hostname and an empty /tmp; returns the path of a tar of it.
pub fn busybox_rootfs_tar(busybox: &Path, dir: &Path, extra_bytes: usize) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "ls", "cat", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/hostname"), b"kiln-test\n").unwrap();
    if extra_bytes > 0 {
        // Incompressible data so an import takes long enough to be interrupted.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let data: Vec<u8> = (0..extra_bytes)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(rootfs.join("etc/payload.bin"), data).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    tar_directory(&rootfs, &tar);
    tar
}

/// Writes a tar of everything under `dir` (members named `./...`) to `tar`
/// with the system's tar, as a rootfs tarball for `kiln import`.
pub fn tar_directory(dir: &Path, tar: &Path) {
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .status()
        .expect("running tar");
    assert!(status.success(), "tar of {} failed", dir.display());
}

/// A small xorshift generator: enough randomness for kill timing without a crate.
pub struct Rng(u64);

impl Rng {
    pub fn from_time() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(42)
            | 1;
        eprintln!("rng seed {seed}");
        Rng(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
