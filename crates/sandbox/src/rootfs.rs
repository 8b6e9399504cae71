//! The root filesystem side of the parent: the overlay (or plain dir) root as
//! a detached mount, reading the image's files as data, and mount stubs (made
//! before a run, removed after it as BuildKit does).

use crate::SandboxError;
use crate::fds::owned;
use crate::process::{cstring, io_err};
use crate::sys::{self, Errno};
use libc::c_int;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// An empty directory the root is attached to inside each sandbox's private
/// mount namespace (never mounted on in the host's namespace, shared by all).
pub(crate) fn mount_point() -> Result<PathBuf, SandboxError> {
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

/// Lexically cleans an absolute container path into its components
/// (`/a/./b/../c` → `[a, c]`), as Go's filepath.Clean does for docker.
pub(crate) fn clean_components(path: &str) -> Vec<&str> {
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

/// Reads the error log of a new-mount-API filesystem context (overlayfs explains
/// its refusals there).
pub(crate) fn fs_context_log(fs: c_int) -> String {
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

pub(crate) fn overlay_mount(
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

/// A read-only overlay of `lower_dirs` (top-most first), as a detached mount:
/// attached nowhere in any mount namespace, reachable only through the
/// returned descriptor (e.g. as `/proc/self/fd/N/`), and gone when the
/// descriptor is closed or the process dies, so nothing can leak. The kernel
/// merges the layers (whiteouts, opaque directories) exactly as a RUN step's
/// root sees them. Overlayfs needs two lower dirs without an upper one: with a
/// single layer, pass an empty directory as the bottom one.
pub fn read_only_overlay(lower_dirs: &[PathBuf]) -> Result<OwnedFd, SandboxError> {
    let fail = |message: String| SandboxError::Overlay {
        layers: lower_dirs.len(),
        upper: PathBuf::new(),
        message,
    };
    if lower_dirs.len() < 2 {
        return Err(fail(
            "a read-only overlay needs at least two lower dirs".into(),
        ));
    }
    let fs = owned(sys::fsopen(c"overlay").map_err(|e| fail(format!("fsopen: {}", e.io())))?);
    for lower in lower_dirs {
        let value = cstring("layer path", lower.as_os_str().as_bytes())?;
        sys::fsconfig_string(fs.as_raw_fd(), c"lowerdir+", &value).map_err(|e| {
            let log = fs_context_log(fs.as_raw_fd());
            fail(format!("lowerdir+ {}: {} {log}", lower.display(), e.io()))
        })?;
    }
    sys::fsconfig_create(fs.as_raw_fd()).map_err(|e| {
        let log = fs_context_log(fs.as_raw_fd());
        fail(format!(
            "{} {log} (the kernel log, dmesg, has overlayfs' reason)",
            e.io()
        ))
    })?;
    let mount = sys::fsmount(fs.as_raw_fd(), sys::MOUNT_ATTR_RDONLY)
        .map_err(|e| fail(format!("fsmount: {}", e.io())))?;
    Ok(owned(mount))
}

/// Reads a small file inside `root` as data (RESOLVE_IN_ROOT, regular files
/// only, never blocking on a FIFO). None when it does not exist.
pub(crate) fn read_in_root(
    root: c_int,
    rel: &CStr,
    shown: &str,
) -> Result<Option<String>, SandboxError> {
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
pub(crate) fn ensure_in_root(
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
pub(crate) fn remove_stubs(base: &Path, stubs: &[String]) {
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
