//! What to run and how: the public description of one sandboxed process.

use std::path::PathBuf;
use std::time::Duration;

/// The root filesystem of the sandbox.
#[derive(Clone, Debug)]
pub enum RootFs {
    /// overlayfs: read-only `lower_dirs` (top-most first, as overlayfs orders
    /// them; hundreds work) under a writable `upper_dir`. After the run the upper
    /// dir holds exactly the changes (whiteouts as 0/0 character devices, opaque
    /// dirs marked with `trusted.overlay.opaque`; overlayfs also leaves other
    /// `trusted.overlay.*` xattrs there, which the snapshot crate strips).
    /// `work_dir` must be an empty dir on the same filesystem as `upper_dir`.
    /// The upper dir's own mode/owner become those of `/` in the container.
    Overlay {
        lower_dirs: Vec<PathBuf>,
        upper_dir: PathBuf,
        work_dir: PathBuf,
    },
    /// A plain directory used as the root, read-write in place.
    Dir(PathBuf),
}

/// Network namespace choice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// Share the host's network namespace (`--network host`).
    Host,
    /// A new network namespace with only loopback, up (`--network none`).
    None,
    /// Join an existing network namespace, e.g. `/run/netns/NAME` or
    /// `/proc/PID/ns/net`, prepared by the caller with its veth/bridge (the
    /// default bridged network of `kiln run`). Loopback is brought up.
    Join(PathBuf),
}

/// An extra mount inside the container (RUN --mount, `-v`, `--tmpfs`).
#[derive(Clone, Debug)]
pub struct Mount {
    /// Absolute path inside the container; created (and, for files/dirs that did
    /// not exist, removed again after the run, as BuildKit does) if missing.
    pub target: String,
    pub kind: MountKind,
}

#[derive(Clone, Debug)]
pub enum MountKind {
    /// Bind `source_path` resolved *inside* `source_root` (symlinks and `..`
    /// cannot leave the root: openat2 RESOLVE_IN_ROOT). Use `Mount::bind` for a
    /// plain host path.
    Bind {
        source_root: PathBuf,
        source_path: String,
        readonly: bool,
    },
    /// A fresh tmpfs; `size` in bytes (kernel default when None), `mode` of its root.
    Tmpfs {
        size: Option<u64>,
        mode: Option<u32>,
    },
}

impl Mount {
    /// Binds the host path `source` (a dir or a file) at `target`.
    pub fn bind(source: impl Into<PathBuf>, target: impl Into<String>, readonly: bool) -> Mount {
        Mount {
            target: target.into(),
            kind: MountKind::Bind {
                source_root: source.into(),
                source_path: ".".into(),
                readonly,
            },
        }
    }

    /// A tmpfs at `target`.
    pub fn tmpfs(target: impl Into<String>, size: Option<u64>) -> Mount {
        Mount {
            target: target.into(),
            kind: MountKind::Tmpfs { size, mode: None },
        }
    }
}

/// A file whose contents kiln generates (`/etc/hosts`, `/etc/resolv.conf`,
/// `/etc/hostname`, a secret): written to a private tmpfs that exists only while
/// the sandbox does, and bind-mounted at `target`, so it never lands in the
/// upper dir.
#[derive(Clone, Debug)]
pub struct InjectedFile {
    pub target: String,
    pub contents: Vec<u8>,
    pub mode: u32,
    pub readonly: bool,
}

/// Where the process's stdin comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdin {
    /// /dev/null (RUN steps, `run -d` without -i).
    Null,
    /// A pipe; take its write end with `Running::take_stdin`.
    Pipe,
    /// The caller's own fd 0.
    Inherit,
}

/// Where stdout or stderr go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A pipe read by the caller (`run` streams it to the sink).
    Pipe,
    /// The caller's own fd.
    Inherit,
    /// /dev/null.
    Null,
}

/// Terminal size for a pseudo-terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// Everything about one sandboxed process. Build with `SandboxSpec::new` and set
/// the public fields.
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    pub rootfs: RootFs,
    /// The command; `argv[0]` is looked up in the container's `PATH` (from `env`,
    /// else docker's default) unless it contains a `/`.
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries. `HOME` is added from /etc/passwd when missing, as
    /// docker does.
    pub env: Vec<String>,
    /// Absolute working directory inside the container; created (root-owned,
    /// 0755, as runc does) if missing. Resolved inside the container's root.
    pub cwd: String,
    /// Docker `USER` syntax: `name`, `uid`, `name:group`, `uid:gid`, ... or empty
    /// for root. Resolved from the image's /etc/passwd and /etc/group, read as data.
    pub user: String,
    pub hostname: String,
    pub network: Network,
    /// Extra mounts, applied in order after /proc, /dev and /sys.
    pub mounts: Vec<Mount>,
    /// Generated files bind-mounted into the container (hosts, resolv.conf, ...).
    pub files: Vec<InjectedFile>,
    pub stdin: Stdin,
    pub stdout: Output,
    pub stderr: Output,
    /// Run on a new pseudo-terminal (stdin, stdout and stderr all on it; the
    /// master is `Running::take_pty`). Overrides the three fields above.
    pub tty: Option<WinSize>,
    /// Run a tiny init as PID 1 that reaps zombies and forwards signals
    /// (`docker run --init`); otherwise the command itself is PID 1, as in
    /// docker without --init and in BuildKit's RUN.
    pub init: bool,
    /// Set no_new_privs (docker only does so with
    /// `--security-opt no-new-privileges`; BuildKit RUN does not).
    pub no_new_privileges: bool,
    /// Mount the root read-only (`docker run --read-only`).
    pub readonly_rootfs: bool,
    pub seccomp: Seccomp,
    /// Capability set (bit n = capability n) for the bounding set and, as root,
    /// the permitted/effective sets; `DOCKER_DEFAULT_CAPABILITIES` by default
    /// (`--cap-add`/`--cap-drop` edit it). Added capabilities do not widen the
    /// seccomp allowlist as docker's profile would; use `Seccomp::Unconfined`.
    pub capabilities: u64,
    /// Used by `run` only: kill the process (SIGKILL) after this long.
    pub timeout: Option<Duration>,
}

impl SandboxSpec {
    /// A spec with docker's defaults: root user, cwd `/`, no network, hostname
    /// `sandbox`, stdin from /dev/null, stdout/stderr piped.
    pub fn new(rootfs: RootFs, argv: Vec<String>) -> SandboxSpec {
        SandboxSpec {
            rootfs,
            argv,
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ],
            cwd: "/".to_string(),
            user: String::new(),
            hostname: "sandbox".to_string(),
            network: Network::None,
            mounts: Vec::new(),
            files: Vec::new(),
            stdin: Stdin::Null,
            stdout: Output::Pipe,
            stderr: Output::Pipe,
            tty: None,
            init: false,
            no_new_privileges: false,
            readonly_rootfs: false,
            seccomp: Seccomp::DockerDefault,
            capabilities: DOCKER_DEFAULT_CAPABILITIES,
            timeout: None,
        }
    }
}

/// Docker's default capability set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL,
/// SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD,
/// AUDIT_WRITE, SETFCAP (0xa80425fb, as BuildKit's RUN shows).
pub const DOCKER_DEFAULT_CAPABILITIES: u64 = crate::child::DEFAULT_CAPS;

/// The seccomp filter the process runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seccomp {
    /// Docker's default profile (as for `docker run` and BuildKit's RUN).
    DockerDefault,
    /// No filter (`--security-opt seccomp=unconfined`).
    Unconfined,
}

/// Which output stream a chunk of bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How the process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// exit(code)
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
}

impl ExitStatus {
    /// The shell-style code docker reports: the exit code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}
