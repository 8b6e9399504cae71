//! The parent side: turns a `SandboxSpec` (or an `ExecSpec`) into a prepared
//! `Plan` (detached mounts, resolved user, C strings, pipes), clones the child on
//! the spawner thread, and returns a `Running` handle once it has exec'd.

use crate::SandboxError;
use crate::child::{self, MoveMount, Plan, REPORT_LEN, Step};
use crate::fds::{dev_null, owned, pipe, recv_fd, socketpair};
use crate::rootfs::{clean_components, ensure_in_root, mount_point, overlay_mount, read_in_root};
use crate::running::Running;
use crate::spec::{MountKind, Network, Output, RootFs, SandboxSpec, Seccomp, Stdin};
use crate::sys::{self, Errno};
use crate::user::resolve_user;
use libc::c_int;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc;

/// Docker's PATH when the environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) fn cstring(what: &str, text: &[u8]) -> Result<CString, SandboxError> {
    CString::new(text).map_err(|_| SandboxError::InvalidSpec(format!("{what} contains a NUL byte")))
}

pub(crate) fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(Errno) -> SandboxError {
    let path = path.into();
    move |errno| SandboxError::Io {
        what,
        path,
        source: errno.io(),
    }
}

pub(crate) fn check_absolute(what: &str, path: &str) -> Result<(), SandboxError> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(SandboxError::InvalidSpec(format!(
            "{what} {path:?} must be an absolute path inside the container"
        )))
    }
}

fn cap_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40)
}

/// A job for the spawner thread: clone the child for this plan.
struct SpawnJob {
    plan: *const Plan,
    flags: u64,
    /// Share the address space (CLONE_VM | CLONE_VFORK); see `clone_child`.
    share_memory: bool,
    reply: mpsc::Sender<Result<(libc::pid_t, c_int), Errno>>,
}

// SAFETY: the plan pointer stays valid while the caller blocks on the reply, and
// the spawner only reads it (the child reads its own copy).
unsafe impl Send for SpawnJob {}

/// Stack size for children cloned with CLONE_VM (the child's setup code needs
/// a few KiB; the margin is for libc wrappers).
const CHILD_STACK_SIZE: usize = 256 * 1024;

extern "C" fn child_entry(plan: *mut libc::c_void) -> c_int {
    // SAFETY: `plan` is the live Plan of the blocked caller (CLONE_VM: same
    // memory); child_main only makes async-signal-safe calls and never returns.
    unsafe { child::child_main(&*(plan as *const Plan)) }
}

/// Clones the child for `job`. Returns its pid and pidfd.
///
/// Two ways, chosen by measurement: a fork-style clone copies the parent's page
/// tables, which costs ~0.1 ms per 1 MiB of the parent's resident memory (a
/// 1 GiB kiln process would pay ~90 ms per RUN step). So the common case shares
/// the address space like posix_spawn (CLONE_VM | CLONE_VFORK, own stack, all
/// signals blocked): this thread sleeps until the child has exec'd or exited,
/// and the child only writes to its own stack. A child that never execs (the
/// `--init` relay, `exec_in`) cannot share memory and uses a fork-style clone.
fn clone_child(job: &SpawnJob) -> Result<(libc::pid_t, c_int), Errno> {
    let mut pidfd: c_int = -1;
    if !job.share_memory {
        // SAFETY: the child only runs child_main, which is async-signal-safe,
        // on its copy of the plan.
        return match unsafe { sys::clone3(job.flags, &mut pidfd) } {
            Ok(0) => unsafe { child::child_main(&*job.plan) },
            Ok(pid) => Ok((pid, pidfd)),
            Err(errno) => Err(errno),
        };
    }
    // The child's stack, with a PROT_NONE guard page below it: an overflow must
    // fault, not scribble over the parent's (shared) heap.
    const GUARD: usize = 4096;
    // SAFETY: anonymous private mapping we own and unmap below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            CHILD_STACK_SIZE + GUARD,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    // SAFETY: the first page of our own mapping.
    unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) };
    // The stack grows down: pass its 16-byte aligned top.
    let top = (base as usize + GUARD + CHILD_STACK_SIZE) & !15;
    let flags =
        job.flags as c_int | libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: all signals are blocked around the clone so that no handler of
    // the parent runs on the shared memory in the child (it resets dispositions
    // before unblocking); the plan and the stack outlive the child's use of
    // them because CLONE_VFORK suspends this thread until exec or exit.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_entry,
            top as *mut libc::c_void,
            flags,
            job.plan as *mut libc::c_void,
            &mut pidfd as *mut c_int,
        );
        let errno = Errno::last();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        libc::munmap(base, CHILD_STACK_SIZE + GUARD);
        if pid < 0 {
            Err(errno)
        } else {
            Ok((pid, pidfd))
        }
    }
}

/// All children are cloned by one long-lived thread: PR_SET_PDEATHSIG fires when
/// the *thread* that forked a child exits, so forking from short-lived worker
/// threads (tokio's blocking pool) would kill sandboxes at random.
fn spawner() -> &'static mpsc::Sender<SpawnJob> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("kiln-sandbox-spawner".into())
            .spawn(move || {
                for job in rx {
                    let _ = job.reply.send(clone_child(&job));
                }
            })
            .ok();
        tx
    })
}

/// Starts the sandboxed process and returns once it has exec'd (or failed to:
/// setup errors, unknown users and missing commands are returned here).
pub fn spawn(spec: &SandboxSpec) -> Result<Running, SandboxError> {
    if spec.argv.is_empty() {
        return Err(SandboxError::InvalidSpec(
            "argv is empty: nothing to run".into(),
        ));
    }
    check_absolute("working directory", &spec.cwd)?;

    // Root filesystem, as a detached mount nobody else can see.
    let (root_mount, stub_base) = match &spec.rootfs {
        RootFs::Overlay {
            lower_dirs,
            upper_dir,
            work_dir,
        } => (
            overlay_mount(lower_dirs, upper_dir, work_dir)?,
            upper_dir.clone(),
        ),
        RootFs::Dir(dir) => {
            let path = cstring("root dir", dir.as_os_str().as_bytes())?;
            let tree = sys::open_tree_clone(libc::AT_FDCWD, &path, true)
                .map_err(io_err("cloning the root dir", dir.clone()))?;
            (owned(tree), dir.clone())
        }
    };
    let root = root_mount.as_raw_fd();

    // The user, from the image's own files, read as data.
    let passwd = read_in_root(root, c"etc/passwd", "/etc/passwd")?;
    let group = read_in_root(root, c"etc/group", "/etc/group")?;
    let user = resolve_user(&spec.user, passwd.as_deref(), group.as_deref())?;

    let mut env: Vec<String> = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }

    // Mount points docker always uses (left in place if created, as runc does).
    for dir in ["proc", "dev", "sys"] {
        ensure_in_root(root, &[dir], true)?;
    }

    // Extra mounts and injected files, as detached mounts; their targets are
    // created now (through the root mount) and remembered for removal.
    let mut moves: Vec<(String, OwnedFd)> = Vec::new();
    let mut stubs: Vec<String> = Vec::new();
    if !spec.files.is_empty() {
        let files_fs = owned(
            sys::new_fs_mount(c"tmpfs", &[(c"mode", c"0755"), (c"size", c"16m")], 0)
                .map_err(io_err("creating the tmpfs for injected files", "tmpfs"))?,
        );
        for (index, file) in spec.files.iter().enumerate() {
            check_absolute("injected file", &file.target)?;
            let name = CString::new(format!("f{index}"))
                .map_err(|_| SandboxError::InvalidSpec("name".into()))?;
            // SAFETY: plain syscall relative to our tmpfs.
            let fd = unsafe {
                libc::openat(
                    files_fs.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                    file.mode,
                )
            };
            if fd < 0 {
                return Err(io_err("writing injected file", file.target.clone())(
                    Errno::last(),
                ));
            }
            let mut out = File::from(owned(fd));
            std::io::Write::write_all(&mut out, &file.contents).map_err(|source| {
                SandboxError::Io {
                    what: "writing injected file",
                    path: file.target.clone().into(),
                    source,
                }
            })?;
            // SAFETY: fchmod on our fd; the umask must not change the mode.
            unsafe { libc::fchmod(out.as_raw_fd(), file.mode) };
            let tree = owned(
                sys::open_tree_clone(files_fs.as_raw_fd(), &name, false)
                    .map_err(io_err("binding injected file", file.target.clone()))?,
            );
            let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC;
            if file.readonly {
                attrs |= sys::MOUNT_ATTR_RDONLY;
            }
            sys::mount_setattr(tree.as_raw_fd(), false, attrs)
                .map_err(io_err("binding injected file", file.target.clone()))?;
            let components = clean_components(&file.target);
            stubs.extend(ensure_in_root(root, &components, false)?);
            moves.push((components.join("/"), tree));
        }
    }
    for mount in &spec.mounts {
        check_absolute("mount target", &mount.target)?;
        let components = clean_components(&mount.target);
        if components.is_empty() {
            return Err(SandboxError::InvalidSpec(
                "a mount cannot replace / itself".into(),
            ));
        }
        let (tree, is_dir) = match &mount.kind {
            MountKind::Bind {
                source_root,
                source_path,
                readonly,
            } => {
                let shown = source_root.join(source_path.trim_start_matches('/'));
                let root_c = cstring("bind source", source_root.as_os_str().as_bytes())?;
                // SAFETY: plain syscall.
                let src_root =
                    unsafe { libc::open(root_c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
                if src_root < 0 {
                    return Err(io_err("opening bind mount source", shown)(Errno::last()));
                }
                let src_root = owned(src_root);
                let rel = if source_path.trim_matches('/').is_empty() {
                    ".".to_string()
                } else {
                    source_path.trim_start_matches('/').to_string()
                };
                let rel_c = cstring("bind source", rel.as_bytes())?;
                let src = owned(
                    sys::open_in_root(src_root.as_raw_fd(), &rel_c, libc::O_PATH, 0)
                        .map_err(io_err("opening bind mount source", shown.clone()))?,
                );
                let is_dir = File::from(src.try_clone().map_err(|source| SandboxError::Io {
                    what: "opening bind mount source",
                    path: shown.clone(),
                    source,
                })?)
                .metadata()
                .map(|m| m.is_dir())
                .unwrap_or(true);
                let tree = owned(
                    sys::open_tree_clone(src.as_raw_fd(), c"", true)
                        .map_err(io_err("binding", shown.clone()))?,
                );
                if *readonly {
                    sys::mount_setattr(tree.as_raw_fd(), true, sys::MOUNT_ATTR_RDONLY)
                        .map_err(io_err("making bind mount read-only", shown))?;
                }
                (tree, is_dir)
            }
            MountKind::Tmpfs { size, mode } => {
                let size_c = size.map(|s| CString::new(s.to_string()).unwrap_or_default());
                let mode_c =
                    CString::new(format!("{:o}", mode.unwrap_or(0o1777))).unwrap_or_default();
                let mut options: Vec<(&CStr, &CStr)> = vec![(c"mode", &mode_c)];
                if let Some(size_c) = &size_c {
                    options.push((c"size", size_c));
                }
                let tree = sys::new_fs_mount(
                    c"tmpfs",
                    &options,
                    sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
                )
                .map_err(io_err("creating tmpfs for", mount.target.clone()))?;
                (owned(tree), true)
            }
        };
        stubs.extend(ensure_in_root(root, &components, is_dir)?);
        moves.push((components.join("/"), tree));
    }

    let process = ProcessInput {
        argv: &spec.argv,
        env,
        cwd: &spec.cwd,
        uid: user.uid,
        gid: user.gid,
        groups: user.supplementary_gids,
        stdin: spec.stdin,
        stdout: spec.stdout,
        stderr: spec.stderr,
        tty: spec.tty,
        init: spec.init,
        no_new_privileges: spec.no_new_privileges,
        seccomp: spec.seccomp,
        capabilities: spec.capabilities,
    };
    let netns = match &spec.network {
        Network::Join(path) => {
            let file = File::open(path).map_err(|source| SandboxError::Io {
                what: "opening the network namespace",
                path: path.clone(),
                source,
            })?;
            Some(owned(std::os::fd::IntoRawFd::into_raw_fd(file)))
        }
        _ => None,
    };
    let container = ContainerInput {
        root_mount,
        moves,
        hostname: cstring("hostname", spec.hostname.as_bytes())?,
        network: spec.network.clone(),
        netns,
        readonly_rootfs: spec.readonly_rootfs,
        stubs,
        stub_base,
    };
    launch(process, Target::New(container))
}

/// The process part of a start: what runs, as whom, with which stdio.
struct ProcessInput<'a> {
    argv: &'a [String],
    env: Vec<String>,
    cwd: &'a str,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    stdin: Stdin,
    stdout: Output,
    stderr: Output,
    tty: Option<crate::spec::WinSize>,
    init: bool,
    no_new_privileges: bool,
    seccomp: Seccomp,
    capabilities: u64,
}

/// The filesystem part of a new container.
struct ContainerInput {
    root_mount: OwnedFd,
    moves: Vec<(String, OwnedFd)>,
    hostname: CString,
    network: Network,
    /// The namespace to join for `Network::Join`.
    netns: Option<OwnedFd>,
    readonly_rootfs: bool,
    stubs: Vec<String>,
    stub_base: PathBuf,
}

enum Target {
    New(ContainerInput),
    /// Join the namespaces of the process behind this pidfd.
    Join(OwnedFd),
}

/// Clones the child for `process` in `target`, waits for its exec, and returns
/// the handle (or the child's setup error).
fn launch(process: ProcessInput<'_>, target: Target) -> Result<Running, SandboxError> {
    let program = process
        .argv
        .first()
        .cloned()
        .ok_or_else(|| SandboxError::InvalidSpec("argv is empty: nothing to run".into()))?;
    check_absolute("working directory", process.cwd)?;

    // stdio
    let mut child_side: Vec<OwnedFd> = Vec::new();
    let mut stdio_fds: [c_int; 3] = [-1; 3];
    let mut parent_stdin = None;
    let mut parent_out: [Option<File>; 2] = [None, None];
    let mut tty_parent_socket = None;
    let mut tty_child_socket = -1;
    if process.tty.is_some() {
        let (parent_end, child_end) = socketpair()?;
        tty_child_socket = child_end.as_raw_fd();
        child_side.push(child_end);
        tty_parent_socket = Some(parent_end);
    } else {
        match process.stdin {
            Stdin::Null => {
                let fd = dev_null(libc::O_RDONLY)?;
                stdio_fds[0] = fd.as_raw_fd();
                child_side.push(fd);
            }
            Stdin::Pipe => {
                let (read, write) = pipe()?;
                stdio_fds[0] = read.as_raw_fd();
                child_side.push(read);
                parent_stdin = Some(File::from(write));
            }
            Stdin::Inherit => {}
        }
        for (index, output) in [process.stdout, process.stderr].into_iter().enumerate() {
            match output {
                Output::Pipe => {
                    let (read, write) = pipe()?;
                    stdio_fds[index + 1] = write.as_raw_fd();
                    child_side.push(write);
                    parent_out[index] = Some(File::from(read));
                }
                Output::Null => {
                    let fd = dev_null(libc::O_WRONLY)?;
                    stdio_fds[index + 1] = fd.as_raw_fd();
                    child_side.push(fd);
                }
                Output::Inherit => {}
            }
        }
    }
    let (error_read, error_write) = pipe()?;
    let (lifeline_read, lifeline_write) = pipe()?;

    // The command: argv, env and PATH lookup candidates as C strings.
    let argv: Vec<CString> = process
        .argv
        .iter()
        .map(|a| cstring("argv", a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let env_c: Vec<CString> = process
        .env
        .iter()
        .map(|e| cstring("env", e.as_bytes()))
        .collect::<Result<_, _>>()?;
    let exec_candidates: Vec<CString> = if program.contains('/') {
        vec![cstring("argv[0]", program.as_bytes())?]
    } else {
        let path = process
            .env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .map(|dir| if dir.is_empty() { "." } else { dir })
            .map(|dir| cstring("PATH", format!("{dir}/{program}").as_bytes()))
            .collect::<Result<_, _>>()?
    };
    let cwd_components = clean_components(process.cwd);
    let cwd_prefixes = (1..=cwd_components.len())
        .map(|depth| {
            cstring(
                "cwd",
                format!("/{}", cwd_components[..depth].join("/")).as_bytes(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = cstring("cwd", format!("/{}", cwd_components.join("/")).as_bytes())?;

    // Fds the child needs; everything else it closes first.
    let mut keep_fds: Vec<RawFd> = vec![error_write.as_raw_fd(), lifeline_read.as_raw_fd()];
    keep_fds.extend(child_side.iter().map(|fd| fd.as_raw_fd()));
    let mut plan_moves = Vec::new();
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    let netns_fd = match &target {
        Target::New(ContainerInput {
            netns: Some(fd), ..
        }) => fd.as_raw_fd(),
        _ => -1,
    };
    let (root_mount_fd, join_pidfd, hostname, new_netns, readonly_rootfs) = match &target {
        Target::New(container) => {
            keep_fds.push(container.root_mount.as_raw_fd());
            for (target, fd) in &container.moves {
                plan_moves.push(MoveMount {
                    target: cstring("mount target", target.as_bytes())?,
                    mount_fd: fd.as_raw_fd(),
                });
                keep_fds.push(fd.as_raw_fd());
            }
            if container.network == Network::None {
                flags |= libc::CLONE_NEWNET;
            }
            if let Some(fd) = &container.netns {
                keep_fds.push(fd.as_raw_fd());
            }
            (
                container.root_mount.as_raw_fd(),
                -1,
                container.hostname.clone(),
                container.network != Network::Host,
                container.readonly_rootfs,
            )
        }
        Target::Join(pidfd) => {
            flags = 0;
            keep_fds.push(pidfd.as_raw_fd());
            (-1, pidfd.as_raw_fd(), CString::default(), false, false)
        }
    };
    keep_fds.sort_unstable();

    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env_c.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());

    let plan = Plan {
        root_mount_fd,
        mount_point: cstring("mount point", mount_point()?.as_os_str().as_bytes())?,
        moves: plan_moves,
        hostname,
        new_netns,
        netns_fd,
        readonly_rootfs,
        dev_core: Path::new("/proc/kcore").exists(),
        cwd,
        cwd_prefixes,
        uid: process.uid,
        gid: process.gid,
        groups: process.groups,
        cap_last: cap_last_cap(),
        argv,
        argv_ptrs,
        env: env_c,
        env_ptrs,
        exec_candidates,
        stdio: stdio_fds,
        tty: process.tty.map(|size| (size.rows, size.cols)),
        tty_socket: tty_child_socket,
        join_pidfd,
        error_pipe: error_write.as_raw_fd(),
        lifeline: lifeline_read.as_raw_fd(),
        keep_fds,
        init: process.init,
        no_new_privs: process.no_new_privileges,
        capabilities: process.capabilities,
        seccomp: match process.seccomp {
            Seccomp::DockerDefault => crate::seccomp::docker_default(),
            Seccomp::Unconfined => &[],
        },
    };

    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .send(SpawnJob {
            plan: &plan,
            flags: flags as u64,
            share_memory: !plan.init && plan.join_pidfd < 0,
            reply: reply_tx,
        })
        .map_err(|_| SandboxError::Clone(std::io::Error::other("the spawner thread is gone")))?;
    let (pid, pidfd) = reply_rx
        .recv()
        .map_err(|_| SandboxError::Clone(std::io::Error::other("the spawner thread is gone")))?
        .map_err(|e| SandboxError::Clone(e.io()))?;
    let pidfd = owned(pidfd);

    // The child has its copies; ours must go so that EOFs and unmounts happen.
    let (stubs, stub_base) = match target {
        Target::New(container) => (container.stubs, Some(container.stub_base)),
        Target::Join(_) => (Vec::new(), None),
    };
    drop(child_side);
    drop(error_write);
    drop(lifeline_read);

    let mut running = Running {
        pid,
        pidfd,
        stdin: parent_stdin,
        stdout: parent_out[0].take(),
        stderr: parent_out[1].take(),
        pty: None,
        stubs,
        stub_base,
        status: None,
    };
    if let Some(socket) = tty_parent_socket {
        // EOF instead of an fd means the child failed; the error pipe says why.
        running.pty = recv_fd(socket.as_raw_fd()).map(File::from);
    }

    // Wait for exec (EOF on the CLOEXEC error pipe) or an error record.
    let mut record = [0u8; REPORT_LEN];
    let got = sys::read_full(error_read.as_raw_fd(), &mut record)
        .map_err(|e| SandboxError::Clone(e.io()))?;
    drop(lifeline_write);
    if got == REPORT_LEN {
        let _ = running.wait();
        let word = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(&record[range]);
            bytes
        };
        let step = child::Step::from_u32(u32::from_le_bytes(word(0..4)));
        let errno = Errno(i32::from_le_bytes(word(4..8)));
        let index = u32::from_le_bytes(word(8..12)) as usize;
        return Err(setup_error(step, errno, index, &plan, &program));
    }
    if process.tty.is_some() && running.pty.is_none() {
        let _ = running.kill(libc::SIGKILL);
        let _ = running.wait();
        return Err(SandboxError::Setup {
            step: "setting up the terminal",
            detail: String::new(),
            source: std::io::Error::other("the terminal was not received"),
        });
    }
    Ok(running)
}

/// What to run inside an already running sandbox (`kiln exec`).
#[derive(Clone, Debug)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    /// `KEY=VALUE`; `HOME` is added from the container's /etc/passwd if missing.
    pub env: Vec<String>,
    /// Absolute; created if missing.
    pub cwd: String,
    /// Docker `USER` syntax, resolved in the container's /etc/passwd.
    pub user: String,
    pub stdin: Stdin,
    pub stdout: Output,
    pub stderr: Output,
    pub tty: Option<crate::spec::WinSize>,
    pub no_new_privileges: bool,
    pub seccomp: Seccomp,
    pub capabilities: u64,
}

impl ExecSpec {
    pub fn new(argv: Vec<String>) -> ExecSpec {
        ExecSpec {
            argv,
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cwd: "/".into(),
            user: String::new(),
            stdin: Stdin::Null,
            stdout: Output::Pipe,
            stderr: Output::Pipe,
            tty: None,
            no_new_privileges: false,
            seccomp: Seccomp::DockerDefault,
            capabilities: crate::spec::DOCKER_DEFAULT_CAPABILITIES,
        }
    }
}

/// Starts a process inside the namespaces (filesystem, PIDs, network, ...) of a
/// running sandbox whose PID 1 has host pid `container_pid` (`Running::pid`),
/// with docker's capabilities and the given user (`kiln exec`). The returned
/// handle's pid is a small relay outside the container that forwards signals
/// and exits with the command's status.
pub fn exec_in(container_pid: i32, spec: &ExecSpec) -> Result<Running, SandboxError> {
    // SAFETY: plain syscall.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, container_pid, 0) };
    if pidfd < 0 {
        return Err(io_err(
            "opening the container process",
            format!("pid {container_pid}"),
        )(Errno::last()));
    }
    let pidfd = owned(pidfd as c_int);
    let root_path = format!("/proc/{container_pid}/root");
    let root = File::open(&root_path).map_err(|source| SandboxError::Io {
        what: "opening the container's root",
        path: root_path.clone().into(),
        source,
    })?;
    let passwd = read_in_root(root.as_raw_fd(), c"etc/passwd", "/etc/passwd")?;
    let group = read_in_root(root.as_raw_fd(), c"etc/group", "/etc/group")?;
    let user = resolve_user(&spec.user, passwd.as_deref(), group.as_deref())?;
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let process = ProcessInput {
        argv: &spec.argv,
        env,
        cwd: &spec.cwd,
        uid: user.uid,
        gid: user.gid,
        groups: user.supplementary_gids,
        stdin: spec.stdin,
        stdout: spec.stdout,
        stderr: spec.stderr,
        tty: spec.tty,
        init: true,
        no_new_privileges: spec.no_new_privileges,
        seccomp: spec.seccomp,
        capabilities: spec.capabilities,
    };
    launch(process, Target::Join(pidfd))
}

fn setup_error(
    step: Option<Step>,
    errno: Errno,
    index: usize,
    plan: &Plan,
    program: &str,
) -> SandboxError {
    let Some(step) = step else {
        return SandboxError::Setup {
            step: "(unknown step)",
            detail: String::new(),
            source: errno.io(),
        };
    };
    if step == Step::Exec {
        return if errno.0 == libc::ENOENT {
            SandboxError::ExecNotFound {
                program: program.to_string(),
            }
        } else {
            SandboxError::Exec {
                program: program.to_string(),
                source: errno.io(),
            }
        };
    }
    let detail = match step {
        Step::ExtraMount => plan
            .moves
            .get(index)
            .map(|m| format!(" /{}", m.target.to_string_lossy()))
            .unwrap_or_default(),
        Step::MaskPath => child::MASKED_PATHS
            .get(index)
            .map(|p| format!(" /{}", p.to_string_lossy()))
            .unwrap_or_default(),
        Step::ReadonlyPath => child::READONLY_PATHS
            .get(index)
            .map(|p| format!(" /{}", p.to_string_lossy()))
            .unwrap_or_default(),
        Step::Workdir => format!(" {}", plan.cwd.to_string_lossy()),
        _ if index != 0 => format!(" (item {index})"),
        _ => String::new(),
    };
    SandboxError::Setup {
        step: step.describe(),
        detail,
        source: errno.io(),
    }
}
