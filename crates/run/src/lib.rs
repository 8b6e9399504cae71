//! kiln-run: the containers of `kiln run`, without a daemon.
//!
//! - [`container`]: a container's record under the store root
//!   (`containers/<id>/`: `config.json`, `state.json`, `monitor.lock`, the
//!   overlay `upper/` and `work/` dirs, the json-lines log), docker-like IDs and
//!   names, prefix lookup, and the observed status (a container whose monitor
//!   died is reported exited, never hangs anyone).
//! - [`config`]: docker's rules for merging the image config (Entrypoint, Cmd,
//!   Env, WorkingDir, User, StopSignal) with `kiln run` flags.
//! - [`monitor`]: the per-container supervisor (what conmon / containerd-shim
//!   are for docker): builds the overlay root, the network namespace and the
//!   published ports, spawns the container through `kiln-sandbox`, writes the
//!   log, reaps it and records the exit code. `kiln run -d` re-execs kiln as a
//!   daemonised monitor; attached `kiln run` is its own monitor.
//! - [`control`]: signals, stop with timeout, wait, exec and removal, safe
//!   against pid reuse (a pidfd opened while the monitor is known alive).
//! - [`logs`]: docker's json-file log format, written and read.
//! - [`net`]: `-p` parsing, the container's network namespace and the
//!   userspace TCP proxy from a host port into it.

pub mod config;
pub mod container;
pub mod control;
pub mod health;
pub mod ids;
pub mod logs;
pub mod monitor;
pub mod net;
pub mod signal;
mod sys;

pub use config::{NetworkMode, RunOptions};
pub use container::{ContainerConfig, ContainerState, Containers, Observed, Status};

use std::path::PathBuf;

/// Everything that can go wrong managing containers.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("No such container: {0} (see `kiln ps -a`)")]
    NoSuchContainer(String),
    #[error(
        "container name or ID prefix {prefix:?} is ambiguous: it matches {count} containers; give more characters"
    )]
    Ambiguous { prefix: String, count: usize },
    #[error(
        "the container name \"/{0}\" is already in use; remove that container (`kiln rm {0}`) or choose another --name"
    )]
    NameInUse(String),
    #[error("invalid container name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-]* is allowed")]
    InvalidName(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error(
        "cannot remove container {0}: container is running: stop the container before removing it or force remove (`kiln rm -f`)"
    )]
    RunningCannotRemove(String),
    #[error("container {id} has a corrupt {file}: {why} (remove it with `kiln rm -f {id}`)")]
    Corrupt {
        id: String,
        file: &'static str,
        why: String,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("No such image: {0} (see `kiln images`; import one with `kiln import` or `kiln load`)")]
    NoSuchImage(String),
    #[error("image {image}: {why}")]
    Image { image: String, why: String },
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    #[error(transparent)]
    Sandbox(#[from] kiln_sandbox::SandboxError),
    #[error(
        "cannot publish {addr}: {source} (is another program, or another container, using that port? choose another host port with -p)"
    )]
    PortInUse {
        addr: String,
        source: std::io::Error,
    },
    #[error("creating the container's network namespace failed: {0} (needs root)")]
    NetNs(std::io::Error),
    #[error("{message}")]
    MonitorStart { code: i32, message: String },
}

pub type Result<T, E = RunError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> RunError {
    let path = path.into();
    move |source| RunError::Io { what, path, source }
}
