//! File-system helpers that work relative to directory file descriptors and never follow
//! a symlink in a position where following it could leave the tree being worked on.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Opens `path` as a directory to be used as the root of all further `*at` operations.
pub(crate) fn open_root_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory `relative` below `root`, resolving symlinks as if `root` were `/`,
/// so the result is always inside `root`.
pub(crate) fn open_dir_in_root(root: BorrowedFd<'_>, relative: &Path) -> io::Result<OwnedFd> {
    if relative.as_os_str().is_empty() {
        return Ok(rustix::fs::openat(
            root,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
    }
    Ok(rustix::fs::openat2(
        root,
        relative,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Opens the directory `relative` below `root` only if no component is a symlink or `..`
/// (used for hard-link targets, which must name a path literally inside the layer root).
pub(crate) fn open_dir_beneath_no_symlinks(
    root: BorrowedFd<'_>,
    relative: &Path,
) -> io::Result<OwnedFd> {
    let relative: &Path = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    Ok(rustix::fs::openat2(
        root,
        relative,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Opens an existing directory entry `name` of `dir` for reading metadata-changing
/// syscalls (fchown, fchmod, fsetxattr, futimens), refusing to follow a symlink.
pub(crate) fn open_child_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `lstat` of `name` in `dir`; `None` if it does not exist.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// True if a `st_mode` is a directory.
pub(crate) fn is_dir_mode(mode: u32) -> bool {
    mode & 0o170000 == 0o040000
}

/// Names in a directory (without `.` and `..`), sorted bytewise.
pub(crate) fn sorted_names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let readable = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&readable)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `name` from `dir` (recursively if it is a directory); missing is not an error.
/// Never follows symlinks: a symlink is removed, not its target.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let Some(stat) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if is_dir_mode(stat.st_mode) {
        let child = open_child_dir(dir, name)?;
        for child_name in sorted_names(child.as_fd())? {
            remove_all_at(child.as_fd(), &child_name)?;
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(())
}

/// A path naming `name` inside the directory `dir` through `/proc/self/fd`, for the few
/// syscalls without an `*at` form (`lsetxattr`, `llistxattr` on symlinks). The final
/// component is still not followed by the `l*` calls.
pub(crate) fn proc_fd_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    path.push(name);
    path
}

/// What extended attributes are read from: a path (a final symlink not
/// followed) or an open file.
#[derive(Clone, Copy)]
pub(crate) enum XattrSource<'a> {
    Path(&'a Path),
    Fd(BorrowedFd<'a>),
}

impl XattrSource<'_> {
    fn list_len(self) -> rustix::io::Result<usize> {
        match self {
            XattrSource::Path(path) => rustix::fs::llistxattr_query(path),
            XattrSource::Fd(fd) => rustix::fs::flistxattr_query(fd),
        }
    }

    fn list(self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XattrSource::Path(path) => rustix::fs::llistxattr(path, buf),
            XattrSource::Fd(fd) => rustix::fs::flistxattr(fd, buf),
        }
    }

    fn value_len(self, name: &OsStr) -> rustix::io::Result<usize> {
        match self {
            XattrSource::Path(path) => rustix::fs::lgetxattr_query(path, name),
            XattrSource::Fd(fd) => rustix::fs::fgetxattr_query(fd, name),
        }
    }

    fn value(self, name: &OsStr, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XattrSource::Path(path) => rustix::fs::lgetxattr(path, name, buf),
            XattrSource::Fd(fd) => rustix::fs::fgetxattr(fd, name, buf),
        }
    }
}

/// All extended attributes of `path` (not following a final symlink), as (name, value).
pub(crate) fn read_xattrs(path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    read_xattrs_of(XattrSource::Path(path))
}

/// All extended attributes of the open file `fd`, as (name, value), sorted.
pub(crate) fn read_xattrs_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    read_xattrs_of(XattrSource::Fd(fd))
}

/// All extended attributes of `source`, as (name, value), sorted.
fn read_xattrs_of(source: XattrSource<'_>) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let list_len = match source.list_len() {
        Ok(len) => len,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    if list_len == 0 {
        return Ok(Vec::new());
    }
    let mut list = vec![0u8; list_len];
    let list_len = source.list(&mut list[..])?;
    list.truncate(list_len);
    let mut xattrs = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        let value_len = match source.value_len(name) {
            Ok(len) => len,
            // Removed between list and get, or not readable by us: skip it.
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut value = vec![0u8; value_len];
        let value_len = source.value(name, &mut value[..])?;
        value.truncate(value_len);
        xattrs.push((name.to_os_string(), value));
    }
    xattrs.sort();
    Ok(xattrs)
}
