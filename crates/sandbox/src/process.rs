//! The parent side: turns a `SandboxSpec` into a prepared `Plan` (detached mounts,
//! resolved user, C strings, pipes), clones the child on the spawner thread, and
//! gives the caller a `Running` handle (wait, kill, stdio) or streams its output.

use crate::SandboxError;
use crate::child::{self, MoveMount, Plan, REPORT_LEN, Step};
use crate::spec::{
    ExitStatus, MountKind, Network, Output, RootFs, SandboxSpec, Seccomp, Stdin, Stream,
};
use crate::sys::{self, Errno};
use crate::user::resolve_user;
use libc::c_int;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Docker's PATH when the environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An empty directory the root is attached to inside each sandbox's private
/// mount namespace (never mounted on in the host's namespace, shared by all).
fn mount_point() -> Result<PathBuf, SandboxError> {
    let base = if Path::new("/run").is_dir() {
        PathBuf::from("/run")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join("kiln-sandbox-root");
    std::fs::create_dir_all(&dir).map_err(|source| SandboxError::Io {
        what: "creating the sandbox mount point",
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// Takes ownership of a fresh fd, moving it to 3 or above: a caller whose
/// stdin/stdout/stderr are closed (a daemonized monitor) would otherwise get
/// pipes at 0-2, which the child's dup2 onto 0, 1, 2 would clobber.
fn owned(fd: c_int) -> OwnedFd {
    if (0..3).contains(&fd) {
        // SAFETY: fd is ours; F_DUPFD_CLOEXEC returns the lowest free fd >= 3.
        let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if moved >= 0 {
            // SAFETY: closing our original after duplicating it.
            unsafe { libc::close(fd) };
            // SAFETY: moved is a fresh fd owned by us.
            return unsafe { OwnedFd::from_raw_fd(moved) };
        }
    }
    // SAFETY: fd was just returned by a successful syscall and is owned by us.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn cstring(what: &str, text: &[u8]) -> Result<CString, SandboxError> {
    CString::new(text).map_err(|_| SandboxError::InvalidSpec(format!("{what} contains a NUL byte")))
}

fn io_err(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(Errno) -> SandboxError {
    let path = path.into();
    move |errno| SandboxError::Io {
        what,
        path,
        source: errno.io(),
    }
}

/// Lexically cleans an absolute container path into its components
/// (`/a/./b/../c` → `[a, c]`), as Go's filepath.Clean does for docker.
fn clean_components(path: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts
}

fn check_absolute(what: &str, path: &str) -> Result<(), SandboxError> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(SandboxError::InvalidSpec(format!(
            "{what} {path:?} must be an absolute path inside the container"
        )))
    }
}

/// Reads the error log of a new-mount-API filesystem context (overlayfs explains
/// its refusals there).
fn fs_context_log(fs: c_int) -> String {
    let mut lines = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        // SAFETY: buf is a valid buffer.
        let n = unsafe { libc::read(fs, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        lines.push(String::from_utf8_lossy(&buf[..n as usize]).into_owned());
    }
    lines.join("; ")
}

fn overlay_mount(
    lower_dirs: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<OwnedFd, SandboxError> {
    let fail = |message: String| SandboxError::Overlay {
        layers: lower_dirs.len(),
        upper: upper.to_path_buf(),
        message,
    };
    if lower_dirs.is_empty() {
        return Err(fail("at least one lower dir is needed".into()));
    }
    let fs = owned(sys::fsopen(c"overlay").map_err(|e| fail(format!("fsopen: {}", e.io())))?);
    let set = |key: &CStr, path: &Path| -> Result<(), SandboxError> {
        let value = cstring("layer path", path.as_os_str().as_bytes())?;
        sys::fsconfig_string(fs.as_raw_fd(), key, &value).map_err(|e| {
            let log = fs_context_log(fs.as_raw_fd());
            fail(format!(
                "{} {}: {}{}{}",
                key.to_string_lossy(),
                path.display(),
                e.io(),
                if log.is_empty() { "" } else { " — " },
                log
            ))
        })
    };
    // "lowerdir+" (Linux 6.8+) appends one layer per call: no page-size limit on
    // the option string, so hundreds of layers work without path tricks.
    for lower in lower_dirs {
        set(c"lowerdir+", lower)?;
    }
    set(c"upperdir", upper)?;
    set(c"workdir", work)?;
    // The upper dir must be a plain diff a layer tar can express: no redirect
    // xattrs for renamed lower dirs (rename then falls back to copy, EXDEV) and
    // no metadata-only copy-ups without data. Both default off on most kernels;
    // say so explicitly for the ones where they default on.
    for (key, value) in [
        (c"redirect_dir", c"off"),
        (c"metacopy", c"off"),
        (c"index", c"off"),
    ] {
        sys::fsconfig_string(fs.as_raw_fd(), key, value)
            .map_err(|e| fail(format!("option {}: {}", key.to_string_lossy(), e.io())))?;
    }
    sys::fsconfig_create(fs.as_raw_fd()).map_err(|e| {
        let log = fs_context_log(fs.as_raw_fd());
        let detail = if log.is_empty() {
            format!(
                "work dir {} must be an empty dir on the same filesystem as the upper dir, \
                 and neither may contain the other (the kernel log, dmesg, has overlayfs' reason)",
                work.display()
            )
        } else {
            log
        };
        fail(format!("{}: {detail}", e.io()))
    })?;
    let mount =
        sys::fsmount(fs.as_raw_fd(), 0).map_err(|e| fail(format!("fsmount: {}", e.io())))?;
    Ok(owned(mount))
}

/// Reads a small file inside `root` as data (RESOLVE_IN_ROOT, regular files
/// only, never blocking on a FIFO). None when it does not exist.
fn read_in_root(root: c_int, rel: &CStr, shown: &str) -> Result<Option<String>, SandboxError> {
    // O_PATH first: opening a device node or FIFO of the image for real could
    // have side effects on the host; only a regular file is then reopened.
    let path_fd = match sys::open_in_root(root, rel, libc::O_PATH, 0) {
        Ok(fd) => File::from(owned(fd)),
        Err(Errno(libc::ENOENT)) | Err(Errno(libc::ENOTDIR)) => return Ok(None),
        Err(e) => return Err(io_err("reading the image's", shown)(e)),
    };
    let meta = path_fd.metadata().map_err(|source| SandboxError::Io {
        what: "reading the image's",
        path: shown.into(),
        source,
    })?;
    if !meta.is_file() {
        return Ok(None);
    }
    let mut file =
        File::open(format!("/proc/self/fd/{}", path_fd.as_raw_fd())).map_err(|source| {
            SandboxError::Io {
                what: "reading the image's",
                path: shown.into(),
                source,
            }
        })?;
    let mut bytes = Vec::new();
    file.by_ref()
        .take(16 << 20)
        .read_to_end(&mut bytes)
        .map_err(|source| SandboxError::Io {
            what: "reading the image's",
            path: shown.into(),
            source,
        })?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Makes sure `components` exists inside `root` (dirs, and a file or dir as the
/// last one), creating what is missing; returns the created paths, deepest
/// first (mount stubs to remove after the run, as BuildKit does).
fn ensure_in_root(
    root: c_int,
    components: &[&str],
    leaf_is_dir: bool,
) -> Result<Vec<String>, SandboxError> {
    let mut created = Vec::new();
    for depth in 1..=components.len() {
        let rel = components[..depth].join("/");
        let rel_c = cstring("mount target", rel.as_bytes())?;
        match sys::open_in_root(root, &rel_c, libc::O_PATH, 0) {
            Ok(fd) => {
                drop(owned(fd));
                continue;
            }
            Err(Errno(libc::ENOENT)) => {}
            Err(e) => return Err(io_err("looking up mount target", format!("/{rel}"))(e)),
        }
        let parent_rel = if depth == 1 {
            ".".to_string()
        } else {
            components[..depth - 1].join("/")
        };
        let parent_c = cstring("mount target", parent_rel.as_bytes())?;
        let parent = owned(
            sys::open_in_root(root, &parent_c, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(
                io_err("opening the parent of mount target", format!("/{rel}")),
            )?,
        );
        let name = cstring("mount target", components[depth - 1].as_bytes())?;
        let is_dir = depth < components.len() || leaf_is_dir;
        // SAFETY: plain syscalls relative to a dirfd we own, single component names.
        let result = unsafe {
            if is_dir {
                libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755)
            } else {
                let fd = libc::openat(
                    parent.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o755,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
                fd
            }
        };
        if result < 0 {
            let errno = Errno::last();
            if errno.0 == libc::EEXIST {
                // Created meanwhile by a concurrent sandbox on the same root:
                // it exists, and it is not ours to remove.
                continue;
            }
            return Err(io_err("creating mount target", format!("/{rel}"))(errno));
        }
        created.push(rel);
    }
    created.reverse();
    Ok(created)
}

/// Removes the mount stubs the sandbox created, if still empty, restoring the
/// parent directory's times (BuildKit's MountStubsCleaner). `base` is the
/// overlay upper dir (where the stubs landed) or the plain root dir.
fn remove_stubs(base: &Path, stubs: &[String]) {
    let Ok(base_dir) = File::open(base) else {
        return;
    };
    // Deepest first, so that a parent created for two mounts goes after both.
    let mut stubs: Vec<&String> = stubs.iter().collect();
    stubs.sort_by_key(|s| std::cmp::Reverse(s.matches('/').count()));
    stubs.dedup();
    for stub in stubs {
        let (parent_rel, name) = match stub.rsplit_once('/') {
            Some((parent, name)) => (parent.to_string(), name),
            None => (".".to_string(), stub.as_str()),
        };
        let (Ok(parent_c), Ok(name_c)) = (CString::new(parent_rel), CString::new(name)) else {
            continue;
        };
        let Ok(parent) = sys::open_in_root(
            base_dir.as_raw_fd(),
            &parent_c,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        ) else {
            continue;
        };
        let parent = owned(parent);
        // SAFETY: st is plain old data; plain syscalls on fds we own.
        unsafe {
            let mut parent_st: libc::stat = std::mem::zeroed();
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(parent.as_raw_fd(), &mut parent_st) != 0
                || libc::fstatat(
                    parent.as_raw_fd(),
                    name_c.as_ptr(),
                    &mut st,
                    libc::AT_SYMLINK_NOFOLLOW,
                ) != 0
            {
                continue;
            }
            let removed = match st.st_mode & libc::S_IFMT {
                // rmdir refuses non-empty directories by itself.
                libc::S_IFDIR => {
                    libc::unlinkat(parent.as_raw_fd(), name_c.as_ptr(), libc::AT_REMOVEDIR) == 0
                }
                libc::S_IFREG if st.st_size == 0 => {
                    libc::unlinkat(parent.as_raw_fd(), name_c.as_ptr(), 0) == 0
                }
                _ => false,
            };
            if removed {
                let times = [
                    libc::timespec {
                        tv_sec: parent_st.st_atime,
                        tv_nsec: parent_st.st_atime_nsec,
                    },
                    libc::timespec {
                        tv_sec: parent_st.st_mtime,
                        tv_nsec: parent_st.st_mtime_nsec,
                    },
                ];
                libc::futimens(parent.as_raw_fd(), times.as_ptr());
            }
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io_err("creating a pipe", "pipe2")(Errno::last()));
    }
    Ok((owned(fds[0]), owned(fds[1])))
}

fn dev_null(flags: c_int) -> Result<OwnedFd, SandboxError> {
    // SAFETY: plain syscall with a static path.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io_err("opening", "/dev/null")(Errno::last()));
    }
    Ok(owned(fd))
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

fn socketpair() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds is a valid array of two ints.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io_err("creating a socket pair", "socketpair")(Errno::last()));
    }
    Ok((owned(fds[0]), owned(fds[1])))
}

/// Receives one fd sent with SCM_RIGHTS; None on EOF (the child failed first).
fn recv_fd(socket: c_int) -> Option<OwnedFd> {
    let mut control = [0u64; 4];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr over valid stack buffers; the kernel fills the cmsg.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        loop {
            let n = libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 && Errno::last().0 == libc::EINTR {
                continue;
            }
            if n <= 0 {
                return None;
            }
            break;
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return None;
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>());
        Some(owned(fd))
    }
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

/// A started sandbox. Dropping it without `wait` kills (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct Running {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    stdin: Option<File>,
    stdout: Option<File>,
    stderr: Option<File>,
    pty: Option<File>,
    stubs: Vec<String>,
    stub_base: Option<PathBuf>,
    status: Option<ExitStatus>,
}

impl Running {
    /// The host pid of the container's PID 1.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd for the process: becomes readable when it exits (for poll/epoll).
    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.pidfd.as_fd()
    }

    /// The write end of stdin (with `Stdin::Pipe`).
    pub fn take_stdin(&mut self) -> Option<File> {
        self.stdin.take()
    }

    /// The read end of stdout (with `Output::Pipe`).
    pub fn take_stdout(&mut self) -> Option<File> {
        self.stdout.take()
    }

    /// The read end of stderr (with `Output::Pipe`).
    pub fn take_stderr(&mut self) -> Option<File> {
        self.stderr.take()
    }

    /// The pseudo-terminal master (with `tty`).
    pub fn take_pty(&mut self) -> Option<File> {
        self.pty.take()
    }

    /// Sends `signal` to the container's PID 1 (through the pidfd, so never to a
    /// recycled pid). Signalling an exited process is not an error.
    pub fn kill(&self, signal: i32) -> Result<(), SandboxError> {
        match sys::pidfd_send_signal(self.pidfd.as_raw_fd(), signal) {
            Ok(()) | Err(Errno(libc::ESRCH)) => Ok(()),
            Err(e) => Err(SandboxError::Io {
                what: "signalling the sandbox process",
                path: format!("pid {}", self.pid).into(),
                source: e.io(),
            }),
        }
    }

    fn wait_flags(&mut self, flags: c_int) -> Result<Option<ExitStatus>, SandboxError> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        loop {
            // SAFETY: info is plain old data filled by waitid.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointer; P_PIDFD waits for exactly our child.
            let r = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    self.pidfd.as_raw_fd() as libc::id_t,
                    &mut info,
                    libc::WEXITED | flags,
                )
            };
            if r < 0 {
                let errno = Errno::last();
                if errno.0 == libc::EINTR {
                    continue;
                }
                return Err(SandboxError::Io {
                    what: "waiting for the sandbox process",
                    path: format!("pid {}", self.pid).into(),
                    source: errno.io(),
                });
            }
            // SAFETY: reading the fields waitid filled.
            let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
            if pid == 0 {
                return Ok(None);
            }
            let status = if code == libc::CLD_EXITED {
                ExitStatus::Exited(status)
            } else {
                ExitStatus::Signaled(status)
            };
            self.status = Some(status);
            // The namespace is gone with PID 1, so the stubs are no longer mount
            // points: remove the ones the process left empty.
            if let Some(base) = &self.stub_base {
                remove_stubs(base, &std::mem::take(&mut self.stubs));
            }
            return Ok(Some(status));
        }
    }

    /// Waits for PID 1 to exit (every other process of the sandbox dies with it)
    /// and removes the mount stubs it created.
    pub fn wait(&mut self) -> Result<ExitStatus, SandboxError> {
        self.wait_flags(0)?.ok_or_else(|| SandboxError::Io {
            what: "waiting for the sandbox process",
            path: format!("pid {}", self.pid).into(),
            source: std::io::Error::other("waitid returned no status"),
        })
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, SandboxError> {
        self.wait_flags(libc::WNOHANG)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill(libc::SIGKILL);
            let _ = self.wait();
        }
    }
}

/// Runs the spec to completion, calling `sink` with each chunk of stdout/stderr
/// as it arrives (requires `Output::Pipe` for the streams to see; with `tty`
/// the terminal's output arrives as `Stream::Stdout`). Kills the
/// process and returns `SandboxError::Timeout` when `spec.timeout` passes.
pub fn run(
    spec: &SandboxSpec,
    mut sink: impl FnMut(Stream, &[u8]),
) -> Result<ExitStatus, SandboxError> {
    let deadline = spec.timeout.map(|t| Instant::now() + t);
    let mut running = spawn(spec)?;
    let mut streams: Vec<(Stream, File)> = Vec::new();
    if let Some(out) = running.take_stdout() {
        streams.push((Stream::Stdout, out));
    }
    if let Some(err) = running.take_stderr() {
        streams.push((Stream::Stderr, err));
    }
    // On a terminal both streams are one: report it as stdout. (EIO once the
    // last slave fd closes ends it like EOF.)
    if let Some(pty) = running.take_pty() {
        streams.push((Stream::Stdout, pty));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut timed_out = false;
    loop {
        let mut pollfds: Vec<libc::pollfd> = streams
            .iter()
            .map(|(_, f)| libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if streams.is_empty() {
            pollfds.push(libc::pollfd {
                fd: running.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout_ms = match deadline {
            Some(d) if !timed_out => {
                let left = d.saturating_duration_since(Instant::now());
                left.as_millis().min(i32::MAX as u128) as c_int
            }
            _ => -1,
        };
        // SAFETY: pollfds is a valid array.
        let n = unsafe {
            libc::poll(
                pollfds.as_mut_ptr(),
                pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if n < 0 {
            if Errno::last().0 == libc::EINTR {
                continue;
            }
            return Err(io_err("polling sandbox output", "poll")(Errno::last()));
        }
        if n == 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) && !timed_out {
                timed_out = true;
                running.kill(libc::SIGKILL)?;
            }
            continue;
        }
        if streams.is_empty() {
            break;
        }
        let mut closed = Vec::new();
        for (index, pfd) in pollfds.iter().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            let Some((stream, file)) = streams.get_mut(index) else {
                continue;
            };
            match file.read(&mut buf) {
                Ok(0) => closed.push(index),
                Ok(n) => sink(*stream, &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => closed.push(index),
            }
        }
        for index in closed.into_iter().rev() {
            streams.remove(index);
        }
        if streams.is_empty() {
            break;
        }
    }
    let status = running.wait()?;
    if timed_out {
        return Err(SandboxError::Timeout(
            spec.timeout.unwrap_or(Duration::ZERO),
        ));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_components_handles_dots_and_slashes() {
        assert_eq!(clean_components("/a/./b//../c/"), vec!["a", "c"]);
        assert_eq!(clean_components("/../.."), Vec::<&str>::new());
        assert_eq!(
            clean_components("/proc/self/fd/3"),
            vec!["proc", "self", "fd", "3"]
        );
    }
}
