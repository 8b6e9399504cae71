//! Thin wrappers over the Linux system calls the sandbox needs (new mount API,
//! openat2, clone3, capabilities). Every function here is async-signal-safe: it
//! allocates nothing and takes no lock, so the child may call it after `clone3` in
//! a multithreaded parent. Errors are raw errno values.

use libc::{c_char, c_int, c_long, c_uint, c_ulong};
use std::ffi::CStr;

/// A raw errno value from a failed system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The errno of the last failed libc call on this thread.
    pub fn last() -> Errno {
        // SAFETY: __errno_location always returns a valid thread-local pointer.
        Errno(unsafe { *libc::__errno_location() })
    }

    /// The same error as a std::io::Error (for messages in the parent).
    pub fn io(self) -> std::io::Error {
        std::io::Error::from_raw_os_error(self.0)
    }
}

pub type SysResult<T> = Result<T, Errno>;

fn check(ret: c_long) -> SysResult<c_int> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as c_int)
    }
}

fn check_int(ret: c_int) -> SysResult<c_int> {
    if ret < 0 { Err(Errno::last()) } else { Ok(ret) }
}

// Constants from linux/mount.h and linux/openat2.h, spelled out here so the crate
// does not depend on which libc version exports them.
pub const OPEN_TREE_CLONE: c_uint = 1;
pub const OPEN_TREE_CLOEXEC: c_uint = libc::O_CLOEXEC as c_uint;
pub const MOVE_MOUNT_F_EMPTY_PATH: c_uint = 0x4;
pub const MOVE_MOUNT_T_EMPTY_PATH: c_uint = 0x40;
pub const FSOPEN_CLOEXEC: c_uint = 1;
pub const FSMOUNT_CLOEXEC: c_uint = 1;
pub const FSCONFIG_SET_STRING: c_uint = 1;
pub const FSCONFIG_CMD_CREATE: c_uint = 6;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const AT_RECURSIVE: c_uint = 0x8000;
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// openat2 with RESOLVE_IN_ROOT: `path` is resolved as if `root` were "/", so
/// neither `..` nor absolute symlinks can leave it; magic links are refused.
pub fn open_in_root(root: c_int, path: &CStr, flags: c_int, mode: u32) -> SysResult<c_int> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: how is a valid open_how of the size passed; path is NUL-terminated.
    check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })
}

pub fn fsopen(fstype: &CStr) -> SysResult<c_int> {
    // SAFETY: plain syscall with a NUL-terminated string.
    check(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })
}

pub fn fsconfig_string(fs: c_int, key: &CStr, value: &CStr) -> SysResult<()> {
    // SAFETY: plain syscall with NUL-terminated strings.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs,
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub fn fsconfig_create(fs: c_int) -> SysResult<()> {
    // SAFETY: plain syscall.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs,
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<c_char>(),
            std::ptr::null::<c_char>(),
            0,
        )
    })
    .map(drop)
}

/// Turns a configured filesystem context into a detached mount; returns its fd.
pub fn fsmount(fs: c_int, attrs: u64) -> SysResult<c_int> {
    // SAFETY: plain syscall.
    check(unsafe { libc::syscall(libc::SYS_fsmount, fs, FSMOUNT_CLOEXEC, attrs) })
}

/// Clones the mount at `dirfd`/`path` (recursively) as a detached tree.
pub fn open_tree_clone(dirfd: c_int, path: &CStr, recursive: bool) -> SysResult<c_int> {
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: plain syscall with a NUL-terminated string.
    check(unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) })
}

/// Attaches the detached (or attached) mount `mount_fd` on top of the object
/// `target_fd` refers to. No path is resolved, so no symlink can redirect it.
pub fn move_mount_fd(mount_fd: c_int, target_fd: c_int) -> SysResult<()> {
    // SAFETY: plain syscall with empty NUL-terminated paths.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount_fd,
            c"".as_ptr(),
            target_fd,
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// Attaches `mount_fd` at a path (used only for the fixed sandbox mount point).
pub fn move_mount_to_path(mount_fd: c_int, target: &CStr) -> SysResult<()> {
    // SAFETY: plain syscall with NUL-terminated paths.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount_fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// Sets mount attributes (read-only, nosuid, ...) on the mount `fd` refers to.
pub fn mount_setattr(fd: c_int, recursive: bool, attr_set: u64) -> SysResult<()> {
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: attr is a valid mount_attr of the size passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// Creates a new filesystem of `fstype` with string options and returns a
/// detached mount fd with `attrs` (MOUNT_ATTR_*).
pub fn new_fs_mount(fstype: &CStr, options: &[(&CStr, &CStr)], attrs: u64) -> SysResult<c_int> {
    let fs = fsopen(fstype)?;
    let result = (|| {
        for (key, value) in options {
            fsconfig_string(fs, key, value)?;
        }
        fsconfig_create(fs)?;
        fsmount(fs, attrs)
    })();
    close(fs);
    result
}

pub fn close(fd: c_int) {
    // SAFETY: closing an fd we own; errors (EBADF) are irrelevant here.
    unsafe { libc::close(fd) };
}

/// Forks with `clone3`: returns 0 in the child, the child's pid in the parent and
/// stores a pidfd for the child in `pidfd`.
///
/// # Safety
/// The child shares nothing with the parent but copies of its memory and must only
/// make async-signal-safe calls until it execs or exits.
pub unsafe fn clone3(flags: u64, pidfd: &mut c_int) -> SysResult<libc::pid_t> {
    let args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: pidfd as *mut c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: args is a valid clone_args; stack 0 means fork-like semantics.
    check(unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    })
}

pub fn pidfd_send_signal(pidfd: c_int, signal: c_int) -> SysResult<()> {
    // SAFETY: plain syscall.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(drop)
}

pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> SysResult<()> {
    // SAFETY: plain syscall with NUL-terminated strings.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
        .map(drop)
}

pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
) -> SysResult<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: all pointers are NUL-terminated strings or null.
    check_int(unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data) as *const libc::c_void,
        )
    })
    .map(drop)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets this thread's effective, permitted and inheritable capability sets.
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> SysResult<()> {
    let header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [
        CapData {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: header and data are valid v3 capability structs.
    check(unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) })
        .map(drop)
}

pub fn prctl(option: c_int, arg: c_ulong) -> SysResult<()> {
    // SAFETY: plain prctl with integer arguments.
    check_int(unsafe { libc::prctl(option, arg, 0 as c_ulong, 0 as c_ulong, 0 as c_ulong) })
        .map(drop)
}

/// Writes all of `bytes` to `fd` (best effort; used for error reports).
pub fn write_all(fd: c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: bytes is a valid slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if Errno::last().0 == libc::EINTR {
                continue;
            }
            return;
        }
        bytes = bytes.get(n as usize..).unwrap_or(&[]);
    }
}

/// Reads until `buf` is full or end of file; returns the number of bytes read.
pub fn read_full(fd: c_int, buf: &mut [u8]) -> SysResult<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = buf.get_mut(filled..).unwrap_or(&mut []);
        // SAFETY: rest is a valid mutable slice.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        if n < 0 {
            let err = Errno::last();
            if err.0 == libc::EINTR {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            break;
        }
        filled += n as usize;
    }
    Ok(filled)
}
