//! Sandbox: runs one process in Linux namespaces on an overlayfs root (the RUN
//! step and `kiln run`). Knows nothing of Dockerfiles or image formats.
//!
//! A direct namespace implementation (no runc, no libcontainer): the parent
//! prepares everything — the overlay root and every bind/tmpfs as *detached*
//! mounts (new mount API), user lookup in the image's /etc/passwd and /etc/group
//! read as data through `openat2(RESOLVE_IN_ROOT)`, C strings, fds — then a
//! dedicated spawner thread `clone3`s a child into new mount, PID, UTS, IPC (and
//! optionally network) namespaces. The child only attaches what was prepared,
//! mounts /proc, /dev and /sys, masks paths as docker does, pivots, drops to
//! docker's default capabilities and the resolved user, and execs. See README.md
//! for the measurements behind this design.
//!
//! ```no_run
//! use kiln_sandbox::{RootFs, SandboxSpec, run};
//! let rootfs = RootFs::Overlay {
//!     lower_dirs: vec!["/layers/2".into(), "/layers/1".into()],
//!     upper_dir: "/snap/upper".into(),
//!     work_dir: "/snap/work".into(),
//! };
//! let spec = SandboxSpec::new(rootfs, vec!["/bin/sh".into(), "-c".into(), "echo hi".into()]);
//! let status = run(&spec, |stream, bytes| print!("{stream:?}: {}", String::from_utf8_lossy(bytes)))?;
//! assert!(status.success());
//! # Ok::<(), kiln_sandbox::SandboxError>(())
//! ```

mod child;
mod fds;
mod process;
mod rootfs;
mod running;
mod seccomp;
mod spec;
mod sys;
mod user;

pub use process::{ExecSpec, exec_in, spawn};
pub use rootfs::read_only_overlay;
pub use running::{Running, run};
pub use spec::{
    DOCKER_DEFAULT_CAPABILITIES, ExitStatus, InjectedFile, Mount, MountKind, Network, Output,
    RootFs, SandboxSpec, Seccomp, Stdin, Stream, WinSize,
};
pub use user::{ExecUser, UserError, resolve_user};

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong starting or running a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error("cannot mount the overlay root ({layers} lower dirs, upper {upper}): {message}")]
    Overlay {
        layers: usize,
        upper: PathBuf,
        message: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    User(#[from] UserError),
    #[error("sandbox setup failed {step}{detail}: {source}")]
    Setup {
        step: &'static str,
        detail: String,
        source: std::io::Error,
    },
    #[error("exec: \"{program}\": executable file not found in $PATH")]
    ExecNotFound { program: String },
    #[error("exec: \"{program}\": {source}")]
    Exec {
        program: String,
        source: std::io::Error,
    },
    #[error("command timed out after {0:?} and was killed")]
    Timeout(Duration),
    #[error("creating the sandbox process failed: {0} (needs root and Linux 6.8+)")]
    Clone(std::io::Error),
}
