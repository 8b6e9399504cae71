//! Shared fixtures: a busybox root filesystem (from the host's static busybox)
//! split over several overlay lower dirs, and helpers to run and inspect.

#![allow(dead_code)]

use kiln_sandbox::{ExitStatus, RootFs, SandboxError, SandboxSpec, Stream, run};
use std::path::{Path, PathBuf};

/// Returns false (after printing why) when the test cannot run here; panics
/// instead when `CI=true`, where everything must be installed.
pub fn environment_ready() -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root privileges");
    }
    if !Path::new("/bin/busybox").exists() {
        missing.push("/bin/busybox (apt-get install busybox-static)");
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!("sandbox tests need: {}", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    eprintln!("skipping: {message}");
    false
}

/// A scratch overlay: lower dirs (top-most first), upper and work dirs.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

fn write(path: &Path, contents: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, contents).unwrap();
}

impl Fixture {
    /// Three layers: busybox (bottom), /etc/passwd + /etc/group, test data (top).
    pub fn busybox() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("kiln-sbx-test")
            .tempdir()
            .unwrap();
        let base = dir.path().join("layer-busybox");
        std::fs::create_dir_all(base.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
        let list = std::process::Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", base.join("bin").join(applet)).unwrap();
            }
        }
        for d in ["tmp", "proc", "dev", "sys"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::set_permissions(
            base.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        let etc = dir.path().join("layer-etc");
        write(
            &etc.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n",
        );
        write(
            &etc.join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
        );
        let data = dir.path().join("layer-data");
        write(&data.join("data/keep"), "keep\n");
        write(&data.join("data/del"), "delete me\n");
        write(&data.join("olddir/old1"), "1\n");
        write(&data.join("olddir/old2"), "2\n");
        let upper = dir.path().join("upper");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        Fixture {
            lowers: vec![data, etc, base],
            upper,
            work,
            dir,
        }
    }

    /// One layer shaped like `busybox:local` from shared/tools/docker-oracle.sh:
    /// /bin (busybox), /etc/passwd, /etc/group, /root, /tmp — no /proc, /dev,
    /// /sys, /etc/hosts (so the runtime must create mount stubs).
    pub fn docker_oracle_like() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("kiln-sbx-test")
            .tempdir()
            .unwrap();
        let base = dir.path().join("layer-0");
        std::fs::create_dir_all(base.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
        for applet in ["sh", "true", "echo", "rm", "mkdir"] {
            std::os::unix::fs::symlink("busybox", base.join("bin").join(applet)).unwrap();
        }
        write(
            &base.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        );
        write(&base.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n");
        std::fs::create_dir_all(base.join("root")).unwrap();
        std::fs::create_dir_all(base.join("tmp")).unwrap();
        std::fs::set_permissions(
            base.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        let upper = dir.path().join("upper");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        Fixture {
            lowers: vec![base],
            upper,
            work,
            dir,
        }
    }

    /// Stacks the current upper dir as the new top lower layer and starts a
    /// fresh upper/work (the next RUN step).
    pub fn commit_layer(&mut self, name: &str) {
        let layer = self.dir.path().join(name);
        std::fs::rename(&self.upper, &layer).unwrap();
        self.lowers.insert(0, layer);
        std::fs::create_dir_all(&self.upper).unwrap();
        std::fs::remove_dir_all(&self.work).unwrap();
        std::fs::create_dir_all(&self.work).unwrap();
    }

    /// The upper dir as a docker layer would list it: "path/" for dirs,
    /// ".wh.name" for whiteouts, plain paths otherwise; sorted.
    pub fn upper_as_layer_listing(&self) -> Vec<String> {
        use std::os::unix::fs::FileTypeExt;
        let mut out = Vec::new();
        for rel in self.upper_entries() {
            let meta = std::fs::symlink_metadata(self.upper.join(&rel)).unwrap();
            if meta.is_dir() {
                out.push(format!("{rel}/"));
            } else if meta.file_type().is_char_device() {
                let (parent, name) = rel
                    .rsplit_once('/')
                    .map_or(("", rel.as_str()), |(p, n)| (p, n));
                out.push(if parent.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{parent}/.wh.{name}")
                });
            } else {
                out.push(rel);
            }
        }
        out.sort();
        out
    }

    pub fn rootfs(&self) -> RootFs {
        RootFs::Overlay {
            lower_dirs: self.lowers.clone(),
            upper_dir: self.upper.clone(),
            work_dir: self.work.clone(),
        }
    }

    pub fn spec(&self, script: &str) -> SandboxSpec {
        SandboxSpec::new(
            self.rootfs(),
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        )
    }

    /// Paths (relative) present in the upper dir, sorted.
    pub fn upper_entries(&self) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                out.push(
                    path.strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
                if path.symlink_metadata().unwrap().is_dir() {
                    walk(base, &path, out);
                }
            }
        }
        walk(&self.upper, &self.upper, &mut out);
        out.sort();
        out
    }
}

/// Output of one run: stdout, stderr and the status.
pub struct Captured {
    pub stdout: String,
    pub stderr: String,
    pub status: ExitStatus,
}

pub fn capture(spec: &SandboxSpec) -> Result<Captured, SandboxError> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let status = run(spec, |stream, bytes| match stream {
        Stream::Stdout => stdout.extend_from_slice(bytes),
        Stream::Stderr => stderr.extend_from_slice(bytes),
    })?;
    Ok(Captured {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        status,
    })
}

/// Runs a script that must succeed; returns its stdout.
pub fn sh_ok(spec: &SandboxSpec) -> String {
    let out = capture(spec).unwrap();
    assert!(
        out.status.success(),
        "script failed with {:?}\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}
