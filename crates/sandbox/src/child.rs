//! The code that runs in the cloned child, between `clone3` and `execve`.
//!
//! The parent (kiln) is multithreaded, so the child — a copy of one thread — may
//! only make async-signal-safe calls: no allocation, no locks, no glibc wrappers
//! that consult thread lists (setuid/setgroups go through raw syscalls for that
//! reason). Everything it needs (C strings, fds, ids, detached mounts) was
//! prepared by the parent in a `Plan`. A failure is reported as a fixed-size
//! record on the error pipe, which the parent turns into a `SandboxError`.

use crate::sys::{self, Errno, SysResult};
use libc::{c_char, c_int, c_ulong};
use std::ffi::CString;

/// One sandbox setup step, for error reports (`Step as u32` crosses the pipe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    ParentDied = 1,
    PrivateMounts,
    AttachRoot,
    MountProc,
    MountDev,
    MakeDevices,
    MountSys,
    ExtraMount,
    MaskPath,
    ReadonlyPath,
    ReadonlyRoot,
    Hostname,
    Loopback,
    PivotRoot,
    Workdir,
    Terminal,
    Stdio,
    Capabilities,
    Groups,
    SetGid,
    SetUid,
    NoNewPrivs,
    Init,
    Exec,
    JoinNamespaces,
    Seccomp,
}

impl Step {
    pub fn from_u32(value: u32) -> Option<Step> {
        use Step::*;
        const ALL: [Step; 26] = [
            ParentDied,
            PrivateMounts,
            AttachRoot,
            MountProc,
            MountDev,
            MakeDevices,
            MountSys,
            ExtraMount,
            MaskPath,
            ReadonlyPath,
            ReadonlyRoot,
            Hostname,
            Loopback,
            PivotRoot,
            Workdir,
            Terminal,
            Stdio,
            Capabilities,
            Groups,
            SetGid,
            SetUid,
            NoNewPrivs,
            Init,
            Exec,
            JoinNamespaces,
            Seccomp,
        ];
        ALL.into_iter().find(|s| *s as u32 == value)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Step::ParentDied => "the parent process died during setup",
            Step::PrivateMounts => "making the mount namespace private",
            Step::AttachRoot => "attaching the root filesystem",
            Step::MountProc => "mounting /proc",
            Step::MountDev => "mounting /dev",
            Step::MakeDevices => "creating device nodes in /dev",
            Step::MountSys => "mounting /sys",
            Step::ExtraMount => "mounting",
            Step::MaskPath => "masking",
            Step::ReadonlyPath => "making read-only",
            Step::ReadonlyRoot => "making the root read-only",
            Step::Hostname => "setting the hostname",
            Step::Loopback => "bringing up loopback",
            Step::PivotRoot => "pivot_root into the new root",
            Step::Workdir => "creating or entering the working directory",
            Step::Terminal => "setting up the terminal",
            Step::Stdio => "setting up stdin/stdout/stderr",
            Step::Capabilities => "setting capabilities",
            Step::Groups => "setting supplementary groups",
            Step::SetGid => "setting the group id",
            Step::SetUid => "setting the user id",
            Step::NoNewPrivs => "setting no_new_privs",
            Step::Init => "starting the init process",
            Step::Exec => "exec",
            Step::JoinNamespaces => "joining the container's namespaces",
            Step::Seccomp => "installing the seccomp filter",
        }
    }
}

/// The size of an error record: step, errno, index (little-endian u32s).
pub const REPORT_LEN: usize = 12;

/// Paths docker masks in every container (bind of /dev/null over files, an empty
/// read-only tmpfs over directories); missing ones are skipped.
pub const MASKED_PATHS: [&std::ffi::CStr; 11] = [
    c"proc/asound",
    c"proc/acpi",
    c"proc/kcore",
    c"proc/keys",
    c"proc/latency_stats",
    c"proc/timer_list",
    c"proc/timer_stats",
    c"proc/sched_debug",
    c"proc/scsi",
    c"sys/firmware",
    c"sys/devices/virtual/powercap",
];

/// Paths docker makes read-only in every container.
pub const READONLY_PATHS: [&std::ffi::CStr; 5] = [
    c"proc/bus",
    c"proc/fs",
    c"proc/irq",
    c"proc/sys",
    c"proc/sysrq-trigger",
];

/// Docker's default capability set (moby `oci/caps/defaults.go`): CHOWN,
/// DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE,
/// NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP. Equals 0xa80425fb, what
/// BuildKit's RUN shows in /proc/self/status.
pub const DEFAULT_CAPS: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 10)
    | (1 << 13)
    | (1 << 18)
    | (1 << 27)
    | (1 << 29)
    | (1 << 31);

/// A detached mount (prepared by the parent) to attach at `target` (relative to
/// the new root, resolved inside it).
pub struct MoveMount {
    pub target: CString,
    pub mount_fd: c_int,
}

/// Everything the child needs, prepared by the parent before `clone3`.
pub struct Plan {
    pub root_mount_fd: c_int,
    pub mount_point: CString,
    pub moves: Vec<MoveMount>,
    pub hostname: CString,
    /// Bring loopback up (new or joined network namespace).
    pub new_netns: bool,
    /// A network namespace fd to join (-1: none).
    pub netns_fd: c_int,
    pub readonly_rootfs: bool,
    /// Add the /dev/core -> /proc/kcore link (the host has /proc/kcore).
    pub dev_core: bool,
    pub cwd: CString,
    /// "/a", "/a/b", ... for mkdir -p of the working directory.
    pub cwd_prefixes: Vec<CString>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    pub cap_last: u32,
    /// Owns the strings `argv_ptrs` points into.
    #[allow(dead_code)]
    pub argv: Vec<CString>,
    pub argv_ptrs: Vec<*const c_char>,
    /// Owns the strings `env_ptrs` points into.
    #[allow(dead_code)]
    pub env: Vec<CString>,
    pub env_ptrs: Vec<*const c_char>,
    /// Paths to try with execve, in order (PATH lookup done by the parent).
    pub exec_candidates: Vec<CString>,
    /// Child-side fds to install as 0, 1, 2 (-1: keep the inherited one).
    pub stdio: [c_int; 3],
    /// Allocate a terminal from the container's own devpts (after its /dev is
    /// in place), send the master to the parent over `tty_socket`, and make the
    /// slave 0, 1, 2 and the controlling terminal.
    pub tty: Option<(u16, u16)>,
    /// Unix socket (SOCK_SEQPACKET) the terminal master is sent on (-1: none).
    pub tty_socket: c_int,
    /// Join the namespaces of this pidfd's process instead of creating new ones
    /// (`kiln exec`); -1 for a new container.
    pub join_pidfd: c_int,
    pub error_pipe: c_int,
    pub lifeline: c_int,
    /// Every fd the child needs until exec, sorted; all others are closed first.
    pub keep_fds: Vec<c_int>,
    pub init: bool,
    pub no_new_privs: bool,
    /// Bounding, permitted and effective set (for uid 0; others end with none).
    pub capabilities: u64,
    /// The seccomp filter to install (empty: none).
    pub seccomp: &'static [libc::sock_filter],
}

struct Failure {
    step: Step,
    errno: Errno,
    index: u32,
}

type StepResult<T> = Result<T, Failure>;

trait OrStep<T> {
    fn at(self, step: Step) -> StepResult<T>;
    fn at_index(self, step: Step, index: usize) -> StepResult<T>;
}

impl<T> OrStep<T> for SysResult<T> {
    fn at(self, step: Step) -> StepResult<T> {
        self.at_index(step, 0)
    }
    fn at_index(self, step: Step, index: usize) -> StepResult<T> {
        self.map_err(|errno| Failure {
            step,
            errno,
            index: index as u32,
        })
    }
}

fn ret(value: c_int) -> SysResult<c_int> {
    if value < 0 {
        Err(Errno::last())
    } else {
        Ok(value)
    }
}

fn raw(value: libc::c_long) -> SysResult<()> {
    if value < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Entry point of the child. Never returns.
///
/// # Safety
/// Must only be called in a freshly cloned child; see the module docs.
pub unsafe fn child_main(plan: &Plan) -> ! {
    let failure = match setup_and_exec(plan) {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    let mut record = [0u8; REPORT_LEN];
    record[0..4].copy_from_slice(&(failure.step as u32).to_le_bytes());
    record[4..8].copy_from_slice(&failure.errno.0.to_le_bytes());
    record[8..12].copy_from_slice(&failure.index.to_le_bytes());
    sys::write_all(plan.error_pipe, &record);
    // SAFETY: _exit is async-signal-safe and ends the child without unwinding.
    unsafe { libc::_exit(if failure.step == Step::Exec { 127 } else { 126 }) }
}

enum Never {}

/// Checks the parent is still alive: the parent holds the write end of the
/// lifeline pipe until the child has exec'd, so POLLHUP means it died.
fn parent_alive(lifeline: c_int) -> bool {
    let mut pfd = libc::pollfd {
        fd: lifeline,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is a valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    !(n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0)
}

fn close_all_except(keep: &[c_int]) {
    let mut next: u32 = 3;
    for &fd in keep {
        let fd = fd as u32;
        if fd >= next {
            if fd > next {
                // SAFETY: close_range on a range of fds we do not need.
                unsafe { libc::syscall(libc::SYS_close_range, next, fd - 1, 0) };
            }
            next = fd + 1;
        }
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0) };
}

fn set_death_signal(lifeline: c_int) -> StepResult<()> {
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong).at(Step::ParentDied)?;
    if !parent_alive(lifeline) {
        return Err(Failure {
            step: Step::ParentDied,
            errno: Errno(libc::ESRCH),
            index: 0,
        });
    }
    Ok(())
}

fn open_in(root: c_int, path: &std::ffi::CStr, flags: c_int) -> SysResult<c_int> {
    sys::open_in_root(root, path, flags, 0)
}

/// Attaches `mount_fd` on the object at `path` inside `root`.
fn attach(root: c_int, path: &std::ffi::CStr, mount_fd: c_int) -> SysResult<()> {
    let target = open_in(root, path, libc::O_PATH)?;
    let result = sys::move_mount_fd(mount_fd, target);
    sys::close(target);
    result
}

fn new_and_attach(
    root: c_int,
    path: &std::ffi::CStr,
    fstype: &std::ffi::CStr,
    options: &[(&std::ffi::CStr, &std::ffi::CStr)],
    attrs: u64,
) -> SysResult<()> {
    let mount_fd = sys::new_fs_mount(fstype, options, attrs)?;
    let result = attach(root, path, mount_fd);
    sys::close(mount_fd);
    result
}

fn setup_dev(root: c_int, dev_core: bool) -> StepResult<()> {
    new_and_attach(
        root,
        c"dev",
        c"tmpfs",
        &[(c"mode", c"755"), (c"size", c"65536k")],
        // strictatime, as runc mounts /dev ("rw,nosuid" in mountinfo).
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_STRICTATIME,
    )
    .at(Step::MountDev)?;
    let dev = open_in(root, c"dev", libc::O_DIRECTORY | libc::O_RDONLY).at(Step::MountDev)?;
    let result = populate_dev(root, dev, dev_core);
    sys::close(dev);
    result
}

fn populate_dev(root: c_int, dev: c_int, dev_core: bool) -> StepResult<()> {
    let nodes: [(&std::ffi::CStr, u32, u32); 6] = [
        (c"null", 1, 3),
        (c"zero", 1, 5),
        (c"full", 1, 7),
        (c"random", 1, 8),
        (c"urandom", 1, 9),
        (c"tty", 5, 0),
    ];
    for (index, (name, major, minor)) in nodes.iter().enumerate() {
        // SAFETY: plain syscall; umask is 0 during setup, so the mode is exact.
        ret(unsafe {
            libc::mknodat(
                dev,
                name.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(*major, *minor),
            )
        })
        .at_index(Step::MakeDevices, index)?;
    }
    let links: [(&std::ffi::CStr, &std::ffi::CStr); 6] = [
        (c"/proc/self/fd", c"fd"),
        (c"/proc/self/fd/0", c"stdin"),
        (c"/proc/self/fd/1", c"stdout"),
        (c"/proc/self/fd/2", c"stderr"),
        (c"pts/ptmx", c"ptmx"),
        (c"/proc/kcore", c"core"),
    ];
    // runc adds /dev/core only when the host has /proc/kcore.
    let links = if dev_core { &links[..] } else { &links[..5] };
    for (index, (target, name)) in links.iter().enumerate() {
        // SAFETY: plain syscall with NUL-terminated strings.
        ret(unsafe { libc::symlinkat(target.as_ptr(), dev, name.as_ptr()) })
            .at_index(Step::MakeDevices, 10 + index)?;
    }
    for (index, (name, mode)) in [(c"pts", 0o755), (c"shm", 0o1777), (c"mqueue", 0o1777)]
        .iter()
        .enumerate()
    {
        // SAFETY: plain syscall.
        ret(unsafe { libc::mkdirat(dev, name.as_ptr(), *mode) })
            .at_index(Step::MakeDevices, 20 + index)?;
    }
    new_and_attach(
        root,
        c"dev/pts",
        c"devpts",
        &[(c"ptmxmode", c"0666"), (c"mode", c"0620"), (c"gid", c"5")],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC,
    )
    .at_index(Step::MountDev, 1)?;
    new_and_attach(
        root,
        c"dev/shm",
        c"tmpfs",
        &[(c"mode", c"1777"), (c"size", c"65536k")],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC,
    )
    .at_index(Step::MountDev, 2)?;
    new_and_attach(
        root,
        c"dev/mqueue",
        c"mqueue",
        &[],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC,
    )
    .at_index(Step::MountDev, 3)?;
    Ok(())
}

fn is_dir(fd: c_int) -> bool {
    // SAFETY: st is plain old data filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
    ok && st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn mask_paths(root: c_int) -> StepResult<()> {
    for (index, path) in MASKED_PATHS.iter().enumerate() {
        let target = match open_in(root, path, libc::O_PATH | libc::O_NOFOLLOW) {
            Ok(fd) => fd,
            Err(Errno(libc::ENOENT)) => continue,
            Err(errno) => return Err(errno).at_index(Step::MaskPath, index),
        };
        let result = if is_dir(target) {
            sys::new_fs_mount(c"tmpfs", &[], sys::MOUNT_ATTR_RDONLY).and_then(|mount_fd| {
                let r = sys::move_mount_fd(mount_fd, target);
                sys::close(mount_fd);
                r
            })
        } else {
            open_in(root, c"dev/null", libc::O_PATH)
                .and_then(|null| {
                    let tree = sys::open_tree_clone(null, c"", false);
                    sys::close(null);
                    tree
                })
                .and_then(|tree| {
                    let r = sys::move_mount_fd(tree, target);
                    sys::close(tree);
                    r
                })
        };
        sys::close(target);
        result.at_index(Step::MaskPath, index)?;
    }
    for (index, path) in READONLY_PATHS.iter().enumerate() {
        let target = match open_in(root, path, libc::O_PATH | libc::O_NOFOLLOW) {
            Ok(fd) => fd,
            Err(Errno(libc::ENOENT)) => continue,
            Err(errno) => return Err(errno).at_index(Step::ReadonlyPath, index),
        };
        let result = sys::open_tree_clone(target, c"", true).and_then(|tree| {
            let r = sys::mount_setattr(
                tree,
                true,
                sys::MOUNT_ATTR_RDONLY
                    | sys::MOUNT_ATTR_NOSUID
                    | sys::MOUNT_ATTR_NODEV
                    | sys::MOUNT_ATTR_NOEXEC,
            )
            .and_then(|()| sys::move_mount_fd(tree, target));
            sys::close(tree);
            r
        });
        sys::close(target);
        result.at_index(Step::ReadonlyPath, index)?;
    }
    Ok(())
}

#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn loopback_up() -> SysResult<()> {
    // SAFETY: plain syscalls on a socket we own; req is a valid ifreq layout.
    unsafe {
        let sock = ret(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let mut req = IfReqFlags {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..2].copy_from_slice(b"lo");
        let result = ret(libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req)).and_then(|_| {
            req.flags |= libc::IFF_UP as libc::c_short;
            ret(libc::ioctl(sock, libc::SIOCSIFFLAGS, &req))
        });
        sys::close(sock);
        result.map(drop)
    }
}

fn setup_and_exec(plan: &Plan) -> StepResult<Never> {
    set_death_signal(plan.lifeline)?;
    close_all_except(&plan.keep_fds);
    // SAFETY: umask is a plain syscall; 0 so that modes given below are exact.
    unsafe { libc::umask(0) };
    if plan.join_pidfd >= 0 {
        // setns with a pidfd enters all the namespaces at once; the mount
        // namespace also sets root and cwd to the container's root. The PID
        // namespace applies to children only: run_init below forks into it.
        let flags = libc::CLONE_NEWNS
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWPID;
        // SAFETY: plain syscall on a pidfd we own.
        ret(unsafe { libc::setns(plan.join_pidfd, flags) }).at(Step::JoinNamespaces)?;
        sys::close(plan.join_pidfd);
    } else {
        setup_container(plan)?;
    }
    process_setup_and_exec(plan)
}

/// Builds the container's filesystem view and pivots into it.
fn setup_container(plan: &Plan) -> StepResult<()> {
    if plan.netns_fd >= 0 {
        // Before /sys is mounted, so that it shows this namespace's devices.
        // SAFETY: plain syscall on an fd we own.
        ret(unsafe { libc::setns(plan.netns_fd, libc::CLONE_NEWNET) }).at(Step::JoinNamespaces)?;
        sys::close(plan.netns_fd);
    }
    // Everything mounted from here on lives only in this mount namespace; making
    // it private first keeps mounts from propagating back to the host.
    sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None).at(Step::PrivateMounts)?;
    sys::move_mount_to_path(plan.root_mount_fd, &plan.mount_point).at(Step::AttachRoot)?;
    sys::close(plan.root_mount_fd);
    // SAFETY: plain syscall.
    let root = ret(unsafe {
        libc::open(
            plan.mount_point.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
    .at(Step::AttachRoot)?;

    new_and_attach(
        root,
        c"proc",
        c"proc",
        &[],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC,
    )
    .at(Step::MountProc)?;
    setup_dev(root, plan.dev_core)?;
    let sys_attrs = sys::MOUNT_ATTR_RDONLY
        | sys::MOUNT_ATTR_NOSUID
        | sys::MOUNT_ATTR_NODEV
        | sys::MOUNT_ATTR_NOEXEC;
    if new_and_attach(root, c"sys", c"sysfs", &[], sys_attrs).is_err() {
        // sysfs of a foreign network namespace cannot always be mounted anew;
        // docker then binds the host's /sys read-only, and so do we.
        let tree = sys::open_tree_clone(libc::AT_FDCWD, c"/sys", true).at(Step::MountSys)?;
        let result =
            sys::mount_setattr(tree, true, sys_attrs).and_then(|()| attach(root, c"sys", tree));
        sys::close(tree);
        result.at(Step::MountSys)?;
    }
    for (index, mv) in plan.moves.iter().enumerate() {
        attach(root, &mv.target, mv.mount_fd).at_index(Step::ExtraMount, index)?;
        sys::close(mv.mount_fd);
    }
    mask_paths(root)?;
    if plan.readonly_rootfs {
        sys::mount_setattr(root, false, sys::MOUNT_ATTR_RDONLY).at(Step::ReadonlyRoot)?;
    }
    let hostname = plan.hostname.as_bytes();
    // SAFETY: valid buffer and length.
    ret(unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) })
        .at(Step::Hostname)?;
    if plan.new_netns {
        loopback_up().at(Step::Loopback)?;
    }

    // pivot_root(".", ".") stacks the old root on top of the new one; detaching
    // it leaves only the new root visible (and no path back to the host).
    // SAFETY: plain syscalls.
    ret(unsafe { libc::fchdir(root) }).at(Step::PivotRoot)?;
    sys::pivot_root(c".", c".").at(Step::PivotRoot)?;
    // SAFETY: plain syscalls.
    ret(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) }).at_index(Step::PivotRoot, 1)?;
    ret(unsafe { libc::chdir(c"/".as_ptr()) }).at_index(Step::PivotRoot, 2)?;
    sys::close(root);
    Ok(())
}

/// Sends `fd` over the unix socket `socket` (SCM_RIGHTS), allocation-free.
fn send_fd(socket: c_int, fd: c_int) -> SysResult<()> {
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut control = [0u64; 4];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr/cmsghdr built over valid stack buffers of sufficient size
    // (CMSG_SPACE(4) = 24 <= 32 bytes).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<c_int>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(Errno(libc::EINVAL));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>(), fd);
        ret(libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) as c_int).map(drop)
    }
}

/// Opens a new terminal on the container's /dev/pts (the caller is already in
/// the container's root), hands the master to the parent, returns the slave.
fn open_container_tty(plan: &Plan, rows: u16, cols: u16) -> SysResult<c_int> {
    // SAFETY: plain syscalls on fds we own; ws is a valid winsize.
    unsafe {
        let master = ret(libc::open(
            c"/dev/pts/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?;
        let unlock: c_int = 0;
        let result = ret(libc::ioctl(master, libc::TIOCSPTLCK, &unlock))
            .and_then(|_| {
                let ws = libc::winsize {
                    ws_row: rows,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                ret(libc::ioctl(master, libc::TIOCSWINSZ, &ws))
            })
            .and_then(|_| {
                ret(libc::ioctl(
                    master,
                    libc::TIOCGPTPEER,
                    libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
                ))
            })
            .and_then(|slave| {
                // The user owns its terminal, as with runc.
                ret(libc::fchown(slave, plan.uid, plan.gid))?;
                send_fd(plan.tty_socket, master)?;
                Ok(slave)
            });
        sys::close(master);
        sys::close(plan.tty_socket);
        result
    }
}

/// Working directory, stdio, credentials, signals, then exec.
fn process_setup_and_exec(plan: &Plan) -> StepResult<Never> {
    // Working directory: mkdir -p inside the new root (root-owned 0755, as runc),
    // entered before dropping privileges so an unreadable one still works.
    for prefix in &plan.cwd_prefixes {
        // SAFETY: plain syscall.
        let r = unsafe { libc::mkdir(prefix.as_ptr(), 0o755) };
        if r < 0 && Errno::last().0 != libc::EEXIST {
            return Err(Errno::last()).at(Step::Workdir);
        }
    }
    // SAFETY: plain syscall.
    ret(unsafe { libc::chdir(plan.cwd.as_ptr()) }).at(Step::Workdir)?;

    // SAFETY: plain syscalls on fds we own.
    unsafe {
        libc::setsid();
        if let Some((rows, cols)) = plan.tty {
            let slave = open_container_tty(plan, rows, cols).at(Step::Terminal)?;
            ret(libc::ioctl(slave, libc::TIOCSCTTY, 0)).at(Step::Terminal)?;
            for target in 0..3 {
                ret(libc::dup2(slave, target)).at(Step::Terminal)?;
            }
            sys::close(slave);
        } else {
            for (target, &fd) in plan.stdio.iter().enumerate() {
                if fd >= 0 {
                    ret(libc::dup2(fd, target as c_int)).at_index(Step::Stdio, target)?;
                }
            }
        }
    }

    // Seccomp goes on while we still hold CAP_SYS_ADMIN (no_new_privs is off by
    // default, as in docker); the remaining setup calls are all allowed by it.
    if !plan.seccomp.is_empty() {
        let program = libc::sock_fprog {
            len: plan.seccomp.len() as u16,
            filter: plan.seccomp.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: program points to a valid filter array that outlives the call.
        ret(unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as c_ulong,
                &program as *const libc::sock_fprog as c_ulong,
                0 as c_ulong,
                0 as c_ulong,
            )
        })
        .at(Step::Seccomp)?;
    }

    // Capabilities: bounding set reduced to docker's default, inheritable and
    // ambient empty; a non-root uid then loses permitted/effective on setuid, as
    // in docker (CapEff 0 for USER 1000).
    for cap in 0..=plan.cap_last.min(63) {
        if plan.capabilities & (1u64 << cap) == 0 {
            sys::prctl(libc::PR_CAPBSET_DROP, cap as c_ulong)
                .at_index(Step::Capabilities, cap as usize)?;
        }
    }
    sys::capset(plan.capabilities, plan.capabilities, 0).at(Step::Capabilities)?;
    // Raw syscalls: glibc's setgroups/setresuid would try to signal the parent's
    // other threads, which do not exist here.
    // SAFETY: plain syscalls with a valid array.
    unsafe {
        raw(libc::syscall(
            libc::SYS_setgroups,
            plan.groups.len(),
            plan.groups.as_ptr(),
        ))
        .at(Step::Groups)?;
        raw(libc::syscall(
            libc::SYS_setresgid,
            plan.gid,
            plan.gid,
            plan.gid,
        ))
        .at(Step::SetGid)?;
        raw(libc::syscall(
            libc::SYS_setresuid,
            plan.uid,
            plan.uid,
            plan.uid,
        ))
        .at(Step::SetUid)?;
    }
    // Clear ambient caps explicitly (PR_CAP_AMBIENT_CLEAR_ALL = 4).
    // SAFETY: plain prctl.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            4 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    };
    // Changing credentials cleared the parent-death signal; set it again.
    set_death_signal(plan.lifeline)?;
    if plan.no_new_privs {
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).at(Step::NoNewPrivs)?;
    }

    // Signals: dispositions and mask as a fresh process expects (Rust ignores
    // SIGPIPE; the caller's threads may block signals).
    // SAFETY: plain signal syscalls on this single-threaded child.
    unsafe {
        for signal in 1..libc::SIGRTMIN() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        libc::umask(0o022);
    }
    if plan.init || plan.join_pidfd >= 0 {
        run_init(plan)?;
    }
    unblock_all_signals();
    exec(plan)
}

fn unblock_all_signals() {
    // SAFETY: set is initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

fn exec(plan: &Plan) -> StepResult<Never> {
    let mut seen_eacces = false;
    for candidate in &plan.exec_candidates {
        // SAFETY: argv/env pointer arrays are NUL-terminated and point into the
        // CStrings owned by the plan.
        unsafe {
            libc::execve(
                candidate.as_ptr(),
                plan.argv_ptrs.as_ptr(),
                plan.env_ptrs.as_ptr(),
            )
        };
        match Errno::last().0 {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => seen_eacces = true,
            other => return Err(Errno(other)).at(Step::Exec),
        }
    }
    let errno = if seen_eacces {
        libc::EACCES
    } else {
        libc::ENOENT
    };
    Err(Errno(errno)).at(Step::Exec)
}

/// Becomes a tiny init: forks the command, forwards every signal to it, reaps
/// zombies and exits with the command's status. Returns only in the command.
fn run_init(plan: &Plan) -> StepResult<()> {
    // SAFETY: set is initialised by sigfillset; plain syscalls.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
    // Plain clone (fork semantics): the seccomp filter answers clone3 with ENOSYS.
    // SAFETY: we are single-threaded here; the grandchild returns into exec.
    let child = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    };
    if child < 0 {
        return Err(Errno::last()).at(Step::Init);
    }
    let child = child as libc::pid_t;
    if child == 0 {
        return set_death_signal(plan.lifeline);
    }
    // The init must not hold the error pipe: the parent waits for its EOF to
    // learn that the command exec'd.
    sys::close(plan.error_pipe);
    loop {
        // SAFETY: info is plain old data filled by sigwaitinfo.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers.
        let signal = unsafe { libc::sigwaitinfo(&all, &mut info) };
        if signal < 0 {
            continue;
        }
        if signal != libc::SIGCHLD {
            // SAFETY: plain syscall.
            unsafe { libc::kill(child, signal) };
            continue;
        }
        loop {
            let mut status = 0;
            // SAFETY: valid pointer.
            let reaped = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if reaped <= 0 {
                break;
            }
            if reaped == child {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                // SAFETY: ends the init (and with it the PID namespace).
                unsafe { libc::_exit(code) };
            }
        }
    }
}
